"""The pipeline flow: one flow run per pipeline run, one task run per step, in dependency order.

The life of a run (DESIGN.md): its spec is read from the default datastore; every step is planned
(its reuse key and why it will run or be reused, `tasks/reuse.py`); then steps are dispatched as their
upstream steps finish, independent ones at the same time (a thread pool; each step's script is its
own subprocess), each where its compute says (`flows/routing.py`). A reused step is a task run in
state Cached that never enters its body: when the plan has resolved the hit, the task run is recorded
at once (the state events Prefect's engine would emit); otherwise the task's cache policy decides.
When a step fails, no new step starts unless `continue_on_step_failure`, in which case every step
that does not depend on the failed one still runs; the pipeline run fails either way.
"""

from __future__ import annotations

import contextvars
from collections import defaultdict, deque
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from graphlib import TopologicalSorter
from pathlib import Path
from typing import Any

from prefect import flow
from prefect.artifacts import MarkdownArtifact
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import StateType
from prefect.context import get_run_context
from prefect.futures import as_completed
from prefect.logging import get_run_logger
from prefect.results import ResultRecord
from prefect.states import Cancelled, Completed, Running
from prefect.task_engine import _create_task_run_locally
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.utilities.annotations import quote
from prefect.utilities.engine import emit_task_run_state_change_event

from prefect_aml._home import aml_home
from prefect_aml.dataset import output_dataset
from prefect_aml.datastore import Datastore
from prefect_aml.exceptions import StepFailedError
from prefect_aml.flows.dask import DaskClusters
from prefect_aml.flows.routing import run_step
from prefect_aml.names import GRAPH_ARTIFACT, PIPELINE_FLOW, STEP_FLOW, reuse_record_path, reused_path
from prefect_aml.pipeline.spec import PipelineSpec
from prefect_aml.records import load_spec, read_json, write_json
from prefect_aml.tasks.context import RunContext, StepPlan, StepResult
from prefect_aml.tasks.reuse import AmlResultStorage, StepCachePolicy, lock_manager_for, plan_pipeline
from prefect_aml.tasks.step import publish_metrics, wait_for_scratch_removal
from prefect_aml.workspace import Workspace


def _run_context(run_id: str, params: dict) -> RunContext:
    """What every step of a run needs from it (`params` are the pipeline flow's parameters)."""
    workspace = params["workspace"]
    if not Path(workspace.get("home") or ".").is_dir():  # on a worker of another machine: its own home
        workspace = {**workspace, "home": str(aml_home())}
    return RunContext(run_id=run_id, experiment_name=params["experiment_name"], workspace=workspace,
                      default_datastore=params["default_datastore"], parameters=params["parameters"],
                      regenerate_outputs=params.get("regenerate_outputs", False),
                      ui_url=Workspace(**workspace).api_url().removesuffix("/api"))


