"""Runs one pipeline flow run in this process: `python -m prefect_aml.flows.runner <flow-run-id>`.

`Experiment.submit` creates the flow run and starts this runner in the background, so the
submitting process returns at once. A watcher thread follows the flow run's state: when the run
is cancelled (`PipelineRun.cancel()`, the Prefect UI or CLI) it stops the step processes and
marks the run and its running steps Cancelled.
"""

from __future__ import annotations

import os
import sys
import threading
from contextlib import nullcontext
from uuid import UUID


def watch_for_cancel(flow_run_id: UUID, done: threading.Event, in_thread: bool = False) -> None:
    """Until `done`: when the run (a pipeline run, or a step's flow run on a work pool) is cancelled, cancel
    its unfinished steps and stop their scripts.

    The run's Cancelling event is subscribed to on Prefect's events stream (polling its state every second
    while the stream is unavailable), from a second after the run started: a run that ends sooner costs the
    server nothing. In a runner process of its own the process then exits; in a worker's thread only this
    run's scripts are stopped (its steps then fail, and no new step starts)."""
    import asyncio

    from prefect._internal.observers import FlowRunCancellingObserver
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.objects import StateType
    from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter

    cancelling, unavailable = threading.Event(), threading.Event()
    only_this_run = EventFilter(event=EventNameFilter(name=["prefect.flow-run.Cancelling"]),
                                resource=EventResourceFilter(id=[f"prefect.flow-run.{flow_run_id}"]))

    async def observe() -> None:
        async with FlowRunCancellingObserver(lambda _: cancelling.set(), polling_interval=1.0,
                                             event_filter=only_this_run, on_failure=lambda _: unavailable.set()
                                             ) as observer:
            observer.add_in_flight_flow_run_id(flow_run_id)
            # cancelled before the subscription began (its event may not be stored for the stream's backfill yet)
            async with get_client() as client:
                if (await client.read_flow_run(flow_run_id)).state_type == StateType.CANCELLING:
                    cancelling.set()
            while not (done.is_set() or cancelling.is_set() or unavailable.is_set()):
                await asyncio.sleep(0.1)

    while not done.wait(1.0):  # and after the API did not answer, a second later again
        unavailable.clear()
        try:
            asyncio.run(observe())
        except Exception:
            continue
        if cancelling.is_set() and not done.is_set():
            _cancel_run(flow_run_id, in_thread)
            return


def _cancel_run(flow_run_id: UUID, in_thread: bool) -> None:
    """Mark the cancelled run's unfinished steps (task runs, and flow runs on work pools) and the run Cancelled,
    then stop its scripts."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, FlowRunFilterParentFlowRunId
    from prefect.states import Cancelled, Cancelling, StateType

    from prefect_aml.tasks.step import terminate_active_steps

    with get_client(sync_client=True) as client:
        flt = FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        active = (StateType.RUNNING, StateType.PENDING, StateType.SCHEDULED)
        for tr in client.read_task_runs(flow_run_filter=flt):
            if tr.state_type in active:
                client.set_task_run_state(tr.id, Cancelled(message="The pipeline run was canceled."), force=True)
        # steps sent to work pools: their workers stop them when they see Cancelling
        children = FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[flow_run_id]))
        for fr in client.read_flow_runs(flow_run_filter=children):
            if fr.state_type in active:
                state = Cancelling if fr.state_type == StateType.RUNNING else Cancelled
                client.set_flow_run_state(fr.id, state(message="The pipeline run was canceled."), force=True)
        client.set_flow_run_state(flow_run_id, Cancelled(message="The pipeline run was canceled."), force=True)
    if in_thread:
        terminate_active_steps(str(flow_run_id))
        return
    terminate_active_steps()  # after the states are set, so the engine cannot record a failure first
    os._exit(0)


# what a pipeline run imports on its way; imported before the run starts (as a worker loads a flow
# before running it), so a fresh runner's first steps do not pay for them inside the run
WARM_MODULES = (
    "anyio._backends._asyncio", "zipfile", "prefect.flow_engine", "prefect.task_engine", "prefect.utilities.visualization",
    "prefect.concurrency.sync", "prefect.locking.filesystem", "prefect.artifacts",
    "prefect_aml.flows.submit", "prefect_aml.tasks.step", "prefect_aml.tasks.snapshots", "prefect_aml.tasks.locks",
    "prefect_aml._transfer", "prefect_aml._azureml", "prefect_aml._embedded", "encodings.cp437",
)


# what a run on a Dask compute adds (~0.5 s): imported by the long-lived warm runner only, since a
# plain runner process would pay for them on every run, Dask or not
DASK_MODULES = ("distributed", "prefect_dask.task_runners")


def warm_up(dask: bool = False) -> None:
    import gc
    import importlib

    from prefect_aml import _tls

    for name in WARM_MODULES + (DASK_MODULES if dask else ()):
        importlib.import_module(name)
    _tls.warm()
    gc.freeze()  # the modules' objects live as long as the process: keep them out of every collection


def _start_services() -> None:
    """What a run's first state change and log line would otherwise wait for.

    Prefect's event and log services (a websocket and a client each) start now, while the run is read
    and set up, not when it emits its first event. This process's console is a log file (the runner's
    log): its lines are written as plain text, not through rich's console renderer (~1-2 ms of CPU
    per line, as much as Prefect spends on a task run)."""
    import logging

    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker, PrefectConsoleHandler

    EventsWorker.instance()
    APILogWorker.instance()
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, PrefectConsoleHandler):
            plain = logging.StreamHandler(handler.stream)
            plain.setLevel(handler.level)
            plain.setFormatter(handler.formatter)
            for f in handler.filters:
                plain.addFilter(f)
            root.removeHandler(handler)
            root.addHandler(plain)


def _with_end_hook(fn, on_end):
    """`fn` with `on_end` called once its run's final state is recorded (before Prefect's engine winds down,
    which can take another second: the heartbeat thread is joined)."""
    import copy

    def tell_submitter(flow, flow_run, state) -> None:
        on_end()

    fn = copy.copy(fn)
    for hooks in ("on_completion_hooks", "on_failure_hooks", "on_crashed_hooks"):
        setattr(fn, hooks, [*(getattr(fn, hooks, None) or []), tell_submitter])
    return fn


def main(flow_run_id: str, on_end=None) -> int:
    """Run flow run `flow_run_id` here; `on_end()` is called when its final state is recorded."""
    from prefect.client.orchestration import get_client
    from prefect.flow_engine import run_flow

    from prefect_aml.deployments.published import flow_for_run
    from prefect_aml.flows.pipeline import aml_pipeline, prepared

    warm_up()
    _start_services()
    run_id = UUID(flow_run_id)
    with get_client(sync_client=True) as client:
        flow_run = client.read_flow_run(run_id)
    fn = flow_for_run(flow_run) or aml_pipeline  # a published pipeline's run, or a submitted pipeline's
    done = threading.Event()
    threading.Thread(target=watch_for_cancel, args=(run_id, done), daemon=True).start()
    try:
        with prepared(flow_run) if fn is aml_pipeline else nullcontext():
            state = run_flow(fn if on_end is None else _with_end_hook(fn, on_end), flow_run=flow_run,
                             parameters=flow_run.parameters, return_type="state")
    finally:
        done.set()
    return 0 if state.is_completed() else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
