"""Pipeline steps: `PythonScriptStep` and `CommandStep`.

A step only describes work: a script or command, its data in and out, and its parameters.
Data objects used in `arguments` are replaced by local paths when the step runs; `params`
become environment variables `AML_PARAMETER_<name>`.
"""

from __future__ import annotations

import itertools
import os
import shlex
from typing import Any

from prefect_aml.exceptions import PipelineValidationError
from prefect_aml.pipeline.data import (
    DataPath,
    DataPathComputeBinding,
    InputPort,
    OutputFileDatasetConfig,
    PipelineData,
    _StepOutput,
    datastore_name,
)
from prefect_aml.pipeline.params import PipelineParameter

_created = itertools.count()
_DATA_TYPES = (DataPath, InputPort, _StepOutput)


def _compute_name(compute_target: Any) -> str | None:
    if compute_target is None or isinstance(compute_target, str):
        return compute_target
    if isinstance(compute_target, tuple):  # Azure ML accepted (name, type) tuples
        return compute_target[0]
    return getattr(compute_target, "name", None)


class PipelineStep:
    """What every step has: a name, inputs, outputs, arguments, reuse settings, a compute target."""

    _kind = "python"

    def __init__(self, name: str | None, arguments=None, compute_target=None, runconfig=None, inputs=None,
                 outputs=None, params=None, source_directory=None, allow_reuse: bool = True,
                 version: str | None = None, hash_paths=None):
        if name is not None and (not isinstance(name, str) or not name.strip()):
            raise PipelineValidationError(f"Step name {name!r} is not valid: give a non-empty string.")
        self.name = name
        self.arguments = list(arguments or [])
        self.inputs = list(inputs or [])
        self.outputs = list(outputs or [])
        self.params = dict(params or {})
        self.source_directory = os.fspath(source_directory) if source_directory is not None else None
        self.allow_reuse = bool(allow_reuse)
        self.version = None if version is None else str(version)
        self.hash_paths = list(hash_paths) if hash_paths else None
        self.compute_target = compute_target
        self.runconfig = runconfig
        self._run_after: list[PipelineStep] = []
        self._created = next(_created)
        for item in self.outputs:
            if not isinstance(item, _StepOutput):
                raise PipelineValidationError(
                    f"Step {self.name!r}: outputs must be PipelineData or OutputFileDatasetConfig, got {item!r}."
                )
            if self not in item._explicit_producers:
                item._explicit_producers.append(self)
        consumed = {id(self._source_of(i)) for i in self.inputs}
        for item in self._argument_items():
            if isinstance(item, _StepOutput) and id(item) not in consumed and item._implicit_producer is None:
                item._implicit_producer = self  # bare use in arguments: the first step to use it writes it

    # -- graph helpers (no I/O)
    def run_after(self, step: PipelineStep) -> None:
        """Run this step after `step`, even if no data flows between them."""
        if not isinstance(step, PipelineStep):
            raise PipelineValidationError(f"Step {self.name!r}: run_after expects a step, got {step!r}.")
        if step not in self._run_after:
            self._run_after.append(step)

    def _argument_items(self) -> list:
        return [*self.arguments, *self.params.values()]

    @staticmethod
    def _source_of(item: Any) -> Any:
        if isinstance(item, InputPort):
            return item.source
        if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], PipelineParameter):
            return item[0]
        return item

    def _data_items(self) -> list:
        items = []
        for item in [*self.inputs, *self.outputs, *self._argument_items()]:
            src = self._source_of(item)
            if isinstance(src, _DATA_TYPES) or isinstance(item, InputPort):
                items.append(item)
            elif isinstance(src, PipelineParameter) and isinstance(src.default_value, DataPath):
                items.append(item)
        return items

    def _produced(self) -> list[_StepOutput]:
        seen, out = set(), []
        for item in self._data_items():
            src = self._source_of(item)
            if isinstance(src, _StepOutput) and src.producer is self and id(src) not in seen and not isinstance(
                item, InputPort
            ):
                seen.add(id(src))
                out.append(src)
        return out

    def _consumed(self) -> list:
        """(port name candidate, item) for each input, the first use of each source winning."""
        seen, out = set(), []
        for item in self._data_items():
            src = self._source_of(item)
            if isinstance(src, _StepOutput) and src.producer is self and not isinstance(item, InputPort):
                continue
            if id(src) in seen:
                continue
            seen.add(id(src))
            out.append(item)
        return out

    def _upstream_steps(self) -> list[PipelineStep]:
        ups = []
        for item in self._consumed():
            src = self._source_of(item)
            if isinstance(src, _StepOutput) and src.producer is not None and src.producer is not self:
                ups.append(src.producer)
        return [*ups, *self._run_after]

    def _parameters(self) -> list[PipelineParameter]:
        found = []
        for item in [*self.arguments, *self.params.values(), *self.inputs]:
            src = self._source_of(item)
            if isinstance(src, PipelineParameter):
                found.append(src)
        return found

    def _environment(self) -> dict[str, Any]:
        """The serialisable environment of the step's runconfig (an `Environment` gives its own definition)."""
        env = getattr(self.runconfig, "environment", None)
        if callable(getattr(env, "_definition", None)):
            return env._definition()
        variables = getattr(env, "environment_variables", None) or {}
        return {"name": getattr(env, "name", None), "variables": {str(k): str(v) for k, v in variables.items()}}

    def _compute(self) -> Any:
        """The step's compute: `compute_target`, else its runconfig's `target`."""
        if self.compute_target is not None:
            return self.compute_target
        return getattr(self.runconfig, "target", None)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


