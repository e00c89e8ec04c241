"""The step task: one pipeline step, run as one Prefect task run.

The pipeline flow plans every step first (key, output locations, why it will run or be reused;
see `tasks/reuse.py`) and submits this task with Prefect caching on the planned key: a hit never
enters the body. On a miss the task restores the snapshot, materialises inputs, runs the script
in a subprocess (stdout/stderr streamed to the Prefect logger and the step's log file), commits
outputs (files first, then a manifest) and writes the reuse record; Prefect's cache record is
written after the body returns, so a crash leaves none.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect import task
from prefect.logging import get_run_logger

from prefect_aml.blocks.datastores import LocalDatastore
from prefect_aml.exceptions import StepFailedError
from prefect_aml.pipeline.spec import ArgSpec, StepSpec
from prefect_aml.tasks.reuse import REUSE_PREFIX, last_record_path, write_json

RUNS_PREFIX = "azureml/runs"
REUSED_FILE = "reused.json"  # per pipeline run: the records of its reused steps
STDERR_TAIL_LINES = 30

# step subprocesses of this process, so a cancelled pipeline can stop them
_ACTIVE: dict[subprocess.Popen, str | None] = {}  # each with the flow run it belongs to
_ACTIVE_LOCK = threading.Lock()
# datastores loaded once per pipeline run and process: (run id, name) -> block
_STORES: dict[tuple[str, str], Any] = {}
_STORES_LOCK = threading.Lock()
# a step's scratch folder is removed in the background, after its task run has returned (~2 ms per step
# for a small source tree on this machine's disk, otherwise paid before the next step could start)
_SCRATCH = ThreadPoolExecutor(1, thread_name_prefix="aml-scratch")


def _remove_scratch(path: Path) -> None:
    try:
        _SCRATCH.submit(shutil.rmtree, path, ignore_errors=True)
    except RuntimeError:  # this interpreter is shutting down: no new threads
        shutil.rmtree(path, ignore_errors=True)


def wait_for_scratch_removal() -> None:
    """Block until the scratch folders of the steps that have finished in this process are gone."""
    try:
        _SCRATCH.submit(int).result()
    except RuntimeError:  # shut down: it has removed everything it was given
        pass


def terminate_active_steps(flow_run_id: str | None = None) -> None:
    """Stop the step scripts this process runs (only those of `flow_run_id`, when given)."""
    with _ACTIVE_LOCK:
        procs = [p for p, owner in _ACTIVE.items() if flow_run_id is None or owner == flow_run_id]
    for p in procs:
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass


class StepContext:
    """What a step needs from its pipeline run: its datastores (loaded once per run) and settings."""

    def __init__(self, ctx: dict[str, Any]):
        self.ctx = ctx

    def store(self, name: str | None = None):
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


def run_dir(ctx: dict, step_name: str) -> str:
    return f"{RUNS_PREFIX}/{ctx['run_id']}/{step_name}"


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


def _commit_output(store, local_dir: Path, location: str, manifest_path: str, key: str, run_id: str) -> None:
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
    write_json(store, manifest_path, {
        "key": key, "run_id": run_id, "datastore": store.name, "path": location,
        "files": [{"path": p.relative_to(local_dir).as_posix(), "size": p.stat().st_size} for p in files],
        "committed": datetime.now(UTC).isoformat(),
    })


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
            if name in metrics:
                prev = metrics[name]
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


def publish_metrics(step_name: str, metrics: dict[str, Any]) -> None:
    from prefect.artifacts import create_table_artifact

    if not metrics:
        return
    rows = [{"metric": k, "value": v if isinstance(v, (int, float, str)) else json.dumps(v)}
            for k, v in metrics.items()]
    create_table_artifact(rows, key=artifact_key("metrics", step_name), description=f"Metrics of step {step_name}")


def artifact_key(prefix: str, name: str) -> str:
    """A Prefect artifact key (lowercase letters, digits, dashes) for `name`, e.g. metrics-train-py."""
    return (prefix + "-" + "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-"))[:60]


def _pump(proc: subprocess.Popen, logfile, tail: deque, out) -> None:
    """Copy a script's stdout and stderr, line by line as they come, to its log file and its task run's logs
    (stderr's last lines also to `tail`), until both close. In the calling thread: two reader threads per
    step cost a few milliseconds of start-up and hand-offs in a process that runs many steps."""
    sel = selectors.DefaultSelector()
    partial: dict[int, bytes] = {}
    for pipe, log, sink in ((proc.stdout, out.info, None), (proc.stderr, out.warning, tail)):
        sel.register(pipe.fileno(), selectors.EVENT_READ, (log, sink))
        partial[pipe.fileno()] = b""
    try:
        while sel.get_map():
            for key, _ in sel.select():
                chunk = os.read(key.fd, 1 << 16)
                if chunk:
                    *lines, partial[key.fd] = (partial[key.fd] + chunk).split(b"\n")
                else:  # closed: what is left is the last line
                    sel.unregister(key.fd)
                    lines = [partial[key.fd]] if partial[key.fd] else []
                log, sink = key.data
                for raw in lines:
                    line = raw.decode(errors="replace")
                    logfile.write(line + "\n")
                    if sink is not None:
                        sink.append(line)
                    log(line)
                logfile.flush()
    finally:
        sel.close()
        proc.stdout.close()
        proc.stderr.close()


@task(persist_result=True, result_serializer="json")
def run_step(step: dict, plan: dict, ctx: dict, upstream: dict[str, dict]) -> dict:
    """Run one pipeline step; returns its key and where its outputs are. Cached on the planned key.

    A step on a work pool is sent there as a flow run (`flows/step.py`) and waited for; a step on a
    Dask compute sends its work to the cluster and waits for it (`flows/pipeline.py::run_on_dask`);
    any other step runs here, beside the pipeline flow."""
    from prefect.context import get_run_context

    task_run_id = str(get_run_context().task_run.id)
    compute = step.get("compute") or {}
    if compute.get("pool"):
        from prefect_aml.flows.step import run_on_pool

        return run_on_pool(StepSpec.model_validate(step), step, plan, ctx, upstream, task_run_id, get_run_logger())
    if compute.get("type") == "DaskCompute":
        from prefect_aml.flows.pipeline import run_on_dask

        try:
            result = run_on_dask(compute, step, plan, ctx, upstream, task_run_id, dict(get_run_logger().extra))
        except StepFailedError as err:
            publish_metrics(step["name"], getattr(err, "metrics", None) or {})
            raise
        publish_metrics(step["name"], result.pop("metrics"))
        return result
    return execute_step(step, plan, ctx, upstream, task_run_id)


def execute_on_dask_worker(step: dict, plan: dict, ctx: dict, upstream: dict[str, dict], task_run_id: str,
                           log_extra: dict) -> dict:
    """A step's work on a Dask worker. Its Prefect task run lives in the pipeline flow (rebuilding Prefect's
    settings and task engine on the worker cost ~0.2 s per step); its log lines go to that task run by id,
    and its metrics come back with the result (or the error) to be published there."""
    from prefect.logging.configuration import ensure_logging_setup
    from prefect.logging.loggers import PrefectLogAdapter, get_logger

    ensure_logging_setup()
    logger = PrefectLogAdapter(get_logger("prefect.task_runs"), extra=log_extra)
    return execute_step(step, plan, ctx, upstream, task_run_id, logger=logger, flow_run_id=log_extra["flow_run_id"],
                        publish=False)


def execute_step(step: dict, plan: dict, ctx: dict, upstream: dict[str, dict], task_run_id: str, logger=None,
                 flow_run_id: str | None = None, publish: bool = True) -> dict:
    """Run one step in this process's machine: inputs, the script in a subprocess, outputs, records.

    Inside a Prefect task run by default; elsewhere (a Dask worker) with the task run's logger and flow
    run id given, and with `publish=False` the metrics are returned (as "metrics", or on the error)."""
    logger = logger or get_run_logger()
    spec = StepSpec.model_validate(step)
    sc = StepContext(ctx)
    logger.info(f"Step {spec.name!r} {plan['explanation']}")
    inputs = {}
    for inp in spec.inputs:
        src = inp.source
        if src["type"] == "dataset":
            from prefect_aml.dataset import _Dataset

            inputs[inp.name] = {"dataset": _Dataset._from_definition(src, sc.store), "definition": src,
                                "mode": inp.mode}
            continue
        if src["type"] == "step_output":
            out = upstream[src["step"]]["outputs"][src["output"]]
            ds, path = out["datastore"], out["path"]
            if src.get("tabular") is not None:  # the output read as a TabularDataset
                from prefect_aml.dataset import output_dataset

                dataset = output_dataset(sc.store(ds), path, src["tabular"])
                inputs[inp.name] = {"dataset": dataset, "definition": dataset._definition(), "mode": "direct"}
                continue
        else:
            if src["type"] == "param":
                src = ctx["parameters"][src["name"]]
            ds, path = src.get("datastore"), src["path"]
        inputs[inp.name] = {"store": sc.store(ds), "path": path, "mode": inp.mode}
    work = Path(tempfile.mkdtemp(prefix=f"aml-{ctx['run_id'][:8]}-"))
    try:
        return _execute(spec, plan, sc, ctx, logger, work, inputs, task_run_id, flow_run_id, publish)
    finally:
        _remove_scratch(work)


def _execute(spec: StepSpec, plan: dict, sc: StepContext, ctx: dict, logger, work: Path, inputs: dict,
             task_run_id: str, flow_run_id: str | None, publish: bool) -> dict:
    started = datetime.now(UTC)
    src = work / "src"
    src.mkdir()
    if spec.snapshot_id:
        from prefect_aml.tasks.snapshots import restore_snapshot
        from prefect_aml.workspace import Workspace

        restore_snapshot(sc.default_store, spec.snapshot_id, src, Workspace(**ctx["workspace"]).home / "snapshots")
    local_inputs: dict[str, Any] = {}
    for name, i in inputs.items():
        if "dataset" not in i:
            local_inputs[name] = _materialise(i["store"], i["path"], work / "inputs" / name, i["mode"], logger)
        elif i["mode"] == "direct":  # the script gets the dataset itself from Run.get_context().input_datasets
            local_inputs[name] = {"dataset": {k: i["definition"][k] for k in ("kind", "paths", "options", "ops", "pin")
                                              if k in i["definition"]}}
        else:
            paths = i["dataset"].download(work / "inputs" / name, overwrite=True)
            local_inputs[name] = paths[0] if len(paths) == 1 else str(work / "inputs" / name)
    local_outputs = {}
    for name in plan["outputs"]:
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
            value = local_inputs[a.name]
            return a.name if isinstance(value, dict) else value  # a direct dataset is passed by its name
        return local_outputs[a.name]

    ctx_dir = work / "run"
    ctx_dir.mkdir()
    (ctx_dir / "context.json").write_text(json.dumps({
        "run_id": task_run_id, "parent_run_id": ctx["run_id"], "experiment_name": ctx["experiment_name"],
        "step_name": spec.name, "workspace": ctx["workspace"], "default_datastore": ctx["default_datastore"],
        "input_datasets": local_inputs, "outputs": local_outputs, "dir": str(ctx_dir),
    }))
    env = dict(os.environ)
    env.update(spec.environment.get("variables") or {})
    for k, v in spec.params.items():
        env[f"AML_PARAMETER_{k}"] = resolve(v)
    env.update(AZUREML_RUN_CONTEXT=str(ctx_dir / "context.json"), AZUREML_RUN_ID=task_run_id,
               PYTHONUNBUFFERED="1")
    shim = _azureml_shim()
    if shim:  # `from azureml.core import Run` works in the script (v1 code unchanged)
        env["PYTHONPATH"] = os.pathsep.join([shim, *filter(None, [env.get("PYTHONPATH")])])
    python = spec.environment.get("interpreter") or sys.executable  # the environment's, else this one
    if spec.kind == "python":
        argv = [python, spec.script_name, *[resolve(a) for a in spec.arguments]]
    else:
        argv = [resolve(a) for a in spec.command]
        if argv and argv[0] in ("python", "python3"):
            argv[0] = python
    store = sc.default_store
    rdir = run_dir(ctx, spec.name)
    live_log = isinstance(store, LocalDatastore)  # written in place on a local datastore, while the step runs
    log_path = Path(store.full_path(f"{rdir}/std_log.txt")) if live_log else ctx_dir / "std_log.txt"
    if live_log:
        log_path.parent.mkdir(parents=True, exist_ok=True)
    tail: deque[str] = deque(maxlen=STDERR_TAIL_LINES)
    with open(log_path, "w") as logfile:
        try:
            proc = subprocess.Popen(argv, cwd=src, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        except OSError as err:
            raise StepFailedError(f"Step {spec.name!r} could not start {argv[0]!r}: {err}") from err
        if flow_run_id is None:
            from prefect.context import FlowRunContext

            flow_ctx = FlowRunContext.get()
            flow_run_id = str(flow_ctx.flow_run.id) if flow_ctx and flow_ctx.flow_run else None
        with _ACTIVE_LOCK:
            _ACTIVE[proc] = flow_run_id
        try:
            _pump(proc, logfile, tail, _script_logger(logger))
            code = proc.wait()
        except BaseException:  # this process is being stopped (a cancelled run on a worker): stop the script too
            os.killpg(proc.pid, signal.SIGKILL)
            raise
        with _ACTIVE_LOCK:
            _ACTIVE.pop(proc, None)
    metrics = _collect_metrics(ctx_dir / "metrics.jsonl")
    if not live_log:
        store.upload_files([log_path], relative_root=ctx_dir, target_path=rdir, overwrite=True, show_progress=False)
    for base in (ctx_dir / "artifacts", src / "outputs"):
        files = [p for p in base.rglob("*") if p.is_file()] if base.is_dir() else []
        if files:
            store.upload_files(files, relative_root=base, target_path=f"{rdir}/outputs", overwrite=True,
                               show_progress=False)
    tags_file = ctx_dir / "tags.json"
    record = {
        "step": spec.name, "key": plan["key"], "out_key": plan["out_key"], "reused": False,
        "task_run_id": task_run_id, "pipeline_run_id": ctx["run_id"], "snapshot_id": spec.snapshot_id,
        "metrics": metrics, "tags": json.loads(tags_file.read_text()) if tags_file.exists() else {},
        "started": started.isoformat(), "log": {"datastore": store.name, "path": f"{rdir}/std_log.txt"},
        "exit_code": code, "components": plan.get("components"), "source_files": plan.get("source_files"), "git": spec.git,
        "explanation": plan["explanation"],
    }
    if publish:
        publish_metrics(spec.name, metrics)
    if code != 0:
        record.update(status="Failed", ended=datetime.now(UTC).isoformat(), outputs={})
        write_json(store, f"{rdir}/record.json", record)
        if code < 0 and -code in (signal.SIGTERM, signal.SIGKILL):
            err = StepFailedError(f"Step {spec.name!r} was stopped by signal {-code}.")
        else:
            stderr = "\n".join(tail) or "(no stderr output)"
            err = StepFailedError(f"Step {spec.name!r} failed with exit code {code}. Last lines of stderr:\n{stderr}")
        if not publish:
            err.metrics = metrics
        raise err
    for name, out in plan["outputs"].items():
        _commit_output(sc.store(out["datastore"]), Path(local_outputs[name]), out["path"], out["manifest"],
                       plan["out_key"], task_run_id)
    record.update(status="Finished", ended=datetime.now(UTC).isoformat(), outputs=plan["outputs"])
    write_json(store, f"{rdir}/record.json", record)
    write_json(store, last_record_path(spec.name), record)
    if spec.allow_reuse:
        write_json(store, f"{REUSE_PREFIX}/{plan['key']}.json", record)  # before Prefect's cache record
    return {"step": spec.name, "key": plan["key"], "out_key": plan["out_key"], "outputs": plan["outputs"],
            "task_run_id": task_run_id, "pipeline_run_id": ctx["run_id"], **({} if publish else {"metrics": metrics})}


@functools.cache
def _script_output_logger() -> logging.Logger:
    from prefect.logging.handlers import APILogHandler

    out = logging.getLogger("prefect.task_runs.script")  # its level follows Prefect's logging settings
    out.propagate = False
    out.addHandler(APILogHandler())
    return out


def _script_logger(run_logger):
    """Where a step script's lines go besides the step's log file: the task run's logs in Prefect (the UI).

    Not to this process's console: printing every line of every script through Prefect's console
    handler (rich) cost the runner more per step than Prefect's own task run."""
    return type(run_logger)(_script_output_logger(), extra=run_logger.extra)


@functools.cache
def _azureml_shim() -> str | None:
    """The folder whose `azureml` package serves v1 imports to step scripts (none when the real SDK is here)."""
    from prefect_aml._azureml import SHIM_DIR, real_sdk

    return None if real_sdk() else str(SHIM_DIR)
