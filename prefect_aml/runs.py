"""Experiments and runs: submitting pipelines and reading back what they did.

`Experiment(ws, name).submit(pipeline)` validates, snapshots the sources, creates the flow run
and returns a `PipelineRun` at once. `PipelineRun` / `StepRun` read state through the Prefect
API and records (metrics, logs, outputs) from the workspace's default datastore. Inside a step
script, `Run.get_context()` is the step's run; outside a pipeline it is an offline run that prints.
"""

from __future__ import annotations

import os
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any
from uuid import UUID

from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, FlowRunFilterTags
from prefect.client.schemas.sorting import FlowRunSort
from prefect.exceptions import ObjectNotFound
from prefect.states import Cancelled, Cancelling
from rich.console import Console
from rich.table import Table

from prefect_aml import _runctx, workspace
from prefect_aml.blocks.published import run_info
from prefect_aml.dataset import _Dataset
from prefect_aml.datastore import Datastore
from prefect_aml.exceptions import ActivityFailedException, UserErrorException
from prefect_aml.flows.events import RunEvents
from prefect_aml.names import (
    EXPERIMENT_TAG,
    PIPELINE_TAG,
    RECORD_FILE,
    RUNS_PREFIX,
    experiment_of,
    reused_path,
    run_dir,
    user_tags,
)
from prefect_aml.pipeline import port
from prefect_aml.records import load_spec, read_json
from prefect_aml.runview import TERMINAL, html_table, step_html
from prefect_aml.runview import status_of as _status
from prefect_aml.workspace import Workspace


class Experiment:
    """A named group of runs (a tag on their flow runs)."""

    def __init__(self, workspace, name: str, _skip_name_validation: bool = False, **_kw):
        if not isinstance(name, str) or not name or len(name) > 255 or any(c in name for c in "/\\:"):
            raise UserErrorException(
                f"Experiment name {name!r} is not valid: use 1-255 characters without '/', '\\' or ':'."
            )
        self.workspace = workspace
        self.name = name

    def __repr__(self) -> str:
        return f"Experiment(name={self.name!r}, workspace={self.workspace.name!r})"

    def submit(self, config, tags: dict | None = None, pipeline_parameters: dict | None = None,
               regenerate_outputs: bool = False, continue_on_step_failure: bool = False,
               pipeline_compute=None, **kwargs) -> PipelineRun:
        """Run a `Pipeline`; returns its `PipelineRun` as soon as the run is created.

        The pipeline flow runs in a background process here, or, with `pipeline_compute` (an
        `AmlCompute`/`DockerCompute` or its name), on a worker of that compute. The object submitted says how
        it runs (`_submit_to`), as Azure ML's run configurations do."""
        submit_to = getattr(config, "_submit_to", None)
        if submit_to is None:
            raise UserErrorException(f"Experiment.submit: cannot submit {config!r}; pass a Pipeline, a "
                                     "PublishedPipeline or a PipelineEndpoint.")
        return submit_to(self, pipeline_parameters=pipeline_parameters, tags=tags,
                         regenerate_outputs=regenerate_outputs, continue_on_step_failure=continue_on_step_failure,
                         pipeline_compute=pipeline_compute, **kwargs)

    def get_runs(self, type=None, tags=None, properties=None, include_children: bool = False):
        """The experiment's pipeline runs, newest first."""
        with self.workspace.client() as client:
            runs = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[EXPERIMENT_TAG + self.name])),
                sort=FlowRunSort.START_TIME_DESC,
            )
        for fr in runs:
            yield PipelineRun(self, str(fr.id), _flow_run=fr)

    @staticmethod
    def _list_names(workspace) -> list[str]:
        with workspace.client() as client:
            runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[PIPELINE_TAG])))
        return sorted({t[len(EXPERIMENT_TAG):] for r in runs for t in r.tags if t.startswith(EXPERIMENT_TAG)})


RUNNER_CHECK_S = 5.0  # while a runner started here runs, how often waiting for it asks the server anyway


