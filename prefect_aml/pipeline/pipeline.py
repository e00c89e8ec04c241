"""`Pipeline` and `StepSequence`: a graph of steps, validated and turned into a `PipelineSpec`."""

from __future__ import annotations

import difflib
import os
from graphlib import CycleError, TopologicalSorter
from pathlib import Path
from typing import Any

from prefect_aml.exceptions import CircularDependencyError, OutputNotUniqueError, PipelineValidationError
from prefect_aml.pipeline import port
from prefect_aml.pipeline.data import (
    DataPath,
    InputPort,
    OutputFileDatasetConfig,
    PipelineData,
    _StepOutput,
    datastore_name,
)
from prefect_aml.pipeline.params import PipelineParameter, coerce
from prefect_aml.pipeline.spec import ArgSpec, InputSpec, OutputSpec, ParamSpec, PipelineSpec, StepSpec
from prefect_aml.pipeline.steps import CommandStep, PipelineStep, PythonScriptStep, _compute_name


class StepSequence:
    """Steps that run one after the other, in the order given."""

    def __init__(self, steps=None):
        self.steps = _flatten(steps or [])
        for before, after in zip(self.steps, self.steps[1:], strict=False):
            after.run_after(before)


def _flatten(items) -> list[PipelineStep]:
    out: list[PipelineStep] = []
    for item in items:
        if isinstance(item, StepSequence):
            out.extend(item.steps)
        elif isinstance(item, (list, tuple)):
            out.extend(_flatten(item))
        elif isinstance(item, PipelineStep):
            out.append(item)
        else:
            raise PipelineValidationError(f"Pipeline steps must be steps, lists of steps or StepSequences; got "
                                          f"{item!r}.")
    return out


