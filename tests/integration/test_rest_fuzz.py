"""The Azure-ML-shaped REST service, fuzzed with schemathesis against its own OpenAPI document.

Every operation gets generated requests (valid and invalid bodies, query and path values), with the
bearer token and without it; no response may be a server error or break the documented schema.
Most requests address this workspace and a real (disabled) published pipeline or (archived)
endpoint, so they reach the handlers rather than stopping at routing.
"""

from __future__ import annotations

import textwrap

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode

from prefect_aml import Pipeline, PipelineEndpoint, PipelineParameter, PythonScriptStep

TOKEN = "fuzz-token"


def test_the_rest_service_never_answers_500(ws, tmp_path):
    from prefect_aml.deployments.rest import create_app

    (tmp_path / "s.py").write_text(textwrap.dedent("print('hi')"))
    step = PythonScriptStep("s.py", source_directory=str(tmp_path), arguments=[PipelineParameter("n", 1)])
    published = Pipeline(ws, [step]).publish(name=f"fuzz-{tmp_path.name[-6:]}")
    endpoint = PipelineEndpoint.publish(ws, name=f"fuzz-ep-{tmp_path.name[-6:]}", description="", pipeline=published)
    published.disable()  # runs are refused: fuzzing creates none
    endpoint.archive()

    schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(ws, TOKEN))
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 5
    calls: dict[str, set[int]] = {}
    real = {"pipeline_id": published.id, "endpoint_id": endpoint.id, "endpoint_name": endpoint.name}

    for op in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            if mode is GenerationMode.NEGATIVE and op.label == "GET /health":  # nothing there to get wrong
                continue
            @given(case=op.as_strategy(generation_mode=mode))
            @settings(max_examples=30, deadline=None, database=None, suppress_health_check=list(HealthCheck))
            def fuzz(case):
                params = case.path_parameters or {}
                if "workspace_name" in params and len(str(case.body)) % 4:
                    params.update(subscription_id="local", resource_group="local", workspace_name=ws.name)
                    for key, value in real.items():
                        if key in params and len(str(case.body)) % 3:
                            params[key] = value
                headers = None if len(str(case.body)) % 5 == 0 else {"Authorization": f"Bearer {TOKEN}"}
                response = case.call_and_validate(headers=headers)
                calls.setdefault(case.operation.label, set()).add(response.status_code)

            fuzz()
    # the fuzzing reached the handlers, not only the authentication and the body's validation
    submits = [codes for label, codes in calls.items() if "Submit" in label]
    assert all(codes & {404, 409} for codes in submits) and any(422 in codes for codes in submits), calls
    assert all(500 not in codes for codes in calls.values())
