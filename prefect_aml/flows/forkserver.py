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

    python -m prefect_aml.flows.forkserver <address without its leading NUL>
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import signal
import socket
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
    import prefect

    import prefect_aml

    exe = os.path.normpath(os.path.abspath(sys.executable))  # `../../.venv/bin/python` and `.venv/bin/python` alike
    h = hashlib.sha256(f"{exe}\0{sys.prefix}\0{os.getuid()}\0{prefect.__version__}".encode())
    for p in sorted(Path(prefect_aml.__file__).parent.rglob("*.py")):
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


def start_run(flow_run_id: str, log_path: str | os.PathLike) -> socket.socket | None:
    """Hand a flow run to the warm runner. The connection is returned open: the runner writes a line on it
    when the run has ended, and it closes when the runner exits. None when no warm runner is serving
    (one is started for later runs)."""
    if not enabled():
        return None
    addr = address()
    s = _send(addr, {"flow_run_id": flow_run_id, "env": dict(os.environ), "cwd": os.getcwd(),
                     "log": str(log_path)}, 10.0)
    if s is None:
        import subprocess

        subprocess.Popen([sys.executable, "-m", "prefect_aml.flows.forkserver", addr.lstrip("\0")],
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


def _child(request: dict, conn: socket.socket) -> None:
    """In the forked child: become the runner of one flow run, say on `conn` that it has ended, exit."""
    code = 1
    try:
        os.setsid()
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # the server's SIG_IGN would hide the steps' exit codes
        fd = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        import tempfile

        from prefect.context import refresh_global_settings_context

        tempfile.tempdir = None  # TMPDIR as the submitter has it
        refresh_global_settings_context()
        from prefect_aml.flows import runner

        code = runner.main(request["flow_run_id"], on_end=functools.partial(_tell_ended, conn))
    except BaseException:  # noqa: BLE001 - whatever happens, this process must not return into the server loop
        import traceback

        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            _tell_ended(conn)  # if the run ended otherwise (its final state never recorded here)
            os._exit(code)


def _tell_ended(conn: socket.socket) -> None:
    """Say on the submitter's connection that the run has ended (once): waiting for it then asks the server."""
    if conn.fileno() < 0:
        return
    try:
        conn.sendall(b'{"ended": true}\n')
    except OSError:  # the submitter is gone
        pass
    conn.close()


def serve(addr: str) -> int:
    import threading

    import prefect_aml.deployments.published  # noqa: F401 - what a runner loads to find its flow
    import prefect_aml.flows.pipeline  # noqa: F401
    from prefect_aml.flows import runner

    runner.warm_up(dask=True)
    if threading.active_count() != 1:  # forking a process with threads is not safe: let runs start the plain way
        return 1
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        server.bind(addr)
    except OSError:  # another server holds this address
        return 0
    server.listen(64)
    server.settimeout(IDLE_SECONDS)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel
    while True:
        try:
            conn, _ = server.accept()
        except TimeoutError:
            return 0
        with conn:
            try:
                conn.settimeout(10)
                request = json.loads(conn.makefile("rb").readline())
            except (OSError, ValueError):
                continue
            if request.get("stop"):
                conn.sendall(b"{}\n")
                return 0
            if request.get("ping"):
                conn.sendall(json.dumps({"pid": os.getpid()}).encode() + b"\n")
                continue
            pid = os.fork()
            if pid == 0:
                server.close()
                _child(request, conn)
            try:
                conn.sendall(json.dumps({"pid": pid}).encode() + b"\n")
            except OSError:
                pass


if __name__ == "__main__":
    sys.exit(serve("\0" + sys.argv[1]))
