"""Published pipelines: a stored pipeline spec behind a parameterized Prefect deployment.

```python
published = pipeline.publish(name="iris-train", description="train and compare", version="1")
published.submit(ws, "iris", pipeline_parameters={"n_estimators": 50})
# prefect deployment run 'iris-train/1' -p n_estimators=50      (a worker of the pipelines compute runs it)
```

`publish` validates the pipeline, snapshots its sources and stores its spec on the default
datastore (so running it needs no checkout and no image rebuild), records it (a block), and
creates the deployment `<name>/<version>`: its flow's signature is built from the pipeline's
`PipelineParameter`s (names, types, defaults), so the Prefect UI shows a typed form and the server
rejects unknown or mistyped parameters before a run exists. A run of the deployment is a pipeline
run: the flow checks the pipeline is enabled, resolves the parameters and runs the stored spec.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from prefect.client.schemas.actions import DeploymentUpdate
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterTags
from prefect.client.schemas.objects import WorkerStatus
from prefect.exceptions import ObjectNotFound
from prefect.utilities.callables import parameter_schema

from prefect_aml.blocks.published import (
    PublishedPipelineRecord,
    delete_record,
    disabled_message,
    list_records,
    load_record,
    parameters_signature,
    resolve_values,
    save_record,
)
from prefect_aml.compute import AmlCompute, ComputeTarget, resolve_compute
from prefect_aml.datastore import Datastore
from prefect_aml.exceptions import ComputeTargetException, PublishedPipelineDisabledError, UserErrorException
from prefect_aml.flows.launch import start_runner
from prefect_aml.flows.prepare import (
    check_spec,
    default_store,
    prepare_sources,
    resolve_computes,
    workspace_fields,
)
from prefect_aml.names import (
    DEFAULT_PIPELINE_COMPUTE,
    EXPERIMENT_TAG,
    PIPELINE_TAG,
    PUBLISHED_TAG,
    published_entrypoint,
    serve_workspace_url,
    tags_from_dict,
)
from prefect_aml.pipeline.steps import _compute_name
from prefect_aml.records import load_spec, store_spec
from prefect_aml.runs import Experiment, PipelineRun

if TYPE_CHECKING:
    from prefect_aml.workspace import Workspace

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\- ]{0,254}$")


def check_name(kind: str, name: Any) -> str:
    if not isinstance(name, str) or not _NAME_RE.match(name) or name != name.strip():
        raise UserErrorException(
            f"{kind} name {name!r} is not valid: use 1-255 letters, digits, spaces, '.', '_' or '-', starting with a "
            "letter or digit ('/' separates a Prefect deployment's flow and version, so it cannot be used).")
    return name


def _all_records(workspace: Workspace) -> list[PublishedPipelineRecord]:
    return list_records(PublishedPipelineRecord, workspace)


# -- deployments -----------------------------------------------------------------------------------------

def _flow_signature(record: PublishedPipelineRecord):
    """A stand-in with the flow's signature: its parameter schema is the deployment's (the flow is built on the
    worker, from `deployments/entry.py`)."""
    def published_pipeline(**parameters: Any) -> None: ...

    published_pipeline.__signature__ = parameters_signature(record)
    return published_pipeline


def deploy(client, record: PublishedPipelineRecord, flow_name: str, deployment_name: str,
           extra_tags: list[str] = (), paused: bool = False) -> str:
    """Create or update the deployment `<flow_name>/<deployment_name>` that runs `record`; returns its id."""
    fields = dict(
        work_pool_name=record.work_pool, entrypoint=published_entrypoint(record.pipeline_id),
        # prefect-aml is the code (installed on the worker); the pipeline's own code is in its stored snapshots
        pull_steps=[{"prefect.deployments.steps.set_working_directory": {"directory": "/tmp"}}],
        parameter_openapi_schema=parameter_schema(_flow_signature(record)).model_dump(), enforce_parameter_schema=True,
        parameters={}, version=record.version, paused=paused,
        tags=[PIPELINE_TAG, PUBLISHED_TAG + record.pipeline_id, *extra_tags],
        description=(record.description or "") + f"\n\nprefect-aml published pipeline {record.name!r} version "
                    f"{record.version!r} (id {record.pipeline_id}).")
    owner = (extra_tags or [PUBLISHED_TAG + record.pipeline_id])[0]  # the endpoint's tag, or the pipeline's
    try:  # an endpoint's default is re-pointed in place: its schedules stay (creating anew would drop them)
        existing = client.read_deployment_by_name(f"{flow_name}/{deployment_name}")
        if owner not in (existing.tags or []):
            raise UserErrorException(
                f"Prefect deployment '{flow_name}/{deployment_name}' already exists and belongs to another published "
                "pipeline or endpoint; choose another name or version.")
        deployment_id = existing.id
    except ObjectNotFound:
        deployment_id = client.create_deployment(flow_id=client.create_flow_from_name(flow_name),
                                                 name=deployment_name, **fields)
    else:
        client.update_deployment(deployment_id, DeploymentUpdate(**fields))
    return str(deployment_id)


def _pipeline_pool(workspace: Workspace, pipeline_compute) -> str:
    """The work pool a published pipeline's flow runs on (created as a process compute when it is the default)."""
    name = _compute_name(pipeline_compute) if pipeline_compute is not None else DEFAULT_PIPELINE_COMPUTE
    try:
        where = resolve_compute(workspace, name, "(the published pipeline)")
    except ComputeTargetException:
        if pipeline_compute is not None:
            raise
        ComputeTarget.create(workspace, name, AmlCompute.provisioning_configuration(
            max_nodes=4, description="Runs published pipelines' flows (prefect-aml worker start aml-pipelines)"))
        where = resolve_compute(workspace, name, "(the published pipeline)")
    if not where or not where.get("pool"):
        raise ComputeTargetException(
            f"pipeline_compute={name!r}: a published pipeline's flow runs on a work pool compute (AmlCompute or "
            "DockerCompute); Dask computes run steps only.")
    return where["pool"]


