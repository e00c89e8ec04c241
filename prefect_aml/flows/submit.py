"""Submitting a pipeline: validate, snapshot the sources, store the spec, create the flow run, start it.

`Experiment.submit` lands here. Everything is checked and written before the flow run exists; the
run itself happens in a background runner process (`prefect_aml.flows.runner`, forked from a warm
runner when one is serving: `flows/forkserver.py`), so submit returns at once. `explain_reuse`
plans the same way without creating anything.
"""

from __future__ import annotations

import os
import select
import subprocess
import sys
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prefect_aml.datastore import Datastore
from prefect_aml.exceptions import UserErrorException

if TYPE_CHECKING:
    from prefect_aml.runs import Experiment, PipelineRun

SPECS_PREFIX = "azureml/specs"


def prepare_sources(spec, store, home: Path) -> None:
    """Snapshot each source directory once and record its hash (all files, or those in hash_paths)."""
    from prefect_aml.tasks.snapshots import ensure_snapshot, git_info, select, snapshot_id

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


def store_spec(store, spec) -> str:
    """Write the spec once per content on `store` (`azureml/specs/<hash>.json`); returns its path."""
    import hashlib

    from prefect_aml.tasks.reuse import write_bytes

    data = spec.model_dump_json().encode()
    path = f"{SPECS_PREFIX}/{hashlib.sha256(data).hexdigest()[:40]}.json"
    if not store.filesystem().exists(store.full_path(path)):
        write_bytes(store, path, data)
    return path


def load_spec(store, path: str):
    from prefect_aml.pipeline.spec import PipelineSpec
    from prefect_aml.tasks.reuse import read_json

    data = read_json(store, path)
    if data is None:
        raise UserErrorException(f"The pipeline spec {path!r} is missing from datastore {store.name!r}.")
    return PipelineSpec.model_validate(data)


def _store_getter(store, ws):
    stores: dict[str | None, Any] = {None: store, store.name: store}

    def get(name):
        if name not in stores:
            stores[name] = Datastore.get(ws, name)
        return stores[name]

    return get


def _plan(spec, values, store, ws, run_id: str, regenerate_outputs: bool) -> dict[str, dict]:
    from prefect_aml.tasks.reuse import plan_pipeline

    ctx = {"run_id": run_id, "parameters": values, "regenerate_outputs": regenerate_outputs}
    return plan_pipeline(spec, ctx, _store_getter(store, ws))


def resolve_computes(spec, ws) -> None:
    """Each step's compute, looked up once per name; an unknown compute fails the submit."""
    from prefect_aml.compute import resolve_compute

    found: dict[str, dict | None] = {}
    for step in spec.steps:
        if step.compute_target not in found:
            found[step.compute_target] = resolve_compute(ws, step.compute_target, step.name)
        step.compute = found[step.compute_target]


def check_registered_inputs(spec, store, ws) -> None:
    """A registered dataset version whose files changed fails the submit, before a run exists."""
    from prefect_aml.tasks.reuse import dataset_fingerprint

    get = _store_getter(store, ws)
    for step in spec.steps:
        for inp in step.inputs:
            if inp.source.get("type") == "dataset" and inp.source.get("pin"):
                dataset_fingerprint(inp.source, get)


def explain_reuse(pipeline, pipeline_parameters: dict | None = None, regenerate_outputs: bool = False) -> dict:
    """For each step, whether a submit now would reuse it or run it, and why; nothing is run or written."""

    ws = pipeline.workspace
    spec = pipeline._build_spec()
    values = pipeline._resolve_parameters(pipeline._closure(), pipeline_parameters)
    ws._activate()
    store = Datastore.get(ws, spec.default_datastore) if spec.default_datastore else ws.get_default_datastore()
    prepare_sources(spec, store, ws.home)
    plans = _plan(spec, values, store, ws, "explain0", regenerate_outputs)
    return {name: plan["explanation"] for name, plan in plans.items()}


