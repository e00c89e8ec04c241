"""Step reuse: the key, the Prefect cache policy built on it, and explanations of hits and misses.

A step's key hashes named components (step identity, script or command, source hash — or only
the files matched by `hash_paths` — resolved arguments and params, each input's identity, the
declared outputs, the environment); never the compute target or the run id. Keys are namespaced
(`aml-step-...`). Prefect keeps the cache records on the workspace's default datastore
(`azureml/cache/`), so reuse works across processes, machines, experiments and pipelines; a hit
is served only while the outputs' manifests are still there, and concurrent identical steps run
once (serializable isolation; file locks for a local datastore, Redis for a shared one).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from prefect.cache_policies import CachePolicy
from prefect.filesystems import WritableFileSystem
from pydantic import PrivateAttr

from prefect_aml import envbuild
from prefect_aml.blocks.datastores import LocalDatastore
from prefect_aml.dataset import _Dataset
from prefect_aml.datastore import Datastore
from prefect_aml.names import (
    CACHE_PREFIX,
    LOCKS_DIR,
    block_name_for,
    cache_record_path,
    derived_output_path,
    last_record_path,
    manifest_path,
    reuse_record_path,
)
from prefect_aml.pipeline.spec import ArgSpec, PipelineSpec, StepSpec
from prefect_aml.records import find_detail, fingerprint, read_json, remove, write_bytes
from prefect_aml.tasks.context import OutputLocation, RunContext, StepPlan
from prefect_aml.tasks.locks import LeasedFileLockManager, redis_lock_manager
from prefect_aml.tasks.snapshots import select, stored_file_hashes
from prefect_aml.workspace import Workspace


# -- where Prefect keeps the cache records -------------------------------------------------------
class AmlResultStorage(WritableFileSystem):
    """Prefect result storage on a datastore, under `azureml/cache/` (Prefect's cache records)."""

    _block_type_name = "AML Result Storage"
    _description = "Where prefect-aml keeps Prefect's cache records of pipeline steps: a datastore's azureml/cache/."
    datastore_name: str
    prefix: str = CACHE_PREFIX
    _store: Any = PrivateAttr(default=None)

    @classmethod
    def on(cls, store) -> AmlResultStorage:
        """The result storage on `store`, saved in the server (Prefect requires saved result storage)."""
        name = f"cache-{block_name_for(store.name)}"
        try:
            storage = cls.load(name)  # one read; saving registers the block type and schema every time
        except ValueError:
            storage = None
        if storage is None or storage.datastore_name != store.name or storage.prefix != CACHE_PREFIX:
            storage = cls(datastore_name=store.name)
            storage.save(name, overwrite=True, _sync=True)
        storage._store = store
        return storage

    def _datastore(self):
        if self._store is None:
            self._store = Datastore.get(Workspace(), self.datastore_name)
        return self._store

    def read_path(self, path: str, _sync: bool | None = None) -> bytes:
        store = self._datastore()
        fs = store.filesystem()
        try:
            with fs.open(store.full_path(f"{self.prefix}/{path}"), "rb") as f:
                return f.read()
        except FileNotFoundError:
            raise ValueError(f"Path {path} does not exist.") from None

    def write_path(self, path: str, content: bytes, _sync: bool | None = None) -> str:
        write_bytes(self._datastore(), f"{self.prefix}/{path}", content)
        return path

    async def aread_path(self, path: str) -> bytes:
        return await asyncio.to_thread(self.read_path, path)

    async def awrite_path(self, path: str, content: bytes) -> str:
        return await asyncio.to_thread(self.write_path, path, content)


def lock_manager_for(store, home: Path, redis_url: str | None):
    """Redis when configured (many machines); else file locks beside a local datastore or in the home."""
    if redis_url:
        return redis_lock_manager(redis_url)
    if isinstance(store, LocalDatastore):
        return LeasedFileLockManager(Path(store.root()) / LOCKS_DIR)
    return LeasedFileLockManager(home / "locks")


# -- the key -------------------------------------------------------------------------------------
def dataset_fingerprint(definition: dict, stores) -> dict:
    """Identity of the files a dataset definition matches (datastore, path, size, ETag or content hash).

    A registered version whose files changed since it was registered fails here, before anything runs."""
    return _Dataset._from_definition(definition, stores)._fingerprint(check=True)


def _arg_identity(a: ArgSpec, params: dict) -> Any:
    if a.kind == "param":
        return {"param": a.name, "value": params[a.name]}
    return a.model_dump(exclude_none=True)


def components_of(step: StepSpec, params: dict, inputs: dict[str, dict]) -> dict[str, Any]:
    components = {
        "step": {"type": step.kind, "name": step.name, "version": step.version},
        "script": step.script_name,
        "command": [_arg_identity(a, params) for a in step.command],
        "source": step.source_hash,
        "arguments": [_arg_identity(a, params) for a in step.arguments],
        "params": {k: _arg_identity(v, params) for k, v in sorted(step.params.items())},
        "inputs": {k: v for k, v in sorted(inputs.items())},
        "outputs": [o.model_dump(exclude={"register_as"}) for o in step.outputs],
        "environment": {k: v for k, v in step.environment.items() if k != "git"},
    }
    built = envbuild.spec_of(step.environment)
    if built is not None:  # what is built (the mapping of conda names, the format); absent otherwise: keys stay
        components["environment_build"] = built.hash
    return components


def key_of(components: dict) -> str:
    digest = hashlib.sha256(json.dumps(components, sort_keys=True, default=str).encode()).hexdigest()
    return f"aml-step-{digest[:40]}"


def output_location(out, out_key: str, run_id: str) -> str:
    if out.destination:
        return out.destination.replace("{run-id}", run_id).replace("{output-name}", out.name).strip("/")
    return derived_output_path(out_key, out.name)


# -- validity of a cached result -----------------------------------------------------------------
def invalid_reason(record: dict | None, stores) -> str | None:
    """Why the outputs behind a reuse record cannot be served (None when they can)."""
    if not record:
        return "no earlier run recorded"
    for name, out in record.get("outputs", {}).items():
        store = stores(out["datastore"])
        manifest = read_json(store, out["manifest"])
        if not manifest:
            return f"output {name!r} of run {record.get('task_run_id')} is gone (manifest missing)"
        if manifest.get("key") != record.get("out_key", record["key"]):
            return f"output {name!r} was overwritten by another run"
        fs = store.filesystem()
        base = fs._strip_protocol(store.full_path(out["path"])).rstrip("/")
        found = {p[len(base) + 1:]: i.get("size") for p, i in find_detail(fs, base).items()}
        for f in manifest["files"]:
            if found.get(f["path"]) != f["size"]:
                return f"output {name!r}: file {f['path']!r} is missing or changed"
    return None


def explain(components: dict, last: dict | None) -> list[str]:
    """What changed since the step's last record, in words ("train.py changed", "parameter lr: 0.1 -> 0.2")."""
    if not last:
        return ["it has not run before"]
    before = last.get("components", {})
    reasons: list[str] = []
    if components["step"] != before.get("step"):
        old, new = before.get("step", {}), components["step"]
        for k in ("type", "version"):
            if old.get(k) != new.get(k):
                reasons.append(f"step {k}: {old.get(k)} -> {new.get(k)}")
    if components["script"] != before.get("script"):
        reasons.append(f"script: {before.get('script')} -> {components['script']}")
    if components["source"] != before.get("source"):
        now_files, old_files = components.get("_source_files") or {}, last.get("source_files") or {}
        changed = sorted(f for f in now_files if f in old_files and now_files[f] != old_files[f])
        added = sorted(set(now_files) - set(old_files))
        gone = sorted(set(old_files) - set(now_files))
        parts = [f"{f} changed" for f in changed] + [f"{f} added" for f in added] + [f"{f} removed" for f in gone]
        reasons += parts[:5] + ([f"and {len(parts) - 5} more source changes"] if len(parts) > 5 else [])
        if not parts:
            reasons.append("source changed")
    for field in ("arguments", "command"):
        old, new = before.get(field, []), components[field]
        if old != new:
            pairs = [(o, n) for o, n in zip(old, new, strict=False) if o != n]
            params = [(o, n) for o, n in pairs if isinstance(n, dict) and "param" in n and isinstance(o, dict)
                      and o.get("param") == n["param"]]
            reasons += [f"parameter {n['param']}: {o.get('value')!r} -> {n['value']!r}" for o, n in params]
            if len(params) != len(pairs) or len(old) != len(new):
                reasons.append(f"{field} changed")
    old_p, new_p = before.get("params", {}), components["params"]
    for k in sorted(set(old_p) | set(new_p)):
        if old_p.get(k) != new_p.get(k):
            o, n = old_p.get(k, {}), new_p.get(k, {})
            reasons.append(f"param {k}: {o.get('value', o.get('value'))!r} -> {n.get('value', n.get('value'))!r}")
    old_i, new_i = before.get("inputs", {}), components["inputs"]
    for k in sorted(set(old_i) | set(new_i)):
        o, n = old_i.get(k), new_i.get(k)
        if o == n:
            continue
        if o is None or n is None:
            reasons.append(f"input {k} {'added' if o is None else 'removed'}")
        elif "upstream" in n:
            reasons.append(f"input {k}: upstream step {n['upstream']!r} produces new data")
        elif o.get("path") != n.get("path") or o.get("datastore") != n.get("datastore"):
            reasons.append(f"input {k}: {o.get('datastore')}:{o.get('path')} -> {n.get('datastore')}:{n.get('path')}")
        else:
            reasons.append(f"input {os.path.basename(n.get('path') or k) or k} changed (etag)")
    if components["outputs"] != before.get("outputs"):
        reasons.append("outputs changed")
    if components["environment"] != before.get("environment"):
        reasons.append("environment changed")
    elif components.get("environment_build") != before.get("environment_build"):
        reasons.append("environment build changed (how its packages are mapped or built)")
    return reasons or ["the cached result is not available"]


# -- the plan: keys and explanations for every step, before anything runs ------------------------
def _input_identity(src: dict, plans: dict[str, StepPlan], params: dict, stores) -> dict:
    if src["type"] == "step_output":
        up = plans[src["step"]]
        return {"upstream": src["step"], "key": up.out_key, "output": src["output"],
                **({"tabular": src["tabular"]} if src.get("tabular") else {})}
    if src["type"] == "dataset":
        return {"dataset": {k: src[k] for k in ("kind", "paths", "options", "ops")},
                "fingerprint": dataset_fingerprint(src, stores)}
    if src["type"] == "param":
        src = params[src["name"]]
    store = stores(src.get("datastore"))
    return {"datastore": store.name, "path": src["path"], "fingerprint": fingerprint(store, src["path"])}


def _reuse_decision(step: StepSpec, key: str, components: dict, source_files: dict, regenerate_outputs: bool,
                    stores) -> dict:
    """Whether the step will be reused (a valid record and Prefect's cache record) and why, in words."""
    if not step.allow_reuse:
        return {"will_reuse": False, "explanation": "will run: allow_reuse=False"}
    if regenerate_outputs:
        return {"will_reuse": False, "explanation": "will run: regenerate_outputs=True"}
    default = stores(None)
    record = read_json(default, reuse_record_path(key))
    reason = invalid_reason(record, stores) if record else None
    if record is not None and reason is None and default.filesystem().exists(default.full_path(cache_record_path(key))):
        return {"will_reuse": True, "reused_from": record["task_run_id"], "record": record,
                "explanation": f"will reuse run {record['task_run_id']} (pipeline run {record['pipeline_run_id']})"}
    last = read_json(default, last_record_path(step.name))
    why = [reason] if reason else explain({**components, "_source_files": source_files}, last)
    return {"will_reuse": False, "explanation": "will run: " + ", ".join(why)}


def plan_pipeline(spec: PipelineSpec, parameters: dict, run_id: str, regenerate_outputs: bool,
                  stores) -> dict[str, StepPlan]:
    """Keys, output locations and reuse explanations for every step, in dependency order."""
    plans: dict[str, StepPlan] = {}
    file_maps: dict[str, dict] = {}
    for name in spec.order():
        step = spec.step(name)
        inputs = {inp.name: _input_identity(inp.source, plans, parameters, stores) for inp in step.inputs}
        components = components_of(step, parameters, inputs)
        key = key_of(components)
        out_key = key if step.allow_reuse else f"{key}-{run_id[:8]}"
        outputs = {out.name: OutputLocation(datastore=stores(out.datastore).name,
                                            path=output_location(out, out_key, run_id),
                                            manifest=manifest_path(out_key, out.name))
                   for out in step.outputs}
        if step.snapshot_id and step.snapshot_id not in file_maps:
            file_maps[step.snapshot_id] = stored_file_hashes(stores(None), step.snapshot_id)
        source_files = select(file_maps.get(step.snapshot_id, {}), step.hash_paths)
        plans[name] = StepPlan(key=key, out_key=out_key, components=components, outputs=outputs,
                               source_files=source_files,
                               **_reuse_decision(step, key, components, source_files, regenerate_outputs, stores))
    return plans


class StepCachePolicy(CachePolicy):
    """The step's planned key; a stale record (outputs gone) is dropped first so the step runs again."""

    def compute_key(self, task_ctx, inputs: dict[str, Any], flow_parameters: dict[str, Any], **kwargs) -> str | None:
        plan, step = inputs["plan"], inputs["step"]
        if not step.get("allow_reuse", True):
            return None
        if plan.will_reuse:
            return plan.key  # validated by the plan a moment ago: no second round of reads
        ctx: RunContext = inputs["ctx"]
        record = read_json(ctx.default_store, reuse_record_path(plan.key))
        if record is None or invalid_reason(record, ctx.store) is not None:
            remove(ctx.default_store, cache_record_path(plan.key))
            remove(ctx.default_store, reuse_record_path(plan.key))
        return plan.key
