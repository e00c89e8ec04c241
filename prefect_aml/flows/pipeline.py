"""The pipeline flow: one flow run per pipeline run, one task run per step, in dependency order.

First every step is planned (its reuse key and why it will run or be reused); then steps are
submitted as their upstream steps finish. Independent steps run at the same time (a thread pool;
each step is its own subprocess). Each step runs where its compute says: beside this flow; on a
Dask compute, on a worker of the cluster a `DaskTaskRunner` connects to or starts, while its task
run waits here (at most as many at once as the cluster has slots); on a work-pool compute, as a
flow run on that pool which the step's task waits for (`flows/step.py`). A reused step is a task run in state Cached that never enters its
body: when the plan has resolved the hit, the task run is recorded at once (the state events
Prefect's engine would emit); otherwise the task's cache policy decides. When a step fails, no new
step starts unless `continue_on_step_failure`, in which case every step that does not depend on the
failed one still runs; the pipeline run fails either way.
"""

from __future__ import annotations

import contextvars
import threading
from collections import defaultdict, deque
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from graphlib import TopologicalSorter
from pathlib import Path
from typing import Any

from prefect import flow
from prefect.cache_policies import NO_CACHE
from prefect.context import get_run_context
from prefect.futures import as_completed
from prefect.logging import get_run_logger
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.utilities.annotations import quote

from prefect_aml.exceptions import StepFailedError
from prefect_aml.tasks.reuse import (
    REUSE_PREFIX,
    AmlResultStorage,
    StepCachePolicy,
    lock_manager_for,
    plan_pipeline,
    read_json,
    write_json,
)
from prefect_aml.tasks.step import (
    REUSED_FILE,
    RUNS_PREFIX,
    StepContext,
    publish_metrics,
    run_step,
    wait_for_scratch_removal,
)

FLOW_NAME = "aml-pipeline"


def _reuse_record(ctx: dict, name: str, plan: dict, result: dict, task_run_id: str, logger) -> dict:
    """A reused step's record in this run: the producing run's metrics and outputs, and a link to it."""
    earlier = plan.get("record") or {}
    ui = ctx.get("ui_url")
    link = f" ({ui}/runs/task-run/{result.get('task_run_id')})" if ui else ""
    logger.info(f"Step {name!r} reused the outputs of task run {result.get('task_run_id')}{link} "
                f"from pipeline run {result.get('pipeline_run_id')}.")
    return {**earlier, "reused": True, "status": "Finished", "task_run_id": task_run_id,
            "pipeline_run_id": ctx["run_id"], "reused_from": result.get("task_run_id"),
            "reused_from_pipeline_run": result.get("pipeline_run_id"), "outputs": result["outputs"],
            "explanation": plan["explanation"]}


def _register_outputs(step, result: dict, ws, logger) -> None:
    """Register the outputs a step asked for (`register_on_complete`): a new version when their data changed."""
    from prefect_aml.dataset import output_dataset
    from prefect_aml.datastore import Datastore

    for out in step.outputs:
        reg = out.register_as
        if not reg:
            continue
        loc = result["outputs"][out.name]
        dataset = output_dataset(Datastore.get(ws, loc["datastore"]), loc["path"], reg.get("tabular"))
        version = dataset.register(ws, reg["name"], description=reg.get("description"), tags=reg.get("tags"),
                                   create_new_version=True)
        logger.info(f"Step {step.name!r}: output {out.name!r} is dataset {reg['name']!r} version {version.version}")


