"""Compute targets for real: Prefect work pools with real process workers, Dask clusters on loopback."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from datetime import timedelta
from pathlib import Path

import psutil
import pytest
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterTaskRunId

from prefect_aml import (
    ActivityFailedException,
    AmlCompute,
    ComputeTarget,
    ComputeTargetException,
    CondaDependencies,
    DaskCompute,
    Experiment,
    OutputFileDatasetConfig,
    Pipeline,
    PythonScriptStep,
    RunConfiguration,
)
from tests.services import Service, free_port, state_dir

_STATE = state_dir()

BIN = Path(sys.executable).parent

SCRIPTS = {
    "where.py": """
        import argparse, json, os, time
        p = argparse.ArgumentParser(); p.add_argument("--out"); p.add_argument("--seconds", type=float, default=0)
        p.add_argument("--in_", default=None)
        args = p.parse_args()
        start = time.time()
        time.sleep(args.seconds)
        upstream = json.load(open(os.path.join(args.in_, "where.json"))) if args.in_ else None
        os.makedirs(args.out, exist_ok=True)
        json.dump({"node": os.environ.get("AML_TEST_NODE", "pipeline"), "pid": os.getppid(), "start": start,
                   "end": time.time(), "upstream": upstream, "color": os.environ.get("COLOR")},
                  open(os.path.join(args.out, "where.json"), "w"))
        print("ran on", os.environ.get("AML_TEST_NODE", "pipeline"))
    """,
    "metric.py": """
        import os, sys, time
        from azureml.core import Run
        Run.get_context().log("node_is_gpu", float(os.environ.get("AML_TEST_NODE") == "gpu-node"))
        time.sleep(float(sys.argv[1]))
        print("metric step on", os.environ.get("AML_TEST_NODE"))
        if len(sys.argv) > 2:
            print("boom: asked to fail", file=sys.stderr)
            sys.exit(int(sys.argv[2]))
    """,
    "burn.py": """
        import argparse, json, os, time
        p = argparse.ArgumentParser(); p.add_argument("--out"); p.add_argument("--seconds", type=float)
        args = p.parse_args()
        start = time.time()
        while time.time() - start < args.seconds:
            sum(i * i for i in range(10000))
        os.makedirs(args.out, exist_ok=True)
        json.dump({"node": os.environ.get("AML_TEST_NODE", "?"), "start": start, "end": time.time()},
                  open(os.path.join(args.out, "where.json"), "w"))
    """,
}


@pytest.fixture
def src(tmp_path):
    d = tmp_path / "src"
    d.mkdir()
    for name, body in SCRIPTS.items():
        (d / name).write_text(textwrap.dedent(body))
    return str(d)


@pytest.fixture(autouse=True)
def fast_waits(monkeypatch):
    """Short heartbeats and worker waits, for every process these tests start (runners inherit them)."""
    monkeypatch.setenv("PREFECT_AML_STEP_HEARTBEAT_SECONDS", "1")
    monkeypatch.setenv("PREFECT_AML_WORKER_WAIT_SECONDS", "4")


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def _exp(ws) -> Experiment:
    return Experiment(ws, _name("compute"))


def _online(ws, name: str, n: int = 1) -> bool:
    return ComputeTarget(ws, name).get_status().serialize().get("currentNodeCount", 0) >= n


class Worker(Service):
    """`prefect-aml worker start <compute>`: a real Prefect process worker, polling every second."""

    def __init__(self, ws, compute: str, node: str):
        env = dict(os.environ, AML_TEST_NODE=node)
        super().__init__(f"worker-{compute}-{node}", _STATE,
                         [str(BIN / "prefect-aml"), "worker", "start", compute, "--name", f"{compute}-{node}"],
                         lambda: _online(ws, compute), env=env, timeout=90)

    def kill_all(self) -> None:
        """The machine goes away: the worker and every process under it, at once."""
        procs = [self.proc.pid, *(c.pid for c in psutil.Process(self.proc.pid).children(recursive=True))]
        for pid in procs:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(timeout=10)


@pytest.fixture
def pool_compute(ws):
    made = []

    def make(max_nodes: int = 2) -> AmlCompute:
        c = ComputeTarget.create(ws, _name("cpu"), AmlCompute.provisioning_configuration(
            vm_size="STANDARD_D2_V2", min_nodes=0, max_nodes=max_nodes))
        made.append(c)
        return c

    yield make
    for c in made:
        c.delete()


def test_compute_target_lifecycle_and_errors(ws, pool_compute):
    from prefect.client.orchestration import get_client

    cpu = pool_compute(max_nodes=3)
    assert type(cpu) is AmlCompute and cpu.type == "AmlCompute" and cpu.vm_size == "STANDARD_D2_V2"
    same = ComputeTarget(workspace=ws, name=cpu.name)
    assert type(same) is AmlCompute and same == cpu
    assert AmlCompute(ws, cpu.name).work_pool == cpu.name
    assert cpu.name in ws.compute_targets and type(ws.compute_targets[cpu.name]) is AmlCompute
    with get_client(sync_client=True) as client:
        pool = client.read_work_pool(cpu.name)
        assert (pool.type, pool.concurrency_limit) == ("process", 3)
    status = cpu.get_status().serialize()
    assert status["currentNodeCount"] == 0 and status["scaleSettings"]["maxNodeCount"] == 3
    # creating it again with the same settings finds it; with others it is an error
    again = ComputeTarget.create(ws, cpu.name, AmlCompute.provisioning_configuration(
        vm_size="STANDARD_D2_V2", min_nodes=0, max_nodes=3))
    assert again == cpu
    with pytest.raises(ComputeTargetException, match="already exists with other settings"):
        ComputeTarget.create(ws, cpu.name, AmlCompute.provisioning_configuration(max_nodes=8))
    with pytest.raises(ComputeTargetException, match="fewer than min_node_count=1.*prefect-aml worker start"):
        cpu.wait_for_completion(min_node_count=1, timeout_in_minutes=0.03)
    with pytest.raises(ComputeTargetException, match="not found.*Did you mean"):
        ComputeTarget(ws, cpu.name + "x")
    with pytest.raises(ComputeTargetException, match="is not valid"):
        ComputeTarget.create(ws, "bad name!", AmlCompute.provisioning_configuration())
    with pytest.raises(ComputeTargetException, match="min_nodes .* larger than max_nodes"):
        AmlCompute.provisioning_configuration(min_nodes=5, max_nodes=2).validate_configuration()
    with pytest.raises(ComputeTargetException, match="scheduler address"):
        ComputeTarget.attach(ws, _name("dask"), DaskCompute.attach_configuration(address="localhost"))
    with pytest.raises(ComputeTargetException, match="is a AmlCompute, not a DaskCompute"):
        DaskCompute(ws, cpu.name)
    cpu.delete()
    with pytest.raises(ComputeTargetException, match="not found"):
        ComputeTarget(ws, cpu.name)
    with get_client(sync_client=True) as client:
        assert cpu.name not in {p.name for p in client.read_work_pools()}


def test_unknown_compute_fails_the_submit_before_a_run_exists(ws, src):
    step = PythonScriptStep("where.py", source_directory=src, compute_target="no-such-cluster",
                            arguments=["--out", OutputFileDatasetConfig("o")])
    exp = _exp(ws)
    with pytest.raises(ComputeTargetException, match="Step 'where.py': Compute target 'no-such-cluster' was not found"):
        exp.submit(Pipeline(ws, [step]))
    assert list(exp.get_runs()) == []


def _step_flow_runs(run_id: str):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId

    with get_client(sync_client=True) as client:
        return client.read_flow_runs(flow_run_filter=FlowRunFilter(
            parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[run_id])))


def test_two_compute_pipeline_on_real_process_workers(ws, src, tmp_path, pool_compute):
    a, b = pool_compute(), pool_compute()
    workers = [Worker(ws, a.name, "node-a"), Worker(ws, b.name, "node-b")]
    try:
        first_out, second_out, third_out = (OutputFileDatasetConfig(n) for n in ("first", "second", "third"))
        rc = RunConfiguration()
        rc.target = b  # the compute may come from the runconfig, as in Azure ML
        rc.environment_variables = {"COLOR": "blue"}
        first = PythonScriptStep("where.py", name="first", source_directory=src, compute_target=a,
                                 arguments=["--out", first_out])
        second = PythonScriptStep("where.py", name="second", source_directory=src, runconfig=rc,
                                  arguments=["--out", second_out, "--in_", first_out.as_input()])
        third = PythonScriptStep("where.py", name="third", source_directory=src,
                                 arguments=["--out", third_out, "--in_", second_out.as_input()])
        run = _exp(ws).submit(Pipeline(ws, [third]))
        assert run.wait_for_completion(show_output=False) == "Finished"
        got = {}
        for name, out in (("first", "first"), ("second", "second"), ("third", "third")):
            folder = run.find_step_run(name)[0].get_output_data(out).download(str(tmp_path / name), show_progress=False)
            got[name] = json.loads(Path(folder, "where.json").read_text())
        assert [got[n]["node"] for n in ("first", "second", "third")] == ["node-a", "node-b", "pipeline"]
        assert got["second"]["color"] == "blue" and got["second"]["upstream"]["node"] == "node-a"
        # the workers ran the steps warm: each script is a child of its worker's own process
        assert [got["first"]["pid"], got["second"]["pid"]] == [w.proc.pid for w in workers]
        step_runs = {fr.name: fr for fr in _step_flow_runs(run.id)}
        assert set(step_runs) == {"first", "second"}  # the third ran beside the pipeline flow
        assert all(fr.state.is_completed() for fr in step_runs.values())
        assert "ran on node-a" in run.find_step_run("first")[0].get_job_log()
        # reuse is decided before dispatch: a second submit sends nothing to the pools
        again = _exp(ws).submit(Pipeline(ws, [third]))
        assert again.wait_for_completion(show_output=False) == "Finished"
        assert all(s.reused for s in again.get_steps())
        assert _step_flow_runs(again.id) == []
    finally:
        for w in workers:
            w.stop()


def test_a_pool_without_workers_fails_clearly(ws, src, pool_compute):
    lonely = pool_compute()
    step = PythonScriptStep("where.py", name="stranded", source_directory=src, compute_target=lonely,
                            arguments=["--out", OutputFileDatasetConfig("o")], allow_reuse=False)
    run = _exp(ws).submit(Pipeline(ws, [step]))
    with pytest.raises(ActivityFailedException,
                       match=f"(?s)stranded.*no online worker.*prefect-aml worker start {lonely.name}"):
        run.wait_for_completion(show_output=False, timeout_seconds=120)
    (fr,) = _step_flow_runs(run.id)
    assert fr.state.is_cancelled()  # a worker started later will not run it


def test_a_worker_killed_mid_step_fails_the_step_and_commits_nothing(ws, src, pool_compute):
    cpu = pool_compute()
    worker = Worker(ws, cpu.name, "doomed")
    out = OutputFileDatasetConfig("o")
    step = PythonScriptStep("where.py", name="long", source_directory=src, compute_target=cpu,
                            arguments=["--out", out, "--seconds", 30], allow_reuse=False)
    run = _exp(ws).submit(Pipeline(ws, [step]))
    try:
        deadline = time.monotonic() + 60
        while not any(fr.state.is_running() for fr in _step_flow_runs(run.id)):
            assert time.monotonic() < deadline, "the step never started on the worker"
            time.sleep(0.5)
        time.sleep(2)
        worker.kill_all()
        with pytest.raises(ActivityFailedException, match="(?s)long.*stopped sending heartbeats.*not committed"):
            run.wait_for_completion(show_output=False, timeout_seconds=120)
    finally:
        worker.stop()
    (fr,) = _step_flow_runs(run.id)
    assert fr.state.name == "Crashed"
    step_run = run.find_step_run("long")[0]
    assert step_run.get_status() == "Failed"
    store = ws.get_default_datastore()
    fs = store.filesystem()
    manifests = fs.glob(store.full_path("azureml/manifests") + "/*/*.json")
    assert not [m for m in manifests if step_run.id in fs.cat_file(m).decode()], "an output was marked complete"


def _intervals(run, names, tmp_path):
    got = {}
    for name in names:
        folder = run.find_step_run(name)[0].get_output_data("o").download(str(tmp_path / name), show_progress=False)
        got[name] = json.loads(Path(folder, "where.json").read_text())
    return got


def test_dask_local_cluster_runs_a_fan_out_concurrently(ws, src, tmp_path):
    dask = ComputeTarget.create(ws, _name("dask"), DaskCompute.provisioning_configuration(n_workers=2))
    try:
        steps = [PythonScriptStep("where.py", name=f"fan{i}", source_directory=src, compute_target=dask,
                                  arguments=["--out", OutputFileDatasetConfig("o"), "--seconds", 3], allow_reuse=False)
                 for i in range(2)]
        run = _exp(ws).submit(Pipeline(ws, steps))
        assert run.wait_for_completion(show_output=False) == "Finished"
        got = _intervals(run, ["fan0", "fan1"], tmp_path)
        a, b = got["fan0"], got["fan1"]
        assert a["start"] < b["end"] and b["start"] < a["end"], "the two Dask steps did not overlap"
        assert {s.get_status() for s in run.get_steps()} == {"Finished"}
    finally:
        dask.delete()


@pytest.fixture
def dask_cluster():
    """An external `dask scheduler` and two `dask worker`s; one advertises a (fake) GPU resource."""
    with _dask_cluster({"gpu-node": (["--resources", "GPU=1"], {}), "cpu-node": ([], {})}) as address:
        yield address


@contextlib.contextmanager
def _dask_cluster(nodes: dict[str, tuple[list[str], dict]]):
    """A `dask scheduler` and a `dask worker` per node (its extra arguments, its environment variables)."""
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    scheduler = Service("dask-scheduler", _STATE, [str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port",
                                                   str(port), "--dashboard-address", ":0", "--no-show"],
                        lambda: subprocess.run([str(BIN / "python"), "-c", f"from distributed import Client; "
                                                f"Client('{address}', timeout=2).close()"],
                                               capture_output=True).returncode == 0)
    workers = []
    try:
        for node, (extra, variables) in nodes.items():
            workers.append(Service(f"dask-{node}", _STATE, [str(BIN / "dask"), "worker", address, "--nthreads", "1",
                                                             "--nworkers", "1", "--no-dashboard", *extra],
                                   lambda: True, env={**os.environ, "AML_TEST_NODE": node, **variables}))
        yield address
    finally:
        for w in workers:
            w.stop()
        scheduler.stop()


def test_external_dask_cluster_routes_gpu_steps_to_gpu_workers(ws, src, tmp_path, dask_cluster):
    gpu = ComputeTarget.attach(ws, _name("gpu"), DaskCompute.attach_configuration(address=dask_cluster, gpu=True))
    cpu = ComputeTarget.attach(ws, _name("cpu"), DaskCompute.attach_configuration(address=dask_cluster))
    try:
        cpu.wait_for_completion(min_node_count=2, timeout_in_minutes=1)
        assert {w["resources"].get("GPU") for w in cpu.get_status().serialize()["workers"]} == {1, None}
        steps = [PythonScriptStep("where.py", name=f"{kind}{i}", source_directory=src, compute_target=target,
                                  arguments=["--out", OutputFileDatasetConfig("o"), "--seconds", 1], allow_reuse=False)
                 for kind, target in (("gpu", gpu), ("cpu", cpu)) for i in range(3)]
        run = _exp(ws).submit(Pipeline(ws, steps))
        assert run.wait_for_completion(show_output=False) == "Finished"
        got = _intervals(run, [s.name for s in steps], tmp_path)
        assert {got[f"gpu{i}"]["node"] for i in range(3)} == {"gpu-node"}
        assert {got[f"cpu{i}"]["node"] for i in range(3)} <= {"gpu-node", "cpu-node"}
    finally:
        gpu.delete()
        cpu.delete()


def test_a_dask_step_with_packages_builds_them_in_its_workers_home(ws, tmp_path):
    """A remote Dask worker builds a step's environment under its own home (not the submitter's), and the lock
    reaches the step's details and its task run in the Prefect UI."""
    from prefect_aml import RunConfiguration

    home = tmp_path / "worker-home"
    variables = {"PREFECT_AML_HOME": str(home), "PREFECT_AML_ENVS_DIR": ""}  # that machine's own home
    with _dask_cluster({"cpu-node": ([], variables)}) as address:
        cpu = ComputeTarget.attach(ws, _name("cpu"), DaskCompute.attach_configuration(address=address))
        try:
            src = tmp_path / "src"
            src.mkdir()
            (src / "show.py").write_text("import tabulate\nprint('tabulate', tabulate.__version__)\n")
            rc = RunConfiguration()
            rc.environment.python.conda_dependencies = CondaDependencies.create(pip_packages=["tabulate==0.9.0"])
            step = PythonScriptStep("show.py", name="show", source_directory=str(src), compute_target=cpu,
                                    runconfig=rc, allow_reuse=False)
            run = _exp(ws).submit(Pipeline(ws, [step]))
            assert run.wait_for_completion(show_output=False) == "Finished"
            step_run = run.find_step_run("show")[0]
            assert "tabulate 0.9.0" in step_run.get_job_log()
            details = step_run.get_details()["environment"]
            assert details["lock"] == ["tabulate==0.9.0"] and details["path"].startswith(str(home / "envs"))
            with ws.client() as client:
                arts = client.read_artifacts(artifact_filter=ArtifactFilter(
                    task_run_id=ArtifactFilterTaskRunId(any_=[step_run.id])))
            assert "tabulate==0.9.0" in {a.key: a for a in arts}["environment-show"].data
        finally:
            cpu.delete()


