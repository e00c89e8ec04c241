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
import re
from pathlib import Path
from typing import Any

from prefect.cache_policies import CachePolicy
from prefect.filesystems import WritableFileSystem
from pydantic import PrivateAttr

from prefect_aml.pipeline.spec import ArgSpec, PipelineSpec, StepSpec

CACHE_PREFIX = "azureml/cache"
REUSE_PREFIX = "azureml/reuse"
STEPS_PREFIX = "azureml/steps"
OUTPUTS_PREFIX = "azureml/outputs"
MANIFESTS_PREFIX = "azureml/manifests"
LOCAL_HASH_LIMIT = 16 * 1024 * 1024


# -- small JSON files on a datastore -------------------------------------------------------------
def read_json(store, path: str) -> dict | None:
    fs = store.filesystem()
    try:
        with fs.open(store.full_path(path), "rb") as f:
            return json.loads(f.read())
    except FileNotFoundError:
        return None


def write_bytes(store, path: str, data: bytes) -> None:
    """Write a file whole: to a temporary name first, then moved into place."""
    import threading

    from prefect_aml.blocks.datastores import LocalDatastore

    target = store.full_path(path)
    tmp = f"{target}.{os.getpid()}.{threading.get_ident()}.partial"
    if isinstance(store, LocalDatastore):  # the same, without fsspec's file objects (~6x faster)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, target)
        return
    fs = store.filesystem()
    with fs.open(tmp, "wb") as f:
        f.write(data)
    fs.mv(tmp, target)


def write_json(store, path: str, data: dict) -> None:
    write_bytes(store, path, json.dumps(data, indent=1, default=str).encode())


def remove(store, path: str) -> None:
    fs = store.filesystem()
    try:
        fs.rm(store.full_path(path))
    except FileNotFoundError:
        pass


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
        from prefect_aml.blocks.datastores import block_name_for

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
            from prefect_aml.datastore import Datastore
            from prefect_aml.workspace import Workspace

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
    from prefect_aml.blocks.datastores import LocalDatastore
    from prefect_aml.tasks.locks import LeasedFileLockManager, redis_lock_manager

    if redis_url:
        return redis_lock_manager(redis_url)
    if isinstance(store, LocalDatastore):
        return LeasedFileLockManager(Path(store.root()) / "azureml" / "locks")
    return LeasedFileLockManager(home / "locks")


def find_detail(fs, path: str) -> dict[str, dict]:
    """`fs.find(path, detail=True)` as a dict for every filesystem (adlfs may answer with a list of names)."""
    try:
        found = fs.find(path, detail=True)
    except FileNotFoundError:
        return {}
    if isinstance(found, list):
        found = {i: fs.info(i) for i in found} if found and isinstance(found[0], str) else {i["name"]: i for i in found}
    return found


# -- the key -------------------------------------------------------------------------------------
def file_tag(local: bool, path: str, info: dict) -> str:
    """A file's identity: its content hash for a small local file, else its ETag (or modification time)."""
    if local and (info.get("size") or 0) <= LOCAL_HASH_LIMIT:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:32]
    return str(info.get("ETag") or info.get("etag") or info.get("mtime") or info.get("last_modified"))


def digest(items: list) -> str:
    return hashlib.sha256(json.dumps(items).encode()).hexdigest()[:24]


def fingerprint(store, path: str) -> dict:
    """Identity of data on a datastore: per file, its size and ETag (content hash for small local files)."""
    fs = store.filesystem()
    local = fs.protocol in ("file", ("file", "local"))
    items = [[p, info.get("size"), file_tag(local, p, info)]
             for p, info in sorted(find_detail(fs, store.full_path(path)).items())]
    return {"files": len(items), "digest": digest(items)}


def dataset_fingerprint(definition: dict, stores) -> dict:
    """Identity of the files a dataset definition matches (datastore, path, size, ETag or content hash).

    A registered version whose files changed since it was registered fails here, before anything runs."""
    from prefect_aml.dataset import _Dataset

    return _Dataset._from_definition(definition, stores)._fingerprint(check=True)


def _arg_identity(a: ArgSpec, params: dict) -> Any:
    if a.kind == "param":
        return {"param": a.name, "value": params[a.name]}
    return a.model_dump(exclude_none=True)


