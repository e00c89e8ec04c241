"""Experiments and runs: submitting pipelines and reading back what they did.

`Experiment(ws, name).submit(pipeline)` validates, snapshots the sources, creates the flow run
and returns a `PipelineRun` at once. `PipelineRun` / `StepRun` read state through the Prefect
API and records (metrics, logs, outputs) from the workspace's default datastore. Inside a step
script, `Run.get_context()` is the step's run; outside a pipeline it is an offline run that prints.
"""

from __future__ import annotations

import json
import os
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any
from uuid import UUID

from prefect_aml.exceptions import ActivityFailedException, UserErrorException

EXPERIMENT_TAG = "experiment:"

_STATUS = {
    "SCHEDULED": "NotStarted", "PENDING": "Queued", "RUNNING": "Running", "COMPLETED": "Finished",
    "FAILED": "Failed", "CRASHED": "Failed", "CANCELLED": "Canceled", "CANCELLING": "Canceling", "PAUSED": "Paused",
}
TERMINAL = {"Finished", "Failed", "Canceled"}


def _status(state) -> str:
    if state is None:
        return "NotStarted"
    return _STATUS.get(state.type.value, state.type.value.title())


def _client():
    from prefect.client.orchestration import get_client

    return get_client(sync_client=True)


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
        `AmlCompute`/`DockerCompute` or its name), on a worker of that compute."""
        from prefect_aml.deployments.endpoint import PipelineEndpoint
        from prefect_aml.deployments.published import PublishedPipeline
        from prefect_aml.pipeline.pipeline import Pipeline

        if isinstance(config, PublishedPipeline):
            return config.submit(self.workspace, self.name, pipeline_parameters, tags=tags)
        if isinstance(config, PipelineEndpoint):
            return config.submit(self.name, pipeline_parameters, pipeline_version=kwargs.get("pipeline_version"),
                                 tags=tags)
        if not isinstance(config, Pipeline):
            raise UserErrorException(f"Experiment.submit: cannot submit {config!r}; pass a Pipeline, a "
                                     "PublishedPipeline or a PipelineEndpoint.")
        from prefect_aml.flows.submit import submit_pipeline

        return submit_pipeline(self, config, pipeline_parameters, tags or {}, regenerate_outputs,
                               continue_on_step_failure, pipeline_compute=pipeline_compute)

    def get_runs(self, type=None, tags=None, properties=None, include_children: bool = False):
        """The experiment's pipeline runs, newest first."""
        from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags
        from prefect.client.schemas.sorting import FlowRunSort

        self.workspace._activate()
        with _client() as client:
            runs = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[EXPERIMENT_TAG + self.name])),
                sort=FlowRunSort.START_TIME_DESC,
            )
        for fr in runs:
            yield PipelineRun(self, str(fr.id), _flow_run=fr)

    @staticmethod
    def _list_names(workspace) -> list[str]:
        from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags

        workspace._activate()
        with _client() as client:
            runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=["aml-pipeline"])))
        return sorted({t[len(EXPERIMENT_TAG):] for r in runs for t in r.tags if t.startswith(EXPERIMENT_TAG)})


RUNNER_CHECK_S = 5.0  # while a runner started here runs, how often waiting for it asks the server anyway


