"""Runs one pipeline flow run in this process: `python -m prefect_aml.flows.runner <flow-run-id>`.

`Experiment.submit` creates the flow run and starts this runner in the background, so the
submitting process returns at once. A watcher thread follows the flow run's state: when the run
is cancelled (`PipelineRun.cancel()`, the Prefect UI or CLI) it stops the step processes and
marks the run and its running steps Cancelled.
"""

from __future__ import annotations

import copy
import gc
import importlib
import logging
import sys
import threading
from contextlib import nullcontext
from uuid import UUID

from prefect.client.orchestration import get_client
from prefect.events.worker import EventsWorker
from prefect.flow_engine import run_flow
from prefect.logging.handlers import APILogWorker, PrefectConsoleHandler

from prefect_aml import _tls
from prefect_aml.flows.cancel import watch_for_cancel
from prefect_aml.flows.pipeline import aml_pipeline, prepared
from prefect_aml.flows.published import flow_for_run

# what a pipeline run imports on its way; imported before the run starts (as a worker loads a flow
# before running it), so a fresh runner's first steps do not pay for them inside the run
WARM_MODULES = (
    "anyio._backends._asyncio", "zipfile", "prefect.flow_engine", "prefect.task_engine", "prefect.utilities.visualization",
    "prefect.concurrency.sync", "prefect.locking.filesystem", "prefect.artifacts",
    "prefect_aml.tasks.step", "prefect_aml.tasks.snapshots", "prefect_aml.tasks.locks", "prefect_aml._transfer",
    "prefect_aml._azureml", "prefect_aml._embedded", "encodings.cp437",
)


# what a run on a Dask compute adds (~0.5 s): imported by the long-lived warm runner only, since a
# plain runner process would pay for them on every run, Dask or not
DASK_MODULES = ("distributed", "prefect_dask.task_runners")


def warm_up(dask: bool = False) -> None:
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
    def tell_submitter(flow, flow_run, state) -> None:
        on_end()

    fn = copy.copy(fn)
    for hooks in ("on_completion_hooks", "on_failure_hooks", "on_crashed_hooks"):
        setattr(fn, hooks, [*(getattr(fn, hooks, None) or []), tell_submitter])
    return fn


def main(flow_run_id: str, on_end=None) -> int:
    """Run flow run `flow_run_id` here; `on_end()` is called when its final state is recorded."""
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
