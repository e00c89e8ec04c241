"""The `prefect-aml` command: explain, and clear errors for bad input."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.services import ROOT

EXAMPLE = ROOT / "examples" / "iris"


def _cli(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "prefect_aml.cli", *args], capture_output=True, text=True,
                          timeout=180, cwd=cwd, env=dict(os.environ))


def test_explain_plans_without_running(ws, tmp):
    ws.get_default_datastore().upload_files([str(EXAMPLE / "iris.csv")], target_path="train-dataset",
                                            overwrite=True, show_progress=False)
    out = _cli("explain", f"{EXAMPLE / 'run_pipeline.py'}:build", "-p", "pipeline_arg=20", cwd=tmp)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = [line.strip() for line in out.stdout.splitlines() if line.strip().startswith("step ")]
    assert [line.split(":")[0] for line in lines] == ["step prepare.py", "step train.py", "step compare.py"]
    assert all(": will run" in line or ": will reuse" in line for line in lines)


def test_explain_bad_input(tmp):
    out = _cli("explain", "no-such-file.py:build", cwd=tmp)
    assert out.returncode == 2 and "FILE.py:FUNCTION" in out.stderr
    out = _cli("explain", f"{EXAMPLE / 'run_pipeline.py'}:nope", cwd=tmp)
    assert out.returncode == 2 and "has no function 'nope'" in out.stderr
    out = _cli("explain", f"{EXAMPLE / 'run_pipeline.py'}:build", "-p", "pipeline_arg", cwd=tmp)
    assert out.returncode == 2 and "NAME=VALUE" in out.stderr


def test_server_status_says_not_running(tmp):
    env = dict(os.environ, PREFECT_AML_HOME=str(tmp / "home"), PREFECT_AML_SERVER_PORT="1")
    out = subprocess.run([sys.executable, "-m", "prefect_aml.cli", "server", "status"], capture_output=True,
                         text=True, timeout=60, env=env)
    assert out.returncode == 1 and "not running" in out.stdout