class PipelineRun:
    """One run of a pipeline: a Prefect flow run."""

    def __init__(self, experiment: Experiment, run_id: str, _flow_run=None, _runner=None, **_kw):
        self.experiment = experiment
        self.id = self.run_id = str(run_id)
        self._flow_run = _flow_run
        self._runner = _runner  # the runner process, when this process started it (flows/submit.py::LocalRunner)

    @staticmethod
    def get(workspace, run_id: str) -> PipelineRun:
        workspace._activate()
        from prefect.exceptions import ObjectNotFound

        try:
            with _client() as client:
                fr = client.read_flow_run(UUID(str(run_id)))
        except (ObjectNotFound, ValueError):
            raise UserErrorException(f"Pipeline run {run_id!r} was not found in workspace {workspace.name!r}.") from None
        name = next((t[len(EXPERIMENT_TAG):] for t in fr.tags if t.startswith(EXPERIMENT_TAG)), "default")
        return PipelineRun(Experiment(workspace, name), str(fr.id), _flow_run=fr)

    def __repr__(self) -> str:
        return f"PipelineRun(experiment={self.experiment.name!r}, id={self.id!r}, status={self.get_status()!r})"

    # -- Prefect state
    def _refresh(self, client=None):
        with nullcontext(client) if client is not None else _client() as c:
            self._flow_run = c.read_flow_run(UUID(self.id))
        return self._flow_run

    @property
    def _parameters(self) -> dict:
        """What the run needs to be read back: spec_path, default_datastore, parameters (resolved)."""
        params = (self._flow_run or self._refresh()).parameters
        if "spec_path" in params:
            return params
        if getattr(self, "_published_info", None) is None:
            from prefect_aml.deployments.published import run_info

            self._published_info = run_info(self._flow_run)
            if self._published_info is None:
                raise UserErrorException(f"Run {self.id} is not a pipeline run of workspace "
                                         f"{self.experiment.workspace.name!r} (or its published pipeline was deleted).")
        return self._published_info

    def _repr_html_(self) -> str:
        from prefect_aml.widgets import html_table

        return html_table(self)

    def publish_pipeline(self, name: str, description: str | None = None, version: str | None = None,
                         continue_on_step_failure: bool | None = None, **kwargs):
        """Publish the pipeline this run ran (its stored spec), as `Pipeline.publish` would."""
        from prefect_aml.deployments.published import publish_spec

        return publish_spec(self.experiment.workspace, self._parameters["spec_path"],
                            self._parameters["default_datastore"], name, description, version,
                            continue_on_step_failure, kwargs.get("pipeline_compute"), _from_run=self.id)

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
        from prefect_aml.datastore import Datastore

        return Datastore.get(self.experiment.workspace, self._parameters["default_datastore"])

    def wait_for_completion(self, show_output: bool = True, timeout_seconds: float = sys.maxsize,
                            raise_on_error: bool = True) -> str:
        """Block until the run ends; prints step status changes and a final table when `show_output`."""
        from prefect_aml.flows.events import RunEvents

        started = time.monotonic()
        deadline = started + timeout_seconds
        seen: dict[str, str] = {}
        rank = {"NotStarted": 0, "Queued": 1, "Running": 2, "Canceling": 3}
        runner = self._runner
        # a run this process did not start (found with PipelineRun.get, or run by a worker): its state changes
        # come on the events stream, subscribed to before its status is first read
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

        with _client() as client, events or nullcontext():  # one connection for all the questions
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
        from rich.console import Console
        from rich.table import Table

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
        from prefect.states import Cancelled, Cancelling

        with _client() as client:
            fr = client.read_flow_run(UUID(self.id))
            if _status(fr.state) in TERMINAL:
                return
            if fr.state.is_scheduled() or fr.state.is_pending():
                client.set_flow_run_state(fr.id, Cancelled(message="Canceled before it started."), force=True)
            else:
                client.set_flow_run_state(fr.id, Cancelling(), force=True)

    # -- steps
    def _task_runs(self) -> list:
        from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

        with _client() as client:
            return client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[UUID(self.id)])))

    def _recorded_steps(self) -> set[str]:
        from prefect_aml.tasks.reuse import read_json
        from prefect_aml.tasks.step import REUSED_FILE, RUNS_PREFIX

        store = self._default_store()
        fs = store.filesystem()
        base = fs._strip_protocol(store.full_path(f"{RUNS_PREFIX}/{self.id}")).rstrip("/")
        steps = {p[len(base) + 1:].split("/")[0] for p in fs.glob(f"{base}/*/record.json")}
        return steps | set(read_json(store, f"{RUNS_PREFIX}/{self.id}/{REUSED_FILE}") or {})

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
        tags = (self._flow_run or self._refresh()).tags
        return dict(t.split(":", 1) if ":" in t else (t, "") for t in tags
                    if not t.startswith((EXPERIMENT_TAG, "aml-published:", "aml-endpoint:"))
                    and t not in ("aml-pipeline", "auto-scheduled"))

    def get_details(self) -> dict:
        fr = self._refresh()
        from prefect_aml.flows.submit import load_spec

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
        import html

        from prefect_aml.widgets import _COLORS, _duration

        status = self.get_status()
        tr = self._task_run
        link = f"{self.pipeline_run.experiment.workspace.ui_url}/runs/task-run/{self.id}"
        outs = ", ".join(html.escape(n) for n in self._load_record().get("outputs", {}))
        return (f"<table><tr><th>Step</th><td>{html.escape(self.name)}</td></tr><tr><th>Status</th><td style="
                f"\"color:{_COLORS.get(status, '#000')}\"><b>{html.escape(status)}</b></td></tr><tr><th>Duration</th>"
                f"<td>{_duration(tr.start_time, tr.end_time)}</td></tr><tr><th>Reused</th><td>"
                f"{'yes' if self.reused else 'no'}</td></tr><tr><th>Outputs</th><td>{outs}</td></tr><tr><th>Pipeline "
                f"run</th><td>{html.escape(self.pipeline_run.id)}</td></tr><tr><th>Prefect UI</th><td><a href=\""
                f"{html.escape(link)}\" target=\"_blank\">open</a></td></tr></table>")

    def _refresh(self):
        with _client() as client:
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
        from prefect_aml.tasks.reuse import read_json
        from prefect_aml.tasks.step import REUSED_FILE, RUNS_PREFIX

        if self._record is None or self._record.get("status") not in TERMINAL:
            store = self.pipeline_run._default_store()
            base = f"{RUNS_PREFIX}/{self.pipeline_run.id}"
            self._record = read_json(store, f"{base}/{self.name}/record.json")
            if self._record is None:  # reused steps are recorded together
                self._record = (read_json(store, f"{base}/{REUSED_FILE}") or {}).get(self.name, {})
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
        from prefect_aml.datastore import Datastore

        store = Datastore.get(self.pipeline_run.experiment.workspace, log["datastore"])
        with store.filesystem().open(store.full_path(log["path"]), "rb") as f:
            return f.read().decode(errors="replace")

    get_stdout_log = get_job_log
    get_stderr_log = get_job_log

    def get_file_names(self) -> list[str]:
        store = self.pipeline_run._default_store()
        from prefect_aml.tasks.step import RUNS_PREFIX

        base = store.full_path(f"{RUNS_PREFIX}/{self.pipeline_run.id}/{self.name}")
        fs = store.filesystem()
        return sorted(p[len(fs._strip_protocol(base)) + 1:] for p in fs.find(base))

    def download_file(self, name: str, output_file_path: str | None = None) -> str:
        store = self.pipeline_run._default_store()
        from prefect_aml.tasks.step import RUNS_PREFIX

        target = output_file_path or os.path.basename(name)
        store.filesystem().get(store.full_path(f"{RUNS_PREFIX}/{self.pipeline_run.id}/{self.name}/{name}"), target)
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
        from prefect_aml.datastore import Datastore

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
        path = os.environ.get("AZUREML_RUN_CONTEXT")
        if path and os.path.exists(path):
            return cls(json.loads(Path(path).read_text()))
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
                from prefect_aml.dataset import _Dataset
                from prefect_aml.datastore import Datastore

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
        from prefect_aml.workspace import Workspace

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
        with open(self._dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps({"name": name, "kind": kind, "value": value}, default=str) + "\n")

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
            target = (self._dir / "artifacts" if self._dir else Path.cwd()) / f"{name}.png"
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
        target = self._dir / "artifacts" / name
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
        f = self._dir / "tags.json"
        current = json.loads(f.read_text()) if f.exists() else {}
        current.update({str(k): (None if v is None else str(v)) for k, v in tags.items()})
        f.write_text(json.dumps(current))

    def complete(self) -> None:
        """Kept for Azure ML code: a step's run completes when its script exits."""
