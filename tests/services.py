"""Processes the tests and benchmarks start on loopback: wait for health, fail clearly, stop by PID."""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
PG_URL = os.environ.get("PREFECT_AML_TEST_PG", "postgresql://postgres@127.0.0.1:5432")
BIN = Path(sys.executable).parent
# built environments of the tests, kept between modules and sessions (found by hash, built under a lock)
TEST_ENVS = Path(os.environ.get("PREFECT_AML_TEST_ENVS")
                 or Path(tempfile.gettempdir()) / f"prefect-aml-test-envs-{os.getuid()}")
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


@functools.cache
def state_dir() -> Path:
    """The one temporary folder everything a test session starts lives under (made on first use)."""
    return Path(tempfile.mkdtemp(prefix="prefect-aml-tests-"))


@contextlib.contextmanager
def using_server(url: str):
    """Point this process's Prefect client at another server for a while (PREFECT_API_URL wins over a
    workspace's own URL, so a Workspace(prefect_api_url=...) alone would not switch)."""
    from prefect.context import refresh_global_settings_context
    from prefect.events.worker import EventsWorker

    before = os.environ.get("PREFECT_API_URL")
    os.environ["PREFECT_API_URL"] = url
    refresh_global_settings_context()
    try:
        yield
    finally:
        EventsWorker.drain_all(timeout=10, at_exit=False)  # send its events while that server is still up
        if before is None:
            os.environ.pop("PREFECT_API_URL", None)
        else:
            os.environ["PREFECT_API_URL"] = before
        refresh_global_settings_context()


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


def make_store(kind: str, ws, request):
    """Register a fresh datastore of `kind` (local, s3, azure) in the test workspace."""
    from prefect_aml import Datastore

    name = unique(f"t_{kind}_")
    if kind == "local":
        return Datastore.register_local(ws, name, str(state_dir() / "local-stores" / name))
    if kind == "s3":
        endpoint = request.getfixturevalue("moto")
        return Datastore.register_s3(ws, name, bucket_name=name.replace("_", "-"), endpoint_url=endpoint,
                                     access_key_id="testing", secret_access_key="testing-secret-value",
                                     create_if_not_exists=True)
    if kind == "azure":
        conn = request.getfixturevalue("azurite")
        return Datastore.register_azure_blob_container(ws, name, container_name=name.replace("_", "-"),
                                                       account_name="devstoreaccount1", connection_string=conn,
                                                       create_if_not_exists=True)
    raise ValueError(kind)


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
