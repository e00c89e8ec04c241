"""One step's work, on the machine it runs on: inputs, the script in a subprocess, outputs, records.

The pipeline flow has planned the step (its key, output locations, why it runs; `tasks/reuse.py`) and
routed it here (`flows/routing.py`). `execute_step` restores the snapshot, materialises the inputs,
runs the script in a subprocess (stdout/stderr streamed to the Prefect logger and the step's log
file), commits the outputs (files first, then a manifest) and writes the records; Prefect's cache
record is written after the task returns, so a crash leaves none.
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
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.context import FlowRunContext
from prefect.logging import get_run_logger
from prefect.logging.handlers import APILogHandler

from prefect_aml import _runctx, envbuild
from prefect_aml._azureml import SHIM_DIR, real_sdk
from prefect_aml.blocks.datastores import LocalDatastore
from prefect_aml.dataset import _Dataset, output_dataset
from prefect_aml.exceptions import EnvironmentException, StepFailedError
from prefect_aml.names import (
    LOG_FILE,
    RECORD_FILE,
    artifact_key,
    last_record_path,
    reuse_record_path,
    run_dir,
)
from prefect_aml.pipeline.spec import ArgSpec, StepSpec
from prefect_aml.records import write_json
from prefect_aml.tasks.context import RunContext, StepPlan, StepRecord, StepResult
from prefect_aml.tasks.snapshots import restore_snapshot

STDERR_TAIL_LINES = 30

# step subprocesses of this process, so a cancelled pipeline can stop them
_ACTIVE: dict[subprocess.Popen, str | None] = {}  # each with the flow run it belongs to
_ACTIVE_LOCK = threading.Lock()
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


def publish_metrics(step_name: str, metrics: dict[str, Any]) -> None:
    """A step's metrics as a table artifact of the current task run."""
    if not metrics:
        return
    rows = [{"metric": k, "value": v if isinstance(v, (int, float, str)) else json.dumps(v)} for k, v in metrics.items()]
    create_table_artifact(rows, key=artifact_key("metrics", step_name), description=f"Metrics of step {step_name}")


def publish_environment(step_name: str, details: dict[str, Any] | None) -> None:
    """A built environment's lock (what was installed, exactly) as a markdown artifact of the current run."""
    if not details:
        return
    lock = "\n".join(details["lock"])
    skipped = f"\n\nServed by the step runtime, not installed: {', '.join(details['skipped'])}" \
        if details.get("skipped") else ""
    create_markdown_artifact(
        f"Environment **{details['name']}** (hash `{details['hash']}`, Python {details['python']})\n\n"
        f"```\n{lock}\n```{skipped}", key=artifact_key("environment", step_name),
        description=f"Environment lock of step {step_name}")


def _environment(spec: StepSpec, ctx: RunContext, logger) -> envbuild.BuiltEnv | None:
    """The step's environment built (or found) on this machine, under its workspace home; None: no packages."""
    started = time.monotonic()
    try:
        built = envbuild.ensure(spec.environment, ctx.ws().home, log=logger.info)
    except EnvironmentException as err:
        raise StepFailedError(f"Step {spec.name!r}: {err}") from err
    if built:
        built.seconds = round(time.monotonic() - started, 3)
    for note in built.notes() if built and not built.built else ():  # a build has said them already
        logger.info(note)
    return built


@dataclass
class _Scratch:
    """A step run's scratch space: its source, inputs, outputs and run-context folder, and the local paths."""

    root: Path
    inputs: dict[str, Any] = field(default_factory=dict)  # name -> local path, or {"dataset": definition}
    outputs: dict[str, str] = field(default_factory=dict)  # name -> local folder
    built: envbuild.BuiltEnv | None = None  # the step's built environment (None: this interpreter)

    @property
    def src(self) -> Path:
        return self.root / "src"

    @property
    def ctx_dir(self) -> Path:
        return self.root / "run"


def _materialise(store, path: str, dest: Path, mode: str, logger) -> str:
    """A local path for `path` on `store`: the folder itself for a mounted local datastore, else a download."""
    if mode == "mount" and isinstance(store, LocalDatastore):
        return store.full_path(path)
    if mode == "mount":
        logger.info(f"{store.name}: mount is served as a download on this compute")
    dest.mkdir(parents=True, exist_ok=True)
    store.download(dest, prefix=path, overwrite=True, show_progress=False)
    return str(dest / path) if path else str(dest)


def _resolve_inputs(spec: StepSpec, ctx: RunContext, upstream: dict[str, StepResult]) -> dict[str, dict]:
    """Each input as what it is: a dataset, or a path on a datastore (before anything is fetched)."""
    inputs: dict[str, dict] = {}
    for inp in spec.inputs:
        src = inp.source
        if src["type"] == "dataset":
            inputs[inp.name] = {"dataset": _Dataset._from_definition(src, ctx.store), "definition": src,
                                "mode": inp.mode}
            continue
        if src["type"] == "step_output":
            out = upstream[src["step"]].outputs[src["output"]]
            if src.get("tabular") is not None:  # the output read as a TabularDataset
                dataset = output_dataset(ctx.store(out.datastore), out.path, src["tabular"])
                inputs[inp.name] = {"dataset": dataset, "definition": dataset._definition(), "mode": "direct"}
                continue
            ds, path = out.datastore, out.path
        else:
            if src["type"] == "param":
                src = ctx.parameters[src["name"]]
            ds, path = src.get("datastore"), src["path"]
        inputs[inp.name] = {"store": ctx.store(ds), "path": path, "mode": inp.mode}
    return inputs


