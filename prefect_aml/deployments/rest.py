"""`prefect-aml serve`: Azure ML's REST shapes for published pipelines and endpoints, over Prefect.

Systems that started Azure ML pipelines over REST keep their calls: `POST` to a published
pipeline's `.endpoint` (or an endpoint's) with

    {"ExperimentName": "iris", "ParameterAssignments": {"n_estimators": 50},
     "DataPathAssignments": {"input_data": {"DataStoreName": "workspaceblobstore", "RelativePath": "iris/"}},
     "Tags": {"source": "scheduler"}}

and a bearer token, and get `{"Id": "<run id>"}` back. Parameters are checked before a run
exists (400 names the parameter and its type); a disabled pipeline or archived endpoint answers 409.
The OpenAPI document is at `/openapi.json`. Prefect's own route works as well:
`POST {PREFECT_API_URL}/deployments/{deployment_id}/create_flow_run` with `{"parameters": {...}}`.
"""

from __future__ import annotations

import hmac
import os
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from starlette.exceptions import HTTPException as StarletteHTTPException

from prefect_aml.deployments.endpoint import PipelineEndpoint
from prefect_aml.deployments.published import PublishedPipeline
from prefect_aml.exceptions import PublishedPipelineDisabledError, UserErrorException
from prefect_aml.runs import PipelineRun

if TYPE_CHECKING:
    from prefect_aml.workspace import Workspace

TOKEN_ENV = "PREFECT_AML_SERVE_TOKEN"
MAX_BODY_ENV = "PREFECT_AML_SERVE_MAX_BODY"  # bytes a request body may have (default 1 MiB)
DEFAULT_MAX_BODY = 1024 * 1024
_Name = Annotated[str, StringConstraints(min_length=1, max_length=255)]
_Value = Annotated[str, StringConstraints(max_length=4096)]


class DataPathAssignment(BaseModel):
    model_config = ConfigDict(extra="forbid")

    DataStoreName: str = Field(min_length=1, max_length=255)
    RelativePath: str = Field(max_length=4096)


class PipelineSubmitRequest(BaseModel):
    """Azure ML's body for submitting a published pipeline or endpoint."""

    model_config = ConfigDict(extra="ignore")

    ExperimentName: str = Field(min_length=1, max_length=255, pattern=r"^[^/\\:]+$",
                                description="The experiment the run is filed under (no '/', '\\' or ':').")
    ParameterAssignments: dict[_Name, Any] = Field(default_factory=dict, max_length=256)
    DataPathAssignments: dict[_Name, DataPathAssignment] = Field(default_factory=dict, max_length=256)
    Tags: dict[_Name, _Value] = Field(default_factory=dict, max_length=64)
    Description: str | None = Field(default=None, max_length=4096)


class PipelineRunResponse(BaseModel):
    Id: str
    ExperimentName: str
    Status: str
    PipelineId: str
    PortalUrl: str


class RunStatusResponse(BaseModel):
    Id: str
    Status: str
    ExperimentName: str | None = None


class ErrorResponse(BaseModel):
    error: dict[str, str]


def _error(status: int, message: str, headers=None) -> JSONResponse:
    return JSONResponse({"error": {"code": str(status), "message": message}}, status_code=status, headers=headers)


