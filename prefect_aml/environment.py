"""Environments the Azure ML way: `Environment`, `CondaDependencies`, `RunConfiguration`.

An environment says what a step runs in: environment variables, a container image (on Docker
computes), a Python interpreter, and packages. It becomes the job variables of the step's run on
a work pool (image, env) and is part of the step's reuse key, so changing it re-runs the step.

    env = Environment("train-env")
    env.docker.base_image = "aml-python:local"
    env.environment_variables = {"OMP_NUM_THREADS": "1"}
    env.python.conda_dependencies = CondaDependencies.create(pip_packages=["scikit-learn"])
    env.register(ws)
    rc = RunConfiguration()
    rc.environment = Environment.get(ws, "train-env")

Packages are installed by prefect-aml (`python.user_managed_dependencies = False`, the default): the
environment becomes a virtual environment built with uv from PyPI, once per machine and definition
(`prefect_aml/envbuild.py`), and the step's script runs with its interpreter; `build_local(ws)` builds it
ahead of time. With `user_managed_dependencies = True`, or no packages beyond Azure ML's own, a step runs
in the worker's Python (or `python.interpreter_path`). Curated names (`AzureML-*`) that are not
registered resolve to the worker's own Python environment, with a one-time warning.
"""

from __future__ import annotations

import copy
import difflib
import json
import os
import re
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from prefect_aml import envbuild
from prefect_aml.blocks import saved_blocks
from prefect_aml.blocks.computes import EnvironmentVersion, environment_block_name
from prefect_aml.exceptions import EnvironmentException, UserErrorException

if TYPE_CHECKING:
    from prefect_aml.workspace import Workspace

DEFAULT_CPU_IMAGE = "mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu20.04"
DEFAULT_GPU_IMAGE = "mcr.microsoft.com/azureml/openmpi4.1.0-cuda11.1-cudnn8-ubuntu20.04"
_CURATED_PREFIX = "AzureML-"
_warned_curated: set[str] = set()


class CondaDependencies:
    """Conda and pip packages of an environment (`CondaDependencies.create(...)`)."""

    def __init__(self, conda_dependencies_file_path: str | None = None, _underlying_structure: dict | None = None):
        self.conda_packages: list[str] = []
        self.pip_packages: list[str] = []
        self.channels: list[str] = []
        self.python_version: str | None = None
        if conda_dependencies_file_path:
            self._read_file(conda_dependencies_file_path)
        if _underlying_structure:
            self._read_structure(_underlying_structure)

    @staticmethod
    def create(pip_packages=None, conda_packages=None, python_version: str | None = None, pin_sdk_version=True,
               pip_indexurl=None, channels=None) -> CondaDependencies:
        deps = CondaDependencies()
        deps.pip_packages = [str(p) for p in pip_packages or []]
        deps.conda_packages = [str(p) for p in conda_packages or []]
        deps.channels = [str(c) for c in channels or []]
        deps.python_version = python_version
        return deps

    def add_pip_package(self, pip_package: str) -> None:
        if pip_package not in self.pip_packages:
            self.pip_packages.append(pip_package)

    def add_conda_package(self, conda_package: str) -> None:
        if conda_package not in self.conda_packages:
            self.conda_packages.append(conda_package)

    def add_channel(self, channel: str) -> None:
        if channel not in self.channels:
            self.channels.append(channel)

    def set_python_version(self, version: str) -> None:
        self.python_version = version

    def _read_file(self, path: str) -> None:
        file = Path(path)
        if not file.is_file():
            raise EnvironmentException(f"Conda specification {path!r} does not exist: give the path of a YAML file.")
        try:
            data = yaml.safe_load(file.read_text()) or {}
        except yaml.YAMLError as err:
            raise EnvironmentException(f"Conda specification {path!r} is not valid YAML: {err}") from None
        if not isinstance(data, dict):
            raise EnvironmentException(f"Conda specification {path!r} must be a mapping with 'dependencies'.")
        self._read_structure(data)

    def _read_structure(self, data: dict) -> None:
        self.channels = [str(c) for c in data.get("channels") or []]
        for dep in data.get("dependencies") or []:
            if isinstance(dep, dict):
                self.pip_packages.extend(str(p) for p in dep.get("pip") or [])
            elif re.match(r"^python([=<>!~ ]|$)", str(dep)):
                self.python_version = re.sub(r"^python\s*=*\s*", "", str(dep)) or None
            else:
                self.conda_packages.append(str(dep))

    def serialize_to_string(self) -> str:
        deps: list[Any] = ([f"python={self.python_version}"] if self.python_version else []) + self.conda_packages
        if self.pip_packages:
            deps.append({"pip": list(self.pip_packages)})
        return yaml.safe_dump({"name": "project_environment", "channels": self.channels or ["conda-forge"],
                               "dependencies": deps}, sort_keys=False)

    def _as_dict(self) -> dict[str, Any]:
        return {"conda_packages": self.conda_packages, "pip_packages": self.pip_packages,
                "channels": self.channels, "python_version": self.python_version}

    def __repr__(self) -> str:
        return f"CondaDependencies(conda_packages={self.conda_packages}, pip_packages={self.pip_packages})"


