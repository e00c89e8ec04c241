"""The step task: one pipeline step as one Prefect task run, routed to where its compute says.

The task is cached on the step's planned key (`tasks/reuse.py::StepCachePolicy`): a hit never enters
the body. Otherwise a step on a work pool is sent there as a flow run and waited for (`flows/step.py`),
a step on a Dask compute sends its work to the cluster and waits for it (`flows/dask.py`), and any
other step runs here, beside the pipeline flow (`tasks/step.py`).
"""

from __future__ import annotations

from prefect import task
from prefect.context import get_run_context
from prefect.logging import get_run_logger

from prefect_aml.exceptions import StepFailedError
from prefect_aml.flows.dask import run_on_dask
from prefect_aml.flows.step import run_on_pool
from prefect_aml.pipeline.spec import StepSpec
from prefect_aml.tasks.context import RunContext, StepPlan, StepResult
from prefect_aml.tasks.step import execute_step, publish_environment, publish_metrics


@task(persist_result=True, result_serializer="json")
def run_step(step: dict, plan: StepPlan, ctx: RunContext, upstream: dict[str, StepResult]) -> StepResult:
    """Run one pipeline step where its compute says; returns its key and where its outputs are."""
    task_run_id = str(get_run_context().task_run.id)
    spec = StepSpec.model_validate(step)
    compute = spec.compute or {}
    if compute.get("pool"):
        return run_on_pool(spec, plan, ctx, upstream, task_run_id, get_run_logger())
    if compute.get("type") == "DaskCompute":
        try:
            result = run_on_dask(compute, spec, plan, ctx, upstream, task_run_id, dict(get_run_logger().extra))
        except StepFailedError as err:
            publish_metrics(spec.name, getattr(err, "metrics", None) or {})
            raise
        publish_metrics(spec.name, result.metrics or {})
        publish_environment(spec.name, result.environment)
        return result.model_copy(update={"metrics": None, "environment": None})
    return execute_step(spec, plan, ctx, upstream, task_run_id)
