"""Starting a flow run's runner here, in the background, and hearing when it has ended.

The runner is forked from the warm runner when one is serving (`flows/forkserver.py`), else started as
`python -m prefect_aml.flows.runner <flow-run-id>`, with the workspace's Prefect API in its environment.
"""

from __future__ import annotations

import select
import subprocess
import sys
from collections import deque

from prefect_aml.flows import forkserver


class LocalRunner:
    """The runner process started here for one flow run: says when it has ended, so that waiting for the run
    asks the server once at the end rather than every 0.1 s (each question costs the server ~5-15 ms of CPU,
    taken from the run it is asked about on a small machine)."""

    MAX_OPEN = 64  # connections to the warm runner kept open in one process; older runs' waits ask the server
    _open: deque[LocalRunner] = deque()

    def __init__(self, sock=None, proc: subprocess.Popen | None = None):
        self._sock = sock
        self._proc = proc
        if sock is not None:
            LocalRunner._open.append(self)
            while len(LocalRunner._open) > self.MAX_OPEN:
                LocalRunner._open.popleft().close()

    def wait(self, timeout: float) -> bool:
        """Up to `timeout` seconds: True once the runner has ended (or can no longer tell): ask the server."""
        if self._proc is not None:
            try:
                self._proc.wait(max(timeout, 0))
            except subprocess.TimeoutExpired:
                return False
            self._proc = None
            return True
        sock = self._sock
        if sock is None:
            return True
        try:
            if not select.select([sock], [], [], max(timeout, 0))[0]:
                return False
        except (OSError, ValueError):  # closed meanwhile (another thread waiting for the same run)
            pass
        self.close()  # a line (the run has ended) or the connection closed (the runner exited)
        return True

    def close(self) -> None:
        """Stop listening to the runner (it goes on): waiting for its run asks the server."""
        self._proc = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None
            try:
                LocalRunner._open.remove(self)
            except ValueError:
                pass


def start_runner(ws, flow_run_id: str) -> LocalRunner:
    """Run flow run `flow_run_id` in the background on this machine, talking to `ws`'s Prefect API."""
    logs = ws.home / "runs"
    logs.mkdir(parents=True, exist_ok=True)
    env = ws.process_env()
    sock = forkserver.start_run(flow_run_id, logs / f"{flow_run_id}.log", env)
    if sock is not None:  # forked from a warm runner
        return LocalRunner(sock=sock)
    with open(logs / f"{flow_run_id}.log", "ab") as out:
        return LocalRunner(proc=subprocess.Popen(
            [sys.executable, "-m", "prefect_aml.flows.runner", flow_run_id], stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True, env=env))
