"""The embedded default: a local Prefect server on SQLite, started once and reused across commands.

The server runs in the background (its own session, so it outlives the command that started
it) with its state under ``$PREFECT_AML_HOME/prefect``. ``prefect-aml server stop`` stops it.
"""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from prefect_aml._home import aml_home
from prefect_aml.exceptions import WorkspaceException

DEFAULT_PORT = 4207
STARTUP_TIMEOUT_S = 180


def _port() -> int:
    return int(os.environ.get("PREFECT_AML_SERVER_PORT") or DEFAULT_PORT)


def server_url(port: int | None = None) -> str:
    return f"http://127.0.0.1:{port or _port()}/api"


def is_healthy(api_url: str, timeout: float = 2.0) -> bool:
    try:
        return httpx.get(f"{api_url}/health", timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def _paths(home: Path) -> tuple[Path, Path, Path]:
    state = home / "prefect"
    return state, state / "aml-server.pid", state / "aml-server.log"


def ensure_server(home: Path | None = None) -> str:
    """Return the URL of the embedded server, starting it if it is not answering."""
    home = home or aml_home()
    url = server_url()
    if is_healthy(url):
        return url
    state, pid_file, log_file = _paths(home)
    state.mkdir(parents=True, exist_ok=True)
    with open(state / "aml-server.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one starter at a time; the others wait, then find it healthy
        if is_healthy(url):
            return url
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API_")}
        env.update(
            PREFECT_HOME=str(state),
            PREFECT_SERVER_ANALYTICS_ENABLED="false",
            PREFECT_API_DATABASE_CONNECTION_URL=f"sqlite+aiosqlite:///{state / 'prefect.db'}",
            PREFECT_SERVER_API_HOST="127.0.0.1",
            PREFECT_SERVER_API_PORT=str(_port()),
            PREFECT_UI_API_URL=url,
        )
        with open(log_file, "ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(_port())],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True,
            )
        pid_file.write_text(str(proc.pid))
        print(f"prefect-aml: starting the local Prefect server on {url} (state in {state}) ...", file=sys.stderr)
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                tail = log_file.read_text(errors="replace")[-2000:]
                raise WorkspaceException(
                    f"The local Prefect server exited with code {proc.returncode} before answering on {url}. "
                    f"Is port {_port()} taken? Set PREFECT_AML_SERVER_PORT to another port. Log tail:\n{tail}"
                )
            if is_healthy(url):
                return url
            time.sleep(0.5)
        raise WorkspaceException(
            f"The local Prefect server did not answer on {url} within {STARTUP_TIMEOUT_S} s; see {log_file}."
        )


def stop_server(home: Path | None = None) -> bool:
    """Stop the embedded server started from this home; True if one was running."""
    _, pid_file, _ = _paths(home or aml_home())
    if not pid_file.exists():
        return False
    pid = int(pid_file.read_text())
    pid_file.unlink()
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    for _ in range(100):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    os.killpg(pid, signal.SIGKILL)
    return True
