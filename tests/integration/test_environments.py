"""Environments and run configurations: the registry, the files they are read from, and what a step sees."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
import textwrap
import uuid
import warnings
from pathlib import Path

import pytest
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterTaskRunId

from prefect_aml import (
    CondaDependencies,
    Environment,
    EnvironmentException,
    Experiment,
    OutputFileDatasetConfig,
    Pipeline,
    PythonScriptStep,
    RunConfiguration,
    envbuild,
)


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def test_register_get_and_versions(ws):
    name = _name("train-env")
    env = Environment(name)
    env.environment_variables = {"OMP_NUM_THREADS": "1"}
    env.docker.base_image = "aml-python:local"
    env.python.conda_dependencies = CondaDependencies.create(conda_packages=["pandas"], pip_packages=["scikit-learn"])
    v1 = env.register(ws)
    assert v1.version == "1"
    assert env.register(ws).version == "1"  # unchanged: no new version
    env.environment_variables["OMP_NUM_THREADS"] = "2"
    assert env.register(ws).version == "2"
    latest = Environment.get(ws, name)
    assert latest.version == "2" and latest.environment_variables == {"OMP_NUM_THREADS": "2"}
    first = Environment.get(ws, name, version="1")
    assert first.environment_variables == {"OMP_NUM_THREADS": "1"} and first.docker.base_image == "aml-python:local"
    assert first.python.conda_dependencies.pip_packages == ["scikit-learn"]
    assert ws.environments[name].version == "2"
    with pytest.raises(EnvironmentException, match=f"'{name}x' is not registered.*Did you mean '{name}'"):
        Environment.get(ws, name + "x")
    with pytest.raises(EnvironmentException, match="version 9 is not registered"):
        Environment.get(ws, name, version="9")


def test_curated_names_fall_back_to_the_workers_python_once(ws):
    with pytest.warns(UserWarning, match="curated Azure ML environment.*worker's own Python"):
        env = Environment.get(ws, "AzureML-Tutorial")
    assert env.name == "AzureML-Tutorial" and env.python.user_managed_dependencies
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Environment.get(ws, "AzureML-Tutorial")  # the warning comes once


def test_environments_from_files(tmp_path):
    req = tmp_path / "requirements.txt"
    req.write_text("pandas==2.2.0  # data\n\nscikit-learn\n")
    env = Environment.from_pip_requirements("pip-env", str(req))
    assert env.python.conda_dependencies.pip_packages == ["pandas==2.2.0", "scikit-learn"]
    spec = tmp_path / "env.yml"
    spec.write_text(textwrap.dedent("""
        name: demo
        channels: [conda-forge]
        dependencies:
          - python=3.11
          - numpy
          - pip:
            - requests
    """))
    env = Environment.from_conda_specification("conda-env", str(spec))
    deps = env.python.conda_dependencies
    assert (deps.python_version, deps.conda_packages, deps.pip_packages) == ("3.11", ["numpy"], ["requests"])
    assert "- requests" in deps.serialize_to_string()
    with pytest.raises(EnvironmentException, match="does not exist"):
        Environment.from_conda_specification("x", str(tmp_path / "missing.yml"))
    (tmp_path / "bad.yml").write_text("dependencies: [unclosed\n")
    with pytest.raises(EnvironmentException, match="not valid YAML"):
        Environment.from_conda_specification("x", str(tmp_path / "bad.yml"))


def test_a_steps_environment_reaches_its_script_and_its_reuse_key(ws, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "show.py").write_text(textwrap.dedent("""
        import argparse, json, os, sys
        p = argparse.ArgumentParser(); p.add_argument("--out"); args = p.parse_args()
        os.makedirs(args.out, exist_ok=True)
        json.dump({"color": os.environ.get("COLOR"), "wrapped": os.environ.get("AML_WRAPPED")},
                  open(os.path.join(args.out, "env.json"), "w"))
    """))
    # an interpreter of the environment's own: a wrapper that marks the runs it starts
    wrapper = tmp_path / "python-wrapper"
    wrapper.write_text(f"#!/bin/sh\nAML_WRAPPED=yes exec {sys.executable} \"$@\"\n")
    wrapper.chmod(0o755)

    def run_with(color: str):
        rc = RunConfiguration()
        rc.environment = Environment(_name("env"))
        rc.environment.environment_variables = {"COLOR": color}
        rc.environment.python.interpreter_path = str(wrapper)
        rc.environment.name = "fixed-name"
        step = PythonScriptStep("show.py", source_directory=str(src), runconfig=rc,
                                arguments=["--out", OutputFileDatasetConfig("o")])
        run = Experiment(ws, _name("env")).submit(Pipeline(ws, [step]))
        assert run.wait_for_completion(show_output=False) == "Finished"
        (step_run,) = run.get_steps()
        folder = step_run.get_output_data("o").download(str(tmp_path / run.id), show_progress=False)
        return step_run, json.loads(Path(folder, "env.json").read_text())

    first, seen = run_with("red")
    assert seen == {"color": "red", "wrapped": "yes"} and not first.reused
    again, _ = run_with("red")
    assert again.reused
    changed, seen = run_with("green")
    assert seen["color"] == "green" and not changed.reused  # the environment is part of the reuse key


# -- environments built for real, at step level (real pipeline runs) -------------------------------------------
SHOW = """
    import sys, tabulate
    from azureml.core import Run
    Run.get_context().log("tabulate", tabulate.__version__)
    print("tabulate", tabulate.__version__, "from", sys.prefix)
