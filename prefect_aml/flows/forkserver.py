"""A warm runner: one long-lived process that has imported what a pipeline run needs and forks a
runner for each submitted run (Linux).

A runner started as a new process spends ~2.5 s importing Prefect before its run can start; a child
forked from this process starts at once. Clients find the server by an abstract Unix socket named
after the interpreter (its path and environment), the user, Prefect's version and logging settings
and a fingerprint of prefect-aml's files, so changed code gets a server of its own. The first submit starts one (its own
run starts the plain way); the server exits after IDLE_SECONDS without a request, or when `stop()`
asks. Each child takes the submitting process's environment and working directory and writes to the
run's log file. Off with PREFECT_AML_FORKSERVER=0; where fork or abstract sockets are missing
(not Linux), runs start the plain way.

This module is the client side (`start_run`, `serving`, `stop`); the server is
`python -m prefect_aml.flows.runner_server <address without its leading NUL>`.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

IDLE_SECONDS = 900


def enabled() -> bool:
    return sys.platform.startswith("linux") and os.environ.get("PREFECT_AML_FORKSERVER", "1") != "0"


def address() -> str:
    """The abstract socket name of the server for this interpreter, user, logging settings and code."""
    h = hashlib.sha256(_code_fingerprint().encode())
    for k in sorted(os.environ):
        if k.startswith("PREFECT_LOGGING_"):  # Prefect configures logging once, at import
            h.update(f"{k}={os.environ[k]}\0".encode())
    return "\0prefect-aml-runner-" + h.hexdigest()[:24]


@functools.cache
def _code_fingerprint() -> str:
    """The interpreter, user and code this process runs: computed once (it loaded that code once)."""
    exe = os.path.normpath(os.path.abspath(sys.executable))  # `../../.venv/bin/python` and `.venv/bin/python` alike
    h = hashlib.sha256(f"{exe}\0{sys.prefix}\0{os.getuid()}\0{importlib.metadata.version('prefect')}".encode())
    for p in sorted(Path(__file__).resolve().parents[1].rglob("*.py")):
        st = p.stat()
        h.update(f"{p}\0{st.st_mtime_ns}\0{st.st_size}\0".encode())
    return h.hexdigest()


def _send(addr: str, message: dict, timeout: float) -> socket.socket | None:
    """Connect and send one request; None when no server answers at `addr` (nothing was asked of it then)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(addr)
        s.sendall(json.dumps(message).encode() + b"\n")
    except OSError:
        s.close()
        return None
    return s


def _reply(s: socket.socket) -> dict:
    """The server's one-line answer, read up to its end and no further ({} when it closed without one)."""
    line = b""
    try:
        while not line.endswith(b"\n"):
            byte = s.recv(1)
            if not byte:
                break
            line += byte
    except OSError:
        pass
    return json.loads(line) if line.strip() else {}


def _request(addr: str, message: dict, timeout: float = 10.0) -> dict | None:
    """Send one request and read its answer; None when no server answers at `addr`."""
    s = _send(addr, message, timeout)
    if s is None:
        return None
    with s:
        return _reply(s)


def start_run(flow_run_id: str, log_path: str | os.PathLike, env: dict[str, str]) -> socket.socket | None:
    """Hand a flow run to the warm runner, to run with environment `env`. The connection is returned open: the
    runner writes a line on it when the run has ended, and it closes when the runner exits. None when no warm
    runner is serving (one is started for later runs)."""
    if not enabled():
        return None
    addr = address()
    s = _send(addr, {"flow_run_id": flow_run_id, "env": env, "cwd": os.getcwd(), "log": str(log_path)}, 10.0)
    if s is None:
        subprocess.Popen([sys.executable, "-m", "prefect_aml.flows.runner_server", addr.lstrip("\0")],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True, cwd="/")
        return None
    _reply(s)  # the runner's pid: the request was read whole and a runner forked for it
    return s


def serving() -> int | None:
    """The warm runner's process id, or None when none serves this interpreter and code."""
    reply = _request(address(), {"ping": True}, timeout=5.0) if enabled() else None
    return reply.get("pid") if reply else None


def stop() -> bool:
    """Stop the warm runner of this interpreter and code (runs it already started go on)."""
    return enabled() and _request(address(), {"stop": True}, timeout=5.0) is not None