class _BodyLimit:
    """Refuses a request body over `limit` bytes with 413 before the application sees it: by its declared
    length, or (streamed without one) as its bytes arrive; at most `limit` bytes are held."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        too_big = _error(413, f"The request body is larger than {self.limit} bytes ({MAX_BODY_ENV}).")
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await too_big(scope, receive, send)
        messages, size = [], 0
        while True:
            message = await receive()
            messages.append(message)
            size += len(message.get("body", b""))
            if size > self.limit:
                return await too_big(scope, receive, send)
            if message["type"] != "http.request" or not message.get("more_body"):
                break

        async def replay():
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)


def create_app(workspace: Workspace, token: str):
    """The FastAPI application (`prefect-aml serve` runs it with uvicorn)."""
    app = FastAPI(title="prefect-aml pipelines REST", version="1.0",
                  description="Azure ML (SDK v1) REST routes for published pipelines and pipeline endpoints, "
                              "served by prefect-aml over Prefect deployments.")
    bearer = HTTPBearer(auto_error=False)
    errors = {code: {"model": ErrorResponse} for code in (400, 401, 404, 409, 413, 422)}

    def authorized(creds: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        if creds is None or not hmac.compare_digest(creds.credentials.encode(), token.encode()):
            raise HTTPException(401, "Missing or invalid bearer token (Authorization: Bearer <token>).",
                                headers={"WWW-Authenticate": "Bearer"})

    @app.exception_handler(StarletteHTTPException)  # ours, and the framework's (e.g. a body that is not JSON)
    async def _http_error(_request: Request, exc: StarletteHTTPException):
        return _error(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)  # a body or parameter out of bounds: the same error shape
    async def _invalid(_request: Request, exc: RequestValidationError):
        where = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in exc.errors()[:5])
        return _error(422, f"Invalid request: {where}")

    app.add_middleware(_BodyLimit, limit=int(os.environ.get(MAX_BODY_ENV) or DEFAULT_MAX_BODY))

    prefix = ("/pipelines/v1.0/subscriptions/{subscription_id}/resourceGroups/{resource_group}/providers/"
              "Microsoft.MachineLearningServices/workspaces/{workspace_name}")

    def _check_workspace(subscription_id: str, resource_group: str, workspace_name: str) -> None:
        expected = (workspace.subscription_id or "local", workspace.resource_group or "local", workspace.name)
        if (subscription_id, resource_group, workspace_name) != expected:
            raise HTTPException(404, f"This service serves workspace {workspace.name!r} (subscription "
                                     f"{expected[0]!r}, resource group {expected[1]!r}), not {workspace_name!r}.")

    def _assignments(body: PipelineSubmitRequest) -> dict[str, Any]:
        values = dict(body.ParameterAssignments)
        for name, dp in body.DataPathAssignments.items():
            values[name] = {"datastore": dp.DataStoreName, "path": dp.RelativePath}
        return values

    def _submit(run_submit, body: PipelineSubmitRequest, pipeline_id: str) -> PipelineRunResponse:

        try:
            run = run_submit(body.ExperimentName, _assignments(body), body.Tags)
        except PublishedPipelineDisabledError as err:
            raise HTTPException(409, str(err)) from None
        except UserErrorException as err:
            raise HTTPException(400, str(err)) from None
        return PipelineRunResponse(Id=run.id, ExperimentName=body.ExperimentName, Status="NotStarted",
                                   PipelineId=pipeline_id, PortalUrl=run.get_portal_url())

    @app.get("/health", include_in_schema=True)
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post(prefix + "/PipelineRuns/PipelineSubmit/{pipeline_id}", response_model=PipelineRunResponse,
              responses=errors, dependencies=[Depends(authorized)])
    def submit_published(subscription_id: str, resource_group: str, workspace_name: str, pipeline_id: str,
                         body: PipelineSubmitRequest) -> PipelineRunResponse:
        """Run a published pipeline (its `.endpoint` URL)."""

        _check_workspace(subscription_id, resource_group, workspace_name)
        try:
            published = PublishedPipeline.get(workspace, pipeline_id)
        except UserErrorException as err:
            raise HTTPException(404, str(err)) from None
        return _submit(lambda exp, values, tags: published.submit(workspace, exp, values, tags=tags), body,
                       published.id)

    def _endpoint_submit(lookup: dict[str, str], body: PipelineSubmitRequest, pipeline_version: str | None):
        """Find the endpoint (by id or name: 404 when unknown), then run its default or pinned version."""

        try:
            endpoint = PipelineEndpoint.get(workspace, **lookup)
            published = endpoint.get_pipeline(pipeline_version)
        except PublishedPipelineDisabledError as err:
            raise HTTPException(409, str(err)) from None
        except UserErrorException as err:
            raise HTTPException(404, str(err)) from None
        return _submit(lambda exp, values, tags: endpoint.submit(exp, values, pipeline_version=pipeline_version,
                                                                 tags=tags), body, published.id)

    @app.post(prefix + "/PipelineRuns/PipelineEndpointSubmit/Id/{endpoint_id}", response_model=PipelineRunResponse,
              responses=errors, dependencies=[Depends(authorized)])
    def submit_endpoint(subscription_id: str, resource_group: str, workspace_name: str, endpoint_id: str,
                        body: PipelineSubmitRequest, pipelineVersion: str | None = None) -> PipelineRunResponse:
        """Run a pipeline endpoint's default version, or `pipelineVersion` (a query parameter)."""
        _check_workspace(subscription_id, resource_group, workspace_name)
        return _endpoint_submit({"id": endpoint_id}, body, pipelineVersion)

    @app.post(prefix + "/PipelineRuns/PipelineEndpointSubmit/Name/{endpoint_name}",
              response_model=PipelineRunResponse, responses=errors, dependencies=[Depends(authorized)])
    def submit_endpoint_by_name(subscription_id: str, resource_group: str, workspace_name: str, endpoint_name: str,
                                body: PipelineSubmitRequest, pipelineVersion: str | None = None) -> PipelineRunResponse:
        """Run a pipeline endpoint, found by name."""
        _check_workspace(subscription_id, resource_group, workspace_name)
        return _endpoint_submit({"name": endpoint_name}, body, pipelineVersion)

    @app.get(prefix + "/PipelineRuns/{run_id}", response_model=RunStatusResponse, responses=errors,
             dependencies=[Depends(authorized)])
    def run_status(subscription_id: str, resource_group: str, workspace_name: str, run_id: str) -> RunStatusResponse:
        """A pipeline run's status, in Azure ML's words."""

        _check_workspace(subscription_id, resource_group, workspace_name)
        try:
            run = PipelineRun.get(workspace, run_id)
        except UserErrorException as err:
            raise HTTPException(404, str(err)) from None
        return RunStatusResponse(Id=run.id, Status=run.get_status(), ExperimentName=run.experiment.name)

    return app
