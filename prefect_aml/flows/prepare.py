"""Before a run exists: the spec's sources snapshotted, its computes resolved, its inputs and environments checked.

Shared by `Experiment.submit` (`flows/submit.py`) and publishing (`deployments/published.py`): what can
fail for a reason the user can fix fails here, before a flow run or a deployment is created.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect_aml import envbuild
from prefect_aml.compute import resolve_compute
from prefect_aml.datastore import Datastore
from prefect_aml.pipeline.spec import PipelineSpec
from prefect_aml.tasks.reuse import dataset_fingerprint
from prefect_aml.tasks.snapshots import ensure_snapshot, git_info, select, snapshot_id


def default_store(ws, spec: PipelineSpec):
    """The run's default datastore: the pipeline's own, else the workspace's."""
    return Datastore.get(ws, spec.default_datastore) if spec.default_datastore else ws.get_default_datastore()


def store_getter(store, ws):
    """name -> datastore, the run's default for None; each looked up once."""
    stores: dict[str | None, Any] = {None: store, store.name: store}

    def get(name):
        if name not in stores:
            stores[name] = Datastore.get(ws, name)
        return stores[name]

    return get


def workspace_fields(ws) -> dict[str, Any]:
    """What a run keeps of its workspace (`Workspace(**fields)` on the machine that runs a step)."""
    return {"workspace_name": ws.name, "subscription_id": ws.subscription_id, "resource_group": ws.resource_group,
            "home": str(ws.home), "redis_url": ws.redis_url}


def prepare_sources(spec: PipelineSpec, store, home: Path) -> None:
    """Snapshot each source directory once and record its hash (all files, or those in hash_paths)."""
    done: dict[str, tuple[str, dict, dict | None]] = {}
    for step in spec.steps:
        if not step.source_directory:
            continue
        if step.source_directory not in done:
            done[step.source_directory] = (*ensure_snapshot(store, step.source_directory, home / "hash-cache"),
                                           git_info(step.source_directory))
        sid, hashes, git = done[step.source_directory]
        step.snapshot_id = sid
        step.source_hash = "paths-" + snapshot_id(select(hashes, step.hash_paths)) if step.hash_paths else sid
        step.git = git


def resolve_computes(spec: PipelineSpec, ws) -> None:
    """Each step's compute, looked up once per name; an unknown compute fails here."""
    found: dict[str | None, dict | None] = {}
    for step in spec.steps:
        if step.compute_target not in found:
            found[step.compute_target] = resolve_compute(ws, step.compute_target, step.name)
        step.compute = found[step.compute_target]


def check_spec(spec: PipelineSpec, store, ws) -> None:
    """Every check of a spec before a run or a deployment of it exists (submit and publish call this)."""
    for check in (check_inputs, check_environments):
        check(spec, store, ws)


def check_environments(spec: PipelineSpec, store, ws) -> None:
    """Each step's environment can be built: a conda package with no PyPI equivalent, or a package or version
    that does not exist, fails here, naming it (resolved once per environment; nothing is installed)."""
    for step in spec.steps:
        envbuild.check(step.environment, ws.home)


def check_inputs(spec: PipelineSpec, store, ws) -> None:
    """Every output datastore exists; a registered dataset version whose files changed fails here."""
    for name in {s.datastore for step in spec.steps for s in step.outputs if s.datastore}:
        Datastore.get(ws, name)
    get = store_getter(store, ws)
    for step in spec.steps:
        for inp in step.inputs:
            if inp.source.get("type") == "dataset" and inp.source.get("pin"):
                dataset_fingerprint(inp.source, get)
