"""The step task: one pipeline step, run as one Prefect task run.

Order of work: compute the reuse key; on a valid hit return the earlier outputs; otherwise
restore the snapshot, materialise inputs, run the script in a subprocess (stdout/stderr streamed
to the Prefect logger and to the step's log file), commit outputs (files first, then a manifest)
and write the reuse record last.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections import deque
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NONE
from prefect.logging import get_run_logger

from prefect_aml.exceptions import StepFailedError
from prefect_aml.pipeline.spec import ArgSpec, StepSpec

RUNS_PREFIX = "azureml/runs"
OUTPUTS_PREFIX = "azureml/outputs"
MANIFESTS_PREFIX = "azureml/manifests"
REUSE_PREFIX = "azureml/reuse"
STDERR_TAIL_LINES = 30
LOCAL_HASH_LIMIT = 16 * 1024 * 1024

# step subprocesses of this process, so a cancelled pipeline can stop them
_ACTIVE: set[subprocess.Popen] = set()
_ACTIVE_LOCK = threading.Lock()


def terminate_active_steps() -> None:
    with _ACTIVE_LOCK:
        procs = list(_ACTIVE)
    for p in procs:
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass


# datastores loaded once per pipeline run and process: (run id, name) -> block
_STORES: dict[tuple[str, str], Any] = {}
_STORES_LOCK = threading.Lock()


class StepContext:
    """What a step needs from its pipeline run: stores, parameter values, upstream results."""

    def __init__(self, ctx: dict[str, Any]):
        self.ctx = ctx

    def store(self, name: str | None):
        from prefect_aml.datastore import Datastore
        from prefect_aml.workspace import Workspace

        key = (self.ctx["run_id"], name or self.ctx["default_datastore"])
        with _STORES_LOCK:
            if key not in _STORES:
                _STORES[key] = Datastore.get(Workspace(**self.ctx["workspace"]), key[1])
            return _STORES[key]

    @property
    def default_store(self):
        return self.store(None)


def _fingerprint(store, path: str) -> dict:
    """Identity of data on a datastore: ETag/size/mtime of each file under `path`."""
    fs = store.filesystem()
    full = store.full_path(path)
    try:
        infos = fs.find(full, detail=True) if not fs.isfile(full) else {full: fs.info(full)}
    except FileNotFoundError:
        infos = {}
    items = []
    local = fs.protocol in ("file", ("file", "local"))
    for p, info in sorted(infos.items()):
        if local and (info.get("size") or 0) <= LOCAL_HASH_LIMIT:
            tag = hashlib.sha256(Path(p).read_bytes()).hexdigest()  # local files have no ETag: hash small ones
        else:
            tag = info.get("ETag") or info.get("etag") or info.get("mtime") or info.get("last_modified")
        items.append([p, info.get("size"), str(tag)])
    return {"files": len(items), "digest": hashlib.sha256(json.dumps(items).encode()).hexdigest()[:24]}


def _resolve_input(inp: dict, sc: StepContext, upstream: dict[str, dict]) -> tuple[str | None, str, dict]:
    """(datastore name, path on it, identity for the reuse key) of one input."""
    src = inp["source"]
    if src["type"] == "step_output":
        out = upstream[src["step"]]["outputs"][src["output"]]
        return out["datastore"], out["path"], {"step_key": upstream[src["step"]]["key"], "output": src["output"]}
    if src["type"] == "param":
        src = sc.ctx["parameters"][src["name"]]
    if src["type"] == "datapath":
        store = sc.store(src["datastore"])
        return store.name, src["path"], {"datastore": store.name, "path": src["path"],
                                         "fingerprint": _fingerprint(store, src["path"])}
    raise StepFailedError(f"Input {inp['name']!r}: unsupported source {src!r}.")


def reuse_key(step: StepSpec, sc: StepContext, inputs: dict[str, dict]) -> tuple[str, dict]:
    """The step's reuse key and the named components it hashes (so a miss can be explained)."""
    params = sc.ctx["parameters"]

    def arg_identity(a: ArgSpec):
        if a.kind == "param":
            return {"param": a.name, "value": params[a.name]}
        return a.model_dump(exclude_none=True)

    components = {
        "step": {"type": step.kind, "name": step.name, "version": step.version},
        "script": step.script_name,
        "command": [arg_identity(a) for a in step.command],
        "source": step.snapshot_id,
        "arguments": [arg_identity(a) for a in step.arguments],
        "params": {k: arg_identity(v) for k, v in sorted(step.params.items())},
        "inputs": {k: v["identity"] for k, v in sorted(inputs.items())},
        "outputs": [o.model_dump(exclude={"register_as"}) for o in step.outputs],
        "environment": step.environment,
    }
    digest = hashlib.sha256(json.dumps(components, sort_keys=True, default=str).encode()).hexdigest()
    return f"aml-step-{digest[:40]}", components