def publish_pipeline(pipeline, name: str, description: str | None = None, version: str | None = None,
                     continue_on_step_failure: bool | None = None, pipeline_compute=None) -> PublishedPipeline:
    check_name("Published pipeline", name)
    ws = pipeline.workspace
    spec = pipeline._build_spec()  # validates first: nothing is written for a broken pipeline
    resolve_computes(spec, ws)
    store = default_store(ws, spec)
    check_spec(spec, store, ws)
    prepare_sources(spec, store, ws.home)
    return _publish(ws, spec, store, name, description, version, continue_on_step_failure, pipeline_compute)


def publish_spec(ws: Workspace, spec_path: str, default_datastore: str, name: str, description: str | None,
                 version: str | None, continue_on_step_failure: bool | None, pipeline_compute,
                 _from_run: str | None = None) -> PublishedPipeline:
    """Publish the spec a pipeline run ran (`PipelineRun.publish_pipeline`)."""
    check_name("Published pipeline", name)
    store = Datastore.get(ws, default_datastore)
    return _publish(ws, load_spec(store, spec_path), store, name, description, version, continue_on_step_failure,
                    pipeline_compute, _from_run)


def _publish(ws: Workspace, spec, store, name: str, description, version, continue_on_step_failure,
             pipeline_compute, _from_run: str | None = None) -> PublishedPipeline:
    if version is not None and (not isinstance(version, str | int) or isinstance(version, bool)):
        raise UserErrorException(f"Published pipeline version {version!r} is not valid: use a short string.")
    if version is not None:
        check_name("Published pipeline version", str(version))
    pool = _pipeline_pool(ws, pipeline_compute)
    existing = [r for r in _all_records(ws) if r.name == name]
    if version is None:
        numbers = [int(r.version) for r in existing if r.version.isdigit()]
        version = str(max(numbers, default=0) + 1)
    version = str(version)
    if any(r.version == version for r in existing):
        raise UserErrorException(
            f"Published pipeline {name!r} version {version!r} already exists; publish with another version= "
            f"(or none: the next number is chosen), or disable the old one.")
    record = PublishedPipelineRecord(
        pipeline_id=str(uuid.uuid4()), name=name, version=version, description=description,
        spec_path=store_spec(store, spec), default_datastore=store.name, workspace=workspace_fields(ws),
        parameters={n: {"type": p.type, "default": p.default} for n, p in spec.parameters.items()},
        continue_on_step_failure=bool(continue_on_step_failure), work_pool=pool,
        created=datetime.now(UTC).isoformat(), published_from_run=_from_run)
    save_record(ws, record)  # the record first: a deployment never exists without the record its runs read
    try:
        with ws.client() as client:
            record.deployment_id = deploy(client, record, name, version)
    except BaseException:
        delete_record(PublishedPipelineRecord, ws, record.pipeline_id)
        raise
    save_record(ws, record)
    return PublishedPipeline(ws, record)


def start_run(workspace: Workspace, deployment_id: str, record: PublishedPipelineRecord, experiment_name: str,
              values: dict[str, Any], tags: dict | None = None, extra_tags: list[str] = ()):
    """Create a run of a published deployment; with no online worker on its pool, run it here in the background.
    Returns the flow run and the runner started here (None when a worker runs it)."""
    params = {k: (v if not (isinstance(v, dict) and v.get("type") == "datapath")
                  else {"datastore": v["datastore"], "path": v["path"]}) for k, v in values.items()}
    with workspace.client() as client:
        flow_run = client.create_flow_run_from_deployment(
            uuid.UUID(deployment_id), parameters=params, tags=[EXPERIMENT_TAG + experiment_name, *extra_tags,
                                                               *tags_from_dict(tags)])
        online = any(w.status == WorkerStatus.ONLINE for w in client.read_workers_for_work_pool(record.work_pool))
    return flow_run, None if online else start_runner(workspace, str(flow_run.id))