def submit_pipeline(experiment: Experiment, pipeline, pipeline_parameters, tags, regenerate_outputs,
                     continue_on_step_failure, show_plan: bool = True, pipeline_compute=None) -> PipelineRun:
    from prefect_aml.flows.pipeline import aml_pipeline
    from prefect_aml.pipeline.steps import _compute_name
    from prefect_aml.runs import EXPERIMENT_TAG, PipelineRun, _client

    ws = experiment.workspace
    spec = pipeline._build_spec()  # validates: nothing has been written yet
    values = pipeline._resolve_parameters(pipeline._closure(), pipeline_parameters)
    ws._activate()
    resolve_computes(spec, ws)
    runner_pool = None
    if pipeline_compute is not None:
        from prefect_aml.compute import resolve_compute
        from prefect_aml.exceptions import ComputeTargetException

        where = resolve_compute(ws, _compute_name(pipeline_compute), "(the pipeline flow)")
        if not where or not where.get("pool"):
            raise ComputeTargetException(
                f"pipeline_compute={_compute_name(pipeline_compute)!r}: the pipeline flow runs on a work pool "
                "compute (AmlCompute or DockerCompute); Dask computes run steps only.")
        runner_pool = where["pool"]
        sharing = [s.name for s in spec.steps if (s.compute or {}).get("pool") == runner_pool]
        if sharing and (where.get("max_nodes") or 1) < 2:
            raise ComputeTargetException(
                f"pipeline_compute={where['name']!r} has max_nodes={where.get('max_nodes')}: the pipeline flow would "
                f"hold its only slot while its steps {sharing} wait for one. Give the pipeline flow another compute, "
                "or raise max_nodes.")
    store = Datastore.get(ws, spec.default_datastore) if spec.default_datastore else ws.get_default_datastore()
    for name in {s.datastore for step in spec.steps for s in step.outputs if s.datastore}:
        Datastore.get(ws, name)  # every output datastore must exist before the run starts
    check_registered_inputs(spec, store, ws)
    prepare_sources(spec, store, ws.home)
    workspace = {"workspace_name": ws.name, "subscription_id": ws.subscription_id,
                 "resource_group": ws.resource_group, "home": str(ws.home), "redis_url": ws.redis_url}
    user_tags = [f"{k}:{v}" if v not in (None, "") else str(k) for k, v in tags.items()]
    spec_path = store_spec(store, spec)  # flow-run parameters are size-limited: the spec lives on the datastore
    parameters = {"spec_path": spec_path, "parameters": values, "experiment_name": experiment.name,
                  "workspace": workspace, "default_datastore": store.name, "regenerate_outputs": regenerate_outputs,
                  "continue_on_step_failure": continue_on_step_failure}
    run_tags = [EXPERIMENT_TAG + experiment.name, "aml-pipeline", *user_tags]
    with _client() as client:
        if runner_pool:  # a worker of that compute starts it
            from prefect_aml.flows.step import ensure_deployment

            deployment_id = ensure_deployment(client, "aml-pipeline", runner_pool, aml_pipeline)
            flow_run = client.create_flow_run_from_deployment(deployment_id, parameters=parameters, tags=run_tags)
        else:
            flow_run = client.create_flow_run(aml_pipeline, parameters=parameters, tags=run_tags)
    runner = None if runner_pool else _start_runner(ws, str(flow_run.id))
    if show_plan:  # the runner needs a moment to start; meanwhile say what will run and why
        print(f"Submitted pipeline run {flow_run.id} (experiment {experiment.name!r}):")
        for name, plan in _plan(spec, values, store, ws, str(flow_run.id), regenerate_outputs).items():
            print(f"  step {name}: {plan['explanation']}")
    return PipelineRun(experiment, str(flow_run.id), _flow_run=flow_run, _runner=runner)


class LocalRunner:
    """The runner process started here for one flow run: says when it has ended, so that waiting for the run
    asks the server once at the end rather than every 0.1 s (each question costs the server ~5-15 ms of CPU,
    taken from the run it is asked about on a small machine)."""

    MAX_OPEN = 64  # connections to the warm runner kept open in one process; older runs' waits ask the server
    _open: deque[LocalRunner] = deque()

    def __init__(self, sock=None, proc: subprocess.Popen | None = None):
        self._sock = sock
        self._proc = proc
        if sock is not None:
            LocalRunner._open.append(self)
            while len(LocalRunner._open) > self.MAX_OPEN:
                LocalRunner._open.popleft().close()

    def wait(self, timeout: float) -> bool:
        """Up to `timeout` seconds: True once the runner has ended (or can no longer tell): ask the server."""
        if self._proc is not None:
            try:
                self._proc.wait(max(timeout, 0))
            except subprocess.TimeoutExpired:
                return False
            self._proc = None
            return True
        sock = self._sock
        if sock is None:
            return True
        try:
            if not select.select([sock], [], [], max(timeout, 0))[0]:
                return False
        except (OSError, ValueError):  # closed meanwhile (another thread waiting for the same run)
            pass
        self.close()  # a line (the run has ended) or the connection closed (the runner exited)
        return True

    def close(self) -> None:
        """Stop listening to the runner (it goes on): waiting for its run asks the server."""
        self._proc = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None
            try:
                LocalRunner._open.remove(self)
            except ValueError:
                pass


def _start_runner(ws, flow_run_id: str) -> LocalRunner:
    from prefect_aml.flows import forkserver

    logs = ws.home / "runs"
    logs.mkdir(parents=True, exist_ok=True)
    sock = forkserver.start_run(flow_run_id, logs / f"{flow_run_id}.log")
    if sock is not None:  # forked from a warm runner
        return LocalRunner(sock=sock)
    with open(logs / f"{flow_run_id}.log", "ab") as out:
        return LocalRunner(proc=subprocess.Popen(
            [sys.executable, "-m", "prefect_aml.flows.runner", flow_run_id], stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True, env=dict(os.environ)))
