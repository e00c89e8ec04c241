"""Published pipelines, endpoints, schedules and triggers, against a real server and a real process worker.

Every route a run can come from is exercised: Python, `prefect deployment run` (a subprocess), the
Prefect REST API, and the Azure-ML-shaped REST service (`prefect-aml serve`, a subprocess).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from prefect_aml import (
    AmlCompute,
    ComputeTarget,
    DataPath,
    DataPathComputeBinding,
    Experiment,
    OutputFileDatasetConfig,
    Pipeline,
    PipelineEndpoint,
    PipelineParameter,
    PipelineValidationError,
    PublishedPipeline,
    PublishedPipelineDisabledError,
    PythonScriptStep,
    Schedule,
    ScheduleException,
    ScheduleRecurrence,
    UserErrorException,
)
from prefect_aml.runs import PipelineRun
from tests.services import Service, free_port, http_ok, make_store, state_dir

_STATE = state_dir()

BIN = Path(sys.executable).parent

ECHO = """
    import argparse, json, os
    p = argparse.ArgumentParser()
    for a in ("--n", "--rate", "--label", "--data", "--out"):
        p.add_argument(a)
    args = p.parse_args()
    os.makedirs(args.out, exist_ok=True)
    files = sorted(os.path.relpath(os.path.join(d, f), args.data) for d, _, fs in os.walk(args.data) for f in fs)
    json.dump({"n": args.n, "rate": args.rate, "label": args.label, "files": files},
              open(os.path.join(args.out, "echo.json"), "w"))
