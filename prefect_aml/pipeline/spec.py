"""The serialisable form of a pipeline: what a run needs, and nothing that needs a live object."""

from __future__ import annotations

from graphlib import TopologicalSorter
from typing import Any, Literal

from pydantic import BaseModel, Field


class ArgSpec(BaseModel):
    """One command-line argument: a literal, a pipeline parameter, or a data port resolved to a path."""

    kind: Literal["literal", "param", "input", "output"]
    value: Any = None
    name: str | None = None


class InputSpec(BaseModel):
    name: str
    source: dict[str, Any]  # {"type": "step_output", "step", "output"} | {"type": "datapath", "datastore", "path"}
    #                         | {"type": "param", "name"}
    mode: Literal["download", "mount", "direct"] = "download"
    path_on_compute: str | None = None


class OutputSpec(BaseModel):
    name: str
    datastore: str | None = None
    destination: str | None = None
    mode: Literal["upload", "mount"] = "mount"
    register_as: dict[str, Any] | None = None


class ParamSpec(BaseModel):
    type: Literal["int", "float", "str", "bool", "DataPath"]
    default: Any


class StepSpec(BaseModel):
    name: str
    kind: Literal["python", "command"]
    script_name: str | None = None
    command: list[ArgSpec] = Field(default_factory=list)
    source_directory: str | None = None
    snapshot_id: str | None = None
    source_hash: str | None = None  # the snapshot, or only the files matched by hash_paths
    git: dict[str, Any] | None = None
    arguments: list[ArgSpec] = Field(default_factory=list)
    inputs: list[InputSpec] = Field(default_factory=list)
    outputs: list[OutputSpec] = Field(default_factory=list)
    params: dict[str, ArgSpec] = Field(default_factory=dict)
    allow_reuse: bool = True
    version: str | None = None
    hash_paths: list[str] | None = None
    compute_target: str | None = None
    compute: dict[str, Any] | None = None  # where it runs, resolved at submit (not part of the reuse key)
    environment: dict[str, Any] = Field(default_factory=dict)
    run_after: list[str] = Field(default_factory=list)

    def upstream(self) -> list[str]:
        ups = [i.source["step"] for i in self.inputs if i.source.get("type") == "step_output"]
        return sorted(set(ups) | set(self.run_after))


class PipelineSpec(BaseModel):
    description: str | None = None
    default_datastore: str | None = None
    parameters: dict[str, ParamSpec] = Field(default_factory=dict)
    steps: list[StepSpec]

    def step(self, name: str) -> StepSpec:
        for s in self.steps:
            if s.name == name:
                return s
        raise KeyError(name)

    def order(self) -> list[str]:
        return list(TopologicalSorter({s.name: s.upstream() for s in self.steps}).static_order())

    def mermaid(self) -> str:
        lines = ["graph TD"]
        ids = {s.name: f"s{i}" for i, s in enumerate(self.steps)}
        for s in self.steps:
            lines.append(f'    {ids[s.name]}["{s.name}"]')
        for s in self.steps:
            for i in s.inputs:
                if i.source.get("type") == "step_output":
                    lines.append(f'    {ids[i.source["step"]]} -->|{i.source["output"]}| {ids[s.name]}')
                else:
                    src = i.source.get("path") or i.source.get("name") or i.name
                    node = f"d_{ids[s.name]}_{i.name}"
                    lines.append(f'    {node}[("{i.source.get("datastore") or ""}:{src}")] --> {ids[s.name]}')
            for after in s.run_after:
                lines.append(f"    {ids[after]} -.-> {ids[s.name]}")
        return "\n".join(lines)