def _in_thread(fn, *args) -> Future:
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
        self.ctx = _run_context(run_id, params)
        store = self.ctx.default_store
        self.spec = _in_thread(lambda: load_spec(store, params["spec_path"]))
        self.storage = _in_thread(lambda: AmlResultStorage.on(store)
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


def _plan(spec: PipelineSpec, ctx: RunContext, clusters: DaskClusters) -> dict[str, StepPlan]:
    """Every step's plan; the run's Dask clusters start beside it."""
    dask_ready = _in_thread(clusters.start, [s.compute for s in spec.steps
                                             if (s.compute or {}).get("type") == "DaskCompute"])
    plans = plan_pipeline(spec, ctx.parameters, ctx.run_id, ctx.regenerate_outputs, ctx.store)
    dask_ready.result()
    return plans


def _record_hit(task, step_name: str, plan: StepPlan) -> str:
    """Record a step the plan reuses as a task run in state Cached, without entering the task engine.

    Prefect records task runs from the state events its engine emits (client-side orchestration);
    these are the same events (Pending -> Running -> Cached), emitted directly: no cache lookup, no
    result read, no thread. Returns the new task run's id."""
    tr = _create_task_run_locally(task=task)
    tr.name = step_name
    last_state = tr.state
    event = emit_task_run_state_change_event(task_run=tr, initial_state=None, validated_state=last_state)
    rec = plan.record
    for state in (Running(), Completed(name="Cached", message=f"Reused task run {rec['task_run_id']} of pipeline "
                                                              f"run {rec['pipeline_run_id']}")):
        state.state_details.task_run_id, state.state_details.flow_run_id = tr.id, tr.flow_run_id
        if state.is_running():
            tr.start_time, tr.run_count = state.timestamp, 1
        else:
            state.state_details.cache_key = plan.key
            tr.end_time = state.timestamp
        tr.state, tr.state_id, tr.state_type, tr.state_name = state, state.id, state.type, state.name
        event = emit_task_run_state_change_event(task_run=tr, initial_state=last_state, validated_state=state,
                                                 follows=event)
        last_state = state
    return str(tr.id)


def _known_result(plan: StepPlan) -> StepResult:
    """What a step the plan will reuse returns: its earlier outputs (known before it is dispatched)."""
    rec = plan.record
    return StepResult(step=rec["step"], key=plan.key, out_key=rec.get("out_key", plan.key), outputs=rec["outputs"],
                      task_run_id=rec["task_run_id"], pipeline_run_id=rec["pipeline_run_id"])


def _result(future) -> StepResult:
    """A finished step task's return value: read from its state when the value is held in memory (a
    `future.result()` hands the read to Prefect's event loop thread and waits for it, ~1 ms per step while
    that thread sends the run's events and logs); otherwise, and for failures, as `future.result()` does."""
    future.wait()  # done already (as_completed): this records its final state on the future
    state = future.state
    value = state.data.result if state.is_completed() and isinstance(state.data, ResultRecord) else future.result()
    return StepResult.model_validate(value)  # a cache record of an earlier version holds a plain dict


def _graph_artifact(spec: PipelineSpec, run_id: str) -> None:
    MarkdownArtifact(markdown=f"```mermaid\n{spec.mermaid()}\n```", key=GRAPH_ARTIFACT,
                     description="The pipeline's steps and the data between them",
                     flow_run_id=run_id).create(_sync=True)


def _was_cancelled(run_id: str) -> bool:
    with get_client(sync_client=True) as client:
        return client.read_flow_run(run_id).state_type in (StateType.CANCELLING, StateType.CANCELLED)


class _Dispatch:
    """The steps of one run as they become ready: skipped, recorded as hits, or submitted and settled."""

    def __init__(self, spec: PipelineSpec, plans: dict[str, StepPlan], ctx: RunContext, storage, clusters,
                 continue_on_step_failure: bool, logger):
        self.spec, self.plans, self.ctx, self.clusters, self.logger = spec, plans, ctx, clusters, logger
        self.storage = storage
        self.continue_on_step_failure = continue_on_step_failure
        self.ws = ctx.ws()
        self.sorter = TopologicalSorter({s.name: s.upstream() for s in spec.steps})
        self.sorter.prepare()
        self.results: dict[str, StepResult] = {}
        self.failed: dict[str, str] = {}
        self.skipped: list[str] = []
        self.in_flight: dict[Any, str] = {}
        self.held: dict[str, deque] = defaultdict(deque)  # per Dask compute: ready steps waiting for a free slot
        self.on_dask: dict[str, str] = {}  # steps sent to a Dask compute -> its name
        self.recorded: set[str] = set()  # hits the plan resolved, recorded as Cached task runs without dispatch
        self.reused: dict[str, dict] = {}  # their records, written once at the end
        self._tasks: dict[str, Any] = {}

    def task_for(self, kind: str):
        """The step task configured for `kind` (always / hit / run), once per run (with_options costs ~5-20 ms).
        Planned hits skip the lock: the plan has just seen their record (at worst a step runs twice)."""
        if kind not in self._tasks:
            opts: dict[str, Any] = {"name": STEP_FLOW, "task_run_name": "{step[name]}"}
            if kind == "always":
                opts.update(persist_result=False, cache_policy=NO_CACHE)
            else:
                policy = StepCachePolicy() if kind == "hit" else StepCachePolicy().configure(
                    lock_manager=lock_manager_for(self.ctx.default_store, self.ws.home, self.ws.redis_url),
                    isolation_level="SERIALIZABLE")
                opts.update(cache_policy=policy, result_storage=self.storage.result(),
                            refresh_cache=self.ctx.regenerate_outputs)
            self._tasks[kind] = run_step.with_options(**opts)
        return self._tasks[kind]

    def run(self) -> None:
        """Until every step has finished, failed or been skipped."""
        graph = None  # created once the first steps are dispatched, while they run (not before: ~8 ms later start)
        while self.sorter.is_active():
            for name in self.sorter.get_ready():
                self._ready(name)
            self._release_held()
            graph = graph or _in_thread(_graph_artifact, self.spec, self.ctx.run_id)
            if not self.in_flight:
                continue
            future = next(as_completed(list(self.in_flight)))
            name = self.in_flight.pop(future)
            self.on_dask.pop(name, None)
            self._settle(name, future)
            self.sorter.done(name)
        try:
            (graph or _in_thread(_graph_artifact, self.spec, self.ctx.run_id)).result()
        except Exception as err:  # the graph is for people: a failure to show it does not fail the run
            self.logger.warning(f"The pipeline graph artifact could not be created: {err}")

    def _skip(self, name: str, why: str) -> None:
        self.logger.warning(f"Step {name!r} does not run: {why}")
        self.skipped.append(name)
        self.sorter.done(name)

    def _ready(self, name: str) -> None:
        step, plan = self.spec.step(name), self.plans[name]
        ups = step.upstream()
        blocked = [u for u in ups if u in self.failed or u in self.skipped]
        if blocked or (self.failed and not self.continue_on_step_failure):
            self._skip(name, f"upstream step(s) {blocked} did not finish" if blocked else "an earlier step failed")
            return
        task = self.task_for("always" if not step.allow_reuse else "hit" if plan.will_reuse else "run")
        if plan.will_reuse and all(u in self.recorded for u in ups):  # a Cached task run at once, nothing sent
            self.results[name] = _known_result(plan)
            self._reused(name, _record_hit(task, name, plan))
            self._register_outputs(name)
            self.recorded.add(name)
            self.sorter.done(name)
            return
        # quoted: plain data without futures, so Prefect need not walk it (twice) per step
        parameters = {"step": quote(step.model_dump()), "plan": quote(plan.for_dispatch()), "ctx": quote(self.ctx),
                      "upstream": quote({u: self.results[u] for u in ups})}
        if (step.compute or {}).get("type") == "DaskCompute" and not plan.will_reuse:
            self.held[step.compute["name"]].append((name, task, parameters))  # a hit is never sent to the cluster
        else:
            self.in_flight[task.submit(**parameters)] = name

    def _release_held(self) -> None:
        """Steps waiting for a Dask compute: sent while its cluster has a free slot."""
        for queue in self.held.values():
            while queue:
                name, task, parameters = queue[0]
                compute = self.spec.step(name).compute
                if sum(c == compute["name"] for c in self.on_dask.values()) >= self.clusters.capacity(compute):
                    break
                queue.popleft()
                if self.failed and not self.continue_on_step_failure:
                    self._skip(name, "an earlier step failed")
                    continue
                self.in_flight[task.submit(**parameters)] = name
                self.on_dask[name] = compute["name"]

    def _settle(self, name: str, future) -> None:
        try:
            self.results[name] = _result(future)
        except Exception as err:  # the step's own error, with its stderr tail
            self.failed[name] = str(err)
            self.results.pop(name, None)
            return
        self._register_outputs(name)
        if future.state.name == "Cached":
            plan = self.plans[name]
            if plan.record is None:  # a hit the plan did not foresee (another run just made it)
                plan.record = read_json(self.ctx.default_store, reuse_record_path(plan.key))
            self._reused(name, str(future.task_run_id))

    def _reused(self, name: str, task_run_id: str) -> None:
        """A reused step's record in this run: the producing run's metrics and outputs, and a link to it."""
        plan, result = self.plans[name], self.results[name]
        link = f" ({self.ctx.ui_url}/runs/task-run/{result.task_run_id})" if self.ctx.ui_url else ""
        self.logger.info(f"Step {name!r} reused the outputs of task run {result.task_run_id}{link} "
                         f"from pipeline run {result.pipeline_run_id}.")
        self.reused[name] = {**(plan.record or {}), "reused": True, "status": "Finished", "task_run_id": task_run_id,
                             "pipeline_run_id": self.ctx.run_id, "reused_from": result.task_run_id,
                             "reused_from_pipeline_run": result.pipeline_run_id,
                             "outputs": {k: v.model_dump() for k, v in result.outputs.items()},
                             "explanation": plan.explanation}

    def _register_outputs(self, name: str) -> None:
        """Register the outputs a step asked for (`register_on_complete`): a new version when their data changed."""
        step = self.spec.step(name)
        try:
            for out in step.outputs:
                reg = out.register_as
                if not reg:
                    continue
                loc = self.results[name].outputs[out.name]
                dataset = output_dataset(Datastore.get(self.ws, loc.datastore), loc.path, reg.get("tabular"))
                version = dataset.register(self.ws, reg["name"], description=reg.get("description"),
                                           tags=reg.get("tags"), create_new_version=True)
                self.logger.info(f"Step {name!r}: output {out.name!r} is dataset {reg['name']!r} version "
                                 f"{version.version}")
        except Exception as err:  # the data is there, but the run did not do all it was asked
            self.failed[name] = f"Step {name!r} finished but registering its output failed: {err}"

    def record_reused(self) -> None:
        """The reused steps' records (one file for the run) and their metrics in the run's artifacts."""
        if not self.reused:
            return
        write_json(self.ctx.default_store, reused_path(self.ctx.run_id), self.reused)
        for name, record in self.reused.items():
            publish_metrics(name, record.get("metrics", {}))

    def outcome(self) -> dict[str, Any]:
        """The run's return value, or its failure (Cancelled when its steps failed because it was cancelled)."""
        if not self.failed:
            return {name: {"key": r.key, "outputs": {k: v.model_dump() for k, v in r.outputs.items()}}
                    for name, r in self.results.items()}
        if _was_cancelled(self.ctx.run_id):
            return Cancelled(message="The pipeline run was canceled.")
        first = next(iter(self.failed))
        raise StepFailedError(
            f"Pipeline failed: {len(self.failed)} step(s) failed {sorted(self.failed)}"
            + (f", {len(self.skipped)} did not run {self.skipped}" if self.skipped else "")
            + f".\n{self.failed[first]}")


@flow(name=PIPELINE_FLOW, task_runner=ThreadPoolTaskRunner(max_workers=32), persist_result=False,
      validate_parameters=False)
def aml_pipeline(spec_path: str, parameters: dict, experiment_name: str, workspace: dict, default_datastore: str,
                 regenerate_outputs: bool = False, continue_on_step_failure: bool = False) -> dict[str, Any]:
    logger = get_run_logger()
    run_id = str(get_run_context().flow_run.id)
    start = _PREPARED.pop(run_id, None) or _Start(run_id, {
        "spec_path": spec_path, "parameters": parameters, "experiment_name": experiment_name,
        "workspace": workspace, "default_datastore": default_datastore, "regenerate_outputs": regenerate_outputs})
    spec: PipelineSpec = start.spec.result()
    clusters = DaskClusters(run_id)
    try:
        plans = _plan(spec, start.ctx, clusters)
        logger.info("Plan:\n" + "\n".join(f"  step {name}: {plan.explanation}" for name, plan in plans.items()))
        run = _Dispatch(spec, plans, start.ctx, start.storage, clusters, continue_on_step_failure, logger)
        run.run()
    finally:
        clusters.close()
        wait_for_scratch_removal()  # a run that is over has left no scratch folders behind
    run.record_reused()
    return run.outcome()