class PythonScriptStep(PipelineStep):
    """Runs `script_name` from `source_directory` with `arguments` in a fresh Python process."""

    _kind = "python"

    def __init__(self, script_name: str, name: str | None = None, arguments=None, compute_target=None,
                 runconfig=None, runconfig_pipeline_params=None, inputs=None, outputs=None, params=None,
                 source_directory=None, allow_reuse: bool = True, version: str | None = None, hash_paths=None):
        if not script_name or not isinstance(script_name, str):
            raise PipelineValidationError(f"PythonScriptStep {name!r}: script_name must be a file name, got "
                                          f"{script_name!r}.")
        self.script_name = script_name
        super().__init__(name or script_name, arguments, compute_target, runconfig, inputs, outputs, params,
                         source_directory, allow_reuse, version, hash_paths)


class CommandStep(PipelineStep):
    """Runs a command (a string, or a list whose items may be data references and parameters)."""

    _kind = "command"

    def __init__(self, command=None, name: str | None = None, compute_target=None, runconfig=None,
                 runconfig_pipeline_params=None, inputs=None, outputs=None, params=None, source_directory=None,
                 allow_reuse: bool = True, version: str | None = None):
        src_cfg = None
        if command is None and runconfig is not None and getattr(runconfig, "command", None):
            src_cfg = runconfig  # a ScriptRunConfig carrying its own command
            command = runconfig.command
            source_directory = source_directory or getattr(runconfig, "source_directory", None)
        if not command:
            raise PipelineValidationError(f"CommandStep {name!r}: give a command, e.g. command='python train.py'.")
        self.command = shlex.split(command) if isinstance(command, str) else list(command)
        first = self.command[0]
        super().__init__(name or (first if isinstance(first, str) else "command"), None, compute_target,
                         src_cfg or runconfig, inputs, outputs, params, source_directory, allow_reuse, version)

    def _argument_items(self) -> list:
        return [*self.command, *self.params.values()]


__all__ = ["CommandStep", "DataPathComputeBinding", "OutputFileDatasetConfig", "PipelineData", "PipelineStep",
           "PythonScriptStep", "datastore_name"]
