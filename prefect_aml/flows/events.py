"""Waiting on a run without asking the server over and over: Prefect's events stream says when it changes.

`RunEvents(flow_run_id)` subscribes, in a thread of its own, to the state changes of a flow run and of
everything that names it (its task runs, its subflow runs). A waiter calls `wait(timeout)`, which
returns as soon as something changed, and then reads the run from the server once. While the stream
cannot be reached or has dropped, `ok` is False and the waiter polls as it would without it.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading

from prefect.events.clients import get_events_subscriber
from prefect.events.filters import EventAnyResourceFilter, EventFilter, EventNameFilter

CONNECT_TIMEOUT_S = 5.0
CHECK_S = 5.0  # a waiter asks the server at least this often, even when it hears nothing


class RunEvents:
    """The state changes of flow run `flow_run_id` and of the runs that name it, while open (a context manager)."""

    def __init__(self, flow_run_id, connect_timeout: float = CONNECT_TIMEOUT_S):
        self.flow_run_id = str(flow_run_id)
        self.ok = False
        self._changed = threading.Event()
        self._ready = threading.Event()
        self._stop = threading.Event()
        # with this context: a workspace's Prefect settings (`with ws.prefect():`) reach the subscriber
        threading.Thread(target=contextvars.copy_context().run, args=(self._run,), daemon=True,
                         name="aml-run-events").start()
        self._ready.wait(connect_timeout)

    def wait(self, timeout: float) -> bool:
        """Block until a state change (True) or `timeout` (False); a stream that drops meanwhile also wakes it
        (then `ok` is False). The caller reads the run after this returns: a change that comes in meanwhile wakes
        the next wait."""
        changed = self._changed.wait(max(0.0, timeout))
        self._changed.clear()
        return changed

    def close(self) -> None:
        self._stop.set()

    def __enter__(self) -> RunEvents:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _run(self) -> None:
        try:
            asyncio.run(self._listen())
        except Exception:  # unreachable, refused or dropped: the waiter polls
            pass
        finally:
            self.ok = False
            self._ready.set()
            self._changed.set()

    async def _listen(self) -> None:
        about_this_run = EventFilter(
            event=EventNameFilter(prefix=["prefect.flow-run.", "prefect.task-run."]),
            any_resource=EventAnyResourceFilter(id=[f"prefect.flow-run.{self.flow_run_id}"]))
        async with get_events_subscriber(filter=about_this_run, reconnection_attempts=0) as subscriber:

            async def consume() -> None:
                async for _ in subscriber:
                    self._changed.set()

            consumer = asyncio.create_task(consume())
            self.ok = True
            self._ready.set()
            while not (self._stop.is_set() or consumer.done()):
                await asyncio.sleep(0.1)
            consumer.cancel()
            await asyncio.gather(consumer, return_exceptions=True)
