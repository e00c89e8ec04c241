"""Built environments for real: uv, PyPI, scripts run with the built interpreter and the light step runtime.

Environments that several tests (and modules) ask for are built once under one folder, kept between test
sessions (`PREFECT_AML_TEST_ENVS`, default `<tmp>/prefect-aml-test-envs-<uid>`): they are found by hash, built
under a lock and renamed when complete, so concurrent sessions share them safely. Tests that count builds use
a fresh home of their own (uv's cache keeps those builds fast).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from prefect_aml import CondaDependencies, Environment, Workspace, envbuild
from prefect_aml.cli import app
from prefect_aml.exceptions import EnvironmentException
from tests.services import TEST_ENVS

SHARED = TEST_ENVS
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _plain_settings(monkeypatch):
    monkeypatch.delenv(envbuild.ENVS_DIR_ENV, raising=False)
    monkeypatch.delenv(envbuild.STRICT_ENV, raising=False)


def _definition(name: str, pip=None, conda=None, python=None) -> dict:
    env = Environment(name)
    env.python.conda_dependencies = CondaDependencies.create(pip_packages=pip, conda_packages=conda,
                                                             python_version=python)
    return env._definition()


def _run(built: envbuild.BuiltEnv, script: str, cwd: Path, ctx: Path | None = None) -> subprocess.CompletedProcess:
    """`script` as a step runs it in `built`: its interpreter, the light runtime, this process's variables
    (PYTHONPATH naming the project, as on a worker) otherwise."""
    cwd.mkdir(parents=True, exist_ok=True)
    (cwd / "script.py").write_text(textwrap.dedent(script))
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    if ctx:
        env["AZUREML_RUN_CONTEXT"] = str(ctx)
    python = envbuild.step_process(built, env)
    return subprocess.run([python, "script.py"], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def _context(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "context.json").write_text(json.dumps({
        "run_id": "step-1", "parent_run_id": "pipe-1", "experiment_name": "exp", "step_name": "s",
        "workspace": {"workspace_name": "ws"}, "default_datastore": "d", "input_datasets": {}, "outputs": {},
        "dir": str(folder)}))
    return folder / "context.json"


def test_a_built_environment_provides_a_package_the_project_lacks(tmp_path):
    assert importlib.util.find_spec("tabulate") is None, "this test needs a package absent from the project's venv"
    built = envbuild.ensure(_definition("with-tabulate", pip=["tabulate==0.9.0"]), SHARED, log=print)
    ctx = _context(tmp_path / "run")
    out = _run(built, """
        import importlib.util, tabulate
        from azureml.core import Run
        Run.get_context().log("tabulate", tabulate.__version__)
        print(tabulate.__version__, [importlib.util.find_spec(m) is None for m in ("prefect", "prefect_aml", "pandas")])
    """, tmp_path, ctx)
    assert out.returncode == 0, out.stderr
    # its own package, and none of the project's (prefect, prefect_aml itself, pandas) shadow or leak in
    assert out.stdout.split("\n")[0] == "0.9.0 [True, True, True]"
    assert json.loads((ctx.parent / "metrics.jsonl").read_text()) == {"name": "tabulate", "kind": "scalar",
                                                                     "value": "0.9.0"}


def test_a_second_request_reuses_the_built_environment(tmp_path):
    definition = _definition("reused", pip=["tabulate==0.9.0"])
    lines: list[str] = []
    first = envbuild.ensure(definition, tmp_path, log=lines.append)
    assert first.built and any("building 1 requirement(s)" in line for line in lines)
    second = envbuild.ensure(definition, tmp_path, log=lines.append)
    assert not second.built and second.path == first.path and second.meta == first.meta
    # another process (a second run, another worker process) finds it too
    code = (f"import json; from prefect_aml import envbuild; b = envbuild.ensure({definition!r}, {str(tmp_path)!r}); "
            "print(json.dumps([b.built, str(b.path)]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert json.loads(out.stdout) == [False, str(first.path)], out.stderr
    builds = [e for e in envbuild.cached(tmp_path) if e["hash"] == first.hash]
    assert len(builds) == 1 and builds[0]["built"] == first.meta["built"]  # built once


def test_two_environments_with_different_versions_of_one_package_each_see_theirs(tmp_path):
    seen = {}
    for version in ("0.8.10", "0.9.0"):
        built = envbuild.ensure(_definition(f"tabulate-{version}", pip=[f"tabulate=={version}"]), SHARED)
        out = _run(built, "import tabulate; print(tabulate.__version__)", tmp_path / version)
        assert out.returncode == 0, out.stderr
        seen[version] = (out.stdout.strip(), built.path)
    assert seen["0.8.10"][0] == "0.8.10" and seen["0.9.0"][0] == "0.9.0"
    assert seen["0.8.10"][1] != seen["0.9.0"][1]


def test_packages_that_cannot_be_installed_are_refused_at_the_check_naming_them(tmp_path, monkeypatch):
    with pytest.raises(EnvironmentException, match="conda package 'cudatoolkit=11.3' has no PyPI equivalent"):
        envbuild.check(_definition("gpu", conda=["cudatoolkit=11.3"]), tmp_path)
    with pytest.raises(EnvironmentException, match=r"'conda-only' cannot be built: conda package 'zz-no-such-conda-pkg-zq' \(PyPI "
                                                   r"'zz-no-such-conda-pkg-zq'\) does not exist on the package index.*"
                                                   "CONDA_TO_PYPI"):
        envbuild.check(_definition("conda-only", conda=["numpy", "zz-no-such-conda-pkg-zq"]), tmp_path)
    with pytest.raises(EnvironmentException, match=r"'no-version' cannot be built: pip package 'tabulate==99.1' has no such version"):
        envbuild.check(_definition("no-version", pip=["tabulate==99.1"]), tmp_path)
    with pytest.raises(EnvironmentException, match=r"conda package 'pandas=99.1' \(PyPI 'pandas==99.1.\*'\) has no "
                                                   "such version"):
        envbuild.check(_definition("conda-version", conda=["pandas=99.1"]), tmp_path)
    assert envbuild.cached(tmp_path) == []  # nothing was built
    ok = _definition("fine", pip=["tabulate==0.9.0"], conda=["pip"])
    assert envbuild.check(ok, tmp_path).packages == ["tabulate==0.9.0"]
    # the answer is kept: asked again, uv is not run at all
    monkeypatch.setattr(envbuild.uv, "find_uv_bin", lambda: "/nonexistent/uv")
    assert envbuild.check(ok, tmp_path).packages == ["tabulate==0.9.0"]


def test_concurrent_builds_of_one_environment_build_once(tmp_path):
    definition = _definition("concurrent", pip=["tabulate==0.8.10"])
    code = (f"import json; from prefect_aml import envbuild; b = envbuild.ensure({definition!r}, {str(tmp_path)!r}); "
            "print(json.dumps([b.built, str(b.path)]))")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=env) for _ in range(3)]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=180)
        assert p.returncode == 0, err
        results.append(json.loads(out))
    assert sorted(built for built, _ in results) == [False, False, True]
    assert len({path for _, path in results}) == 1
    root = envbuild.envs_root(tmp_path)
    assert [p.name for p in root.iterdir() if not p.name.startswith(".")] == [Path(results[0][1]).name]
    assert not list(root.glob(".tmp-*"))


def test_the_lock_lists_the_exact_versions_installed(tmp_path):
    built = envbuild.ensure(_definition("locked", pip=["tabulate>=0.8"]), SHARED)
    assert built.lock and all(re.fullmatch(r"[A-Za-z0-9._-]+==[^=\s]+", line) for line in built.lock), built.lock
    out = _run(built, "import tabulate; print(tabulate.__version__)", tmp_path)
    assert f"tabulate=={out.stdout.strip()}" in built.lock
    assert (built.path / envbuild.META / "lock.txt").read_text().splitlines() == built.lock
    details = built.details()
    assert details["lock"] == built.lock and details["hash"] == built.hash and details["requirements"] == ["tabulate>=0.8"]


def test_an_old_python_pin_builds_on_the_nearest_interpreter_and_says_so(tmp_path):
    definition = _definition("old-python", pip=["tabulate==0.9.0", "azureml-defaults"], python="3.6.2")
    built = envbuild.ensure(definition, SHARED)
    notes = built.notes()
    assert re.search(rf"'old-python' asks for Python 3\.6\.2, .* nearest available, Python {built.meta['python']}",
                     notes[0]), notes
    assert "not installed: azureml-defaults" in notes[1]
    out = _run(built, "import sys, tabulate; print(sys.version_info[:2] >= (3, 8), tabulate.__version__)", tmp_path)
    assert out.stdout.strip() == "True 0.9.0", out.stderr
    with pytest.raises(EnvironmentException, match="asks for Python 3.6.2, which is not available.*strict"):
        envbuild.check(definition, tmp_path, strict=True)
    with pytest.raises(EnvironmentException, match="strict mode"):
        envbuild.ensure(definition, tmp_path, strict=True)


def _python38() -> str | None:
    found = subprocess.run([envbuild.uv.find_uv_bin(), "python", "find", "3.8"], capture_output=True, text=True,
                           env=dict(os.environ, UV_PYTHON_DOWNLOADS="never"))
    if found.returncode == 0 and found.stdout.strip():
        return str(Path(found.stdout.strip()).parent)
    pyenv = sorted(Path("~/.pyenv/versions").expanduser().glob("3.8.*/bin/python3.8"))
    return str(pyenv[-1].parent) if pyenv else None


def test_the_light_runtime_runs_on_the_oldest_python_it_supports(tmp_path, monkeypatch):
    folder = _python38()
    if folder is None:
        pytest.skip("no Python 3.8 here for uv to find")
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    built = envbuild.ensure(_definition("py38", pip=["tabulate==0.8.10"], python="3.8"), SHARED)
    assert built.meta["python"].startswith("3.8.") and not built.notes()
    ctx = _context(tmp_path / "run")
    out = _run(built, """
        import sys, tabulate
        from azureml.core import Run
        run = Run.get_context()
        run.log("v", tabulate.__version__)
        run.set_tags({"py": sys.version_info[1]})
        print(sys.version_info[:2], run.parent.id, run.get_tags())
    """, tmp_path, ctx)
    assert out.stdout.strip() == "(3, 8) pipe-1 {'py': '8'}", out.stderr


def test_a_half_built_or_broken_environment_is_never_used(tmp_path):
    definition = _definition("half", pip=["tabulate==0.9.0"])
    spec = envbuild.spec_of(definition)
    root, key = envbuild.envs_root(tmp_path), envbuild.env_key(spec)
    stale = root / f".tmp-{key}-999-dead00"  # what a build that died leaves
    (stale / "bin").mkdir(parents=True)
    (stale / "bin" / "python").symlink_to(sys.executable)
    assert envbuild.find(spec, tmp_path) is None
    built = envbuild.ensure(definition, tmp_path)
    assert built.built and not stale.exists()
    # a complete environment whose base interpreter has gone is rebuilt, not used
    python = built.path / "bin" / "python"
    target = os.readlink(python)
    python.unlink()
    python.symlink_to(tmp_path / "gone" / "python3")
    assert envbuild.find(spec, tmp_path) is None
    again = envbuild.ensure(definition, tmp_path)
    assert again.built and again.path == built.path and os.readlink(again.path / "bin" / "python") == target
    # a build that fails leaves nothing behind
    with pytest.raises(EnvironmentException, match=r"'broken' could not be built; uv said:(.|\n)*zz-no-such-pkg-qq"):
        envbuild.ensure(_definition("broken", pip=["zz-no-such-pkg-qq"]), tmp_path)
    assert sorted(p.name for p in root.iterdir() if not p.name.startswith(".")) == [key]
    assert not list(root.glob(".tmp-*"))


def test_build_ahead_of_time_list_and_prune(tmp_path, monkeypatch, capsys):
    ws = Workspace(home=tmp_path)
    env = Environment("ahead")
    env.python.conda_dependencies = CondaDependencies.create(pip_packages=["tabulate==0.8.10"])
    details = env.build_local(ws)
    assert details.status == "Succeeded" and "tabulate==0.8.10" in details.lock
    shown = capsys.readouterr().out
    assert "Environment 'ahead': building 1 requirement(s)" in shown and "built in" in shown
    assert "is built already" in env.build_local(ws).get_log()
    old = envbuild.ensure(_definition("old", pip=["tabulate==0.9.0"]), tmp_path)
    past = time.time() - 40 * 86400
    os.utime(old.path / envbuild.META / "last-used", (past, past))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PREFECT_AML_HOME", str(tmp_path))
    listed = CliRunner().invoke(app, ["env", "list"])
    assert listed.exit_code == 0 and "'ahead'" in listed.output and "'old'" in listed.output, listed.output
    pruned = CliRunner().invoke(app, ["env", "prune", "--days", "30"])
    assert pruned.exit_code == 0 and f"removed {old.meta['key']} ('old'" in pruned.output, pruned.output
    assert not old.path.exists() and details.environment.path.exists()
    assert [e["name"] for e in envbuild.cached(tmp_path)] == ["ahead"]