class Pipeline:
    """A pipeline of steps; `Experiment(ws, name).submit(pipeline)` runs it as one Prefect flow run."""

    def __init__(self, workspace, steps, description: str | None = None, default_datastore=None,
                 default_source_directory=None, resolve_closure: bool = True, **_kwargs: Any):
        self.workspace = workspace
        self.description = description
        self.default_datastore = datastore_name(default_datastore)
        self.default_source_directory = default_source_directory
        self.resolve_closure = resolve_closure
        if isinstance(steps, (PipelineStep, StepSequence)):
            steps = [steps]
        self._given = _flatten(steps)
        if not self._given:
            raise PipelineValidationError("Pipeline has no steps: pass steps=[step, ...].")

    # -- graph
    @property
    def steps(self) -> list[PipelineStep]:
        return self._closure()

    def _closure(self) -> list[PipelineStep]:
        if not self.resolve_closure:
            return list(dict.fromkeys(self._given))
        seen: dict[int, PipelineStep] = {}
        stack = list(self._given)
        while stack:
            step = stack.pop(0)
            if id(step) in seen:
                continue
            seen[id(step)] = step
            stack.extend(step._upstream_steps())
        return list(seen.values())

    def validate(self) -> list[str]:
        """Check the graph; raises `PipelineValidationError` (or a subclass) naming the problem. Returns warnings."""
        self._check(self._closure())
        return []

    def _check(self, steps: list[PipelineStep]) -> None:
        names: dict[str, PipelineStep] = {}
        for step in steps:
            if step.name in names and names[step.name] is not step:
                raise PipelineValidationError(
                    f"Two steps are named {step.name!r}: give each step a unique name= (step names identify "
                    "runs and reuse)."
                )
            names[step.name] = step
        members = {id(s) for s in steps}
        for step in steps:
            seen_outputs: dict[str, _StepOutput] = {}
            for out in step._produced():
                if len(out._explicit_producers) > 1:
                    who = ", ".join(repr(p.name) for p in out._explicit_producers)
                    raise OutputNotUniqueError(
                        f"Output {out.name or out!r} is produced by more than one step ({who}): each output "
                        "must have exactly one producer; create a separate output object for each step."
                    )
                if out.name and out.name in seen_outputs:
                    raise OutputNotUniqueError(f"Step {step.name!r} declares two outputs named {out.name!r}; "
                                               "give them different names.")
                if out.name:
                    seen_outputs[out.name] = out
            for item in step._consumed():
                src = step._source_of(item)
                if isinstance(src, _StepOutput):
                    if src.producer is None:
                        raise PipelineValidationError(
                            f"Input {src.name or src!r} of step {step.name!r} is not produced by any step: list it in "
                            "outputs= (or arguments=) of the step that writes it."
                        )
                    if id(src.producer) not in members:
                        raise PipelineValidationError(
                            f"Input {src.name or src!r} of step {step.name!r} is produced by step "
                            f"{src.producer.name!r}, which is not in the pipeline: add that step or use "
                            "resolve_closure=True."
                        )
            for after in step._run_after:
                if id(after) not in members:
                    raise PipelineValidationError(
                        f"Step {step.name!r} runs after step {after.name!r}, which is not in the pipeline: add it "
                        "or use resolve_closure=True."
                    )
            self._check_source(step)
        graph = {s.name: [u.name for u in s._upstream_steps()] for s in steps}
        try:
            list(TopologicalSorter(graph).static_order())
        except CycleError as err:
            cycle = err.args[1] if len(err.args) > 1 else []
            raise CircularDependencyError(
                f"Steps depend on each other in a cycle: {' -> '.join(map(str, cycle))}. Break it by removing one "
                "of these data dependencies or run_after calls."
            ) from None
        self._parameters(steps)

    def _source_dir(self, step: PipelineStep) -> Path | None:
        src = step.source_directory or self.default_source_directory
        if src is None and isinstance(step, PythonScriptStep):
            src = "."
        return Path(src).resolve() if src is not None else None

    def _check_source(self, step: PipelineStep) -> None:
        src = self._source_dir(step)
        if src is None:
            return
        if not src.is_dir():
            raise PipelineValidationError(
                f"Step {step.name!r}: source_directory {str(src)!r} does not exist; fix the path."
            )
        if isinstance(step, PythonScriptStep) and not (src / step.script_name).is_file():
            candidates = [p.name for p in src.glob("*.py")]
            close = difflib.get_close_matches(step.script_name, candidates, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise PipelineValidationError(
                f"Step {step.name!r}: script {step.script_name!r} is not in source_directory {str(src)!r}.{hint}"
            )

    @staticmethod
    def _parameters(steps: list[PipelineStep]) -> dict[str, PipelineParameter]:
        params: dict[str, PipelineParameter] = {}
        for step in steps:
            for p in step._parameters():
                other = params.get(p.name)
                if other is not None and other is not p and (other.type, other._default_spec()) != (
                        p.type, p._default_spec()):
                    raise PipelineValidationError(
                        f"Two different PipelineParameters are named {p.name!r} (defaults {other.default_value!r} "
                        f"and {p.default_value!r}); use one object or different names."
                    )
                params[p.name] = p
        return params

    # -- the spec
    def _resolve_parameters(self, steps, pipeline_parameters: dict | None) -> dict[str, Any]:
        params = self._parameters(steps)
        values = {name: p._default_spec() for name, p in params.items()}
        for name, value in (pipeline_parameters or {}).items():
            if name not in params:
                close = difflib.get_close_matches(name, list(params), n=1)
                hint = f" Did you mean {close[0]!r}?" if close else f" Known parameters: {sorted(params)}."
                raise PipelineValidationError(f"Unknown pipeline parameter {name!r}.{hint}")
            values[name] = coerce(name, params[name].type, value)
        return values

    def _build_spec(self) -> PipelineSpec:
        steps = self._closure()
        self._check(steps)
        params = self._parameters(steps)
        specs = []
        for step in steps:
            specs.append(self._step_spec(step))
        return PipelineSpec(
            description=self.description,
            default_datastore=self.default_datastore,
            parameters={n: ParamSpec(type=p.type, default=p._default_spec()) for n, p in params.items()},
            steps=specs,
        )

    def _step_spec(self, step: PipelineStep) -> StepSpec:
        outputs: list[OutputSpec] = []
        out_names: dict[int, str] = {}
        for i, out in enumerate(step._produced()):
            name = out.name or ("output" if i == 0 else f"output_{i}")
            out_names[id(out)] = name
            dest = getattr(out, "destination_path", None)
            mode = getattr(out, "mode", "mount")
            outputs.append(OutputSpec(name=name, datastore=out.datastore_name, destination=dest,
                                      mode="upload" if mode == "upload" else "mount",
                                      register_as=getattr(out, "_register_as", None)))
        inputs: list[InputSpec] = []
        in_names: dict[int, str] = {}
        used = set(out_names.values())
        for item in step._consumed():
            src = step._source_of(item)
            port = item if isinstance(item, InputPort) else None
            mode = port.mode if port else "download"
            if isinstance(item, tuple):  # (PipelineParameter, DataPathComputeBinding)
                mode = getattr(item[1], "mode", "mount")
            if isinstance(src, _StepOutput):
                source = {"type": "step_output", "step": src.producer.name,
                          "output": self._output_name(src)}
                if not port:
                    mode = "mount" if isinstance(src, (OutputFileDatasetConfig, PipelineData)) else "download"
                elif port.tabular is not None:  # read_delimited_files()/read_parquet_files(): a TabularDataset
                    source["tabular"] = port.tabular
                    mode = "direct"
            elif isinstance(src, PipelineParameter):
                source = {"type": "param", "name": src.name}
            elif isinstance(src, DataPath):
                source = src._spec()
                if not port:
                    mode = getattr(src, "mode", "download")
                    mode = mode if mode in ("download", "mount") else "download"
            elif hasattr(src, "_input_spec"):  # datasets
                source = src._input_spec()
            else:
                raise PipelineValidationError(f"Step {step.name!r}: cannot use {item!r} as an input.")
            base = (port.name if port and port.name else None) or getattr(src, "name", None) or "input"
            name, n = base, 1
            while name in used:
                name = f"{base}_{n}"
                n += 1
            used.add(name)
            in_names[id(src)] = name
            inputs.append(InputSpec(name=name, source=source, mode=mode,
                                    path_on_compute=port.path_on_compute if port else None))

        def arg(value: Any) -> ArgSpec:
            src = step._source_of(value)
            if isinstance(src, PipelineParameter):
                if isinstance(src.default_value, DataPath):
                    return ArgSpec(kind="input", name=in_names[id(src)])
                return ArgSpec(kind="param", name=src.name)
            if isinstance(src, _StepOutput) and id(src) in out_names and not isinstance(value, InputPort):
                return ArgSpec(kind="output", name=out_names[id(src)])
            if id(src) in in_names:
                return ArgSpec(kind="input", name=in_names[id(src)])
            if isinstance(value, (str, int, float, bool)) or value is None:
                return ArgSpec(kind="literal", value=value)
            if isinstance(value, os.PathLike):
                return ArgSpec(kind="literal", value=os.fspath(value))
            raise PipelineValidationError(
                f"Step {step.name!r}: argument {value!r} is not a string, number, parameter or data reference."
            )

        src_dir = self._source_dir(step)
        return StepSpec(
            name=step.name,
            kind="command" if isinstance(step, CommandStep) else "python",
            script_name=getattr(step, "script_name", None),
            command=[arg(c) for c in getattr(step, "command", [])],
            source_directory=str(src_dir) if src_dir else None,
            arguments=[arg(a) for a in step.arguments],
            inputs=inputs,
            outputs=outputs,
            params={str(k): arg(v) for k, v in step.params.items()},
            allow_reuse=step.allow_reuse,
            version=step.version,
            hash_paths=step.hash_paths,
            compute_target=_compute_name(step._compute()),
            environment=step._environment(),
            run_after=[s.name for s in step._run_after],
        )

    @staticmethod
    def _output_name(out: _StepOutput) -> str:
        if out.name:
            return out.name
        produced = out.producer._produced()
        i = next(k for k, o in enumerate(produced) if o is out)
        return "output" if i == 0 else f"output_{i}"

    # -- running: the verbs the Prefect side installs (pipeline/port.py)
    def submit(self, experiment_name: str, pipeline_parameters: dict | None = None, continue_on_step_failure=False,
               regenerate_outputs: bool = False, parent_run_id=None, credential_passthrough=None, tags=None, **kw):
        """Submit it to experiment `experiment_name` of its workspace; returns the `PipelineRun` at once."""
        return port.verbs().submit(self, experiment_name, pipeline_parameters=pipeline_parameters,
                                   continue_on_step_failure=continue_on_step_failure,
                                   regenerate_outputs=regenerate_outputs, tags=tags,
                                   pipeline_compute=kw.get("pipeline_compute"))

    def _submit_to(self, experiment, pipeline_parameters: dict | None = None, tags: dict | None = None,
                   **options: Any):
        """What `Experiment.submit(pipeline, ...)` asks of the object it is given."""
        return port.verbs().submit(self, experiment, pipeline_parameters=pipeline_parameters, tags=tags, **options)

    def publish(self, name: str | None = None, description: str | None = None, version: str | None = None,
                continue_on_step_failure: bool | None = None, pipeline_compute=None):
        """Publish it as a parameterized Prefect deployment `<name>/<version>`; returns a `PublishedPipeline`."""
        return port.verbs().publish(self, name, description, version, continue_on_step_failure, pipeline_compute)

    def explain_reuse(self, pipeline_parameters: dict | None = None, regenerate_outputs: bool = False,
                      show_output: bool = True) -> dict[str, str]:
        """Whether each step would be reused or run if submitted now, and why (runs nothing)."""
        explanations = port.verbs().explain_reuse(self, pipeline_parameters, regenerate_outputs)
        if show_output:
            for name, why in explanations.items():
                print(f"  step {name}: {why}")
        return explanations

    def __repr__(self) -> str:
        return f"Pipeline(steps={[s.name for s in self._closure()]})"
