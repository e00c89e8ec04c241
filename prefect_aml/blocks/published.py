"""Published pipelines, pipeline endpoints and schedules as Prefect blocks.

Open-source Prefect keeps no history of a deployment (redeploying overwrites it, `version` is a
label), so what Azure ML kept is kept here: each published pipeline (its stored spec, parameters
and status), each endpoint's list of versions and its default, each schedule. Blocks live in the
Prefect database, so they survive a server restart, and they are visible in the UI.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any, TypeVar

from prefect.blocks.core import Block
from pydantic import Field

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


def _client():
    from prefect.client.orchestration import get_client

    return get_client(sync_client=True)


def block_name(cls: type, record_id: str) -> str:
    return f"{_KINDS[cls][0]}-{record_id}"


def list_records(cls: type[R], workspace: Workspace) -> list[R]:
    """Every record of a kind in the workspace, oldest first."""
    from prefect_aml.blocks import saved_blocks

    workspace._activate()
    with _client() as client:
        return sorted(saved_blocks(client, cls), key=lambda r: r.created)


def load_record(cls: type[R], record_id: str) -> R | None:
    """One record by its id, from the active Prefect API (None when unknown or not an id)."""
    from prefect.exceptions import ObjectNotFound

    try:
        uuid.UUID(str(record_id))
    except ValueError:
        return None
    with _client() as client:
        try:
            doc = client.read_block_document_by_name(block_name(cls, str(record_id)), cls.get_block_type_slug())
        except ObjectNotFound:
            return None
    return cls._from_block_document(doc)


def save_record(record: Block) -> None:
    cls = type(record)
    record.save(block_name(cls, getattr(record, _KINDS[cls][1])), overwrite=True, _sync=True)


def delete_record(cls: type, record_id: str) -> None:
    from prefect.exceptions import ObjectNotFound

    with _client() as client:
        try:
            client.delete_block_document(client.read_block_document_by_name(
                block_name(cls, record_id), cls.get_block_type_slug()).id)
        except ObjectNotFound:
            pass
