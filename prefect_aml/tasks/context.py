"""What passes between the pipeline flow and a step: the run's context, a step's plan, result and record.

Typed (pydantic), so a reader sees the fields, and plain data, so the same objects travel to a thread
here, a Dask worker (pickled) or a work pool's step flow (as JSON parameters).

    ctx = RunContext(run_id=..., experiment_name="exp", workspace={...}, default_datastore="workspaceblobstore")
    store = ctx.store("raw")          # loaded once per run and process
"""

from __future__ import annotations

import threading
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from prefect_aml.datastore import Datastore
from prefect_aml.workspace import Workspace

# datastores loaded once per pipeline run and process: (run id, name) -> block
_STORES: dict[tuple[str, str], Any] = {}
_STORES_LOCK = threading.Lock()


class RunContext(BaseModel):
    """What every step of a pipeline run needs from the run."""

    run_id: str
    experiment_name: str
    workspace: dict[str, Any]  # Workspace(**workspace): name, ids, home, redis_url
    default_datastore: str
    parameters: dict[str, Any] = Field(default_factory=dict)  # the run's resolved pipeline parameters
    regenerate_outputs: bool = False
    ui_url: str | None = None

    def ws(self) -> Workspace:
        return Workspace(**self.workspace)

    def store(self, name: str | None = None):
        """A datastore of the run by name (None: the run's default), loaded once per run and process."""
        key = (self.run_id, name or self.default_datastore)
        with _STORES_LOCK:
            if key not in _STORES:
                _STORES[key] = Datastore.get(self.ws(), key[1])
            return _STORES[key]

    @property
    def default_store(self):
        return self.store(None)


class OutputLocation(BaseModel):
    """Where a step output lands, and the manifest that marks it whole."""

    datastore: str
    path: str
    manifest: str


class StepPlan(BaseModel):
    """A step's plan, made before anything runs: its reuse key, output locations and why it will run or not."""

    model_config = ConfigDict(extra="ignore")

    key: str
    out_key: str  # the key outputs are stored under (the key itself, or unique per run without reuse)
    outputs: dict[str, OutputLocation] = Field(default_factory=dict)
    explanation: str = ""
    will_reuse: bool = False
    components: dict[str, Any] | None = None  # what the key is made of (explain_reuse compares them)
    source_files: dict[str, Any] | None = None
    reused_from: str | None = None
    record: dict[str, Any] | None = None  # a planned hit: the record it reuses

    def for_dispatch(self) -> StepPlan:
        """What the step's task needs: a hit only its key and outputs (small task inputs)."""
        if not self.will_reuse:
            return self
        return StepPlan(key=self.key, out_key=self.out_key, outputs=self.outputs, explanation=self.explanation,
                        will_reuse=True)


class StepResult(BaseModel):
    """What a finished (or reused) step hands to the steps after it."""

    model_config = ConfigDict(extra="ignore")

    step: str
    key: str
    out_key: str
    outputs: dict[str, OutputLocation] = Field(default_factory=dict)
    task_run_id: str | None = None
    pipeline_run_id: str | None = None
    metrics: dict[str, Any] | None = None  # from a Dask worker: published by the task run that waited
    environment: dict[str, Any] | None = None  # from a Dask worker: its built environment, published likewise


class StepRecord(BaseModel):
    """A step run's record on the default datastore (`record.json`, the reuse and last-run records)."""

    model_config = ConfigDict(extra="allow")

    step: str
    key: str | None = None
    out_key: str | None = None
    status: str | None = None  # Finished | Failed
    reused: bool = False
    task_run_id: str | None = None
    pipeline_run_id: str | None = None
    reused_from: str | None = None
    reused_from_pipeline_run: str | None = None
    snapshot_id: str | None = None
    git: dict[str, Any] | None = None
    metrics: dict[str, Any] = Field(default_factory=dict)
    tags: dict[str, Any] = Field(default_factory=dict)
    started: str | None = None
    ended: str | None = None
    log: dict[str, str] | None = None  # {"datastore", "path"}
    exit_code: int | None = None
    components: dict[str, Any] | None = None
    source_files: dict[str, Any] | None = None
    explanation: str | None = None
    outputs: dict[str, OutputLocation] = Field(default_factory=dict)
    environment: dict[str, Any] | None = None  # a built environment: its name, hash, Python, lock (exact versions)

    def as_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json")