def test_dask_steps_report_to_their_task_runs_and_start_when_a_slot_is_free(ws, src, dask_cluster):
    """A Dask step's work runs on a worker while its task run stays in the pipeline flow: the worker's log
    lines and the step's metrics reach that task run, a failure carries its stderr, and no more steps are
    sent than the compute has slots (one GPU here), so a task run is Running only while its step runs."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterTaskRunId,
        LogFilter,
        LogFilterTaskRunId,
    )

    gpu = ComputeTarget.attach(ws, _name("gpu"), DaskCompute.attach_configuration(address=dask_cluster, gpu=True))
    cpu = ComputeTarget.attach(ws, _name("cpu"), DaskCompute.attach_configuration(address=dask_cluster))
    try:
        steps = [PythonScriptStep("metric.py", name=f"g{i}", source_directory=src, compute_target=gpu, arguments=[1],
                                  allow_reuse=False) for i in range(3)]
        steps.append(PythonScriptStep("metric.py", name="bad", source_directory=src, compute_target=cpu,
                                      arguments=[0, 3], allow_reuse=False))
        run = _exp(ws).submit(Pipeline(ws, steps), continue_on_step_failure=True)
        with pytest.raises(ActivityFailedException, match="boom: asked to fail"):
            run.wait_for_completion(show_output=False)
        step_runs = {n: run.find_step_run(n)[0] for n in ("g0", "g1", "g2", "bad")}
        assert {n: r.get_status() for n, r in step_runs.items()} == {"g0": "Finished", "g1": "Finished",
                                                                     "g2": "Finished", "bad": "Failed"}
        assert step_runs["g1"].get_metrics() == {"node_is_gpu": 1.0}
        with get_client(sync_client=True) as client:
            task_runs = sorted((client.read_task_run(r.id) for n, r in step_runs.items() if n != "bad"),
                               key=lambda t: t.start_time)
            for before, after in zip(task_runs, task_runs[1:], strict=False):  # one GPU: one step's task run at a time
                assert after.start_time >= before.end_time - timedelta(seconds=0.05), (
                    f"{after.name} was Running while {before.name} held the only GPU slot")
            arts = client.read_artifacts(artifact_filter=ArtifactFilter(task_run_id=ArtifactFilterTaskRunId(
                any_=[step_runs["g0"].id, step_runs["bad"].id])))
            assert {a.key for a in arts} == {"metrics-g0", "metrics-bad"}  # a failed step's metrics too
            deadline = time.time() + 15  # the Dask worker sends its log lines in batches
            while True:
                lines = [lg.message for lg in client.read_logs(log_filter=LogFilter(
                    task_run_id=LogFilterTaskRunId(any_=[step_runs["g2"].id])))]
                if any("metric step on gpu-node" in m for m in lines) or time.time() > deadline:
                    break
                time.sleep(0.5)
        assert any("metric step on gpu-node" in m for m in lines), lines
        assert any("Step 'g2' will run" in m for m in lines), lines
    finally:
        gpu.delete()
        cpu.delete()


def _has_gpu() -> str | None:
    if not shutil.which("nvidia-smi"):
        return "no NVIDIA GPU here (nvidia-smi not found)"
    try:
        import dask_cuda  # noqa: F401
    except ImportError:
        return "dask-cuda is not installed (pip install dask-cuda)"
    return None


@pytest.mark.skipif(_has_gpu() is not None, reason=_has_gpu() or "")
def test_gpu_dask_compute_runs_on_a_real_gpu(ws, src, tmp_path):
    gpu = ComputeTarget.create(ws, _name("gpu"), DaskCompute.provisioning_configuration(n_workers=1, gpu=True))
    try:
        Path(src, "gpu.py").write_text(
            "import os, subprocess\n"
            "print('CUDA_VISIBLE_DEVICES=' + os.environ['CUDA_VISIBLE_DEVICES'])\n"
            "print(subprocess.run(['nvidia-smi', '-L'], capture_output=True, text=True, check=True).stdout)\n")
        step = PythonScriptStep("gpu.py", name="on-gpu", source_directory=src, compute_target=gpu, allow_reuse=False)
        run = _exp(ws).submit(Pipeline(ws, [step]))
        assert run.wait_for_completion(show_output=False) == "Finished"
        log = run.find_step_run("on-gpu")[0].get_job_log()
        assert "CUDA_VISIBLE_DEVICES=" in log and "GPU 0:" in log
    finally:
        gpu.delete()


def _docker_ok() -> bool:
    return shutil.which("docker") is not None and subprocess.run(
        ["docker", "info"], capture_output=True).returncode == 0


@pytest.fixture
def docker_images(tmp_path):
    """Two local images (no registry): an empty root with the host's /usr, Python, virtual environment and
    project mounted read-only (the project first on the path, so this checkout's code runs in them).

    Each holds a file naming it, so a step can tell which image it ran in."""
    if not _docker_ok():
        if os.environ.get("PREFECT_AML_REQUIRE_DOCKER"):
            pytest.fail("No Docker engine answers `docker info`: scripts/docker.sh should have started one.")
        pytest.skip("no Docker engine (scripts/test.sh starts one)")
    root = Path(__file__).resolve().parents[2]
    path = f"{sys.prefix}/bin:/usr/local/bin:/usr/bin:/bin"
    # the CA certificates this machine reaches the package index with (a step with packages builds in its container)
    cert = os.path.realpath(os.environ["SSL_CERT_FILE"]) if os.environ.get("SSL_CERT_FILE") else None
    env = ["--change", f"ENV PATH={path}", "--change", f"ENV PYTHONPATH={root}",
           *(["--change", f"ENV SSL_CERT_FILE={cert}"] if cert else [])]
    tags = []
    for which in ("compute", "env"):
        rootfs = tmp_path / f"rootfs-{which}"
        for d in ("tmp", "proc", "dev", "sys", "etc", "root", "usr", "run"):
            (rootfs / d).mkdir(parents=True)
        (rootfs / "tmp").chmod(0o1777)
        for link in ("bin", "lib", "lib64", "sbin"):
            (rootfs / link).symlink_to(f"usr/{link}")
        (rootfs / "image-name").write_text(which)
        tag = f"prefect-aml-test:{which}-{uuid.uuid4().hex[:6]}"
        tar = subprocess.run(["tar", "-C", str(rootfs), "-c", "."], capture_output=True, check=True).stdout
        subprocess.run(["docker", "import", *env, "-", tag], input=tar, check=True, capture_output=True)
        tags.append(tag)
    mounts = sorted({"/usr", sys.base_prefix, sys.prefix, str(root), *([os.path.dirname(cert)] if cert else [])})
    volumes = [f"{m}:{m}:ro" for m in mounts] + [f"{_STATE}:{_STATE}"]
    yield tags, volumes
    made = [c for tag in tags for c in subprocess.run(["docker", "ps", "-aq", "--filter", f"ancestor={tag}"],
                                                      capture_output=True, text=True).stdout.split()]
    if made:  # the steps' containers (the worker leaves them)
        subprocess.run(["docker", "rm", "-f", *made], capture_output=True)
    subprocess.run(["docker", "rmi", "-f", *tags], capture_output=True)


def test_docker_compute_runs_a_step_in_a_container(ws, tmp_path, docker_images, monkeypatch):
    """A step in its compute's image, and a step in its environment's image whose packages it gets: built in
    its container (with the container's Python) onto a volume of the engine that keeps them."""
    from prefect.client.orchestration import get_client

    from prefect_aml import DockerCompute, Environment, envbuild

    (compute_image, env_image), volumes = docker_images
    volume = _name("prefect-aml-test-envs")  # the engine's volume of built environments, this test's own
    monkeypatch.setenv(envbuild.DOCKER_VOLUME_ENV, volume)
    docker = ComputeTarget.create(ws, _name("docker"), DockerCompute.provisioning_configuration(
        image=compute_image, volumes=volumes, network_mode="host", max_nodes=2, vm_size="STANDARD_D2_V2"))
    src = tmp_path / "src"
    src.mkdir()
    (src / "inside.py").write_text(textwrap.dedent("""
        import argparse, json, os, sys
        p = argparse.ArgumentParser(); p.add_argument("--out"); args = p.parse_args()
        try:
            import tabulate
            version = tabulate.__version__
        except ImportError:
            version = None
        os.makedirs(args.out, exist_ok=True)
        json.dump({"container": os.path.exists("/.dockerenv"), "image": open("/image-name").read(),
                   "color": os.environ.get("COLOR"), "tabulate": version, "prefix": sys.prefix},
                  open(os.path.join(args.out, "inside.json"), "w"))
    """))
    worker = Worker(ws, docker.name, "docker-host")
    try:
        with get_client(sync_client=True) as client:
            pool = client.read_work_pool(docker.name)
        assert pool.type == "docker"
        assert pool.base_job_template["variables"]["properties"]["mem_limit"]["default"] == "7168m"
        rc = RunConfiguration()
        rc.environment = Environment(_name("img"))
        rc.environment.docker.base_image = env_image
        rc.environment.environment_variables = {"COLOR": "teal"}
        rc.environment.python.conda_dependencies = CondaDependencies.create(pip_packages=["tabulate==0.9.0"])
        steps = [PythonScriptStep("inside.py", name=name, source_directory=str(src), compute_target=docker,
                                  runconfig=config, arguments=["--out", OutputFileDatasetConfig("o")],
                                  allow_reuse=False)
                 for name, config in (("default-image", None), ("env-image", rc))]
        run = _exp(ws).submit(Pipeline(ws, steps))
        assert run.wait_for_completion(show_output=False, timeout_seconds=300) == "Finished"
        seen = {}
        for s in steps:
            folder = run.find_step_run(s.name)[0].get_output_data("o").download(str(tmp_path / s.name),
                                                                                show_progress=False)
            seen[s.name] = json.loads(Path(folder, "inside.json").read_text())
        assert seen["default-image"] == {"container": True, "image": "compute", "color": None, "tabulate": None,
                                         "prefix": sys.prefix}  # no packages: the worker's Python, in the image
        env_dir = f"{envbuild.DOCKER_CACHE}/envs/"
        assert seen["env-image"] == {"container": True, "image": "env", "color": "teal", "tabulate": "0.9.0",
                                     "prefix": seen["env-image"]["prefix"]}
        assert seen["env-image"]["prefix"].startswith(env_dir)  # built in the container, on the engine's volume
        details = run.find_step_run("env-image")[0].get_details()["environment"]
        assert details["lock"] == ["tabulate==0.9.0"] and details["path"] == seen["env-image"]["prefix"]
        listed = subprocess.run(["docker", "run", "--rm", "-v", "/usr:/usr:ro", "-v", f"{volume}:/v", compute_image,
                                 "/bin/ls", "/v/envs"],
                                capture_output=True, text=True)
        assert listed.returncode == 0 and listed.stdout.split() == [details["path"].removeprefix(env_dir)]
    finally:
        worker.stop()
        docker.delete()
        used = subprocess.run(["docker", "ps", "-aq", "--filter", f"volume={volume}"], capture_output=True,
                              text=True).stdout.split()
        if used:  # the step's container holds the volume
            subprocess.run(["docker", "rm", "-f", *used], capture_output=True)
        subprocess.run(["docker", "volume", "rm", "-f", volume], capture_output=True)


@pytest.mark.skipif(_has_gpu() is None, reason="dask-cuda and a GPU are here: the real GPU test runs instead")
def test_a_gpu_cluster_without_dask_cuda_fails_the_submit(ws, src):
    import importlib.util

    if importlib.util.find_spec("dask_cuda") is not None:
        pytest.skip("dask-cuda is installed")
    gpu = ComputeTarget.create(ws, _name("gpu"), DaskCompute.provisioning_configuration(gpu=True))
    try:
        step = PythonScriptStep("where.py", source_directory=src, compute_target=gpu,
                                arguments=["--out", OutputFileDatasetConfig("o")])
        exp = _exp(ws)
        with pytest.raises(ComputeTargetException, match="needs dask-cuda.*prefect-aml\\[gpu\\]"):
            exp.submit(Pipeline(ws, [step]))
        assert list(exp.get_runs()) == []
    finally:
        gpu.delete()


def test_the_pipeline_flow_itself_runs_on_a_named_compute(ws, src, tmp_path, pool_compute):
    from prefect.client.orchestration import get_client

    runner = pool_compute()
    worker = Worker(ws, runner.name, "runner-node")
    try:
        step = PythonScriptStep("where.py", name="beside", source_directory=src,
                                arguments=["--out", OutputFileDatasetConfig("o")], allow_reuse=False)
        run = _exp(ws).submit(Pipeline(ws, [step]), pipeline_compute=runner)
        assert run.wait_for_completion(show_output=False, timeout_seconds=180) == "Finished"
        got = _intervals(run, ["beside"], tmp_path)["beside"]
        assert got["node"] == "runner-node"  # the step ran beside the pipeline flow, on the worker
        with get_client(sync_client=True) as client:
            fr = client.read_flow_run(run.id)
            assert client.read_deployment(fr.deployment_id).name == runner.name
    finally:
        worker.stop()
    single = pool_compute(max_nodes=1)
    on_single = PythonScriptStep("where.py", name="on-single", source_directory=src, compute_target=single,
                                 arguments=["--out", OutputFileDatasetConfig("o")])
    with pytest.raises(ComputeTargetException, match="max_nodes=1: the pipeline flow would hold its only slot"):
        _exp(ws).submit(Pipeline(ws, [on_single]), pipeline_compute=single)
    with pytest.raises(ComputeTargetException, match="pipeline_compute=.*work pool compute"):
        dask = ComputeTarget.create(ws, _name("dask"), DaskCompute.provisioning_configuration())
        try:
            _exp(ws).submit(Pipeline(ws, [step]), pipeline_compute=dask)
        finally:
            dask.delete()


@pytest.mark.parametrize("where", ["pipeline-on-worker", "step-on-worker"])
def test_cancel_stops_steps_running_on_workers(ws, tmp_path, pool_compute, where):
    cpu = pool_compute()
    worker = Worker(ws, cpu.name, "cancel-node")
    marker = tmp_path / "pid.txt"
    src = tmp_path / "src"
    src.mkdir()
    (src / "hang.py").write_text(f"import os, time\nopen({str(marker)!r}, 'w').write(str(os.getpid()))\n"
                                 "time.sleep(300)\n")
    try:
        step = PythonScriptStep("hang.py", source_directory=str(src), allow_reuse=False,
                                compute_target=cpu if where == "step-on-worker" else None)
        run = _exp(ws).submit(Pipeline(ws, [step]), pipeline_compute=cpu if where == "pipeline-on-worker" else None)
        deadline = time.monotonic() + 90
        while not marker.exists():
            assert time.monotonic() < deadline, "the step never started"
            time.sleep(0.3)
        pid = int(marker.read_text())
        assert psutil.Process(pid).ppid() == worker.proc.pid  # the script runs under the worker's own process
        run.cancel()
        assert run.wait_for_completion(show_output=False, timeout_seconds=90, raise_on_error=False) == "Canceled"
        deadline = time.monotonic() + 15
        while psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
            assert time.monotonic() < deadline, "the step's script is still running"
            time.sleep(0.2)
        assert worker.proc.poll() is None  # the worker lives on
    finally:
        worker.stop()


def test_a_stopped_worker_leaves_its_pool_at_once(ws, pool_compute):
    """Stopped with SIGTERM, `prefect-aml worker start` deregisters: runs sent to the pool do not wait for it."""
    cpu = pool_compute(max_nodes=1)
    worker = Worker(ws, cpu.name, "leaving")
    assert _online(ws, cpu.name)
    worker.stop()
    assert worker.proc.returncode == 128 + signal.SIGTERM
    assert ComputeTarget(ws, cpu.name).get_status().serialize()["currentNodeCount"] == 0
