"""The REST service refuses oversized bodies and fields before any handler runs (so no run is created)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from prefect_aml import Workspace
from prefect_aml.deployments import rest

URL = ("/pipelines/v1.0/subscriptions/local/resourceGroups/local/providers/Microsoft.MachineLearningServices/"
       "workspaces/default/PipelineRuns/PipelineSubmit/00000000-0000-0000-0000-000000000000")
AUTH = {"Authorization": "Bearer t"}


@pytest.fixture
def client(monkeypatch):
    monkeypatch.setenv(rest.MAX_BODY_ENV, str(64 * 1024))
    # an API nobody answers on: a request that got past the checks would fail differently (not 413/422)
    return TestClient(rest.create_app(Workspace(prefect_api_url="http://127.0.0.1:9/api"), "t"))


def test_a_body_over_the_limit_is_413_declared_or_streamed(client):
    big = client.post(URL, json={"ExperimentName": "e", "Description": "x" * 100_000}, headers=AUTH)
    assert big.status_code == 413 and big.json()["error"]["code"] == "413"

    def streamed():
        yield b'{"ExperimentName": "e", "Description": "'
        for _ in range(20):
            yield b"x" * 8192
        yield b'"}'

    assert client.post(URL, content=streamed(), headers={**AUTH, "Content-Type": "application/json"}).status_code == 413


@pytest.mark.parametrize("body, field", [
    ({"ExperimentName": "e", "Tags": {"k": "v" * 5000}}, "Tags"),
    ({"ExperimentName": "e", "Tags": {f"k{i}": "v" for i in range(65)}}, "Tags"),
    ({"ExperimentName": "e", "Description": "d" * 5000}, "Description"),
    ({"ExperimentName": "e", "ParameterAssignments": {"p" * 300: 1}}, "ParameterAssignments"),
    ({"ExperimentName": "x" * 300}, "ExperimentName"),
])
def test_fields_out_of_bounds_are_422_with_the_error_shape(client, body, field):
    response = client.post(URL, json=body, headers=AUTH)
    assert response.status_code == 422
    assert field in response.json()["error"]["message"]
