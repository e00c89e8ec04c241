"""The iris pipeline as a Prefect deployment (`prefect.yaml` at the project root; `prefect deploy --all`).

    prefect deploy --all                                  # from the project root
    prefect-aml worker start aml-pipelines                # a worker for the deployment's pool
    prefect deployment run 'iris/iris' -p pipeline_arg=50

Each run of the deployment submits the iris pipeline as a pipeline run (its steps reused where
nothing changed) and waits for it; the pipeline run's link is in this run's logs. To publish a
pipeline with its parameters as the deployment's own form instead, use `pipeline.publish(...)`.
"""

import os
import sys

from prefect import flow, get_run_logger

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from run_pipeline import build, upload_data  # noqa: E402  (beside this file)

from prefect_aml import Experiment, Workspace  # noqa: E402


@flow(name="iris", log_prints=True)
def iris(pipeline_arg: int = 10, experiment_name: str = "Compare_Models_Exp") -> dict:
    """Prepare the iris data, train, and compare; `pipeline_arg` is the comparison's bootstrap rounds."""
    logger = get_run_logger()
    ws = Workspace.from_config()
    upload_data(ws)
    run = Experiment(ws, experiment_name).submit(build(ws), pipeline_parameters={"pipeline_arg": pipeline_arg})
    logger.info(f"Pipeline run {run.id}: {run.get_portal_url()}")
    status = run.wait_for_completion(show_output=False)
    compare = run.find_step_run("compare.py")[0]
    return {"pipeline_run": run.id, "status": status, "metrics": compare.get_metrics()}
