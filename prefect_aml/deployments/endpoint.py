"""Pipeline endpoints: one stable name over versions "0", "1", ... of published pipelines.

```python
endpoint = PipelineEndpoint.publish(ws, name="iris", description="iris training", pipeline=published_v1)
endpoint.add_default(published_v2)           # version "1", now the default
endpoint.submit("iris")                       # runs version "1"
endpoint.set_default_version("0")             # roll back in one call
# prefect deployment run 'iris/default'       (or 'iris/0', 'iris/1': a pinned version)
```

Each version is a deployment `<endpoint>/<version>` and the default is one more, `<endpoint>/default`,
re-pointed when the default changes. The list of versions and the default are kept in a block (open-
source Prefect keeps no deployment history), so they survive server restarts.
"""

from __future__ import annotations

import difflib
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from prefect.client.schemas.actions import DeploymentUpdate
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterTags

from prefect_aml.blocks.published import (
    PipelineEndpointRecord,
    PublishedPipelineRecord,
    archived_message,
    list_records,
    load_record,
    save_record,
)
from prefect_aml.deployments.published import PublishedPipeline, check_name, deploy
from prefect_aml.exceptions import PublishedPipelineDisabledError, UserErrorException
from prefect_aml.names import ENDPOINT_TAG, serve_workspace_url
from prefect_aml.pipeline.pipeline import Pipeline

if TYPE_CHECKING:
    from prefect_aml.runs import PipelineRun
    from prefect_aml.workspace import Workspace

DEFAULT_DEPLOYMENT = "default"


def _records(workspace: Workspace) -> list[PipelineEndpointRecord]:
    return list_records(PipelineEndpointRecord, workspace)


def _published(workspace: Workspace, pipeline) -> PublishedPipeline:
    if isinstance(pipeline, PublishedPipeline):
        return pipeline
    if isinstance(pipeline, PipelineEndpoint):  # another endpoint: its default version
        return pipeline.get_pipeline()
    if isinstance(pipeline, Pipeline):
        raise UserErrorException(
            "A pipeline endpoint takes a published pipeline: publish it first (pipeline.publish(name=...)) and pass "
            "the PublishedPipeline it returns.")
    if isinstance(pipeline, str):
        return PublishedPipeline.get(workspace, pipeline)
    raise UserErrorException(f"Expected a PublishedPipeline (or its id), got {pipeline!r}.")


class PipelineVersion:
    """One version of an endpoint: `.version` and the `.pipeline_id` it runs."""

    def __init__(self, version: str, pipeline_id: str):
        self.version, self.pipeline_id = version, pipeline_id

    def __repr__(self) -> str:
        return f"PipelineVersion(version={self.version!r}, pipeline_id={self.pipeline_id!r})"