def _record_hit(task, step_name: str, plan: dict) -> str:
    """Record a step the plan reuses as a task run in state Cached, without entering the task engine.

    Prefect records task runs from the state events its engine emits (client-side orchestration);
    these are the same events (Pending -> Running -> Cached), emitted directly: no cache lookup, no
    result read, no thread. Returns the new task run's id."""
    from prefect.states import Completed, Running
    from prefect.task_engine import _create_task_run_locally
    from prefect.utilities.engine import emit_task_run_state_change_event

    tr = _create_task_run_locally(task=task)
    tr.name = step_name
    last_state = tr.state
    event = emit_task_run_state_change_event(task_run=tr, initial_state=None, validated_state=last_state)
    rec = plan["record"]
    for state in (Running(), Completed(name="Cached", message=f"Reused task run {rec['task_run_id']} of pipeline "
                                                              f"run {rec['pipeline_run_id']}")):
        state.state_details.task_run_id, state.state_details.flow_run_id = tr.id, tr.flow_run_id
        if state.is_running():
            tr.start_time, tr.run_count = state.timestamp, 1
        else:
            state.state_details.cache_key = plan["key"]
            tr.end_time = state.timestamp
        tr.state, tr.state_id, tr.state_type, tr.state_name = state, state.id, state.type, state.name
        event = emit_task_run_state_change_event(task_run=tr, initial_state=last_state, validated_state=state,
                                                 follows=event)
        last_state = state
    return str(tr.id)


class _DaskClusters:
    """The Dask computes a pipeline run uses: one `DaskTaskRunner` each (its cluster and client), started
    while the run is planned, closed at the end.

    A compute with an address is an existing scheduler; otherwise a `LocalCluster` (a
    `LocalCUDACluster` for `gpu=True`) lives as long as the run. Each step keeps its Prefect task run
    in the pipeline flow, and only its work (`execute_on_dask_worker`) is sent to the cluster, where
    Prefect's task engine would rebuild its settings and context for every step (~0.2 s each). Steps on
    a `gpu=True` compute ask for a `GPU` worker resource, so Dask places them only on workers that
    offer one; no more steps are sent than the cluster has slots, so a step's task run starts when its
    work does."""

    def __init__(self, run_id: str):
        self._stack = ExitStack()
        self._runners: dict[str, Any] = {}
        self._lock = threading.Lock()
        self.run_id = run_id
        _DASK_RUNS[run_id] = self

    def start(self, computes: list[dict]) -> None:
        """Connect to (or start) the clusters a run will use, before its first step is ready.

        GPU clusters start on first use: they are costly, and a fully reused run needs none."""
        for compute in computes:
            if not compute.get("gpu") or compute.get("address"):
                self.client(compute)

    def client(self, compute: dict):
        with self._lock:
            runner = self._runners.get(compute["name"])
            if runner is None:
                runner = self._stack.enter_context(_dask_runner(compute))
                self._runners[compute["name"]] = runner
                client = runner.client  # connects to (or starts) the cluster now: DaskTaskRunner does it lazily
                if compute.get("address"):  # workers that have not run a step yet import Prefect now, not at their first step
                    client.run(_warm_dask_worker, wait=False, on_error="ignore")
            return runner.client

    def capacity(self, compute: dict) -> int:
        """How many of this compute's steps the cluster can run at once (its threads, or its GPUs)."""
        workers = self.client(compute).scheduler_info().get("workers", {}).values()
        if compute.get("gpu"):
            return max(1, sum(int(w.get("resources", {}).get("GPU", 0)) for w in workers))
        return max(1, sum(int(w.get("nthreads", 1)) for w in workers))

    def close(self) -> None:
        _DASK_RUNS.pop(self.run_id, None)
        self._stack.close()


_DASK_RUNS: dict[str, _DaskClusters] = {}  # pipeline run id -> its clusters, for its step tasks


def run_on_dask(compute: dict, step: dict, plan: dict, ctx: dict, upstream: dict, task_run_id: str,
                log_extra: dict) -> dict:
    """From a step's task run: run its work on the compute's cluster and wait for it."""
    from prefect_aml.tasks.step import execute_on_dask_worker

    clusters = _DASK_RUNS.get(ctx["run_id"])
    if clusters is None:
        raise RuntimeError(f"Step {step['name']!r}: no Dask clusters are open for pipeline run {ctx['run_id']}.")
    future = clusters.client(compute).submit(
        execute_on_dask_worker, step, plan, ctx, upstream, task_run_id, log_extra, key=f"aml-step-{task_run_id}",
        pure=False, resources={"GPU": 1} if compute.get("gpu") else None)
    return future.result()


def _warm_dask_worker() -> None:
    """On each Dask worker: what its first step would import (~2 s in a fresh worker process)."""
    import importlib

    from prefect_aml.flows.runner import WARM_MODULES

    for name in WARM_MODULES:
        importlib.import_module(name)