def _output_location(step: StepSpec, out, key: str, sc: StepContext) -> str:
    if out.destination:
        return (out.destination.replace("{run-id}", sc.ctx["run_id"]).replace("{output-name}", out.name)
                .strip("/"))
    return f"{OUTPUTS_PREFIX}/{key}/{out.name}"


def _read_json(store, path: str) -> dict | None:
    fs = store.filesystem()
    try:
        with fs.open(store.full_path(path), "rb") as f:
            return json.loads(f.read())
    except FileNotFoundError:
        return None


def _write_json(store, path: str, data: dict) -> None:
    """Write a small JSON file whole: to a temporary name first, then moved into place."""
    fs = store.filesystem()
    target = store.full_path(path)
    tmp = f"{target}.{os.getpid()}.{threading.get_ident()}.partial"
    with fs.open(tmp, "wb") as f:
        f.write(json.dumps(data, indent=1, default=str).encode())
    fs.mv(tmp, target)


def _valid_hit(record: dict | None, sc: StepContext) -> bool:
    if not record:
        return False
    for out in record["outputs"].values():
        store = sc.store(out["datastore"])
        manifest = _read_json(store, out["manifest"])
        if not manifest or manifest.get("key") != record["key"]:
            return False
    return True


def _materialise(store, path: str, dest: Path, mode: str, logger) -> str:
    """A local path for `path` on `store`: the folder itself for a mounted local datastore, else a download."""
    from prefect_aml.blocks.datastores import LocalDatastore

    if mode == "mount" and isinstance(store, LocalDatastore):
        return store.full_path(path)
    if mode == "mount":
        logger.info(f"{store.name}: mount is served as a download on this compute")
    dest.mkdir(parents=True, exist_ok=True)
    store.download(dest, prefix=path, overwrite=True, show_progress=False)
    return str(dest / path) if path else str(dest)


def _commit_output(store, local_dir: Path, location: str, manifest_path: str, key: str, run_id: str) -> dict:
    """Replace what is at `location` with `local_dir`'s files, then write the manifest that marks it whole."""
    fs = store.filesystem()
    full_manifest = store.full_path(manifest_path)
    if fs.exists(full_manifest):
        fs.rm(full_manifest)
    full = store.full_path(location)
    if fs.exists(full):
        fs.rm(full, recursive=True)
    files = sorted(p for p in local_dir.rglob("*") if p.is_file())
    if files:
        store.upload_files(files, relative_root=local_dir, target_path=location, overwrite=True, show_progress=False)
    manifest = {
        "key": key, "run_id": run_id, "datastore": store.name, "path": location,
        "files": [{"path": p.relative_to(local_dir).as_posix(), "size": p.stat().st_size} for p in files],
        "committed": datetime.now(UTC).isoformat(),
    }
    _write_json(store, manifest_path, manifest)
    return manifest


def _collect_metrics(path: Path) -> dict[str, Any]:
    metrics: dict[str, Any] = {}
    if not path.exists():
        return metrics
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        m = json.loads(line)
        name, kind, value = m["name"], m["kind"], m["value"]
        if kind == "scalar":
            prev = metrics.get(name)
            if name in metrics:
                metrics[name] = (prev if isinstance(prev, list) else [prev]) + [value]
            else:
                metrics[name] = value
        elif kind == "row":
            table = metrics.setdefault(name, {})
            for col, v in value.items():
                table.setdefault(col, []).append(v)
        else:  # list, table, image: the last logged value wins
            metrics[name] = value
    return metrics


def _publish_metrics(step_name: str, metrics: dict[str, Any]) -> None:
    from prefect.artifacts import create_table_artifact

    if not metrics:
        return
    rows = [{"metric": k, "value": json.dumps(v) if not isinstance(v, (int, float, str)) else v}
            for k, v in metrics.items()]
    key = "metrics-" + "".join(c if c.isalnum() else "-" for c in step_name.lower()).strip("-")
    create_table_artifact(rows, key=key[:60] or "metrics", description=f"Metrics of step {step_name}")