class PublishedPipeline:
    """A published pipeline: `submit` it from Python, run its deployment from the CLI, the UI or REST."""

    def __init__(self, workspace: Workspace, record: PublishedPipelineRecord):
        self.workspace = workspace
        self._record = record

    def __repr__(self) -> str:
        return (f"PublishedPipeline(name={self.name!r}, version={self.version!r}, id={self.id!r}, "
                f"status={self.status!r})")

    @property
    def id(self) -> str:
        return self._record.pipeline_id

    @property
    def name(self) -> str:
        return self._record.name

    @property
    def version(self) -> str:
        return self._record.version

    @property
    def description(self) -> str | None:
        return self._record.description

    @property
    def status(self) -> str:
        return self._record.status

    @property
    def continue_on_step_failure(self) -> bool:
        return self._record.continue_on_step_failure

    @property
    def deployment_name(self) -> str:
        """What `prefect deployment run` takes: `<name>/<version>`."""
        return f"{self.name}/{self.version}"

    @property
    def deployment_id(self) -> str:
        return self._record.deployment_id

    @property
    def parameters(self) -> dict[str, dict[str, Any]]:
        return dict(self._record.parameters)

    @property
    def endpoint(self) -> str:
        """The REST URL `prefect-aml serve` accepts Azure-ML-shaped submissions on."""
        return f"{serve_workspace_url(self.workspace)}/PipelineRuns/PipelineSubmit/{self.id}"

    @staticmethod
    def get(workspace: Workspace, id: str, _workflow_provider=None, _service_endpoint=None) -> PublishedPipeline:
        record = load_record(PublishedPipelineRecord, workspace, id)
        if record is None:
            known = [f"{r.name}/{r.version} ({r.pipeline_id})" for r in _all_records(workspace)][-5:]
            raise UserErrorException(f"Published pipeline id {id!r} was not found in workspace {workspace.name!r}."
                                     + (f" Recently published: {known}." if known else ""))
        return PublishedPipeline(workspace, record)

    @staticmethod
    def list(workspace: Workspace, active_only: bool = True, _service_endpoint=None) -> list[PublishedPipeline]:
        return [PublishedPipeline(workspace, r) for r in _all_records(workspace)
                if not active_only or r.status == "Active"]

    def _refresh(self) -> PublishedPipelineRecord:
        self._record = load_record(PublishedPipelineRecord, self.workspace, self.id) or self._record
        return self._record

    def submit(self, workspace: Workspace, experiment_name: str, pipeline_parameters: dict | None = None,
               tags: dict | None = None, _extra_tags: list[str] = (), _deployment_id: str | None = None,
               **_kw) -> PipelineRun:
        """Run it; returns the `PipelineRun` at once. Bad parameters fail here, before a run exists."""
        experiment = Experiment(workspace, experiment_name)
        record = self._refresh()
        if record.status != "Active":
            raise PublishedPipelineDisabledError(disabled_message(record))
        values = resolve_values(record, pipeline_parameters)
        flow_run, runner = start_run(workspace, _deployment_id or record.deployment_id, record, experiment_name,
                                     values, tags, _extra_tags)
        return PipelineRun(experiment, str(flow_run.id), _flow_run=flow_run, _runner=runner)

    def _set_status(self, status: str) -> None:
        record = self._refresh()
        record.status = status
        with self.workspace.client() as client:
            # a paused deployment schedules nothing; manual runs of it fail at their start (the flow checks)
            for dep in _deployments_of(client, record.pipeline_id):
                client.update_deployment(dep.id, DeploymentUpdate(paused=status != "Active"))
        save_record(self.workspace, record)

    def disable(self) -> None:
        """No route can run it any more: Python and REST refuse, its schedules stop, other runs fail at once."""
        self._set_status("Disabled")

    def enable(self) -> None:
        self._set_status("Active")

    def get_graph(self):
        return load_spec(self._store(), self._record.spec_path)

    def _store(self):
        return Datastore.get(self.workspace, self._record.default_datastore)

    def _submit_to(self, experiment, pipeline_parameters: dict | None = None, tags: dict | None = None,
                   **_options: Any) -> PipelineRun:
        """What `Experiment.submit(published, ...)` asks of the object it is given."""
        return self.submit(experiment.workspace, experiment.name, pipeline_parameters, tags=tags)


def _deployments_of(client, pipeline_id: str) -> list:
    return client.read_deployments(deployment_filter=DeploymentFilter(
        tags=DeploymentFilterTags(all_=[PUBLISHED_TAG + pipeline_id])))