def _dask_runner(compute: dict):
    from prefect_dask import DaskTaskRunner

    if compute.get("address"):
        return DaskTaskRunner(address=compute["address"])
    kwargs = {"n_workers": compute.get("n_workers") or 2, "threads_per_worker": compute.get("threads_per_worker") or 1}
    if compute.get("gpu"):
        return DaskTaskRunner(cluster_class="dask_cuda.LocalCUDACluster",
                              cluster_kwargs={**kwargs, "resources": {"GPU": 1}})
    # in-process workers: each step's script is a subprocess anyway, so threads give the same parallelism
    # and the cluster is up in a fraction of the time worker processes take to start
    return DaskTaskRunner(cluster_class="distributed.LocalCluster",
                          cluster_kwargs={**kwargs, "processes": False, "dashboard_address": None})


def _was_cancelled(run_id: str) -> bool:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.objects import StateType

    with get_client(sync_client=True) as client:
        return client.read_flow_run(run_id).state_type in (StateType.CANCELLING, StateType.CANCELLED)


def _result(future) -> Any:
    """A finished step task's return value: read from its state when the value is held in memory (a
    `future.result()` hands the read to Prefect's event loop thread and waits for it, ~1 ms per step while
    that thread sends the run's events and logs); otherwise, and for failures, as `future.result()` does."""
    from prefect.results import ResultRecord

    future.wait()  # done already (as_completed): this records its final state on the future
    state = future.state
    if state.is_completed() and isinstance(state.data, ResultRecord):
        return state.data.result
    return future.result()


def _known_result(plan: dict) -> dict:
    """What a step the plan will reuse returns: its earlier outputs (known before it is dispatched)."""
    rec = plan["record"]
    return {"step": rec["step"], "key": plan["key"], "out_key": rec.get("out_key", plan["key"]),
            "outputs": rec["outputs"], "task_run_id": rec["task_run_id"], "pipeline_run_id": rec["pipeline_run_id"]}


def _run_context(run_id: str, params: dict) -> dict:
    """What every step of a run needs from it (`params` are the pipeline flow's parameters)."""
    from prefect_aml.workspace import Workspace

    workspace = params["workspace"]
    if not Path(workspace.get("home") or ".").is_dir():  # on a worker of another machine: its own home
        from prefect_aml._home import aml_home

        workspace = {**workspace, "home": str(aml_home())}
    return {"run_id": run_id, "experiment_name": params["experiment_name"], "workspace": workspace,
            "default_datastore": params["default_datastore"], "parameters": params["parameters"],
            "regenerate_outputs": params.get("regenerate_outputs", False),
            "ui_url": Workspace(**workspace).api_url_or_default().removesuffix("/api")}


def _graph_artifact(spec, run_id: str) -> None:
    from prefect.artifacts import MarkdownArtifact

    MarkdownArtifact(markdown=f"```mermaid\n{spec.mermaid()}\n```", key="pipeline-graph",
                     description="The pipeline's steps and the data between them",
                     flow_run_id=run_id).create(_sync=True)


def _in_thread(fn, *args):
    """`fn(*args)` in a thread of its own, with this context; returns its future."""
    pool = ThreadPoolExecutor(1)
    try:
        return pool.submit(contextvars.copy_context().run, fn, *args)
    finally:
        pool.shutdown(wait=False)


class _Start:
    """What a run needs before its first step, fetched in threads (each a datastore or server round trip): its
    spec from the default datastore and the result storage (only when a step may be reused)."""

    def __init__(self, run_id: str, params: dict):
        from prefect_aml.flows.submit import load_spec

        self.ctx = _run_context(run_id, params)
        sc = StepContext(self.ctx)
        self.spec = _in_thread(lambda: load_spec(sc.default_store, params["spec_path"]))
        self.storage = _in_thread(lambda: AmlResultStorage.on(sc.default_store)
                                  if any(s.allow_reuse for s in self.spec.result().steps) else None)


_PREPARED: dict[str, _Start] = {}  # flow run id -> its start, begun before Prefect's engine started the run


