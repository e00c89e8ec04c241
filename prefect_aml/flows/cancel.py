"""Hearing that a run was cancelled, and stopping it: its steps marked Cancelled, its scripts stopped.

The run's Cancelling event is subscribed to on Prefect's events stream (polling its state every second
while the stream is unavailable), from a second after the run started: a run that ends sooner costs the
server nothing. Used by a pipeline run's runner, by a worker running a pipeline flow in a thread, and by
a step's flow run on a work pool.
"""

from __future__ import annotations

import asyncio
import os
import threading
from uuid import UUID

from prefect._internal.observers import FlowRunCancellingObserver
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, FlowRunFilterParentFlowRunId
from prefect.client.schemas.objects import StateType
from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter
from prefect.states import Cancelled, Cancelling

from prefect_aml.tasks.step import terminate_active_steps


def watch_for_cancel(flow_run_id: UUID, done: threading.Event, in_thread: bool = False) -> None:
    """Until `done`: when the run (a pipeline run, or a step's flow run on a work pool) is cancelled, cancel
    its unfinished steps and stop their scripts.

    The run's Cancelling event is subscribed to on Prefect's events stream (polling its state every second
    while the stream is unavailable), from a second after the run started: a run that ends sooner costs the
    server nothing. In a runner process of its own the process then exits; in a worker's thread only this
    run's scripts are stopped (its steps then fail, and no new step starts)."""
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
