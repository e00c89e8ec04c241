"""The worker `prefect-aml worker start` runs: Prefect's process worker, with prefect-aml's flows run warm.

A plain process worker starts a new Python process for every flow run (several seconds before the
step's own script starts: interpreter, Prefect, prefect-aml, the deployment). Step runs
(`aml-step/<pool>`) and pipeline runs (`aml-pipeline/<pool>`) need none of that isolation, since
every step's script is a subprocess of its own anyway: this worker runs them in threads of its
already-warm process. Any other flow run on the pool is run exactly as Prefect's process worker
runs it. The pool stays of type `process`, so
`prefect worker start --pool <compute>` works too (with the per-run start-up cost).
"""

from __future__ import annotations

import os
import signal
import threading
from contextlib import nullcontext
from typing import Any

import anyio
from prefect.client.orchestration import get_client
from prefect.flow_engine import run_flow
from prefect.workers.process import ProcessWorker, ProcessWorkerResult

from prefect_aml.flows.cancel import watch_for_cancel
from prefect_aml.flows.pipeline import aml_pipeline, prepared
from prefect_aml.flows.published import flow_for_run
from prefect_aml.flows.step import aml_step
from prefect_aml.names import PIPELINE_TAG, PUBLISHED_TAG, STEP_FLOW, STEP_TAG

_MARK = "aml-step-thread:"


class AmlProcessWorker(ProcessWorker):
    """A process worker that runs prefect-aml step flow runs in-process (threads)."""

    type = "process"

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._active: dict[str, Any] = {}

    async def run(self, flow_run, configuration, task_status=None) -> ProcessWorkerResult:
        fn = self._own_flow(flow_run)
        if fn is None:
            return await super().run(flow_run, configuration, task_status)
        if task_status is not None:
            task_status.started(f"{_MARK}{flow_run.id}")
        if fn.name != STEP_FLOW:
            # a pipeline flow only orchestrates: it does not hold one of this worker's slots (`--limit`),
            # so a one-slot worker can run the steps it sends to its own pool
            self._release_limit_slot(flow_run.id)
        code = await anyio.to_thread.run_sync(self._run_warm, fn, flow_run, abandon_on_cancel=True)
        return ProcessWorkerResult(status_code=code, identifier=f"{_MARK}{flow_run.id}")

    @staticmethod
    def _own_flow(flow_run):
        """prefect-aml's step and pipeline flows run warm; everything else as Prefect runs it."""
        tags, params = set(flow_run.tags or []), flow_run.parameters or {}
        if STEP_TAG in tags and "task_run_id" in params:
            return aml_step
        if PIPELINE_TAG in tags and "spec_path" in params:
            return aml_pipeline
        if PIPELINE_TAG in tags and any(t.startswith(PUBLISHED_TAG) for t in tags):
            try:
                return flow_for_run(flow_run)
            except AttributeError:  # its record is gone: Prefect's own path reports it
                return None
        return None

    def _run_warm(self, fn, flow_run) -> int:
        done = threading.Event()
        if fn.name != STEP_FLOW:  # the step flow watches for its own cancellation
            threading.Thread(target=watch_for_cancel, args=(flow_run.id, done, True), daemon=True).start()
        try:
            with prepared(flow_run) if fn is aml_pipeline else nullcontext():
                state = run_flow(fn, flow_run=flow_run, parameters=flow_run.parameters, return_type="state")
        finally:
            done.set()
        # a failed run is a finished run (its state says why); a non-zero code would mark it Crashed
        return 0 if state.is_final() else 1


def _leave_pool_on_signal(pool: str, worker: AmlProcessWorker) -> None:
    """On SIGTERM or SIGINT the worker leaves its pool at once, then exits (as the default action would).

    Without that a stopped worker reads "online" until its heartbeat ages out, and runs sent to the
    pool meanwhile (a published pipeline's `submit`, a step) would wait for it."""
    def leave(signum, _frame) -> None:
        try:
            with get_client(sync_client=True) as client:
                client._client.delete(f"/work_pools/{pool}/workers/{worker.name}", timeout=3)
        except Exception:  # the API is gone too: nothing to tell it
            pass
        os._exit(128 + signum)

    signal.signal(signal.SIGTERM, leave)
    signal.signal(signal.SIGINT, leave)


async def serve(pool: str, name: str | None, limit: int) -> None:
    async with AmlProcessWorker(work_pool_name=pool, name=name, limit=limit) as worker:
        _leave_pool_on_signal(pool, worker)
        await worker.start(with_healthcheck=False, printer=print)
