"""The test bed: real services on loopback, started once per test session and stopped by PID.

- a Prefect server on PostgreSQL (127.0.0.1:5432, a fresh database per session)
- moto_server for S3, Azurite for Azure Blob (from the project's node_modules)
- the embedded default (SQLite) is exercised by the smoke test, which starts its own.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest

from tests.services import PrefectServer, Service, free_port, http_ok

ROOT = Path(__file__).resolve().parents[1]
PG_URL = os.environ.get("PREFECT_AML_TEST_PG", "postgresql://postgres@127.0.0.1:5432")
BIN = Path(sys.executable).parent
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="

# Everything a test starts lives under one temporary folder and talks to loopback only.
_STATE = Path(tempfile.mkdtemp(prefix="prefect-aml-tests-"))
os.environ["PREFECT_AML_HOME"] = str(_STATE / "aml-home")
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
os.environ.pop("PREFECT_API_URL", None)


@pytest.fixture(scope="session")
def prefect_server():
    """A Prefect server on a fresh PostgreSQL database; this process's Prefect client points at it."""
    from prefect.context import refresh_global_settings_context

    try:
        server = PrefectServer(_STATE, PG_URL)
    except (subprocess.CalledProcessError, FileNotFoundError) as err:
        pytest.exit(f"PostgreSQL on 127.0.0.1:5432 is needed by the tests and could not create a database: {err}",
                    returncode=3)
    os.environ["PREFECT_API_URL"] = server.url
    refresh_global_settings_context()
    yield server.url
    server.stop()
    os.environ.pop("PREFECT_API_URL", None)
    refresh_global_settings_context()


@contextlib.contextmanager
def using_server(url: str):
    """Point this process's Prefect client at another server for a while (PREFECT_API_URL wins over a
    workspace's own URL, so a Workspace(prefect_api_url=...) alone would not switch)."""
    from prefect.context import refresh_global_settings_context

    before = os.environ.get("PREFECT_API_URL")
    os.environ["PREFECT_API_URL"] = url
    refresh_global_settings_context()
    try:
        yield
    finally:
        from prefect.events.worker import EventsWorker

        EventsWorker.drain_all(timeout=10, at_exit=False)  # send its events while that server is still up
        if before is None:
            os.environ.pop("PREFECT_API_URL", None)
        else:
            os.environ["PREFECT_API_URL"] = before
        refresh_global_settings_context()


@pytest.fixture(scope="session")
def moto():
    port = free_port()
    svc = Service("moto", _STATE, [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                  lambda: http_ok(f"http://127.0.0.1:{port}/moto-api/"))
    yield f"http://127.0.0.1:{port}"
    svc.stop()


@pytest.fixture(scope="session")
def azurite():
    exe = ROOT / "node_modules" / ".bin" / "azurite-blob"
    if not exe.exists():
        pytest.exit("Azurite is missing: run `npm install` in the project root (scripts/test.sh does).", returncode=3)
    port = free_port()
    loc = _STATE / "azurite"
    loc.mkdir()
    svc = Service("azurite", _STATE, [str(exe), "--blobHost", "127.0.0.1", "--blobPort", str(port), "--location", str(loc),
                              "--skipApiVersionCheck", "--loose", "--silent"],
                  lambda: http_ok(f"http://127.0.0.1:{port}/devstoreaccount1?comp=list"))
    yield (f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={AZURITE_KEY};"
           f"BlobEndpoint=http://127.0.0.1:{port}/devstoreaccount1;")
    svc.stop()


@pytest.fixture(scope="session")
def ws(prefect_server):
    from prefect_aml import Workspace

    return Workspace()


def _unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


def make_store(kind: str, ws, request):
    """Register a fresh datastore of `kind` (local, s3, azure) in the test workspace."""
    from prefect_aml import Datastore

    name = _unique(f"t_{kind}_")
    if kind == "local":
        return Datastore.register_local(ws, name, str(_STATE / "local-stores" / name))
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


@pytest.fixture(params=["local", "s3", "azure"])
def store(request, ws):
    return make_store(request.param, ws, request)


@pytest.fixture
def tmp(tmp_path):
    yield tmp_path
    shutil.rmtree(tmp_path, ignore_errors=True)


def pytest_sessionfinish(session, exitstatus):
    from prefect_aml.flows import forkserver

    forkserver.stop()  # the warm runner the tests' submits started
    shutil.rmtree(_STATE, ignore_errors=True)
