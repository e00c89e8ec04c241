"""The warm runner's server: imports what a pipeline run needs once, then forks a runner for each run.

Started by `flows/forkserver.py::start_run` (the client side, which says how it is found and when it
exits) as `python -m prefect_aml.flows.runner_server <address without its leading NUL>`.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import socket
import sys
import tempfile
import threading
import traceback

from prefect.context import refresh_global_settings_context

from prefect_aml.flows import runner
from prefect_aml.flows.forkserver import IDLE_SECONDS


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
        tempfile.tempdir = None  # TMPDIR as the submitter has it
        refresh_global_settings_context()
        code = runner.main(request["flow_run_id"], on_end=functools.partial(_tell_ended, conn))
    except BaseException:  # noqa: BLE001 - whatever happens, this process must not return into the server loop
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