class DockerSection:
    """`environment.docker`: the image a Docker compute runs the step in."""

    def __init__(self):
        self.base_image: str | None = None
        self.base_dockerfile: str | None = None
        self.enabled: bool | None = None
        self.shm_size: str | None = None
        self.arguments: list[str] = []


class PythonSection:
    """`environment.python`: the interpreter and packages."""

    def __init__(self):
        self.conda_dependencies: CondaDependencies = CondaDependencies()
        self.user_managed_dependencies: bool = False
        self.interpreter_path: str = "python"
        self.conda_dependencies_file: str | None = None


class Environment:
    """A named, versioned description of what a step runs in."""

    def __init__(self, name: str):
        if not isinstance(name, str) or not name.strip():
            raise EnvironmentException(f"Environment name {name!r} is not valid: give a non-empty string.")
        self.name = name
        self.version: str | None = None
        self.docker = DockerSection()
        self.python = PythonSection()
        self.environment_variables: dict[str, str] = {}
        self.inferencing_stack_version = None
        self._curated_fallback = False

    # -- construction
    @staticmethod
    def from_pip_requirements(name: str, file_path: str, pip_version: str | None = None) -> Environment:
        file = Path(file_path)
        if not file.is_file():
            raise EnvironmentException(f"Requirements file {file_path!r} for environment {name!r} does not exist.")
        env = Environment(name)
        lines = [ln.split("#", 1)[0].strip() for ln in file.read_text().splitlines()]
        env.python.conda_dependencies = CondaDependencies.create(pip_packages=[ln for ln in lines if ln])
        return env

    @staticmethod
    def from_conda_specification(name: str, file_path: str) -> Environment:
        env = Environment(name)
        env.python.conda_dependencies = CondaDependencies(conda_dependencies_file_path=file_path)
        return env

    @staticmethod
    def from_docker_image(name: str, image: str, container_registry=None, conda_specification=None,
                          pip_requirements=None) -> Environment:
        env = (Environment.from_conda_specification(name, conda_specification) if conda_specification else
               Environment.from_pip_requirements(name, pip_requirements) if pip_requirements else Environment(name))
        env.docker.base_image = image
        return env

    def clone(self, new_name: str) -> Environment:
        env = copy.deepcopy(self)
        env.name, env.version = new_name, None
        return env

    # -- what a run needs
    def _definition(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "image": self.docker.base_image,
            "variables": {str(k): str(v) for k, v in (self.environment_variables or {}).items()},
            "interpreter": None if self.python.interpreter_path in (None, "", "python") else self.python.interpreter_path,
            "user_managed": bool(self.python.user_managed_dependencies),
            "packages": self.python.conda_dependencies._as_dict() if self.python.conda_dependencies else {},
        }

    @classmethod
    def _from_definition(cls, data: dict[str, Any], version: str | None = None) -> Environment:
        env = cls(data["name"])
        env.version = version
        env.docker.base_image = data.get("image")
        env.environment_variables = dict(data.get("variables") or {})
        env.python.interpreter_path = data.get("interpreter") or "python"
        env.python.user_managed_dependencies = bool(data.get("user_managed"))
        pk = data.get("packages") or {}
        env.python.conda_dependencies = CondaDependencies.create(
            pip_packages=pk.get("pip_packages"), conda_packages=pk.get("conda_packages"),
            python_version=pk.get("python_version"), channels=pk.get("channels"))
        return env

    # -- registry (one block per name and version)
    def register(self, workspace: Workspace) -> Environment:
        """Register this definition; a changed definition gets the next version, an unchanged one keeps its own."""
        existing = _versions(workspace, self.name)
        definition = self._definition()
        for block in existing:
            if block.definition == definition:
                return Environment._from_definition(definition, str(block.version))
        version = 1 + max((b.version for b in existing), default=0)
        with workspace.prefect():
            EnvironmentVersion(environment_name=self.name, version=version, definition=definition).save(
                environment_block_name(self.name, version), _sync=True)
        return Environment._from_definition(definition, str(version))

    @staticmethod
    def get(workspace: Workspace, name: str, version: str | None = None, label=None) -> Environment:
        """A registered environment (the latest version unless `version`); curated `AzureML-*` names
        that are not registered resolve to the worker's own Python environment."""
        versions = _versions(workspace, name)
        if version is not None:
            versions = [b for b in versions if str(b.version) == str(version)]
        if versions:
            block = max(versions, key=lambda b: b.version)
            return Environment._from_definition(block.definition, str(block.version))
        if name.startswith(_CURATED_PREFIX) and version is None:
            if name not in _warned_curated:
                _warned_curated.add(name)
                warnings.warn(f"Environment {name!r} is a curated Azure ML environment; here it resolves to the "
                              "worker's own Python environment. Register an environment of that name to pin "
                              "its packages or image.", stacklevel=2)
            env = Environment(name)
            env.python.user_managed_dependencies = True
            env._curated_fallback = True
            return env
        known = sorted({b.environment_name for b in Environment._all_blocks(workspace)})
        near = difflib.get_close_matches(name, known, n=1)
        hint = f" Did you mean {near[0]!r}?" if near else (f" Registered: {known}." if known else "")
        raise EnvironmentException(
            f"Environment {name!r}" + (f" version {version}" if version is not None else "")
            + f" is not registered in this workspace.{hint} Create it with Environment({name!r}) and "
            "env.register(ws).")

    @staticmethod
    def list(workspace: Workspace) -> dict[str, Environment]:
        latest: dict[str, Any] = {}
        for b in Environment._all_blocks(workspace):
            if b.environment_name not in latest or b.version > latest[b.environment_name].version:
                latest[b.environment_name] = b
        return {n: Environment._from_definition(b.definition, str(b.version)) for n, b in sorted(latest.items())}

    @staticmethod
    def _all_blocks(workspace: Workspace) -> list:
        with workspace.client() as client:
            return saved_blocks(client, EnvironmentVersion)

    # -- building ahead of time (a step builds what it needs at its start otherwise)
    def build(self, workspace: Workspace, image_build_compute=None) -> envbuild.BuildDetails:
        """Register this environment, then build its packages on this machine, showing progress (v1 built an
        image in the cloud); returns when done, with the build's log and the lock of what was installed."""
        return self.register(workspace).build_local(workspace)

    def build_local(self, workspace: Workspace, platform: str | None = None, **kwargs) -> envbuild.BuildDetails:
        """Build this environment's packages on this machine as a step would, showing progress; a second
        call (or a step) finds it built."""
        if kwargs.get("useDocker"):
            raise EnvironmentException(
                f"Environment {self.name!r}: build_local(useDocker=True) is not needed: a DockerCompute builds the "
                "environment inside the step's container at its first step and keeps it on the engine's "
                "prefect-aml-envs volume (docs/environments.md).")
        return envbuild.build_details(self._definition(), workspace.home)

    def get_image_details(self, workspace=None) -> dict[str, Any]:
        return {"dockerImage": {"name": self.docker.base_image}, "python": self._definition()["packages"]}

    def __repr__(self) -> str:
        return json.dumps({"name": self.name, "version": self.version, **self._definition()}, indent=4)


