"""Processes the tests and benchmarks start on loopback: wait for health, fail clearly, stop by PID."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Service:
    """A process started by the tests: waits for health, fails clearly, stops by PID."""

    def __init__(self, name: str, state: Path, argv: list[str], health, env: dict | None = None,
                 timeout: float = 120, cwd: str | None = None):
        self.name = name
        self.log = state / f"{name}.log"
        self.proc = subprocess.Popen(argv, stdout=open(self.log, "wb"), stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=env or os.environ.copy(), start_new_session=True,
                                     cwd=cwd)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{name} exited with code {self.proc.returncode} while starting:\n"
                                   f"{self.log.read_text(errors='replace')[-3000:]}")
            try:
                if health():
                    return
            except Exception:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{name} did not become healthy within {timeout} s; log: {self.log}")
            time.sleep(0.3)

    def stop(self) -> None:
        if self.proc.poll() is None:
            for sig in (signal.SIGTERM, signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(self.proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    self.proc.wait(timeout=10)
                    break
                except subprocess.TimeoutExpired:
                    continue


def http_ok(url: str) -> bool:
    return httpx.get(url, timeout=2).status_code < 500


def psql(pg_url: str, sql: str) -> None:
    subprocess.run(["psql", f"{pg_url}/postgres", "-v", "ON_ERROR_STOP=1", "-qc", sql], check=True,
                   capture_output=True)


class PrefectServer:
    """`prefect server start` on a fresh PostgreSQL database; `stop()` ends it and drops the database."""

    def __init__(self, state: Path, pg_url: str):
        self.pg_url = pg_url
        self.db = f"prefect_aml_test_{uuid.uuid4().hex[:10]}"
        psql(pg_url, f"CREATE DATABASE {self.db}")
        self.state = state
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/api"
        self._start()

    def _start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API_")}
        env.update(
            PREFECT_HOME=str(self.state / "prefect-server"),
            PREFECT_API_DATABASE_CONNECTION_URL=(
                f"{self.pg_url.replace('postgresql://', 'postgresql+asyncpg://')}/{self.db}"),
            PREFECT_SERVER_ANALYTICS_ENABLED="false",
            PREFECT_UI_ENABLED="false",
        )
        argv = [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(self.port)]
        self.service = Service(f"prefect-server-{self.port}", self.state, argv,
                               lambda: http_ok(f"{self.url}/health"), env=env, timeout=180)

    def restart(self) -> None:
        """Stop the server process and start a new one on the same database and port."""
        self.service.stop()
        self._start()

    def stop(self) -> None:
        self.service.stop()
        try:
            psql(self.pg_url, f"DROP DATABASE IF EXISTS {self.db} WITH (FORCE)")
        except subprocess.CalledProcessError:
            pass