class PipelineRun:
    """One run of a pipeline: a Prefect flow run."""

    def __init__(self, experiment: Experiment, run_id: str, _flow_run=None, _runner=None, **_kw):
        self.experiment = experiment
        self.id = self.run_id = str(run_id)
        self._flow_run = _flow_run
        self._runner = _runner  # the runner process, when this process started it (flows/launch.py::LocalRunner)

    @staticmethod
    def get(workspace, run_id: str) -> PipelineRun:
        try:
            with workspace.client() as client:
                fr = client.read_flow_run(UUID(str(run_id)))
        except (ObjectNotFound, ValueError):
            raise UserErrorException(f"Pipeline run {run_id!r} was not found in workspace {workspace.name!r}.") from None
        name = experiment_of(fr.tags) or "default"
        return PipelineRun(Experiment(workspace, name), str(fr.id), _flow_run=fr)

    def __repr__(self) -> str:
        return f"PipelineRun(experiment={self.experiment.name!r}, id={self.id!r}, status={self.get_status()!r})"

    # -- Prefect state
    def _refresh(self, client=None):
        with nullcontext(client) if client is not None else self.experiment.workspace.client() as c:
            self._flow_run = c.read_flow_run(UUID(self.id))
        return self._flow_run

    @property
    def _parameters(self) -> dict:
        """What the run needs to be read back: spec_path, default_datastore, parameters (resolved)."""
        params = (self._flow_run or self._refresh()).parameters
        if "spec_path" in params:
            return params
        if getattr(self, "_published_info", None) is None:
            self._published_info = run_info(self.experiment.workspace, self._flow_run)
            if self._published_info is None:
                raise UserErrorException(f"Run {self.id} is not a pipeline run of workspace "
                                         f"{self.experiment.workspace.name!r} (or its published pipeline was deleted).")
        return self._published_info

    def _repr_html_(self) -> str:
        return html_table(self)

    def publish_pipeline(self, name: str, description: str | None = None, version: str | None = None,
                         continue_on_step_failure: bool | None = None, **kwargs):
        """Publish the pipeline this run ran (its stored spec), as `Pipeline.publish` would."""
        return port.verbs().publish_run(self, name, description, version, continue_on_step_failure,
                                        kwargs.get("pipeline_compute"))

    def get_status(self) -> str:
        return _status(self._refresh().state)

    @property
    def status(self) -> str:
        return self.get_status()

    def get_portal_url(self) -> str:
        return f"{self.experiment.workspace.ui_url}/runs/flow-run/{self.id}"

    @property
    def portal_url(self) -> str:
        return self.get_portal_url()

    def _default_store(self):
        return Datastore.get(self.experiment.workspace, self._parameters["default_datastore"])

    def wait_for_completion(self, show_output: bool = True, timeout_seconds: float = sys.maxsize,
                            raise_on_error: bool = True) -> str:
        """Block until the run ends; prints step status changes and a final table when `show_output`."""
        started = time.monotonic()
        deadline = started + timeout_seconds
        seen: dict[str, str] = {}
        rank = {"NotStarted": 0, "Queued": 1, "Running": 2, "Canceling": 3}
        runner = self._runner
        # a run this process did not start (found with PipelineRun.get, or run by a worker): its state changes
        # come on the events stream, subscribed to before its status is first read
        with self.experiment.workspace.prefect():  # the stream's thread talks to the workspace's API
            events = RunEvents(self.id) if runner is None else None
        status = self.get_status()
        if show_output:
            print(f"PipelineRunId: {self.id}\nLink to the Prefect UI: {self.get_portal_url()}")
        asked, recheck = time.monotonic(), False

        def print_step_changes() -> None:
            for step in self.get_steps():
                st = step.get_status()
                if seen.get(step.name) != st and rank.get(st, 9) >= rank.get(seen.get(step.name), -1):
                    seen[step.name] = st
                    print(f"  step {step.name}: {st}")

        ws = self.experiment.workspace
        with ws.client() as client, events or nullcontext():  # one connection for all the questions
            while status not in TERMINAL:
                now = time.monotonic()
                if now > deadline:
                    if show_output:
                        print(f"Timed out after {timeout_seconds} s; the run is still {status}.")
                    return status
                if show_output:
                    print_step_changes()
                # A runner started here says itself when it has ended, and the events stream says when the run or
                # one of its steps changed: the server is then asked at that moment, and otherwise only every
                # RUNNER_CHECK_S (a run can also end without its runner saying so). Without either it is asked
                # every 0.1 s at first, then less often: the end is noticed within 2% of the time waited.
                pause = min(1.0, max(0.1, (now - started) / 50))
                if events is not None and events.ok:
                    # a step's change is recorded by the server a moment after its event: looked at again 0.5 s on
                    recheck = events.wait(min(0.5 if recheck else RUNNER_CHECK_S, deadline - now))
                elif runner is None:
                    time.sleep(pause)
                elif runner.wait(min(pause if show_output else RUNNER_CHECK_S, deadline - now)):
                    runner = None  # it has ended: what the server says now is final (or it died: keep asking)
                elif time.monotonic() - asked < RUNNER_CHECK_S:
                    continue
                asked = time.monotonic()
                status = _status(self._refresh(client).state)
        if show_output:
            print_step_changes()  # the last steps' ends, when the run's end was seen first
            print(f"PipelineRun Status: {status}")
            self._print_table()
        if raise_on_error and status != "Finished":
            msg = self._flow_run.state.message if self._flow_run.state else ""
            raise ActivityFailedException(f"Pipeline run {self.id} ended {status}: {msg}")
        return status

    def _print_table(self) -> None:
        table = Table(title=f"Pipeline run {self.id} ({self.experiment.name})")
        for col in ("step", "status", "duration", "reused"):
            table.add_column(col)
        for step in self.get_steps():
            d = step.get_details()
            dur = d.get("durationSeconds")
            table.add_row(step.name, d["status"], "" if dur is None else f"{dur:.1f} s",
                          "yes" if d.get("reused") else "")
        Console().print(table)

    def cancel(self) -> None:
        """Ask for cancellation; the runner stops the step processes and marks the run Canceled."""
        with self.experiment.workspace.client() as client:
            fr = client.read_flow_run(UUID(self.id))
            if _status(fr.state) in TERMINAL:
                return
            if fr.state.is_scheduled() or fr.state.is_pending():
                client.set_flow_run_state(fr.id, Cancelled(message="Canceled before it started."), force=True)
            else:
                client.set_flow_run_state(fr.id, Cancelling(), force=True)

    # -- steps
    def _task_runs(self) -> list:
        with self.experiment.workspace.client() as client:
            return client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[UUID(self.id)])))

    def _recorded_steps(self) -> set[str]:
        store = self._default_store()
        fs = store.filesystem()
        base = fs._strip_protocol(store.full_path(f"{RUNS_PREFIX}/{self.id}")).rstrip("/")
        steps = {p[len(base) + 1:].split("/")[0] for p in fs.glob(f"{base}/*/{RECORD_FILE}")}
        return steps | set(read_json(store, reused_path(self.id)) or {})

    def get_steps(self) -> list[StepRun]:
        trs = self._task_runs()
        if self.get_status() in TERMINAL:
            # task-run states reach the server as events, a moment after the flow run ends: wait until
            # every step with a record on the datastore shows its final state
            expected = self._recorded_steps()
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and not expected <= {
                    t.name for t in trs if t.state is not None and t.state.is_final()}:
                time.sleep(0.3)
                trs = self._task_runs()
        trs = sorted(trs, key=lambda t: (t.start_time or t.expected_start_time or t.created))
        return [StepRun(self, tr) for tr in trs]

    def get_children(self, **_kw) -> list[StepRun]:
        return self.get_steps()

    def find_step_run(self, name: str) -> list[StepRun]:
        return [s for s in self.get_steps() if s.name == name]

    def get_metrics(self, name: str | None = None, recursive: bool = False) -> dict:
        out = {}
        for step in self.get_steps():
            m = step.get_metrics(name)
            if m:
                out[step.name] = m
        return out

    def get_tags(self) -> dict:
        return user_tags((self._flow_run or self._refresh()).tags)

    def get_details(self) -> dict:
        fr = self._refresh()
        spec = load_spec(self._default_store(), self._parameters["spec_path"]).model_dump()
        return {
            "runId": self.id, "experiment": self.experiment.name, "status": _status(fr.state),
            "startTimeUtc": fr.start_time.isoformat() if fr.start_time else None,
            "endTimeUtc": fr.end_time.isoformat() if fr.end_time else None,
            "parameters": self._parameters["parameters"], "tags": self.get_tags(),
            "snapshots": {s["name"]: s.get("snapshot_id") for s in spec["steps"]},
            "git": {s["name"]: s.get("environment", {}).get("git") for s in spec["steps"]},
            "message": fr.state.message if fr.state else None, "portalUrl": self.get_portal_url(),
        }