def _versions(workspace: Workspace, name: str) -> list:
    return [b for b in Environment._all_blocks(workspace) if b.environment_name == name]


class RunConfiguration:
    """Where and in what a step runs: `target` (a compute) and `environment`."""

    def __init__(self, script: str | None = None, arguments=None, framework: str | None = None,
                 communicator: str | None = None, conda_dependencies: CondaDependencies | None = None,
                 _history_enabled=None, _path=None, _name=None, command=None):
        self.script = script
        self.arguments = list(arguments or [])
        self.command = command
        self.framework = framework or "Python"
        self.communicator = communicator or "None"
        self.target = "local"
        self.node_count = 1
        self.environment = Environment("default-environment")
        if conda_dependencies is not None:
            self.environment.python.conda_dependencies = conda_dependencies

    @property
    def environment_variables(self) -> dict[str, str]:
        return self.environment.environment_variables

    @environment_variables.setter
    def environment_variables(self, value: dict[str, str]) -> None:
        self.environment.environment_variables = dict(value or {})

    @property
    def docker(self) -> DockerSection:
        return self.environment.docker

    @property
    def python(self) -> PythonSection:
        return self.environment.python

    def __repr__(self) -> str:
        target = getattr(self.target, "name", self.target)
        return f"RunConfiguration(target={target!r}, environment={self.environment.name!r})"


