"""Published pipelines, pipeline endpoints and schedules as Prefect blocks, and what their runs read of them.

Open-source Prefect keeps no history of a deployment (redeploying overwrites it, `version` is a
label), so what Azure ML kept is kept here: each published pipeline (its stored spec, parameters
and status), each endpoint's list of versions and its default, each schedule. Blocks live in the
Prefect database, so they survive a server restart, and they are visible in the UI.
"""

from __future__ import annotations

import difflib
import inspect
import uuid
from typing import TYPE_CHECKING, Any, TypeVar

from prefect.blocks.core import Block
from prefect.exceptions import ObjectNotFound
from pydantic import Field

from prefect_aml.blocks import saved_blocks
from prefect_aml.exceptions import PipelineValidationError, UserErrorException
from prefect_aml.names import SCHEDULE_SLUG_PREFIX, published_id_of
from prefect_aml.pipeline.params import ANNOTATIONS, coerce

if TYPE_CHECKING:
    from prefect_aml.workspace import Workspace


class PublishedPipelineRecord(Block):
    """One published pipeline: what its deployment runs, and whether it may run."""

    _block_type_name = "AML Published Pipeline"
    _description = "A prefect-aml published pipeline: a stored pipeline spec behind a parameterized deployment."

    pipeline_id: str
    name: str
    version: str
    description: str | None = None
    status: str = "Active"  # Active | Disabled
    spec_path: str
    default_datastore: str
    workspace: dict[str, Any]
    parameters: dict[str, dict[str, Any]] = Field(default_factory=dict)  # name -> {"type", "default"}
    continue_on_step_failure: bool = False
    work_pool: str
    deployment_id: str | None = None
    created: str
    published_from_run: str | None = None


class PipelineEndpointRecord(Block):
    """A pipeline endpoint: its versions ("0", "1", ...) and which one runs by default."""

    _block_type_name = "AML Pipeline Endpoint"
    _description = "A prefect-aml pipeline endpoint: versions of published pipelines behind one stable name."

    endpoint_id: str
    name: str
    description: str | None = None
    status: str = "Active"  # Active | Disabled (archived)
    default_version: str = "0"
    versions: list[dict[str, str]] = Field(default_factory=list)  # [{"version", "pipeline_id"}]
    former_names: list[str] = Field(default_factory=list)
    created: str


class ScheduleRecord(Block):
    """A schedule: a recurrence (a deployment schedule) or a datastore trigger (an automation)."""

    _block_type_name = "AML Pipeline Schedule"
    _description = "A prefect-aml schedule: runs a published pipeline or endpoint on a recurrence or on new data."

    schedule_id: str
    name: str
    pipeline_id: str | None = None
    pipeline_endpoint_id: str | None = None
    experiment_name: str
    description: str | None = None
    status: str = "Active"  # Active | Disabled
    recurrence: dict[str, Any] | None = None
    pipeline_parameters: dict[str, Any] = Field(default_factory=dict)
    deployment_id: str
    deployment_schedule_id: str | None = None
    # datastore trigger
    datastore: str | None = None
    path_on_datastore: str | None = None
    polling_interval: float | None = None
    data_path_parameter_name: str | None = None
    automation_id: str | None = None
    created: str


# each record is one block named "<prefix>-<its id>"
_KINDS: dict[type, tuple[str, str]] = {
    PublishedPipelineRecord: ("published", "pipeline_id"),
    PipelineEndpointRecord: ("endpoint", "endpoint_id"),
    ScheduleRecord: ("schedule", "schedule_id"),
}
R = TypeVar("R", PublishedPipelineRecord, PipelineEndpointRecord, ScheduleRecord)


def block_name(cls: type, record_id: str) -> str:
    return f"{_KINDS[cls][0]}-{record_id}"


def list_records(cls: type[R], workspace: Workspace) -> list[R]:
    """Every record of a kind in the workspace, oldest first."""
    with workspace.client() as client:
        return sorted(saved_blocks(client, cls), key=lambda r: r.created)


def load_record(cls: type[R], workspace: Workspace, record_id: str) -> R | None:
    """One record by its id (None when unknown or not an id)."""
    try:
        uuid.UUID(str(record_id))
    except ValueError:
        return None
    with workspace.client() as client:
        try:
            doc = client.read_block_document_by_name(block_name(cls, str(record_id)), cls.get_block_type_slug())
        except ObjectNotFound:
            return None
    return cls._from_block_document(doc)