class StepRun:
    """One step of a pipeline run: a Prefect task run plus its record on the default datastore."""

    def __init__(self, pipeline_run: PipelineRun, task_run):
        self.parent = self.pipeline_run = pipeline_run
        self._task_run = task_run
        self.id = str(task_run.id)
        self.name = task_run.name
        self._record: dict | None = None

    def __repr__(self) -> str:
        return f"StepRun(name={self.name!r}, id={self.id!r}, status={self.get_status()!r})"

    def _repr_html_(self) -> str:
        return step_html(self)

    def _refresh(self):
        with self.pipeline_run.experiment.workspace.client() as client:
            self._task_run = client.read_task_run(UUID(self.id))
        return self._task_run

    def get_status(self) -> str:
        status = _status(self._refresh().state)
        if status not in TERMINAL:
            # task-run states reach the server as events, a moment late; the step's record is written at once
            self._record = None
            recorded = self._load_record().get("status")
            if recorded in TERMINAL:
                return recorded
        return status

    @property
    def status(self) -> str:
        return self.get_status()

    def _load_record(self) -> dict:
        if self._record is None or self._record.get("status") not in TERMINAL:
            store = self.pipeline_run._default_store()
            self._record = read_json(store, f"{run_dir(self.pipeline_run.id, self.name)}/{RECORD_FILE}")
            if self._record is None:  # reused steps are recorded together
                self._record = (read_json(store, reused_path(self.pipeline_run.id)) or {}).get(self.name, {})
        return self._record

    @property
    def reused(self) -> bool:
        return bool(self._load_record().get("reused"))

    def get_metrics(self, name: str | None = None, **_kw) -> dict:
        metrics = self._load_record().get("metrics", {})
        return {name: metrics[name]} if name and name in metrics else ({} if name else metrics)

    def get_tags(self) -> dict:
        return self._load_record().get("tags", {})

    def get_details(self) -> dict:
        tr = self._refresh()
        rec = self._load_record()
        dur = (tr.end_time - tr.start_time).total_seconds() if tr.start_time and tr.end_time else None
        return {
            "runId": self.id, "name": self.name, "status": self.get_status(), "reused": bool(rec.get("reused")),
            "reusedFrom": rec.get("reused_from"), "startTimeUtc": tr.start_time.isoformat() if tr.start_time else None,
            "endTimeUtc": tr.end_time.isoformat() if tr.end_time else None, "durationSeconds": dur,
            "snapshotId": rec.get("snapshot_id"), "git": rec.get("git"), "reuseKey": rec.get("key"),
            "outputs": rec.get("outputs", {}), "message": tr.state.message if tr.state else None,
            "environment": rec.get("environment"),  # a built environment: name, hash, python, lock
        }

    def get_outputs(self) -> dict[str, PortDataReference]:
        return {name: PortDataReference(self, name, out) for name, out in self._load_record().get("outputs", {}).items()}

    def get_output_data(self, name: str) -> PortDataReference:
        outs = self.get_outputs()
        if name not in outs:
            raise UserErrorException(f"Step {self.name!r} has no output {name!r}; its outputs: {sorted(outs)}.")
        return outs[name]

    def get_output(self, name: str) -> PortDataReference:
        return self.get_output_data(name)

    def get_job_log(self) -> str:
        log = self._load_record().get("log")
        if not log:
            return ""
        store = Datastore.get(self.pipeline_run.experiment.workspace, log["datastore"])
        with store.filesystem().open(store.full_path(log["path"]), "rb") as f:
            return f.read().decode(errors="replace")

    get_stdout_log = get_job_log
    get_stderr_log = get_job_log

    def get_file_names(self) -> list[str]:
        store = self.pipeline_run._default_store()
        base = store.full_path(run_dir(self.pipeline_run.id, self.name))
        fs = store.filesystem()
        return sorted(p[len(fs._strip_protocol(base)) + 1:] for p in fs.find(base))

    def download_file(self, name: str, output_file_path: str | None = None) -> str:
        store = self.pipeline_run._default_store()
        target = output_file_path or os.path.basename(name)
        store.filesystem().get(store.full_path(f"{run_dir(self.pipeline_run.id, self.name)}/{name}"), target)
        return target


