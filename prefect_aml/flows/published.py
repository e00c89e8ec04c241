"""The flow of a published pipeline: keyword parameters named and typed after its PipelineParameters.

A published pipeline's deployment names `prefect_aml.deployments.entry.published_<id>`, which is built
here from the pipeline's record on first access, so any Prefect worker with prefect-aml installed can
run it without a copy of the user's code. A run checks that the pipeline (and its endpoint) may run,
resolves its parameters, finds its experiment and runs the stored spec with the pipeline flow.
"""

from __future__ import annotations

from typing import Any

from prefect import flow
from prefect.client.orchestration import get_client
from prefect.context import get_run_context
from prefect.task_runners import ThreadPoolTaskRunner

from prefect_aml.blocks.published import (
    PipelineEndpointRecord,
    PublishedPipelineRecord,
    archived_message,
    disabled_message,
    load_record,
    parameters_signature,
    resolve_values,
    schedule_of_automation,
    schedule_of_deployment_schedule,
)
from prefect_aml.exceptions import PublishedPipelineDisabledError, UserErrorException
from prefect_aml.flows.pipeline import aml_pipeline
from prefect_aml.names import ENDPOINT_TAG, EXPERIMENT_TAG, automation_of, experiment_of, published_id_of
from prefect_aml.workspace import Workspace

_FLOWS: dict[str, Any] = {}  # pipeline id -> its flow, built once per process


def build_flow(record: PublishedPipelineRecord):
    """The flow of a published pipeline: keyword parameters named and typed after its PipelineParameters."""
    pipeline_id = record.pipeline_id

    def published_pipeline(**parameters: Any) -> dict[str, Any]:
        return run_published(pipeline_id, parameters)

    published_pipeline.__signature__ = parameters_signature(record)
    published_pipeline.__doc__ = record.description or f"Published pipeline {record.name} version {record.version}."
    return flow(name=record.name, task_runner=ThreadPoolTaskRunner(max_workers=32), persist_result=False,
                validate_parameters=True)(published_pipeline)


def _experiment_for(ws: Workspace, flow_run, record: PublishedPipelineRecord) -> str:
    """The run's experiment: its tag (Python, REST), its schedule's, or the pipeline's name."""
    tagged = experiment_of(flow_run.tags)
    if tagged:
        return tagged
    created_by = getattr(flow_run, "created_by", None)
    sched = None
    if created_by is not None and getattr(created_by, "id", None):
        sched = schedule_of_deployment_schedule(ws, str(created_by.id), str(flow_run.deployment_id))
    if sched is None and automation_of(flow_run):
        sched = schedule_of_automation(ws, automation_of(flow_run))
    return sched.experiment_name if sched is not None else record.name


def run_published(pipeline_id: str, parameters: dict[str, Any]) -> dict[str, Any]:
    """The body of a published pipeline's flow run: check, resolve, then run the stored pipeline."""
    ws = Workspace()  # this process's Prefect API: the one the run was created on
    record = load_record(PublishedPipelineRecord, ws, pipeline_id)
    if record is None:
        raise UserErrorException(f"Published pipeline {pipeline_id!r} no longer exists in this workspace.")
    if record.status != "Active":
        raise PublishedPipelineDisabledError(disabled_message(record))
    flow_run = get_run_context().flow_run
    for tag in flow_run.tags or []:
        if tag.startswith(ENDPOINT_TAG):
            endpoint = load_record(PipelineEndpointRecord, ws, tag[len(ENDPOINT_TAG):])
            if endpoint is not None and endpoint.status != "Active":
                raise PublishedPipelineDisabledError(archived_message(endpoint))
    values = resolve_values(record, parameters)
    experiment = _experiment_for(ws, flow_run, record)
    if EXPERIMENT_TAG + experiment not in (flow_run.tags or []):  # runs started outside Python get theirs here
        with get_client(sync_client=True) as client:
            client.update_flow_run(flow_run.id, tags=[*flow_run.tags, EXPERIMENT_TAG + experiment])
    return aml_pipeline.fn(spec_path=record.spec_path, parameters=values, experiment_name=experiment,
                           workspace=record.workspace, default_datastore=record.default_datastore,
                           continue_on_step_failure=record.continue_on_step_failure)


def flow_for_run(flow_run):
    """The flow of a published pipeline's run (None for any other run)."""
    pipeline_id = published_id_of(flow_run.tags)
    return None if pipeline_id is None else published_flow(pipeline_id)


def published_flow(pipeline_id: str):
    """The flow of published pipeline `pipeline_id` (built once per process from its record)."""
    if pipeline_id not in _FLOWS:
        record = load_record(PublishedPipelineRecord, Workspace(), pipeline_id)
        if record is None:
            raise AttributeError(f"published pipeline {pipeline_id} is not in this workspace's Prefect API")
        _FLOWS[pipeline_id] = build_flow(record)
    return _FLOWS[pipeline_id]
