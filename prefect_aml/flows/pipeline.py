"""The pipeline flow: one flow run per pipeline run, one task run per step, in dependency order.

Independent steps run at the same time (a thread pool; each step is its own subprocess). When a
step fails, no new step starts unless `continue_on_step_failure`, in which case every step
that does not depend on the failed one still runs; the pipeline run fails either way.
"""

from __future__ import annotations

from graphlib import TopologicalSorter
from typing import Any

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from prefect.context import get_run_context
from prefect.futures import as_completed
from prefect.logging import get_run_logger
from prefect.task_runners import ThreadPoolTaskRunner

from prefect_aml.exceptions import StepFailedError
from prefect_aml.pipeline.spec import PipelineSpec
from prefect_aml.tasks.step import run_step

FLOW_NAME = "aml-pipeline"


@flow(name=FLOW_NAME, task_runner=ThreadPoolTaskRunner(max_workers=32), persist_result=False,
      validate_parameters=False)
def aml_pipeline(spec: dict, parameters: dict, experiment_name: str, workspace: dict, default_datastore: str,
                 regenerate_outputs: bool = False, continue_on_step_failure: bool = False) -> dict[str, Any]:
    logger = get_run_logger()
    pipeline = PipelineSpec.model_validate(spec)
    run_id = str(get_run_context().flow_run.id)
    create_markdown_artifact(f"```mermaid\n{pipeline.mermaid()}\n```", key="pipeline-graph",
                             description="The pipeline's steps and the data between them")
    ctx = {"run_id": run_id, "experiment_name": experiment_name, "workspace": workspace,
           "default_datastore": default_datastore, "parameters": parameters,
           "regenerate_outputs": regenerate_outputs}
    sorter = TopologicalSorter({s.name: s.upstream() for s in pipeline.steps})
    sorter.prepare()
    results: dict[str, dict] = {}
    failed: dict[str, str] = {}
    skipped: list[str] = []
    in_flight: dict[Any, str] = {}
    while sorter.is_active():
        for name in sorter.get_ready():
            step = pipeline.step(name)
            blocked = [u for u in step.upstream() if u in failed or u in skipped]
            if blocked or (failed and not continue_on_step_failure):
                logger.warning(f"Step {name!r} does not run: " + (
                    f"upstream step(s) {blocked} did not finish" if blocked else "an earlier step failed"))
                skipped.append(name)
                sorter.done(name)
                continue
            future = run_step.with_options(name=name, task_run_name=name).submit(
                step.model_dump(), ctx, {u: results[u] for u in step.upstream() if u in results})
            in_flight[future] = name
        if not in_flight:
            continue
        future = next(as_completed(list(in_flight)))
        name = in_flight.pop(future)
        try:
            results[name] = future.result()
        except Exception as err:  # the step's own error, with its stderr tail
            failed[name] = str(err)
        sorter.done(name)
    if failed:
        first = next(iter(failed))
        raise StepFailedError(
            f"Pipeline failed: {len(failed)} step(s) failed {sorted(failed)}"
            + (f", {len(skipped)} did not run {skipped}" if skipped else "") + f".\n{failed[first]}"
        )
    return {name: {"key": r["key"], "reused": r["reused"], "outputs": r["outputs"]} for name, r in results.items()}