class PortDataReference:
    """Where a step's output landed: `download(local_path)` copies it."""

    def __init__(self, step_run: StepRun, name: str, out: dict):
        self.step_run = step_run
        self.name = name
        self.datastore_name = out["datastore"]
        self.path_on_datastore = out["path"]

    @property
    def datastore(self):
        return Datastore.get(self.step_run.pipeline_run.experiment.workspace, self.datastore_name)

    def download(self, local_path: str | os.PathLike, overwrite: bool = False, show_progress: bool = True) -> str:
        """Copy the output's files to `local_path/<path on datastore>`; returns that folder."""
        self.datastore.download(local_path, prefix=self.path_on_datastore, overwrite=overwrite,
                                show_progress=show_progress)
        return str(Path(local_path) / self.path_on_datastore)

    def __repr__(self) -> str:
        return f"PortDataReference(name={self.name!r}, datastore={self.datastore_name!r}, path={self.path_on_datastore!r})"


class Run:
    """Inside a step script: `Run.get_context()` is the step's run (metrics, tags, files, inputs)."""

    def __init__(self, ctx: dict | None):
        self._ctx = ctx
        self._dir = Path(ctx["dir"]) if ctx else None
        self.id = ctx["run_id"] if ctx else f"OfflineRun_{os.getpid()}"

    @classmethod
    def get_context(cls, allow_offline: bool = True, **_kw) -> Run:
        ctx = _runctx.load()
        if ctx is not None:
            return cls(ctx)
        if not allow_offline:
            raise UserErrorException("Run.get_context(allow_offline=False) called outside a pipeline step.")
        return cls(None)

    @property
    def offline(self) -> bool:
        return self._ctx is None

    def __repr__(self) -> str:
        return f"Run(id={self.id!r}{', offline' if self.offline else ''})"

    # -- what a script reads
    @property
    def input_datasets(self) -> dict[str, Any]:
        """Each named input: a local path, or for `as_named_input` without a mode, the dataset itself."""
        if not self._ctx:
            return {}
        out: dict[str, Any] = {}
        for name, value in self._ctx["input_datasets"].items():
            if isinstance(value, dict) and "dataset" in value:
                ws = self.experiment.workspace
                default = self._ctx["default_datastore"]
                value = _Dataset._from_definition(value["dataset"], lambda n, ws=ws, d=default: Datastore.get(ws, n or d))
            out[name] = value
        return out

    @property
    def output_datasets(self) -> dict[str, str]:
        return dict(self._ctx["outputs"]) if self._ctx else {}

    @property
    def experiment(self) -> Experiment:
        if not self._ctx:
            return Experiment(Workspace.from_config(), "offline")
        return Experiment(Workspace(**self._ctx["workspace"]), self._ctx["experiment_name"])

    @property
    def parent(self) -> PipelineRun | None:
        if not self._ctx:
            return None
        return PipelineRun(self.experiment, self._ctx["parent_run_id"])

    @property
    def name(self) -> str | None:
        return self._ctx["step_name"] if self._ctx else None

    # -- what a script writes
    def _emit(self, name: str, kind: str, value: Any) -> None:
        if self._ctx is None:
            print(f"[offline run] {kind} {name} = {value!r}")
            return
        _runctx.emit(self._dir, name, kind, value)

    def log(self, name: str, value: Any, description: str = "", step=None) -> None:
        self._emit(name, "scalar", value)

    def log_list(self, name: str, value: list, description: str = "") -> None:
        self._emit(name, "list", list(value))

    def log_row(self, name: str, description: str | None = None, **kwargs) -> None:
        self._emit(name, "row", kwargs)

    def log_table(self, name: str, value: dict, description: str = "") -> None:
        self._emit(name, "table", {k: list(v) for k, v in value.items()})

    def log_image(self, name: str, path: str | None = None, plot=None, description: str = "") -> None:
        if plot is not None:
            target = (self._dir / _runctx.ARTIFACTS_DIR if self._dir else Path.cwd()) / f"{name}.png"
            target.parent.mkdir(parents=True, exist_ok=True)
            plot.savefig(target)
            path = str(target)
        elif path is not None and self._dir is not None:
            self.upload_file(os.path.basename(path), path)
        self._emit(name, "image", os.path.basename(path) if path else None)

    def upload_file(self, name: str, path_or_stream) -> None:
        if self._dir is None:
            print(f"[offline run] upload_file {name}")
            return
        target = self._dir / _runctx.ARTIFACTS_DIR / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(path_or_stream, (str, os.PathLike)):
            target.write_bytes(Path(path_or_stream).read_bytes())
        else:
            target.write_bytes(path_or_stream.read())

    def tag(self, key: str, value: Any = None) -> None:
        self.set_tags({key: value})

    def set_tags(self, tags: dict) -> None:
        if self._dir is None:
            print(f"[offline run] tags {tags}")
            return
        _runctx.set_tags(self._dir, tags)

    def complete(self) -> None:
        """Kept for Azure ML code: a step's run completes when its script exits."""


@workspace.collection("experiments")
def _experiments(ws) -> dict[str, Experiment]:
    """`ws.experiments`: every experiment with a pipeline run in the workspace, by name."""
    return {name: Experiment(ws, name) for name in Experiment._list_names(ws)}
