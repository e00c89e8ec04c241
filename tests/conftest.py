"""The test bed: real services on loopback, started once per test session and stopped by PID.

- a Prefect server on PostgreSQL (127.0.0.1:5432, a fresh database per session)
- moto_server for S3, Azurite for Azure Blob (from the project's node_modules)
- the embedded default (SQLite) is exercised by the smoke test, which starts its own.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from tests.services import (
    AZURITE_KEY,
    BIN,
    PG_URL,
    ROOT,
    TEST_ENVS,
    PrefectServer,
    Service,
    free_port,
    http_ok,
    make_store,
    state_dir,
)

# Everything a test starts lives under one temporary folder and talks to loopback only.
_STATE = state_dir()
os.environ["PREFECT_AML_HOME"] = str(_STATE / "aml-home")
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
# steps, workers and build_local share the built environments of all test modules (and sessions)
os.environ.setdefault("PREFECT_AML_ENVS_DIR", str(TEST_ENVS / "envs"))
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
