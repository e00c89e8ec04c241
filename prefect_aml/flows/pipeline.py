"""The pipeline flow: one flow run per pipeline run, one task run per step, in dependency order.

First every step is planned (its reuse key and why it will run or be reused); then steps are
submitted as their upstream steps finish. Independent steps run at the same time (a thread pool;
each step is its own subprocess); a reused step is a task run in state Cached that never enters
its body. When a step fails, no new step starts unless `continue_on_step_failure`, in which case
every step that does not depend on the failed one still runs; the pipeline run fails either way.
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
from prefect_aml.tasks.reuse import (
    AmlResultStorage,
    StepCachePolicy,
    lock_manager_for,
    plan_pipeline,
    read_json,
)
from prefect_aml.tasks.step import StepContext, publish_metrics, run_dir, run_step

FLOW_NAME = "aml-pipeline"


def _record_reuse(sc: StepContext, ctx: dict, name: str, plan: dict, result: dict, task_run_id: str, logger) -> None:
    """A reused step's record in this run: the producing run's metrics and outputs, and a link to it."""
    from prefect_aml.tasks.reuse import REUSE_PREFIX, write_json

    store = sc.default_store
    earlier = read_json(store, f"{REUSE_PREFIX}/{plan['key']}.json") or {}
    record = {**earlier, "reused": True, "status": "Finished", "task_run_id": task_run_id,
              "pipeline_run_id": ctx["run_id"], "reused_from": result.get("task_run_id"),
              "reused_from_pipeline_run": result.get("pipeline_run_id"), "outputs": result["outputs"],
              "explanation": plan["explanation"]}
    write_json(store, f"{run_dir(ctx, name)}/record.json", record)
    ui = ctx.get("ui_url")
    link = f" ({ui}/runs/task-run/{result.get('task_run_id')})" if ui else ""
    logger.info(f"Step {name!r} reused the outputs of task run {result.get('task_run_id')}{link} "
                f"from pipeline run {result.get('pipeline_run_id')}.")
    publish_metrics(name, earlier.get("metrics", {}))


@flow(name=FLOW_NAME, task_runner=ThreadPoolTaskRunner(max_workers=32), persist_result=False,
      validate_parameters=False)
def aml_pipeline(spec_path: str, parameters: dict, experiment_name: str, workspace: dict, default_datastore: str,
                 regenerate_outputs: bool = False, continue_on_step_failure: bool = False) -> dict[str, Any]:
    from prefect_aml.runs import load_spec
    from prefect_aml.workspace import Workspace

    logger = get_run_logger()
    run_id = str(get_run_context().flow_run.id)
    ws = Workspace(**workspace)
    ctx = {"run_id": run_id, "experiment_name": experiment_name, "workspace": workspace,
           "default_datastore": default_datastore, "parameters": parameters,
           "regenerate_outputs": regenerate_outputs, "ui_url": ws.api_url_or_default().removesuffix("/api")}
    sc = StepContext(ctx)
    pipeline = load_spec(sc.default_store, spec_path)
    create_markdown_artifact(f"```mermaid\n{pipeline.mermaid()}\n```", key="pipeline-graph",
                             description="The pipeline's steps and the data between them")
    plans = plan_pipeline(pipeline, ctx, sc.store)
    for name, plan in plans.items():
        logger.info(f"step {name}: {plan['explanation']}")
    storage = AmlResultStorage.on(sc.default_store)
    policy = StepCachePolicy().configure(
        lock_manager=lock_manager_for(sc.default_store, ws.home, ws.redis_url), isolation_level="SERIALIZABLE")

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
            task = run_step.with_options(name=name, task_run_name=name, cache_policy=policy, result_storage=storage,
                                         refresh_cache=regenerate_outputs, persist_result=step.allow_reuse)
            future = task.submit(step.model_dump(), plans[name], ctx,
                                 {u: results[u] for u in step.upstream() if u in results})
            in_flight[future] = name
        if not in_flight:
            continue
        future = next(as_completed(list(in_flight)))
        name = in_flight.pop(future)
        try:
            results[name] = future.result()
        except Exception as err:  # the step's own error, with its stderr tail
            failed[name] = str(err)
        else:
            if future.state.name == "Cached":
                _record_reuse(sc, ctx, name, plans[name], results[name], str(future.task_run_id), logger)
        sorter.done(name)
    if failed:
        first = next(iter(failed))
        raise StepFailedError(
            f"Pipeline failed: {len(failed)} step(s) failed {sorted(failed)}"
            + (f", {len(skipped)} did not run {skipped}" if skipped else "") + f".\n{failed[first]}"
        )
    return {name: {"key": r["key"], "outputs": r["outputs"]} for name, r in results.items()}