def components_of(step: StepSpec, params: dict, inputs: dict[str, dict]) -> dict[str, Any]:
    return {
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


def key_of(components: dict) -> str:
    digest = hashlib.sha256(json.dumps(components, sort_keys=True, default=str).encode()).hexdigest()
    return f"aml-step-{digest[:40]}"


def output_location(out, out_key: str, run_id: str) -> str:
    if out.destination:
        return out.destination.replace("{run-id}", run_id).replace("{output-name}", out.name).strip("/")
    return f"{OUTPUTS_PREFIX}/{out_key}/{out.name}"


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "step"


def last_record_path(step_name: str) -> str:
    return f"{STEPS_PREFIX}/{_slug(step_name)}.json"


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
    return reasons or ["the cached result is not available"]


# -- the plan: keys and explanations for every step, before anything runs ------------------------
def plan_pipeline(spec: PipelineSpec, ctx: dict, stores) -> dict[str, dict]:
    """Keys, output locations and reuse explanations for every step, in dependency order."""
    from prefect_aml.tasks.snapshots import select, stored_file_hashes

    params = ctx["parameters"]
    plans: dict[str, dict] = {}
    file_maps: dict[str, dict] = {}
    for name in spec.order():
        step = spec.step(name)
        inputs: dict[str, dict] = {}
        for inp in step.inputs:
            src = inp.source
            if src["type"] == "step_output":
                up = plans[src["step"]]
                inputs[inp.name] = {"upstream": src["step"], "key": up["out_key"], "output": src["output"],
                                    **({"tabular": src["tabular"]} if src.get("tabular") else {})}
                continue
            if src["type"] == "dataset":
                inputs[inp.name] = {"dataset": {k: src[k] for k in ("kind", "paths", "options", "ops")},
                                    "fingerprint": dataset_fingerprint(src, stores)}
                continue
            if src["type"] == "param":
                src = params[src["name"]]
            store = stores(src.get("datastore"))
            inputs[inp.name] = {"datastore": store.name, "path": src["path"],
                                "fingerprint": fingerprint(store, src["path"])}
        components = components_of(step, params, inputs)
        key = key_of(components)
        out_key = key if step.allow_reuse else f"{key}-{ctx['run_id'][:8]}"
        outputs = {}
        for out in step.outputs:
            store = stores(out.datastore)
            outputs[out.name] = {"datastore": store.name, "path": output_location(out, out_key, ctx["run_id"]),
                                 "manifest": f"{MANIFESTS_PREFIX}/{out_key}/{out.name}.json"}
        default = stores(None)
        if step.snapshot_id and step.snapshot_id not in file_maps:
            file_maps[step.snapshot_id] = stored_file_hashes(default, step.snapshot_id)
        source_files = select(file_maps.get(step.snapshot_id, {}), step.hash_paths)
        plan = {"key": key, "out_key": out_key, "components": components, "outputs": outputs,
                "source_files": source_files}
        if not step.allow_reuse:
            plan.update(will_reuse=False, explanation="will run: allow_reuse=False")
        elif ctx.get("regenerate_outputs"):
            plan.update(will_reuse=False, explanation="will run: regenerate_outputs=True")
        else:
            record = read_json(default, f"{REUSE_PREFIX}/{key}.json")
            reason = invalid_reason(record, stores) if record else None
            cached = record is not None and reason is None and default.filesystem().exists(
                default.full_path(f"{CACHE_PREFIX}/{key}"))
            if cached:
                plan.update(will_reuse=True, reused_from=record["task_run_id"], record=record,
                            explanation=f"will reuse run {record['task_run_id']} "
                                        f"(pipeline run {record['pipeline_run_id']})")
            else:
                last = read_json(default, last_record_path(step.name))
                why = [reason] if reason else explain({**components, "_source_files": source_files}, last)
                plan.update(will_reuse=False, explanation="will run: " + ", ".join(why))
        plans[name] = plan
    return plans


class StepCachePolicy(CachePolicy):
    """The step's planned key; a stale record (outputs gone) is dropped first so the step runs again."""

    def compute_key(self, task_ctx, inputs: dict[str, Any], flow_parameters: dict[str, Any], **kwargs) -> str | None:
        from prefect_aml.tasks.step import StepContext

        plan, step = inputs["plan"], inputs["step"]
        if not step.get("allow_reuse", True):
            return None
        if plan.get("will_reuse"):
            return plan["key"]  # validated by the plan a moment ago: no second round of reads
        sc = StepContext(inputs["ctx"])
        record = read_json(sc.default_store, f"{REUSE_PREFIX}/{plan['key']}.json")
        if record is None or invalid_reason(record, sc.store) is not None:
            remove(sc.default_store, f"{CACHE_PREFIX}/{plan['key']}")
            remove(sc.default_store, f"{REUSE_PREFIX}/{plan['key']}.json")
        return plan["key"]