def _prepare(spec: StepSpec, plan: StepPlan, ctx: RunContext, inputs: dict[str, dict], scratch: _Scratch,
             logger) -> None:
    """The snapshot restored, the inputs made local, an empty folder for each output."""
    scratch.src.mkdir()
    scratch.ctx_dir.mkdir()
    if spec.snapshot_id:
        restore_snapshot(ctx.default_store, spec.snapshot_id, scratch.src, ctx.ws().home / "snapshots")
    scratch.built = _environment(spec, ctx, logger)
    for name, i in inputs.items():
        if "dataset" not in i:
            scratch.inputs[name] = _materialise(i["store"], i["path"], scratch.root / "inputs" / name, i["mode"],
                                                logger)
        elif i["mode"] == "direct":  # the script gets the dataset itself from Run.get_context().input_datasets
            scratch.inputs[name] = {"dataset": {k: i["definition"][k] for k in ("kind", "paths", "options", "ops",
                                                                                  "pin") if k in i["definition"]}}
            if scratch.built:  # a built environment's light runtime reads it from local files
                scratch.inputs[name]["local"] = envbuild.materialise_direct_input(
                    i["dataset"], scratch.root / "inputs" / name)
        else:
            paths = i["dataset"].download(scratch.root / "inputs" / name, overwrite=True)
            scratch.inputs[name] = paths[0] if len(paths) == 1 else str(scratch.root / "inputs" / name)
    for name in plan.outputs:
        d = scratch.root / "outputs" / name
        d.mkdir(parents=True)
        scratch.outputs[name] = str(d)


def _command(spec: StepSpec, ctx: RunContext, scratch: _Scratch, task_run_id: str) -> tuple[list[str], dict]:
    """The step's argv (data ports and parameters resolved to local paths and values) and its environment."""
    def resolve(a: ArgSpec) -> str:
        if a.kind == "literal":
            return "" if a.value is None else str(a.value)
        if a.kind == "param":
            return str(ctx.parameters[a.name])
        if a.kind == "input":
            value = scratch.inputs[a.name]
            return a.name if isinstance(value, dict) else value  # a direct dataset is passed by its name
        return scratch.outputs[a.name]

    context_file = _runctx.write(scratch.ctx_dir, {
        "run_id": task_run_id, "parent_run_id": ctx.run_id, "experiment_name": ctx.experiment_name,
        "step_name": spec.name, "workspace": ctx.workspace, "default_datastore": ctx.default_datastore,
        "input_datasets": scratch.inputs, "outputs": scratch.outputs})
    env = dict(os.environ)
    env.update(spec.environment.get("variables") or {})
    for k, v in spec.params.items():
        env[f"AML_PARAMETER_{k}"] = resolve(v)
    env.update({_runctx.CONTEXT_ENV: str(context_file), _runctx.RUN_ID_ENV: task_run_id, "PYTHONUNBUFFERED": "1"})
    if scratch.built:  # its interpreter, its packages and the light step runtime
        python = envbuild.step_process(scratch.built, env, spec.environment.get("variables"))
    else:
        shim = _azureml_shim()
        if shim:  # `from azureml.core import Run` works in the script (v1 code unchanged)
            env["PYTHONPATH"] = os.pathsep.join([shim, *filter(None, [env.get("PYTHONPATH")])])
        python = spec.environment.get("interpreter") or sys.executable  # the environment's, else this one
    if spec.kind == "python":
        return [python, spec.script_name, *[resolve(a) for a in spec.arguments]], env
    argv = [resolve(a) for a in spec.command]
    if argv and argv[0] in ("python", "python3"):
        argv[0] = python
    return argv, env


def _run_script(spec: StepSpec, argv: list[str], env: dict, cwd: Path, log_path: Path, flow_run_id: str | None,
                logger) -> tuple[int, deque[str]]:
    """Run the step's process to its end, its lines streamed to its log file and its task run's logs."""
    tail: deque[str] = deque(maxlen=STDERR_TAIL_LINES)
    with open(log_path, "w") as logfile:
        try:
            proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        except OSError as err:
            raise StepFailedError(f"Step {spec.name!r} could not start {argv[0]!r}: {err}") from err
        with _ACTIVE_LOCK:
            _ACTIVE[proc] = flow_run_id
        try:
            _pump(proc, logfile, tail, _script_logger(logger))
            code = proc.wait()
        except BaseException:  # this process is being stopped (a cancelled run on a worker): stop the script too
            os.killpg(proc.pid, signal.SIGKILL)
            raise
        finally:
            with _ACTIVE_LOCK:
                _ACTIVE.pop(proc, None)
    return code, tail


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