"""


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


@pytest.fixture(scope="module")
def src(tmp_path_factory):
    d = tmp_path_factory.mktemp("published-src")
    (d / "echo.py").write_text(textwrap.dedent(ECHO))
    return str(d)


@pytest.fixture(scope="module")
def bed(ws, src, tmp_path_factory):
    """A pipelines compute with one real `prefect-aml worker start` worker, and input data on a local datastore."""
    from prefect_aml import Datastore

    compute = ComputeTarget.create(ws, _name("pipes"), AmlCompute.provisioning_configuration(max_nodes=4))
    store = Datastore.register_local(ws, _name("pub_local").replace("-", "_"), str(_STATE / "pub-store"))
    for rel in ("inputs/a/one.txt", "inputs/b/two.txt", "inputs/b/three.txt"):
        store.filesystem().pipe(store.full_path(rel), b"x")

    def online() -> bool:
        return ComputeTarget(ws, compute.name).get_status().serialize().get("currentNodeCount", 0) >= 1

    worker = Service(f"worker-{compute.name}", _STATE,
                     [str(BIN / "prefect-aml"), "worker", "start", compute.name, "--limit", "4"], online, timeout=90)
    yield {"compute": compute, "store": store, "worker": worker}
    worker.stop()
    compute.delete()


def _pipeline(ws, src, store, label: str = "v0") -> Pipeline:
    n = PipelineParameter("n", 3)
    rate = PipelineParameter("rate", 0.5)
    lab = PipelineParameter("label", label)
    data = (PipelineParameter("data", DataPath(store, "inputs/a")), DataPathComputeBinding(mode="download"))
    out = OutputFileDatasetConfig("result")
    step = PythonScriptStep("echo.py", name="echo", source_directory=src, allow_reuse=False,
                            arguments=["--n", n, "--rate", rate, "--label", lab, "--data", data, "--out", out],
                            inputs=[data])
    return Pipeline(ws, [step])


def _echo(run: PipelineRun, tmp_path: Path) -> dict:
    run.wait_for_completion(show_output=False, timeout_seconds=180)
    step = run.find_step_run("echo")[0]
    where = step.get_output_data("result").download(tmp_path / uuid.uuid4().hex, show_progress=False)
    return json.loads(next(Path(where).rglob("echo.json")).read_text())


def _ds(published) -> str:
    return published.parameters["data"]["default"]["datastore"]


def _run_by_id(ws, run_id: str) -> PipelineRun:
    return PipelineRun.get(ws, run_id)


def _prefect(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "prefect"), *args], capture_output=True, text=True, timeout=120, check=check,
                          env=dict(os.environ))


def _runs_of(deployment_id: str) -> list:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    with get_client(sync_client=True) as client:
        return client.read_flow_runs(deployment_filter=DeploymentFilter(
            id=DeploymentFilterId(any_=[uuid.UUID(deployment_id)])))


@pytest.fixture(scope="module")
def published(ws, src, bed):
    return _pipeline(ws, src, bed["store"]).publish(name=_name("echo"), description="echoes its parameters",
                                                    version="1", pipeline_compute=bed["compute"])


def test_publish_makes_a_typed_parameterized_deployment(ws, published):
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        dep = client.read_deployment_by_name(f"{published.name}/1")
    props = dep.parameter_openapi_schema["properties"]
    assert {k: (v["type"], v["default"]) for k, v in props.items()} == {
        "n": ("integer", 3), "rate": ("number", 0.5), "label": ("string", "v0"),
        "data": ("object", {"type": "datapath", "datastore": _ds(published), "path": "inputs/a"})}
    assert dep.enforce_parameter_schema and str(dep.id) == published.deployment_id
    assert published.version == "1" and published.status == "Active"
    assert PublishedPipeline.get(ws, published.id).name == published.name
    assert published.id in [p.id for p in PublishedPipeline.list(ws)]
    assert published.endpoint.endswith(f"/PipelineRuns/PipelineSubmit/{published.id}")
    with pytest.raises(UserErrorException, match="was not found"):
        PublishedPipeline.get(ws, str(uuid.uuid4()))


def test_publish_rejects_bad_names_and_taken_versions(ws, src, bed, published):
    p = _pipeline(ws, src, bed["store"])
    with pytest.raises(UserErrorException, match="is not valid"):
        p.publish(name="a/b")
    with pytest.raises(UserErrorException, match="version '1' already exists"):
        p.publish(name=published.name, version="1", pipeline_compute=bed["compute"])


def test_run_from_python_with_parameters(ws, published, tmp_path):
    run = published.submit(ws, "published-python", pipeline_parameters={"n": 7, "label": "py"})
    assert _echo(run, tmp_path) == {"n": "7", "rate": "0.5", "label": "py", "files": ["one.txt"]}
    assert run.experiment.name == "published-python"
    assert run.get_details()["parameters"]["n"] == 7
    assert run.id in [r.id for r in Experiment(ws, "published-python").get_runs()]


def test_bad_parameters_are_rejected_before_a_run_exists(ws, published):
    before = len(_runs_of(published.deployment_id))
    with pytest.raises(PipelineValidationError, match="no parameter 'rat'.*Did you mean 'rate'.*n \\(int\\)"):
        published.submit(ws, "bad", pipeline_parameters={"rat": 1})
    with pytest.raises(PipelineValidationError, match="'n' expects int"):
        published.submit(ws, "bad", pipeline_parameters={"n": "many"})
    cli = _prefect("deployment", "run", published.deployment_name, "-p", "n=abc", check=False)
    assert cli.returncode != 0 and "'abc' is not of type 'integer'" in " ".join((cli.stdout + cli.stderr).split())
    cli = _prefect("deployment", "run", published.deployment_name, "-p", "nope=1", check=False)
    assert cli.returncode != 0 and "nope" in cli.stdout + cli.stderr
    assert len(_runs_of(published.deployment_id)) == before


def test_run_from_the_prefect_cli(ws, published, tmp_path):
    out = _prefect("deployment", "run", published.deployment_name, "-p", "n=20", "-p", "rate=2",
                   "-p", "data=" + json.dumps({"datastore": _ds(published), "path": "inputs/b"}))
    run_id = next(line.split()[-1] for line in out.stdout.splitlines() if "UUID" in line)
    run = _run_by_id(ws, run_id)
    assert _echo(run, tmp_path) == {"n": "20", "rate": "2.0", "label": "v0", "files": ["three.txt", "two.txt"]}
    assert _run_by_id(ws, run_id).experiment.name == published.name  # none given: the pipeline's name


def test_run_from_the_prefect_rest_api(ws, published, prefect_server, tmp_path):
    resp = httpx.post(f"{prefect_server}/deployments/{published.deployment_id}/create_flow_run",
                      json={"parameters": {"n": 5}, "tags": ["experiment:published-rest"]})
    assert resp.status_code == 201, resp.text
    run = _run_by_id(ws, resp.json()["id"])
    assert _echo(run, tmp_path)["n"] == "5"
    assert run.experiment.name == "published-rest"


@pytest.fixture(scope="module")
def rest(ws):
    port = free_port()
    token = uuid.uuid4().hex
    env = dict(os.environ, PREFECT_AML_SERVE_TOKEN=token)
    svc = Service("aml-serve", _STATE, [str(BIN / "prefect-aml"), "serve", "--port", str(port), "--no-triggers"],
                  lambda: http_ok(f"http://127.0.0.1:{port}/health"), env=env, timeout=60)
    yield {"url": f"http://127.0.0.1:{port}", "token": token}
    svc.stop()


def _rest_url(rest, endpoint: str) -> str:
    return rest["url"] + endpoint.split("8788", 1)[1]


def test_run_from_the_azure_ml_shaped_rest_service(ws, published, rest, tmp_path):
    url = _rest_url(rest, published.endpoint)
    body = {"ExperimentName": "published-aml-rest", "ParameterAssignments": {"n": 11},
            "DataPathAssignments": {"data": {"DataStoreName": _ds(published), "RelativePath": "inputs/b"}}, "Tags": {"caller": "legacy"}}
    before = len(_runs_of(published.deployment_id))
    assert httpx.post(url, json=body).status_code == 401
    assert httpx.post(url, json=body, headers={"Authorization": "Bearer wrong"}).status_code == 401
    auth = {"Authorization": f"Bearer {rest['token']}"}
    bad = httpx.post(url, json={**body, "ParameterAssignments": {"n": "x"}}, headers=auth)
    assert bad.status_code == 400 and "'n' expects int" in bad.json()["error"]["message"]
    assert len(_runs_of(published.deployment_id)) == before
    resp = httpx.post(url, json=body, headers=auth)
    assert resp.status_code == 200, resp.text
    run = _run_by_id(ws, resp.json()["Id"])
    assert _echo(run, tmp_path) == {"n": "11", "rate": "0.5", "label": "v0", "files": ["three.txt", "two.txt"]}
    assert run.get_tags() == {"caller": "legacy"} and run.experiment.name == "published-aml-rest"
    status = httpx.get(url.split("/PipelineRuns/")[0] + f"/PipelineRuns/{run.id}", headers=auth).json()
    assert status == {"Id": run.id, "Status": "Finished", "ExperimentName": "published-aml-rest"}
    assert "/PipelineRuns/PipelineSubmit/{pipeline_id}" in str(httpx.get(rest["url"] + "/openapi.json").json())


def test_disable_blocks_every_route(ws, src, bed, rest):
    from prefect.client.orchestration import get_client

    p = _pipeline(ws, src, bed["store"]).publish(name=_name("off"), pipeline_compute=bed["compute"])
    p.disable()
    assert PublishedPipeline.get(ws, p.id).status == "Disabled"
    assert p.id not in [x.id for x in PublishedPipeline.list(ws)]
    assert p.id in [x.id for x in PublishedPipeline.list(ws, active_only=False)]
    with pytest.raises(PublishedPipelineDisabledError, match="is disabled.*enable"):
        p.submit(ws, "off")
    resp = httpx.post(_rest_url(rest, p.endpoint), json={"ExperimentName": "off"},
                      headers={"Authorization": f"Bearer {rest['token']}"})
    assert resp.status_code == 409 and "disabled" in resp.json()["error"]["message"]
    assert not _runs_of(p.deployment_id)
    # routes that do not ask us first: the run fails at its start, with the reason
    out = _prefect("deployment", "run", p.deployment_name)
    cli_run = next(line.split()[-1] for line in out.stdout.splitlines() if "UUID" in line)
    with get_client(sync_client=True) as client:
        api_run = client.create_flow_run_from_deployment(uuid.UUID(p.deployment_id)).id
    for run_id in (cli_run, str(api_run)):
        run = _run_by_id(ws, run_id)
        with pytest.raises(Exception, match="is disabled"):
            run.wait_for_completion(show_output=False, timeout_seconds=120)
        assert run.get_status() == "Failed" and not run.get_steps()
    p.enable()
    assert p.submit(ws, "on").wait_for_completion(show_output=False, timeout_seconds=180) == "Finished"


def test_endpoint_versions_default_switching_and_pinned_runs(ws, src, bed, rest, tmp_path):
    name = _name("ep")
    pubs = [_pipeline(ws, src, bed["store"], label=f"v{i}").publish(name=f"{name}-pipe", version=str(i),
                                                                    pipeline_compute=bed["compute"])
            for i in range(3)]
    ep = PipelineEndpoint.publish(ws, name=name, description="three versions", pipeline=pubs[0])
    ep.add(pubs[1])
    assert ep.get_default_version() == "0"
    ep.add_default(pubs[2])
    assert ep.get_default_version() == "2"
    assert [(v.version, v.pipeline_id) for v in ep.list_versions()] == [(str(i), p.id) for i, p in enumerate(pubs)]
    assert [p.id for p in ep.list_pipelines()] == [p.id for p in pubs]
    assert ep.get_pipeline().id == pubs[2].id and ep.get_pipeline("1").id == pubs[1].id

    assert _echo(ep.submit("ep"), tmp_path)["label"] == "v2"
    assert _echo(ep.submit("ep", pipeline_version="0"), tmp_path)["label"] == "v0"
    ep.set_default_version("1")  # a rollback, in one call
    again = PipelineEndpoint.get(ws, name=name)  # read back from the server
    assert again.default_version == "1" and again.id == ep.id
    out = _prefect("deployment", "run", f"{name}/default", "-p", "n=4")
    run_id = next(line.split()[-1] for line in out.stdout.splitlines() if "UUID" in line)
    assert _echo(_run_by_id(ws, run_id), tmp_path) == {"n": "4", "rate": "0.5", "label": "v1", "files": ["one.txt"]}
    resp = httpx.post(_rest_url(rest, ep.endpoint) + "?pipelineVersion=2", json={"ExperimentName": "ep-rest"},
                      headers={"Authorization": f"Bearer {rest['token']}"})
    assert resp.status_code == 200, resp.text
    assert _echo(_run_by_id(ws, resp.json()["Id"]), tmp_path)["label"] == "v2"
    assert _echo(Experiment(ws, "ep-x").submit(ep, pipeline_version="0"), tmp_path)["label"] == "v0"
    ep.set_default(pubs[0])
    assert ep.get_default_version() == "0"
    with pytest.raises(UserErrorException, match="has no version '7'"):
        ep.submit("ep", pipeline_version="7")

    ep.archive()
    assert ep.id not in [e.id for e in PipelineEndpoint.list(ws)]
    with pytest.raises(PublishedPipelineDisabledError, match="archived"):
        ep.submit("ep")
    ep.reactivate(name + "-renamed")
    assert PipelineEndpoint.get(ws, id=ep.id).name == name + "-renamed"
    assert _echo(ep.submit("ep", pipeline_version="1"), tmp_path)["label"] == "v1"
    with pytest.raises(UserErrorException, match="already exists"):
        PipelineEndpoint.publish(ws, name=name + "-renamed", description="", pipeline=pubs[0])


def test_recurrence_rules_are_checked():
    with pytest.raises(ScheduleException, match="frequency 'Fortnight'"):
        ScheduleRecurrence(frequency="Fortnight", interval=1)
    with pytest.raises(ScheduleException, match="interval 0"):
        ScheduleRecurrence(frequency="Day", interval=0)
    with pytest.raises(ScheduleException, match="only be set with frequency 'Day' or 'Week'"):
        ScheduleRecurrence(frequency="Hour", interval=1, hours=[3])
    with pytest.raises(ScheduleException, match="week_days can only be set with frequency 'Week'"):
        ScheduleRecurrence(frequency="Day", interval=1, week_days=["Monday"])
    with pytest.raises(ScheduleException, match="either time_of_day or hours"):
        ScheduleRecurrence(frequency="Day", interval=1, hours=[1], time_of_day="10:00")
    with pytest.raises(ScheduleException, match="hours \\[24\\]"):
        ScheduleRecurrence(frequency="Day", interval=1, hours=[24])
    with pytest.raises(ScheduleException, match="week_days \\['Funday'\\]"):
        ScheduleRecurrence(frequency="Week", interval=1, week_days=["Funday"])
    with pytest.raises(ScheduleException, match="time_zone 'Mars/Base'"):
        ScheduleRecurrence(frequency="Day", interval=1, time_zone="Mars/Base")


def test_schedule_created_listed_disabled_updated_with_next_run_times(ws, published, prefect_server):
    from prefect.client.orchestration import get_client

    start = datetime(2026, 1, 5, 0, 0, tzinfo=UTC)  # a Monday
    weekly = ScheduleRecurrence(frequency="Week", interval=1, week_days=["Monday", "Thursday"], time_of_day="09:30",
                                start_time=start, time_zone="Europe/Stockholm")
    name = _name("weekly")
    with pytest.raises(PipelineValidationError, match="'n' expects int"):
        Schedule.create(ws, name, pipeline_id=published.id, experiment_name="sched", recurrence=weekly,
                        pipeline_parameters={"n": "x"})
    sched = Schedule.create(ws, name, pipeline_id=published.id, experiment_name="sched", recurrence=weekly,
                            pipeline_parameters={"n": 9})
    assert sched.id in [s.id for s in Schedule.list(ws)]
    assert Schedule.get(ws, sched.id).recurrence.to_dict()["week_days"] == ["Monday", "Thursday"]
    times = sched.get_next_run_times(4)
    assert len(times) == 4 and all(t.weekday() in (0, 3) and (t.hour, t.minute) == (9, 30) for t in times)
    assert all(t.utcoffset() in (timedelta(hours=1), timedelta(hours=2)) for t in times)  # Stockholm time
    # the Prefect scheduler sees the same times, with the schedule's parameters
    resp = httpx.post(f"{prefect_server}/deployments/{published.deployment_id}/schedule",
                      json={"min_runs": 4, "max_runs": 4, "end_time": (datetime.now(UTC) + timedelta(days=30)).isoformat()})
    assert resp.status_code < 300, resp.text
    planned = sorted((r for r in _runs_of(published.deployment_id) if r.state_type.value == "SCHEDULED"
                      and r.created_by and r.created_by.type == "SCHEDULE"), key=lambda r: r.expected_start_time)
    assert [r.expected_start_time for r in planned[:4]] == [t.astimezone(UTC) for t in times]
    assert all(r.parameters == {"n": 9} for r in planned)
    assert sched.get_pipeline_runs() == [] and sched.get_last_pipeline_run() is None  # none started yet

    sched.disable()
    assert Schedule.get(ws, sched.id).status == "Disabled" and sched.get_next_run_times() == []
    assert sched.id not in [s.id for s in Schedule.list(ws)]
    with get_client(sync_client=True) as client:
        mine = [s for s in client.read_deployment_schedules(uuid.UUID(published.deployment_id))
                if s.slug.endswith(sched.id)]
        assert len(mine) == 1 and mine[0].active is False
    daily = ScheduleRecurrence(frequency="Day", interval=2, hours=[6, 18], minutes=[15], start_time=start)
    sched.update(recurrence=daily, pipeline_parameters={"n": 2}, status="Active")
    times = Schedule.get(ws, sched.id).get_next_run_times(3)
    assert [(t.hour, t.minute) for t in times][:2] in ([(6, 15), (18, 15)], [(18, 15), (6, 15)])
    with get_client(sync_client=True) as client:
        mine = [s for s in client.read_deployment_schedules(uuid.UUID(published.deployment_id))
                if s.slug.endswith(sched.id)]
        assert mine[0].active and mine[0].parameters == {"n": 2} and "INTERVAL=2" in mine[0].schedule.rrule
    sched.delete()
    with pytest.raises(ScheduleException, match="was not found"):
        Schedule.get(ws, sched.id)


@pytest.mark.parametrize("kind", ["local", "s3"])
def test_a_datastore_trigger_fires_once_per_batch_of_new_files(ws, src, bed, kind, request, tmp_path):
    store = make_store(kind, ws, request)
    store.filesystem().pipe(store.full_path("incoming/old.txt"), b"already there")
    p = _pipeline(ws, src, store).publish(name=_name("trig"), pipeline_compute=bed["compute"])
    with pytest.raises(UserErrorException, match="not a DataPath parameter.*'data'"):
        Schedule.create(ws, _name("t"), pipeline_id=p.id, experiment_name="trig", datastore=store,
                        path_on_datastore="incoming", data_path_parameter_name="n")
    sched = Schedule.create(ws, _name("t"), pipeline_id=p.id, experiment_name="trig", datastore=store,
                            path_on_datastore="incoming", polling_interval=0.02, data_path_parameter_name="data")
    watcher = Service(f"triggers-{kind}", _STATE, [str(BIN / "prefect-aml"), "triggers", "watch"], lambda: True)
    try:
        time.sleep(3)  # a few polls over unchanged files: nothing fires
        assert sched.get_pipeline_runs() == []
        for rel in ("incoming/batch/1.txt", "incoming/batch/2.txt", "incoming/batch/deeper/3.txt"):
            store.filesystem().pipe(store.full_path(rel), b"new")
        deadline = time.monotonic() + 90
        while not sched.get_pipeline_runs() and time.monotonic() < deadline:
            time.sleep(1)
        runs = sched.get_pipeline_runs()
        assert len(runs) == 1, "the batch should start exactly one run"
        echo = _echo(runs[0], tmp_path)
        assert echo["files"] == ["1.txt", "2.txt", "deeper/3.txt"]  # the batch's folder was passed in
        assert runs[0].experiment.name == "trig"
        time.sleep(3)
        assert len(sched.get_pipeline_runs()) == 1
    finally:
        watcher.stop()
        sched.delete()


def test_prefect_yaml_deploys_the_iris_example(ws, tmp_path):
    """`prefect deploy --all` from the project root, then a run of the deployment on a real worker."""
    from prefect.client.orchestration import get_client

    from prefect_aml.exceptions import ComputeTargetException

    root = Path(__file__).resolve().parents[2]
    try:
        ComputeTarget(ws, "aml-pipelines")
    except ComputeTargetException:
        ComputeTarget.create(ws, "aml-pipelines", AmlCompute.provisioning_configuration(max_nodes=4))
    out = subprocess.run([str(BIN / "prefect"), "--no-prompt", "deploy", "--all"], cwd=root, capture_output=True,
                         text=True, timeout=180, env=dict(os.environ))
    assert out.returncode == 0, out.stdout + out.stderr
    with get_client(sync_client=True) as client:
        dep = client.read_deployment_by_name("iris/iris")
    assert dep.parameter_openapi_schema["properties"]["pipeline_arg"]["type"] == "integer"
    assert dep.work_pool_name == "aml-pipelines"

    def online() -> bool:
        return ComputeTarget(ws, "aml-pipelines").get_status().serialize().get("currentNodeCount", 0) >= 1

    worker = Service("worker-aml-pipelines", _STATE, [str(BIN / "prefect-aml"), "worker", "start", "aml-pipelines"],
                     online, timeout=90)
    try:
        run = _prefect("deployment", "run", "iris/iris", "-p", "pipeline_arg=3", "-p", "experiment_name=iris-yaml")
        run_id = uuid.UUID(next(line.split()[-1] for line in run.stdout.splitlines() if "UUID" in line))
        deadline = time.monotonic() + 300
        with get_client(sync_client=True) as client:
            while not (fr := client.read_flow_run(run_id)).state.is_final() and time.monotonic() < deadline:
                time.sleep(1)
        assert fr.state.is_completed(), fr.state.message
        pipeline_run = next(iter(Experiment(ws, "iris-yaml").get_runs()))
        assert pipeline_run.get_status() == "Finished"
        assert pipeline_run.get_details()["parameters"] == {"pipeline_arg": 3}
    finally:
        worker.stop()


def test_publish_pipeline_from_a_run(ws, src, bed, tmp_path):
    run = _pipeline(ws, src, bed["store"], label="from-run").submit("from-run", pipeline_parameters={"n": 1})
    run.wait_for_completion(show_output=False, timeout_seconds=180)
    again = run.publish_pipeline(name=_name("rerun"), description="what that run ran", version="1.0",
                                 pipeline_compute=bed["compute"])
    assert again.parameters["label"]["default"] == "from-run" and again._record.published_from_run == run.id
    assert _echo(again.submit(ws, "from-run", {"n": 2}), tmp_path)["label"] == "from-run"


def test_endpoint_history_survives_a_server_restart(src, tmp_path):
    from prefect.client.orchestration import get_client

    from prefect_aml import Datastore, Workspace
    from tests.services import PG_URL, PrefectServer, using_server

    server = PrefectServer(_STATE, PG_URL)
    try:
        with using_server(server.url):
            own = Workspace(prefect_api_url=server.url)
            store = Datastore.register_local(own, "restart_pub", str(tmp_path / "store"))
            pubs = [_pipeline(own, src, store, label=f"r{i}").publish(name="restart-pipe") for i in range(2)]
            ep = PipelineEndpoint.publish(own, name="restart-ep", description="kept", pipeline=pubs[0])
            ep.add_default(pubs[1])
            ep.set_default_version("0")
            server.restart()
            again = PipelineEndpoint.get(own, name="restart-ep")
            assert [(v.version, v.pipeline_id) for v in again.list_versions()] == [("0", pubs[0].id),
                                                                                   ("1", pubs[1].id)]
            assert again.get_default_version() == "0" and again.description == "kept"
            assert [p.version for p in PublishedPipeline.list(own)] == ["1", "2"]
            with get_client(sync_client=True) as client:
                default = client.read_deployment_by_name("restart-ep/default")
            assert f"aml-published:{pubs[0].id}" in default.tags
    finally:
        server.stop()


def test_a_schedule_on_an_endpoint_follows_its_default_deployment(ws, src, bed):
    from prefect.client.orchestration import get_client

    pub = _pipeline(ws, src, bed["store"]).publish(name=_name("ep-s-pipe"), pipeline_compute=bed["compute"])
    ep = PipelineEndpoint.publish(ws, name=_name("ep-s"), description="", pipeline=pub)
    hourly = ScheduleRecurrence(frequency="Hour", interval=6)
    sched = Schedule.create_for_pipeline_endpoint(ws, _name("ep-hourly"), ep.id, "ep-sched", recurrence=hourly,
                                                  pipeline_parameters={"label": "scheduled"})
    assert [s.id for s in Schedule.get_schedules_for_pipeline_endpoint_id(ws, ep.id)] == [sched.id]
    ep.add_default(_pipeline(ws, src, bed["store"], label="v1").publish(name=pub.name,
                                                                       pipeline_compute=bed["compute"]))
    with get_client(sync_client=True) as client:  # re-pointing the default keeps the endpoint's schedules
        dep = client.read_deployment_by_name(f"{ep.name}/default")
        mine = [s for s in client.read_deployment_schedules(dep.id) if s.slug.endswith(sched.id)]
    assert len(mine) == 1 and mine[0].parameters == {"label": "scheduled"} and "FREQ=HOURLY;INTERVAL=6" in (
        mine[0].schedule.rrule)
    sched.delete()


def test_a_plain_prefect_worker_runs_a_published_pipeline(ws, src, bed, tmp_path):
    """Any Prefect process worker with prefect-aml installed loads the deployment's flow (no checkout needed)."""
    plain = ComputeTarget.create(ws, _name("plain"), AmlCompute.provisioning_configuration(max_nodes=2))
    workdir = tmp_path / "elsewhere"  # not the project, not the sources
    workdir.mkdir()

    def online() -> bool:
        return ComputeTarget(ws, plain.name).get_status().serialize().get("currentNodeCount", 0) >= 1

    env = dict(os.environ, PREFECT_WORKER_QUERY_SECONDS="1")
    worker = Service(f"plain-worker-{plain.name}", _STATE,
                     [str(BIN / "prefect"), "worker", "start", "--pool", plain.name, "--type", "process"],
                     online, env=env, timeout=90, cwd=str(workdir))
    try:
        p = _pipeline(ws, src, bed["store"], label="plain").publish(name=_name("plain"), pipeline_compute=plain)
        out = _prefect("deployment", "run", p.deployment_name, "-p", "n=8")
        run_id = next(line.split()[-1] for line in out.stdout.splitlines() if "UUID" in line)
        assert _echo(_run_by_id(ws, run_id), tmp_path) == {"n": "8", "rate": "0.5", "label": "plain",
                                                           "files": ["one.txt"]}
    finally:
        worker.stop()
        plain.delete()