def _stream(pipe, sink_lines: deque | None, logfile, lock, log) -> None:
    for raw in iter(pipe.readline, b""):
        line = raw.decode(errors="replace").rstrip("\n")
        with lock:
            logfile.write(line + "\n")
            logfile.flush()
        if sink_lines is not None:
            sink_lines.append(line)
        log(line)
    pipe.close()


@task(cache_policy=NONE, persist_result=False)
def run_step(step: dict, ctx: dict, upstream: dict[str, dict]) -> dict:
    """Run one pipeline step (or reuse its earlier outputs); returns its key and output locations."""
    from prefect.context import get_run_context

    logger = get_run_logger()
    spec = StepSpec.model_validate(step)
    sc = StepContext(ctx)
    task_run_id = str(get_run_context().task_run.id)
    run_dir = f"{RUNS_PREFIX}/{ctx['run_id']}/{spec.name}"

    inputs = {}
    for inp in spec.inputs:
        ds, path, identity = _resolve_input(inp.model_dump(), sc, upstream)
        inputs[inp.name] = {"datastore": ds, "path": path, "identity": identity, "mode": inp.mode,
                            "path_on_compute": inp.path_on_compute}
    key, components = reuse_key(spec, sc, inputs)
    out_key = key if spec.allow_reuse else f"{key}-{ctx['run_id'][:8]}"
    outputs = {}
    for out in spec.outputs:
        store = sc.store(out.datastore)
        outputs[out.name] = {"datastore": store.name, "path": _output_location(spec, out, out_key, sc),
                             "manifest": f"{MANIFESTS_PREFIX}/{out_key}/{out.name}.json"}

    started = datetime.now(UTC)
    record_path = f"{REUSE_PREFIX}/{key}.json"
    if spec.allow_reuse and not ctx.get("regenerate_outputs"):
        earlier = _read_json(sc.default_store, record_path)
        if _valid_hit(earlier, sc):
            logger.info(f"Step {spec.name!r} reuses the outputs of run {earlier['task_run_id']} "
                        f"(pipeline run {earlier['pipeline_run_id']}); nothing was run.")
            _write_json(sc.default_store, f"{run_dir}/record.json", {
                "step": spec.name, "status": "Finished", "reused": True, "reused_from": earlier["task_run_id"],
                "reused_from_pipeline_run": earlier["pipeline_run_id"], "key": key, "outputs": earlier["outputs"],
                "metrics": earlier.get("metrics", {}), "task_run_id": task_run_id, "snapshot_id": spec.snapshot_id,
                "started": started.isoformat(), "ended": datetime.now(UTC).isoformat(),
                "log": earlier.get("log"), "components": components,
            })
            _publish_metrics(spec.name, earlier.get("metrics", {}))
            return {"step": spec.name, "key": key, "outputs": earlier["outputs"], "reused": True}

    work = Path(tempfile.mkdtemp(prefix=f"aml-{ctx['run_id'][:8]}-"))
    try:
        return _execute(spec, sc, ctx, logger, work, inputs, outputs, key, out_key, components, run_dir,
                        task_run_id, started, record_path)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _execute(spec, sc, ctx, logger, work, inputs, outputs, key, out_key, components, run_dir, task_run_id,
             started, record_path) -> dict:
    src = work / "src"
    src.mkdir()
    if spec.snapshot_id:
        from prefect_aml.tasks.snapshots import restore_snapshot
        from prefect_aml.workspace import Workspace

        restore_snapshot(sc.default_store, spec.snapshot_id, src, Workspace(**ctx["workspace"]).home / "snapshots")
    local_inputs = {}
    for name, inp in inputs.items():
        store = sc.store(inp["datastore"])
        local_inputs[name] = _materialise(store, inp["path"], work / "inputs" / name, inp["mode"], logger)
    local_outputs = {}
    for name in outputs:
        d = work / "outputs" / name
        d.mkdir(parents=True)
        local_outputs[name] = str(d)
    params = ctx["parameters"]

    def resolve(a: ArgSpec) -> str:
        if a.kind == "literal":
            return "" if a.value is None else str(a.value)
        if a.kind == "param":
            return str(params[a.name])
        if a.kind == "input":
            return local_inputs[a.name]
        return local_outputs[a.name]

    ctx_dir = work / "run"
    ctx_dir.mkdir()
    run_ctx = {
        "run_id": task_run_id, "parent_run_id": ctx["run_id"], "experiment_name": ctx["experiment_name"],
        "step_name": spec.name, "workspace": ctx["workspace"], "default_datastore": ctx["default_datastore"],
        "input_datasets": local_inputs, "outputs": local_outputs, "dir": str(ctx_dir),
    }
    (ctx_dir / "context.json").write_text(json.dumps(run_ctx))
    env = dict(os.environ)
    env.update(spec.environment.get("variables") or {})
    for k, v in spec.params.items():
        env[f"AML_PARAMETER_{k}"] = resolve(v)
    env.update(AZUREML_RUN_CONTEXT=str(ctx_dir / "context.json"), AZUREML_RUN_ID=task_run_id,
               PYTHONUNBUFFERED="1")
    if spec.kind == "python":
        argv = [sys.executable, spec.script_name, *[resolve(a) for a in spec.arguments]]
    else:
        argv = [resolve(a) for a in spec.command]
        if argv and argv[0] in ("python", "python3"):
            argv[0] = sys.executable
    log_path = ctx_dir / "std_log.txt"
    tail: deque[str] = deque(maxlen=STDERR_TAIL_LINES)
    logger.info(f"Running step {spec.name!r}: {' '.join(argv[1:] if spec.kind == 'python' else argv)}")
    lock = threading.Lock()
    with open(log_path, "w") as logfile:
        try:
            proc = subprocess.Popen(argv, cwd=src, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        except OSError as err:
            raise StepFailedError(f"Step {spec.name!r} could not start {argv[0]!r}: {err}") from err
        with _ACTIVE_LOCK:
            _ACTIVE.add(proc)
        readers = [
            threading.Thread(target=_stream, args=(proc.stdout, None, logfile, lock, logger.info), daemon=True),
            threading.Thread(target=_stream, args=(proc.stderr, tail, logfile, lock, logger.warning), daemon=True),
        ]
        for t in readers:
            t.start()
        code = proc.wait()
        for t in readers:
            t.join()
        with _ACTIVE_LOCK:
            _ACTIVE.discard(proc)
    metrics = _collect_metrics(ctx_dir / "metrics.jsonl")
    store = sc.default_store
    store.upload_files([log_path], relative_root=ctx_dir, target_path=run_dir, overwrite=True, show_progress=False)
    artifacts = [p for base in (ctx_dir / "artifacts", src / "outputs") if base.is_dir()
                 for p in base.rglob("*") if p.is_file()]
    for base in (ctx_dir / "artifacts", src / "outputs"):
        files = [p for p in artifacts if base in p.parents]
        if files:
            store.upload_files(files, relative_root=base, target_path=f"{run_dir}/outputs", overwrite=True,
                               show_progress=False)
    record = {
        "step": spec.name, "key": key, "reused": False, "task_run_id": task_run_id,
        "pipeline_run_id": ctx["run_id"], "snapshot_id": spec.snapshot_id, "metrics": metrics,
        "started": started.isoformat(), "log": {"datastore": store.name, "path": f"{run_dir}/std_log.txt"},
        "exit_code": code, "components": components, "git": spec.environment.get("git"),
    }
    tags_file = ctx_dir / "tags.json"
    record["tags"] = json.loads(tags_file.read_text()) if tags_file.exists() else {}
    _publish_metrics(spec.name, metrics)
    if code != 0:
        record.update(status="Failed", ended=datetime.now(UTC).isoformat(), outputs={})
        _write_json(store, f"{run_dir}/record.json", record)
        if code < 0 and -code in (signal.SIGTERM, signal.SIGKILL):
            raise StepFailedError(f"Step {spec.name!r} was stopped by signal {-code}.")
        stderr = "\n".join(tail) or "(no stderr output)"
        raise StepFailedError(f"Step {spec.name!r} failed with exit code {code}. Last lines of stderr:\n{stderr}")
    committed = {}
    for name, out in outputs.items():
        out_store = sc.store(out["datastore"])
        _commit_output(out_store, Path(local_outputs[name]), out["path"], out["manifest"], out_key, task_run_id)
        committed[name] = out
    record.update(status="Finished", ended=datetime.now(UTC).isoformat(), outputs=committed)
    _write_json(store, f"{run_dir}/record.json", record)
    if spec.allow_reuse:
        _write_json(store, record_path, record)  # written last: a crash before this leaves no reuse record
    return {"step": spec.name, "key": key, "outputs": committed, "reused": False}