class ScriptRunConfig:
    """A script (or command) with its source directory, compute and environment, as v1 code builds them.

    `CommandStep(runconfig=ScriptRunConfig(...))` runs it as a pipeline step; a `PythonScriptStep`
    takes it as `runconfig` for its compute and environment."""

    def __init__(self, source_directory: str | os.PathLike | None = None, script: str | None = None,
                 arguments=None, run_config: RunConfiguration | None = None, _telemetry_values=None,
                 compute_target=None, environment: Environment | None = None, distributed_job_config=None,
                 resume_from=None, max_run_duration_seconds: int | None = None, command=None,
                 docker_runtime_config=None):
        if script and command:
            raise UserErrorException("ScriptRunConfig: give script= (with arguments=) or command=, not both.")
        if distributed_job_config is not None:
            raise UserErrorException(
                f"ScriptRunConfig: distributed_job_config={type(distributed_job_config).__name__} (MPI, PyTorch or "
                "TensorFlow distribution) is not supported here; run the work on a DaskCompute, or as one step per "
                "worker.")
        self.source_directory = os.fspath(source_directory) if source_directory is not None else None
        self.script = script
        self.arguments = list(arguments or [])
        self.run_config = run_config or RunConfiguration()
        if compute_target is not None:
            self.run_config.target = compute_target
        if environment is not None:
            self.run_config.environment = environment
        self.max_run_duration_seconds = max_run_duration_seconds
        if command is not None:
            self.command = command
        elif script:
            self.command = ["python", script, *self.arguments]
        else:
            self.command = None

    @property
    def target(self):
        return self.run_config.target

    @property
    def environment(self) -> Environment:
        return self.run_config.environment

    def __repr__(self) -> str:
        what = f"script={self.script!r}" if self.script else f"command={self.command!r}"
        return f"ScriptRunConfig(source_directory={self.source_directory!r}, {what})"