def _upload_run_files(store, rdir: str, scratch: _Scratch, log_path: Path, live_log: bool) -> None:
    """The step's log (unless written in place) and what it uploaded or left in ./outputs, under its run folder."""
    if not live_log:
        store.upload_files([log_path], relative_root=scratch.ctx_dir, target_path=rdir, overwrite=True,
                           show_progress=False)
    for base in (scratch.ctx_dir / _runctx.ARTIFACTS_DIR, scratch.src / "outputs"):
        files = [p for p in base.rglob("*") if p.is_file()] if base.is_dir() else []
        if files:
            store.upload_files(files, relative_root=base, target_path=f"{rdir}/outputs", overwrite=True,
                               show_progress=False)


def _failure(spec: StepSpec, code: int, tail: deque[str]) -> StepFailedError:
    if code < 0 and -code in (signal.SIGTERM, signal.SIGKILL):
        return StepFailedError(f"Step {spec.name!r} was stopped by signal {-code}.")
    stderr = "\n".join(tail) or "(no stderr output)"
    return StepFailedError(f"Step {spec.name!r} failed with exit code {code}. Last lines of stderr:\n{stderr}")


def execute_step(spec: StepSpec, plan: StepPlan, ctx: RunContext, upstream: dict[str, StepResult],
                 task_run_id: str, logger=None, flow_run_id: str | None = None, publish: bool = True) -> StepResult:
    """Run one step on this machine: inputs, the script in a subprocess, outputs, records.

    Inside a Prefect task run by default; elsewhere (a Dask worker) with the task run's logger and flow
    run id given, and with `publish=False` the metrics are returned (on the result, or on the error)."""
    logger = logger or get_run_logger()
    if flow_run_id is None:
        flow_ctx = FlowRunContext.get()
        flow_run_id = str(flow_ctx.flow_run.id) if flow_ctx and flow_ctx.flow_run else None
    logger.info(f"Step {spec.name!r} {plan.explanation}")
    inputs = _resolve_inputs(spec, ctx, upstream)
    scratch = _Scratch(Path(tempfile.mkdtemp(prefix=f"aml-{ctx.run_id[:8]}-")))
    try:
        started = datetime.now(UTC)
        _prepare(spec, plan, ctx, inputs, scratch, logger)
        argv, env = _command(spec, ctx, scratch, task_run_id)
        store = ctx.default_store
        rdir = run_dir(ctx.run_id, spec.name)
        live_log = isinstance(store, LocalDatastore)  # written in place on a local datastore, while the step runs
        log_path = Path(store.full_path(f"{rdir}/{LOG_FILE}")) if live_log else scratch.ctx_dir / LOG_FILE
        log_path.parent.mkdir(parents=True, exist_ok=True)
        code, tail = _run_script(spec, argv, env, scratch.src, log_path, flow_run_id, logger)
        metrics = _runctx.collect_metrics(scratch.ctx_dir)
        _upload_run_files(store, rdir, scratch, log_path, live_log)
        record = StepRecord(
            step=spec.name, key=plan.key, out_key=plan.out_key, task_run_id=task_run_id, pipeline_run_id=ctx.run_id,
            snapshot_id=spec.snapshot_id, metrics=metrics, tags=_runctx.read_tags(scratch.ctx_dir),
            started=started.isoformat(), log={"datastore": store.name, "path": f"{rdir}/{LOG_FILE}"}, exit_code=code,
            components=plan.components, source_files=plan.source_files, git=spec.git, explanation=plan.explanation,
            environment=scratch.built.details() if scratch.built else None)
        if publish:
            publish_metrics(spec.name, metrics)
            publish_environment(spec.name, record.environment)
        if code != 0:
            record.status, record.ended = "Failed", datetime.now(UTC).isoformat()
            write_json(store, f"{rdir}/{RECORD_FILE}", record.as_json())
            err = _failure(spec, code, tail)
            if not publish:
                err.metrics = metrics
            raise err
        for name, out in plan.outputs.items():
            _commit_output(ctx.store(out.datastore), Path(scratch.outputs[name]), out.path, out.manifest,
                           plan.out_key, task_run_id)
        record.status, record.ended, record.outputs = "Finished", datetime.now(UTC).isoformat(), plan.outputs
        write_json(store, f"{rdir}/{RECORD_FILE}", record.as_json())
        write_json(store, last_record_path(spec.name), record.as_json())
        if spec.allow_reuse:
            write_json(store, reuse_record_path(plan.key), record.as_json())  # before Prefect's cache record
        return StepResult(step=spec.name, key=plan.key, out_key=plan.out_key, outputs=plan.outputs,
                          task_run_id=task_run_id, pipeline_run_id=ctx.run_id, metrics=None if publish else metrics,
                          environment=None if publish else record.environment)
    finally:
        _remove_scratch(scratch.root)


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


@functools.cache
def _script_output_logger() -> logging.Logger:
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
    return None if real_sdk() else str(SHIM_DIR)
