"""Environments and run configurations: the registry, the files they are read from, and what a step sees."""

from __future__ import annotations

import json
import sys
import textwrap
import uuid
import warnings
from pathlib import Path

import pytest

from prefect_aml import (
    CondaDependencies,
    Environment,
    EnvironmentException,
    Experiment,
    OutputFileDatasetConfig,
    Pipeline,
    PythonScriptStep,
    RunConfiguration,
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
