"""The Prefect implementation of the graph's verbs, installed in `pipeline/port.py` by `prefect_aml`.

`Pipeline.submit`, `Pipeline.publish`, `Pipeline.explain_reuse` and `PipelineRun.publish_pipeline`
call these; the graph layer itself never imports Prefect.
"""

from __future__ import annotations

from typing import Any

from prefect_aml.deployments.published import PublishedPipeline, publish_pipeline, publish_spec
from prefect_aml.flows import submit as _submit
from prefect_aml.runs import Experiment, PipelineRun


def submit(pipeline, experiment, pipeline_parameters: dict | None = None, tags: dict | None = None,
           regenerate_outputs: bool = False, continue_on_step_failure: bool = False, pipeline_compute=None,
           show_plan: bool = True, **_ignored: Any) -> PipelineRun:
    """Run `pipeline` in `experiment` (an Experiment, or a name in the pipeline's workspace)."""
    if isinstance(experiment, str):
        experiment = Experiment(pipeline.workspace, experiment)
    flow_run, runner = _submit.submit_pipeline(
        experiment.workspace, experiment.name, pipeline, pipeline_parameters, tags, regenerate_outputs,
        continue_on_step_failure, show_plan=show_plan, pipeline_compute=pipeline_compute)
    return PipelineRun(experiment, str(flow_run.id), _flow_run=flow_run, _runner=runner)


def publish(pipeline, name, description, version, continue_on_step_failure, pipeline_compute) -> PublishedPipeline:
    return publish_pipeline(pipeline, name, description, version, continue_on_step_failure, pipeline_compute)


def publish_run(run: PipelineRun, name, description, version, continue_on_step_failure,
                pipeline_compute) -> PublishedPipeline:
    info = run._parameters
    return publish_spec(run.experiment.workspace, info["spec_path"], info["default_datastore"], name, description,
                        version, continue_on_step_failure, pipeline_compute, _from_run=run.id)


def explain_reuse(pipeline, pipeline_parameters: dict | None, regenerate_outputs: bool) -> dict[str, str]:
    return _submit.explain_reuse(pipeline, pipeline_parameters, regenerate_outputs)