def save_record(workspace: Workspace, record: Block) -> None:
    cls = type(record)
    with workspace.prefect():
        record.save(block_name(cls, getattr(record, _KINDS[cls][1])), overwrite=True, _sync=True)


def delete_record(cls: type, workspace: Workspace, record_id: str) -> None:
    with workspace.client() as client:
        try:
            client.delete_block_document(client.read_block_document_by_name(
                block_name(cls, record_id), cls.get_block_type_slug()).id)
        except ObjectNotFound:
            pass


# -- what a run of a published pipeline reads ----------------------------------------------------------
def resolve_values(record: PublishedPipelineRecord, assignments: dict[str, Any] | None) -> dict[str, Any]:
    """Every parameter's value (defaults filled in); an unknown name or a wrong type is a clear error."""
    values = {name: p["default"] for name, p in record.parameters.items()}
    for name, value in (assignments or {}).items():
        if name not in record.parameters:
            close = difflib.get_close_matches(name, list(record.parameters), n=1)
            known = ", ".join(f"{n} ({p['type']})" for n, p in record.parameters.items()) or "none"
            raise PipelineValidationError(
                f"Published pipeline {record.name!r} version {record.version!r} has no parameter {name!r}."
                + (f" Did you mean {close[0]!r}?" if close else "") + f" Its parameters: {known}.")
        values[name] = coerce(name, record.parameters[name]["type"], value)
    return values


def run_info(workspace: Workspace, flow_run) -> dict[str, Any] | None:
    """For a published pipeline's run: its spec, default datastore and resolved parameters (else None)."""
    pipeline_id = published_id_of(flow_run.tags)
    if pipeline_id is None:
        return None
    record = load_record(PublishedPipelineRecord, workspace, pipeline_id)
    if record is None:
        return None
    try:
        values = resolve_values(record, flow_run.parameters)
    except UserErrorException:
        values = dict(flow_run.parameters)
    return {"spec_path": record.spec_path, "default_datastore": record.default_datastore,
            "parameters": values, "pipeline_id": record.pipeline_id}


def parameters_signature(record: PublishedPipelineRecord) -> inspect.Signature:
    """The signature of a published pipeline's flow: keyword parameters named and typed after its
    PipelineParameters, with their defaults (the Prefect UI's form, the server's validation)."""
    return inspect.Signature([
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=p["default"], annotation=ANNOTATIONS[p["type"]])
        for name, p in record.parameters.items()])


def disabled_message(record: PublishedPipelineRecord) -> str:
    return (f"Published pipeline {record.name!r} version {record.version!r} (id {record.pipeline_id}) is disabled, so "
            f"it cannot run. Enable it with PublishedPipeline.get(ws, {record.pipeline_id!r}).enable().")


def archived_message(record: PipelineEndpointRecord) -> str:
    return (f"Pipeline endpoint {record.name!r} (id {record.endpoint_id}) is archived, so it cannot run. Reactivate it "
            f"with PipelineEndpoint.get(ws, id={record.endpoint_id!r}).reactivate({record.name!r}).")


def schedule_of_deployment_schedule(workspace: Workspace, deployment_schedule_id: str,
                                    deployment_id: str | None = None) -> ScheduleRecord | None:
    """The schedule record behind a Prefect deployment schedule (a run's `created_by`), if it is one of ours."""
    with workspace.client() as client:
        records = saved_blocks(client, ScheduleRecord)
        for rec in records:
            if rec.deployment_schedule_id == deployment_schedule_id:
                return rec
        if deployment_id:  # re-created schedules get new ids: match on the slug
            for sched in client.read_deployment_schedules(uuid.UUID(deployment_id)):
                if str(sched.id) == deployment_schedule_id and (sched.slug or "").startswith(SCHEDULE_SLUG_PREFIX):
                    return next((r for r in records if r.schedule_id == sched.slug[len(SCHEDULE_SLUG_PREFIX):]),
                                None)
    return None


def schedule_of_automation(workspace: Workspace, automation_id: str) -> ScheduleRecord | None:
    """The schedule record behind a datastore trigger's automation."""
    return next((r for r in list_records(ScheduleRecord, workspace) if r.automation_id == automation_id), None)