class PipelineEndpoint:
    """Versions of published pipelines behind one name; runs go to the default version unless one is pinned."""

    def __init__(self, workspace: Workspace, record: PipelineEndpointRecord):
        self.workspace = workspace
        self._record = record

    def __repr__(self) -> str:
        return (f"PipelineEndpoint(name={self.name!r}, id={self.id!r}, default_version={self.default_version!r}, "
                f"status={self.status!r})")

    id = property(lambda self: self._record.endpoint_id)
    name = property(lambda self: self._record.name)
    description = property(lambda self: self._record.description)
    status = property(lambda self: self._record.status)
    default_version = property(lambda self: self._record.default_version)

    @property
    def endpoint(self) -> str:
        return f"{serve_workspace_url(self.workspace)}/PipelineRuns/PipelineEndpointSubmit/Id/{self.id}"

    # -- create and find
    @staticmethod
    def publish(workspace: Workspace, name: str, description: str, pipeline, _workflow_provider=None,
                _service_endpoint=None) -> PipelineEndpoint:
        check_name("Pipeline endpoint", name)
        published = _published(workspace, pipeline)
        if any(r.name == name for r in _records(workspace)):
            raise UserErrorException(
                f"Pipeline endpoint {name!r} already exists; add a version to it with "
                f"PipelineEndpoint.get(ws, name={name!r}).add_default(published_pipeline).")
        record = PipelineEndpointRecord(endpoint_id=str(uuid.uuid4()), name=name, description=description,
                                        created=datetime.now(UTC).isoformat())
        endpoint = PipelineEndpoint(workspace, record)
        endpoint._add(published, make_default=True)
        return endpoint

    @staticmethod
    def get(workspace: Workspace, id: str | None = None, name: str | None = None, _workflow_provider=None,
            _service_endpoint=None) -> PipelineEndpoint:
        if (id is None) == (name is None):
            raise UserErrorException("PipelineEndpoint.get: pass exactly one of id= or name=.")
        record = (load_record(PipelineEndpointRecord, workspace, id) if id is not None
                  else next((r for r in _records(workspace) if r.name == name), None))
        if record is None:
            names = [r.name for r in _records(workspace)]
            close = difflib.get_close_matches(str(name), names, n=1) if name else []
            raise UserErrorException(
                f"Pipeline endpoint {('id ' + repr(id)) if id else repr(name)} was not found in workspace "
                f"{workspace.name!r}." + (f" Did you mean {close[0]!r}?" if close else f" Endpoints: {names}."))
        return PipelineEndpoint(workspace, record)

    @staticmethod
    def list(workspace: Workspace, active_only: bool = True, _workflow_provider=None,
             _service_endpoint=None) -> list[PipelineEndpoint]:
        return [PipelineEndpoint(workspace, r) for r in _records(workspace)
                if not active_only or r.status == "Active"]

    def _refresh(self) -> PipelineEndpointRecord:
        self._record = load_record(PipelineEndpointRecord, self.workspace, self.id) or self._record
        return self._record

    def _save(self) -> None:
        save_record(self.workspace, self._record)

    # -- versions
    def _add(self, published: PublishedPipeline, make_default: bool) -> str:
        record = self._record
        version = str(len(record.versions))
        tags = [ENDPOINT_TAG + self.id]
        with self.workspace.client() as client:
            deployment_id = deploy(client, published._record, self.name, version, tags,
                                   paused=self.status != "Active")
        record.versions.append({"version": version, "pipeline_id": published.id, "deployment_id": deployment_id})
        if make_default or len(record.versions) == 1:
            record.default_version = version
            self._deploy_default()
        self._save()
        return version

    def _deploy_default(self) -> None:
        entry = self._version(self._record.default_version)
        published = load_record(PublishedPipelineRecord, self.workspace, entry["pipeline_id"])
        with self.workspace.client() as client:
            deploy(client, published, self.name, DEFAULT_DEPLOYMENT, [ENDPOINT_TAG + self.id],
                   paused=self.status != "Active")

    def _version(self, version) -> dict[str, str]:
        for entry in self._record.versions:
            if entry["version"] == str(version):
                return entry
        raise UserErrorException(
            f"Pipeline endpoint {self.name!r} has no version {version!r}; its versions are "
            f"{[e['version'] for e in self._record.versions]}.")

    def add(self, pipeline) -> None:
        """Add a published pipeline as the next version (the default stays where it is)."""
        self._refresh()
        self._add(_published(self.workspace, pipeline), make_default=False)

    def add_default(self, pipeline) -> None:
        """Add a published pipeline as the next version and make it the default."""
        self._refresh()
        self._add(_published(self.workspace, pipeline), make_default=True)

    def set_default(self, pipeline) -> None:
        """Make the version that runs `pipeline` the default (it must be one of the endpoint's versions)."""
        published = _published(self.workspace, pipeline)
        self._refresh()
        matches = [e["version"] for e in self._record.versions if e["pipeline_id"] == published.id]
        if not matches:
            raise UserErrorException(
                f"Published pipeline {published.id} is not a version of endpoint {self.name!r}; add it with "
                "add_default(...).")
        self.set_default_version(matches[-1])

    def set_default_version(self, version) -> None:
        """Promote or roll back: runs without a pinned version go to `version` from now on."""
        self._refresh()
        self._version(version)
        self._record.default_version = str(version)
        self._deploy_default()
        self._save()

    def get_default_version(self) -> str:
        return self._refresh().default_version

    def get_pipeline(self, version=None) -> PublishedPipeline:
        self._refresh()
        entry = self._version(self._record.default_version if version is None else version)
        return PublishedPipeline.get(self.workspace, entry["pipeline_id"])

    def list_versions(self) -> list[PipelineVersion]:
        return [PipelineVersion(e["version"], e["pipeline_id"]) for e in self._refresh().versions]

    def list_pipelines(self, active_only: bool = True) -> list[PublishedPipeline]:
        pipelines = [PublishedPipeline.get(self.workspace, e["pipeline_id"]) for e in self._refresh().versions]
        return [p for p in pipelines if not active_only or p.status == "Active"]

    def _deployment_for(self, pipeline_version) -> tuple[PublishedPipeline, str]:
        record = self._refresh()
        if record.status != "Active":
            raise PublishedPipelineDisabledError(archived_message(record))
        if pipeline_version is None:
            published = self.get_pipeline()
            with self.workspace.client() as client:
                dep = client.read_deployment_by_name(f"{self.name}/{DEFAULT_DEPLOYMENT}")
            return published, str(dep.id)
        entry = self._version(pipeline_version)
        return PublishedPipeline.get(self.workspace, entry["pipeline_id"]), entry["deployment_id"]

    def submit(self, experiment_name: str, pipeline_parameters: dict | None = None, parent_run_id=None,
               pipeline_version=None, tags: dict | None = None) -> PipelineRun:
        """Run the default version, or `pipeline_version`; returns the `PipelineRun` at once."""
        published, deployment_id = self._deployment_for(pipeline_version)
        return published.submit(self.workspace, experiment_name, pipeline_parameters, tags=tags,
                                _extra_tags=[ENDPOINT_TAG + self.id], _deployment_id=deployment_id)

    # -- lifecycle
    def _set_status(self, status: str) -> None:
        self._refresh()
        self._record.status = status
        with self.workspace.client() as client:
            for dep in client.read_deployments(deployment_filter=DeploymentFilter(
                    tags=DeploymentFilterTags(all_=[ENDPOINT_TAG + self.id]))):
                client.update_deployment(dep.id, DeploymentUpdate(paused=status != "Active"))
        self._save()

    def archive(self) -> None:
        """No run of any of its versions starts until it is reactivated."""
        self._set_status("Disabled")

    def reactivate(self, name: str) -> None:
        """Reactivate an archived endpoint under `name` (Azure ML asks for the name; a new one renames it)."""
        if name != self.name:
            self.set_name(name)
        self._set_status("Active")

    def set_name(self, name: str) -> None:
        """Rename the endpoint: its deployments move to the new flow name; the old names are kept in its record."""
        check_name("Pipeline endpoint", name)
        self._refresh()
        if name == self.name:
            return
        if any(r.name == name for r in _records(self.workspace)):
            raise UserErrorException(f"Pipeline endpoint {name!r} already exists; choose another name.")
        old = self.name
        record = self._record
        record.former_names.append(old)
        record.name = name
        with self.workspace.client() as client:
            for entry in record.versions:
                entry["deployment_id"] = deploy(
                    client, load_record(PublishedPipelineRecord, self.workspace, entry["pipeline_id"]), name,
                    entry["version"], [ENDPOINT_TAG + self.id], paused=self.status != "Active")
        self._deploy_default()
        with self.workspace.client() as client:
            for dep_name in [e["version"] for e in record.versions] + [DEFAULT_DEPLOYMENT]:
                try:
                    client.delete_deployment(client.read_deployment_by_name(f"{old}/{dep_name}").id)
                except Exception:  # already gone
                    pass
        self._save()

    def _submit_to(self, experiment, pipeline_parameters: dict | None = None, tags: dict | None = None,
                   pipeline_version=None, **_options: Any) -> PipelineRun:
        """What `Experiment.submit(endpoint, ...)` asks of the object it is given."""
        return self.submit(experiment.name, pipeline_parameters, pipeline_version=pipeline_version, tags=tags)