@contextmanager
def prepared(flow_run):
    """Around Prefect's engine running a pipeline flow run in this process: its spec and result storage are
    fetched while the engine sets the run up (round trips the run would otherwise begin with)."""
    run_id = str(flow_run.id)
    try:
        _PREPARED[run_id] = _Start(run_id, flow_run.parameters)
    except Exception:  # bad parameters: the engine reports them
        pass
    try:
        yield
    finally:
        _PREPARED.pop(run_id, None)


@flow(name=FLOW_NAME, task_runner=ThreadPoolTaskRunner(max_workers=32), persist_result=False,
      validate_parameters=False)
def aml_pipeline(spec_path: str, parameters: dict, experiment_name: str, workspace: dict, default_datastore: str,
                 regenerate_outputs: bool = False, continue_on_step_failure: bool = False) -> dict[str, Any]:
    from prefect_aml.workspace import Workspace

    logger = get_run_logger()
    run_id = str(get_run_context().flow_run.id)
    start = _PREPARED.pop(run_id, None) or _Start(run_id, {
        "spec_path": spec_path, "parameters": parameters, "experiment_name": experiment_name,
        "workspace": workspace, "default_datastore": default_datastore, "regenerate_outputs": regenerate_outputs})
    ctx = start.ctx
    ws = Workspace(**ctx["workspace"])
    sc = StepContext(ctx)
    pipeline = start.spec.result()
    clusters = _DaskClusters(run_id)
    side = ThreadPoolExecutor(1)  # the Dask clusters start beside the plan
    dask_ready = side.submit(contextvars.copy_context().run, clusters.start,
                             [s.compute for s in pipeline.steps if (s.compute or {}).get("type") == "DaskCompute"])
    side.shutdown(wait=False)
    try:
        plans = plan_pipeline(pipeline, ctx, sc.store)
        dask_ready.result()
    except BaseException:
        clusters.close()
        raise
    logger.info("Plan:\n" + "\n".join(f"  step {name}: {plan['explanation']}" for name, plan in plans.items()))

    # each kind configured once per run, when first needed (with_options costs ~5-20 ms); the task run
    # is named after its step. Planned hits skip the lock: the plan has just seen their record (at
    # worst a step runs twice).
    tasks: dict[str, Any] = {}

    def task_for(kind: str):
        if kind not in tasks:
            if kind == "always":
                tasks[kind] = run_step.with_options(name="aml-step", task_run_name="{step[name]}",
                                                    persist_result=False, cache_policy=NO_CACHE)
            else:
                policy = StepCachePolicy() if kind == "hit" else StepCachePolicy().configure(
                    lock_manager=lock_manager_for(sc.default_store, ws.home, ws.redis_url),
                    isolation_level="SERIALIZABLE")
                tasks[kind] = run_step.with_options(name="aml-step", task_run_name="{step[name]}", cache_policy=policy,
                                                    result_storage=start.storage.result(), refresh_cache=regenerate_outputs)
        return tasks[kind]

    sorter = TopologicalSorter({s.name: s.upstream() for s in pipeline.steps})
    sorter.prepare()
    results: dict[str, dict] = {}
    failed: dict[str, str] = {}
    skipped: list[str] = []
    in_flight: dict[Any, str] = {}
    held: dict[str, deque] = defaultdict(deque)  # per Dask compute: ready steps waiting for a free slot
    on_dask: dict[str, str] = {}  # steps sent to a Dask compute -> its name
    recorded: set[str] = set()  # hits the plan resolved, recorded as Cached task runs without dispatch
    reused: dict[str, dict] = {}  # their records, written once at the end
    # the graph artifact is created once the first steps are dispatched, while they run: made at the start, its
    # round trip took the CPU from Prefect's engine setting the run up, and delayed the first step (~8 ms)
    graph = None

    def registered(name: str) -> None:
        try:
            _register_outputs(pipeline.step(name), results[name], ws, logger)
        except Exception as err:  # the data is there, but the run did not do all it was asked
            failed[name] = f"Step {name!r} finished but registering its output failed: {err}"

    def settle(name: str, future) -> None:
        try:
            results[name] = _result(future)
        except Exception as err:  # the step's own error, with its stderr tail
            failed[name] = str(err)
            results.pop(name, None)
        else:
            registered(name)
            if future.state.name == "Cached":
                if "record" not in plans[name]:  # a hit the plan did not foresee (another run just made it)
                    plans[name]["record"] = read_json(sc.default_store, f"{REUSE_PREFIX}/{plans[name]['key']}.json")
                reused[name] = _reuse_record(ctx, name, plans[name], results[name], str(future.task_run_id), logger)

    try:
        while sorter.is_active():
            for name in sorter.get_ready():
                step = pipeline.step(name)
                ups = step.upstream()
                known = plans[name].get("will_reuse") and all(u in recorded for u in ups)
                blocked = [u for u in ups if u in failed or u in skipped]
                if blocked or (failed and not continue_on_step_failure):
                    logger.warning(f"Step {name!r} does not run: " + (
                        f"upstream step(s) {blocked} did not finish" if blocked else "an earlier step failed"))
                    skipped.append(name)
                    sorter.done(name)
                    continue
                task = task_for("always" if not step.allow_reuse else "hit" if plans[name].get("will_reuse") else "run")
                if known:  # a hit resolved by the plan: a Cached task run at once, nothing dispatched
                    results[name] = _known_result(plans[name])
                    task_run_id = _record_hit(task, name, plans[name])
                    reused[name] = _reuse_record(ctx, name, plans[name], results[name], task_run_id, logger)
                    registered(name)
                    recorded.add(name)
                    sorter.done(name)
                    continue
                upstream = {u: results[u] for u in ups}
                plan = plans[name]
                if plan.get("will_reuse"):  # a hit needs only its key: keep the task's inputs small
                    plan = {k: plan[k] for k in ("key", "out_key", "outputs", "explanation", "will_reuse")}
                # quoted: plain data without futures, so Prefect need not walk it (twice) per step
                submit = (name, task, {"step": quote(step.model_dump()), "plan": quote(plan), "ctx": quote(ctx),
                                       "upstream": quote(upstream)})
                if (step.compute or {}).get("type") == "DaskCompute" and not plans[name].get("will_reuse"):
                    held[step.compute["name"]].append(submit)  # a hit is never sent to the cluster
                else:
                    in_flight[task.submit(**submit[2])] = name
            for queue in held.values():
                while queue:
                    name, task, parameters = queue[0]
                    compute = pipeline.step(name).compute
                    if sum(c == compute["name"] for c in on_dask.values()) >= clusters.capacity(compute):
                        break
                    queue.popleft()
                    if failed and not continue_on_step_failure:
                        logger.warning(f"Step {name!r} does not run: an earlier step failed")
                        skipped.append(name)
                        sorter.done(name)
                        continue
                    in_flight[task.submit(**parameters)] = name
                    on_dask[name] = compute["name"]
            graph = graph or _in_thread(_graph_artifact, pipeline, run_id)
            if not in_flight:
                continue
            future = next(as_completed(list(in_flight)))
            name = in_flight.pop(future)
            on_dask.pop(name, None)
            settle(name, future)
            sorter.done(name)
    finally:
        clusters.close()
        wait_for_scratch_removal()  # a run that is over has left no scratch folders behind
    try:
        (graph or _in_thread(_graph_artifact, pipeline, run_id)).result()
    except Exception as err:  # the graph is for people: a failure to show it does not fail the run
        logger.warning(f"The pipeline graph artifact could not be created: {err}")
    if reused:
        write_json(sc.default_store, f"{RUNS_PREFIX}/{run_id}/{REUSED_FILE}", reused)
        for name, record in reused.items():
            publish_metrics(name, record.get("metrics", {}))
    if failed:
        if _was_cancelled(run_id):  # its steps failed because the run was cancelled: it stays Cancelled
            from prefect.states import Cancelled

            return Cancelled(message="The pipeline run was canceled.")
        first = next(iter(failed))
        raise StepFailedError(
            f"Pipeline failed: {len(failed)} step(s) failed {sorted(failed)}"
            + (f", {len(skipped)} did not run {skipped}" if skipped else "") + f".\n{failed[first]}"
        )
    return {name: {"key": r["key"], "outputs": r["outputs"]} for name, r in results.items()}