"""


def _with_packages(name: str, pip=None, conda=None) -> RunConfiguration:
    rc = RunConfiguration()
    rc.environment = Environment(name)
    rc.environment.python.conda_dependencies = CondaDependencies.create(pip_packages=pip, conda_packages=conda)
    return rc


def _source(tmp_path: Path, script: str = SHOW) -> Path:
    src = tmp_path / "src"
    src.mkdir(exist_ok=True)
    (src / "show.py").write_text(textwrap.dedent(script))
    return src


def test_a_step_gets_a_package_the_project_lacks_built_once_for_later_steps_and_runs(ws, tmp_path, monkeypatch):
    assert importlib.util.find_spec("tabulate") is None, "this test needs a package absent from the project's venv"
    monkeypatch.setenv(envbuild.ENVS_DIR_ENV, str(tmp_path / "envs"))  # a cache of its own: builds are counted
    src, rc, exp = _source(tmp_path), _with_packages(_name("tab"), pip=["tabulate==0.9.0"]), _name("envs")

    def run_twice_in_a_row():
        first, second = (PythonScriptStep("show.py", name=n, source_directory=str(src), runconfig=rc,
                                          allow_reuse=False) for n in ("first", "second"))
        second.run_after(first)
        run = Experiment(ws, exp).submit(Pipeline(ws, [first, second]))
        assert run.wait_for_completion(show_output=False) == "Finished"
        return [run.find_step_run(n)[0] for n in ("first", "second")]

    step_runs = run_twice_in_a_row() + run_twice_in_a_row()
    details = [s.get_details() for s in step_runs]
    envs = [d["environment"] for d in details]
    # built once, by the first step; the second step and both steps of the second run found it
    assert [e["built"] for e in envs] == [True, False, False, False]
    assert len(envbuild.cached(tmp_path)) == 1 and len({e["path"] for e in envs}) == 1
    for s, e in zip(step_runs, envs, strict=True):
        assert f"tabulate 0.9.0 from {e['path']}" in s.get_job_log()  # its own interpreter and package
        assert s.get_metrics() == {"tabulate": "0.9.0"}  # Run.get_context() of the light runtime
        assert e["lock"] == ["tabulate==0.9.0"] and e["name"] == rc.environment.name
    print("environment: built in", envs[0]["seconds"], "s, found in", [e["seconds"] for e in envs[1:]], "s; steps took",
          [d["durationSeconds"] for d in details], "s")
    # the lock is in the Prefect UI too: a markdown artifact of the step's task run
    with ws.client() as client:
        arts = client.read_artifacts(artifact_filter=ArtifactFilter(
            task_run_id=ArtifactFilterTaskRunId(any_=[step_runs[0].id])))
    (art,) = [a for a in arts if a.key == "environment-first"]
    assert art.type == "markdown" and "tabulate==0.9.0" in art.data and envs[0]["hash"] in art.data


def test_two_steps_of_one_pipeline_each_see_their_version_of_a_package(ws, tmp_path):
    src = _source(tmp_path)
    steps = [PythonScriptStep("show.py", name=f"v{version}", source_directory=str(src), allow_reuse=False,
                              runconfig=_with_packages(_name("tab"), pip=[f"tabulate=={version}"]))
             for version in ("0.8.10", "0.9.0")]
    run = Experiment(ws, _name("envs")).submit(Pipeline(ws, steps))
    assert run.wait_for_completion(show_output=False) == "Finished"
    for version in ("0.8.10", "0.9.0"):
        step_run = run.find_step_run(f"v{version}")[0]
        assert f"tabulate {version} from" in step_run.get_job_log()
        assert step_run.get_details()["environment"]["lock"] == [f"tabulate=={version}"]
    keys = {run.find_step_run(f"v{v}")[0].get_details()["reuseKey"] for v in ("0.8.10", "0.9.0")}
    assert len(keys) == 2


@pytest.mark.parametrize("packages, named", [
    ({"conda": ["cudatoolkit=11.8"]}, "conda package 'cudatoolkit=11.8' has no PyPI equivalent"),
    ({"pip": ["tabulate==99.1"]}, "pip package 'tabulate==99.1' has no such version"),
])
def test_a_package_that_cannot_be_built_is_refused_at_submit_and_publish(ws, tmp_path, packages, named):
    rc = _with_packages(_name("bad"), **packages)
    step = PythonScriptStep("show.py", source_directory=str(_source(tmp_path)), runconfig=rc)
    exp = Experiment(ws, _name("envs"))
    with pytest.raises(EnvironmentException, match=re.escape(named)):
        exp.submit(Pipeline(ws, [step]))
    assert list(exp.get_runs()) == []  # refused before any flow run exists
    with pytest.raises(EnvironmentException, match=re.escape(named)):
        Pipeline(ws, [step]).publish(_name("bad-pub"))
