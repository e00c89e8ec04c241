"""Pipelines running for real: a Prefect flow run per pipeline, a task run per step, data on real stores."""

from __future__ import annotations

import itertools
import json
import subprocess
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from prefect_aml import (
    ActivityFailedException,
    CommandStep,
    DataPath,
    Experiment,
    OutputFileDatasetConfig,
    Pipeline,
    PipelineData,
    PipelineParameter,
    PipelineRun,
    PythonScriptStep,
    Run,
)

SCRIPTS = {
    "produce.py": """
        import argparse, os
        from prefect_aml import Run
        p = argparse.ArgumentParser(); p.add_argument("--raw"); p.add_argument("--a"); p.add_argument("--b")
        p.add_argument("--n", type=int)
        args = p.parse_args()
        rows = open(args.raw).read().split()
        for d in (args.a, args.b):
            os.makedirs(d, exist_ok=True)
        open(os.path.join(args.a, "rows.txt"), "w").write("\\n".join(rows[: args.n]))
        os.makedirs(os.path.join(args.b, "sub"), exist_ok=True)
        open(os.path.join(args.b, "sub", "count.txt"), "w").write(str(len(rows)))
        run = Run.get_context()
        run.log("rows", len(rows)); run.log("loss", 0.5); run.log("loss", 0.25)
        run.log_row("table", x=1, y=2); run.log_row("table", x=2, y=4)
        run.tag("stage", "prep")
        print("produced", args.n, "from", os.environ.get("AML_PARAMETER_mode"))
    """,
    "consume.py": """
        import argparse, os
        p = argparse.ArgumentParser(); p.add_argument("--a"); p.add_argument("--b"); p.add_argument("--out")
        args = p.parse_args()
        rows = open(os.path.join(args.a, "rows.txt")).read().split()
        total = open(os.path.join(args.b, "sub", "count.txt")).read()
        os.makedirs(args.out, exist_ok=True)
        open(os.path.join(args.out, "result.json"), "w").write(__import__("json").dumps({"kept": rows, "total": total}))
    """,
    "sleepy.py": """
        import argparse, json, os, time
        p = argparse.ArgumentParser(); p.add_argument("--out"); p.add_argument("--seconds", type=float)
        p.add_argument("--in_", default=None)
        args = p.parse_args()
        start = time.time(); time.sleep(args.seconds); end = time.time()
        os.makedirs(args.out, exist_ok=True)
        json.dump({"start": start, "end": end}, open(os.path.join(args.out, "t.json"), "w"))
    """,
    "join.py": """
        import argparse, json, os
        p = argparse.ArgumentParser(); p.add_argument("--x"); p.add_argument("--y"); p.add_argument("--out")
        args = p.parse_args()
        os.makedirs(args.out, exist_ok=True)
        both = [json.load(open(os.path.join(d, "t.json"))) for d in (args.x, args.y)]
        json.dump(both, open(os.path.join(args.out, "both.json"), "w"))
    """,
    "fail.py": """
        import sys
        print("about to fail")
        print("first error line", file=sys.stderr)
        print("ValueError: the data is bad", file=sys.stderr)
        sys.exit(3)
    """,
    "ok.py": """
        import argparse, os
        p = argparse.ArgumentParser(); p.add_argument("--out", default=None)
        args = p.parse_args()
        if args.out:
            os.makedirs(args.out, exist_ok=True); open(os.path.join(args.out, "ok"), "w").write("ok")
        print("ok")
    """,
}


@pytest.fixture
def src(tmp):
    d = tmp / "src"
    d.mkdir()
    for name, body in SCRIPTS.items():
        (d / name).write_text(textwrap.dedent(body))
    (d / ".amlignore").write_text("ignored/\n")
    (d / "ignored").mkdir()
    (d / "ignored" / "big.bin").write_bytes(b"x" * 100)
    return str(d)


def _exp(ws) -> Experiment:
    return Experiment(ws, f"test-{uuid.uuid4().hex[:6]}")


def test_data_flows_through_outputs(ws, store, src, tmp):
    raw = tmp / "raw.txt"
    raw.write_text("\n".join(f"r{i}" for i in range(10)))
    store.upload_files([str(raw)], target_path="inputs", overwrite=True, show_progress=False)
    n = PipelineParameter("n", 3)
    a = OutputFileDatasetConfig("a", destination=(store, "results/{run-id}/{output-name}"))
    b = PipelineData("b", datastore=store)
    result = OutputFileDatasetConfig("result", destination=(store, "final/{run-id}"))
    produce = PythonScriptStep("produce.py", source_directory=src, outputs=[b], params={"mode": "fast"},
                               arguments=["--raw", DataPath(store, "inputs/raw.txt").as_download(), "--a", a,
                                          "--b", b, "--n", n], allow_reuse=False)
    consume = PythonScriptStep("consume.py", source_directory=src, inputs=[b],
                               arguments=["--a", a.as_input(), "--b", b, "--out", result])
    run = _exp(ws).submit(Pipeline(ws, [consume]), pipeline_parameters={"n": 4})
    assert run.get_status() in ("NotStarted", "Queued", "Running")  # submit returned at once
    assert run.wait_for_completion(show_output=False) == "Finished"
    steps = {s.name: s for s in run.get_steps()}
    assert set(steps) == {"produce.py", "consume.py"}
    out = steps["consume.py"].get_output_data("result")
    assert out.datastore_name == store.name and out.path_on_datastore == f"final/{run.id}"
    folder = out.download(str(tmp / "dl"), show_progress=False)
    data = json.loads(open(f"{folder}/result.json").read())
    assert data == {"kept": ["r0", "r1", "r2", "r3"], "total": "10"}
    metrics = steps["produce.py"].get_metrics()
    assert metrics == {"rows": 10, "loss": [0.5, 0.25], "table": {"x": [1, 2], "y": [2, 4]}}
    assert steps["produce.py"].get_tags() == {"stage": "prep"}
    assert "produced 4 from fast" in steps["produce.py"].get_job_log()
    assert run.get_metrics()["produce.py"]["rows"] == 10


def test_diamond_runs_middle_steps_concurrently(ws, src, tmp):
    x, y, top, both = (OutputFileDatasetConfig(n) for n in ("x", "y", "top", "both"))
    first = PythonScriptStep("ok.py", name="top", source_directory=src, arguments=["--out", top], allow_reuse=False)
    left = PythonScriptStep("sleepy.py", name="left", source_directory=src, allow_reuse=False,
                            arguments=["--out", x, "--seconds", 4, "--in_", top.as_input()])
    right = PythonScriptStep("sleepy.py", name="right", source_directory=src, allow_reuse=False,
                             arguments=["--out", y, "--seconds", 4, "--in_", top.as_input()])
    join = PythonScriptStep("join.py", name="join", source_directory=src, allow_reuse=False,
                            arguments=["--x", x.as_input(), "--y", y.as_input(), "--out", both])
    run = _exp(ws).submit(Pipeline(ws, [join]))
    assert run.wait_for_completion(show_output=False) == "Finished"
    folder = run.find_step_run("join")[0].get_output_data("both").download(str(tmp / "dl"), show_progress=False)
    (l_iv, r_iv) = json.loads(open(f"{folder}/both.json").read())
    assert l_iv["start"] < r_iv["end"] and r_iv["start"] < l_iv["end"], "left and right did not overlap"
    order = [s.name for s in run.get_steps()]
    assert order[0] == "top" and order[-1] == "join"


def test_failing_step_fails_the_pipeline_with_its_stderr(ws, src):
    bad = PythonScriptStep("fail.py", name="bad", source_directory=src)
    after = PythonScriptStep("ok.py", name="after", source_directory=src)
    after.run_after(bad)
    run = _exp(ws).submit(Pipeline(ws, [after]))
    with pytest.raises(ActivityFailedException, match="(?s)bad.*exit code 3.*ValueError: the data is bad"):
        run.wait_for_completion(show_output=False)
    assert run.get_status() == "Failed"
    steps = {s.name: s for s in run.get_steps()}
    assert steps["bad"].get_status() == "Failed"
    assert "after" not in steps  # never started
    assert "first error line" in steps["bad"].get_job_log()


@pytest.mark.parametrize("keep_going", [True, False])
def test_continue_on_step_failure(ws, src, keep_going):
    out = OutputFileDatasetConfig("o")
    bad = PythonScriptStep("fail.py", name="bad", source_directory=src, outputs=[out], allow_reuse=False)
    downstream = PythonScriptStep("ok.py", name="downstream", source_directory=src, inputs=[out.as_input()])
    independent = [PythonScriptStep("sleepy.py", name=f"independent{i}", source_directory=src, allow_reuse=False,
                                    arguments=["--out", OutputFileDatasetConfig(f"i{i}"), "--seconds", 2])
                   for i in range(2)]
    later = PythonScriptStep("ok.py", name="later", source_directory=src, allow_reuse=False)
    later.run_after(independent[0])
    run = _exp(ws).submit(Pipeline(ws, [downstream, *independent, later]), continue_on_step_failure=keep_going)
    assert run.wait_for_completion(show_output=False, raise_on_error=False) == "Failed"
    status = {s.name: s.get_status() for s in run.get_steps()}
    assert status["bad"] == "Failed" and "downstream" not in status
    assert status["independent0"] == status["independent1"] == "Finished"  # already running: they finish
    if keep_going:
        assert status["later"] == "Finished"
    else:
        assert "later" not in status


def test_cancel_stops_the_step(ws, src, tmp):
    marker = tmp / "pid.txt"
    (tmp / "src" / "hang.py").write_text(textwrap.dedent(f"""
        import os, time
        print("waiting to be cancelled", flush=True)
        open({str(marker)!r}, "w").write(str(os.getpid()))
        time.sleep(300)
    """))
    run = _exp(ws).submit(Pipeline(ws, [PythonScriptStep("hang.py", source_directory=src, allow_reuse=False)]))
    deadline = time.time() + 60
    while not marker.exists() and time.time() < deadline:
        time.sleep(0.3)
    assert marker.exists(), "the step never started"
    # on a local datastore the step's log is written in place while the step runs
    store = ws.get_default_datastore()
    live_log = Path(store.full_path(f"azureml/runs/{run.id}/hang.py/std_log.txt"))
    deadline = time.time() + 10
    while "waiting to be cancelled" not in (live_log.read_text() if live_log.exists() else "") and time.time() < deadline:
        time.sleep(0.1)
    assert live_log.read_text() == "waiting to be cancelled\n"
    pid = int(marker.read_text())
    run.cancel()
    assert run.wait_for_completion(show_output=False, timeout_seconds=60, raise_on_error=False) == "Canceled"
    deadline = time.time() + 10
    while time.time() < deadline and subprocess.run(["kill", "-0", str(pid)], capture_output=True).returncode == 0:
        time.sleep(0.2)
    assert subprocess.run(["kill", "-0", str(pid)], capture_output=True).returncode != 0, "step process still alive"
    assert [s.get_status() for s in run.get_steps()] == ["Canceled"]


def test_reuse_and_regenerate(ws, src):
    out = OutputFileDatasetConfig("o")
    step = PythonScriptStep("ok.py", source_directory=src, arguments=["--out", out])
    exp = _exp(ws)
    first = exp.submit(Pipeline(ws, [step]))
    first.wait_for_completion(show_output=False)
    second = exp.submit(Pipeline(ws, [step]))
    second.wait_for_completion(show_output=False)
    (s1,), (s2,) = first.get_steps(), second.get_steps()
    assert not s1.reused and s2.reused
    assert s2.get_output_data("o").path_on_datastore == s1.get_output_data("o").path_on_datastore
    third = exp.submit(Pipeline(ws, [step]), regenerate_outputs=True)
    third.wait_for_completion(show_output=False)
    assert not third.get_steps()[0].reused


def test_run_record_and_artifacts(ws, src):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    step = CommandStep(["python", "produce.py", "--raw", DataPath("workspaceblobstore", "seed/raw.txt"),
                        "--a", OutputFileDatasetConfig("a"), "--b", OutputFileDatasetConfig("b"), "--n", 1],
                       name="cmd", source_directory=src, allow_reuse=False)
    ws.get_default_datastore().filesystem().pipe(ws.get_default_datastore().full_path("seed/raw.txt"), b"1 2 3")
    exp = _exp(ws)
    run = exp.submit(Pipeline(ws, [step]), tags={"team": "ml"})
    run.wait_for_completion(show_output=False)
    details = run.get_details()
    assert details["status"] == "Finished" and details["tags"] == {"team": "ml"}
    assert len(details["snapshots"]["cmd"]) == 40
    with get_client(sync_client=True) as client:
        arts = client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[run.id])))
    kinds = {(a.key, a.type) for a in arts}
    assert ("pipeline-graph", "markdown") in kinds and ("metrics-cmd", "table") in kinds
    graph = next(a for a in arts if a.key == "pipeline-graph")
    assert "mermaid" in graph.data and "cmd" in graph.data
    assert [r.id for r in exp.get_runs()] == [run.id]
    again = PipelineRun.get(ws, run.id)
    assert again.experiment.name == exp.name and again.get_status() == "Finished"
    step_run = run.get_steps()[0]
    assert step_run.get_details()["snapshotId"] == details["snapshots"]["cmd"]
    assert "std_log.txt" in step_run.get_file_names()


def test_snapshot_respects_amlignore(src):
    from prefect_aml.tasks.snapshots import list_files

    files = list_files(src)
    assert "produce.py" in files and ".amlignore" in files
    assert not any(f.startswith("ignored/") for f in files)


def test_offline_run_prints(capsys, monkeypatch):
    monkeypatch.delenv("AZUREML_RUN_CONTEXT", raising=False)
    run = Run.get_context()
    run.log("accuracy", 0.9)
    assert run.offline and "accuracy = 0.9" in capsys.readouterr().out


def test_submit_rejects_bad_parameters_before_anything_runs(ws, src):
    from prefect_aml import PipelineValidationError

    step = PythonScriptStep("ok.py", source_directory=src, arguments=[PipelineParameter("k", 1)])
    exp = _exp(ws)
    with pytest.raises(PipelineValidationError, match="'k' expects int"):
        exp.submit(Pipeline(ws, [step]), pipeline_parameters={"k": "x"})
    assert list(exp.get_runs()) == []


def _wait_for_warm_runner(timeout: float = 60) -> int:
    from prefect_aml.flows import forkserver

    deadline = time.time() + timeout
    while (pid := forkserver.serving()) is None and time.time() < deadline:
        time.sleep(0.3)
    assert pid, "no warm runner started after a submit"
    return pid


def test_runs_fork_from_the_warm_runner_with_the_submitters_environment(ws, src, tmp, monkeypatch):
    """After a first submit, runs are children of one warm runner; each gets its submitter's environment
    and working directory, and the warm runner stops when asked (runs then start the plain way)."""
    from prefect_aml.flows import forkserver

    (tmp / "src" / "who.py").write_text(textwrap.dedent("""
        import os
        runner = os.getppid()
        warm = int(open(f"/proc/{runner}/stat").read().rsplit(")", 1)[1].split()[1])
        print("LINEAGE", warm, os.environ.get("AML_TEST_VAR"), os.readlink(f"/proc/{runner}/cwd"))
    """))
    exp = _exp(ws)

    def lineage(value: str) -> list[str]:
        monkeypatch.setenv("AML_TEST_VAR", value)
        run = exp.submit(Pipeline(ws, [PythonScriptStep("who.py", source_directory=src, allow_reuse=False)]))
        assert run.wait_for_completion(show_output=False, timeout_seconds=120) == "Finished"
        return next(ln for ln in run.get_steps()[0].get_job_log().splitlines() if ln.startswith("LINEAGE")).split()

    lineage("first")  # starts the warm runner, if none serves yet
    warm = _wait_for_warm_runner()
    cwd = tmp / "elsewhere"
    cwd.mkdir()
    monkeypatch.chdir(cwd)  # the runner's working directory is the submitter's (steps run in their snapshot)
    assert lineage("second") == ["LINEAGE", str(warm), "second", str(cwd.resolve())]
    assert lineage("third") == ["LINEAGE", str(warm), "third", str(cwd.resolve())]
    assert forkserver.stop()
    assert forkserver.serving() is None
    monkeypatch.setenv("PREFECT_AML_FORKSERVER", "0")
    plain = lineage("plain")
    assert plain[1] != str(warm) and plain[2] == "plain"


def test_a_finished_run_leaves_no_scratch_folders(ws, src, tmp, monkeypatch):
    """Each step works in a scratch folder (its snapshot, inputs, outputs) that is removed after the step, in the
    background: by the time the run is final, all of them are gone, failed steps' too."""
    scratch = tmp / "scratch"
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))  # the runner makes its folders where its submitter would
    first = PythonScriptStep("ok.py", source_directory=src, allow_reuse=False)
    steps = [first, *(PythonScriptStep("ok.py", name=f"ok{i}", source_directory=src, allow_reuse=False) for i in range(3))]
    for a, b in itertools.pairwise(steps):
        b.run_after(a)
    fail = PythonScriptStep("fail.py", source_directory=src, allow_reuse=False)
    run = _exp(ws).submit(Pipeline(ws, [*steps, fail]), continue_on_step_failure=True)
    assert run.wait_for_completion(show_output=False, timeout_seconds=120, raise_on_error=False) == "Failed"
    assert sorted(s.get_status() for s in run.get_steps()) == ["Failed"] + ["Finished"] * 4
    assert [p.name for p in scratch.iterdir() if p.name.startswith("aml-")] == []


@pytest.mark.parametrize("warm", [True, False], ids=["warm-runner", "plain-runner"])
def test_waiting_asks_the_server_when_the_runner_says_the_run_ended(ws, src, monkeypatch, warm):
    """A run started here is waited for on its runner: the server is asked at the start and at the end, not
    every 0.1 s; a runner that can no longer tell leaves the waiter asking the server as before."""
    if warm:
        _exp(ws).submit(Pipeline(ws, [PythonScriptStep("ok.py", source_directory=src, allow_reuse=False)]))
        _wait_for_warm_runner()
    else:
        monkeypatch.setenv("PREFECT_AML_FORKSERVER", "0")
    from prefect.client.orchestration import SyncPrefectClient

    from prefect_aml.runs import RUNNER_CHECK_S

    asked = []  # the flow run read from the server by this process
    read = SyncPrefectClient.read_flow_run
    monkeypatch.setattr(SyncPrefectClient, "read_flow_run", lambda self, *a, **k: asked.append(1) or read(self, *a, **k))
    step = PythonScriptStep("sleepy.py", source_directory=src, allow_reuse=False,
                            arguments=["--out", OutputFileDatasetConfig("t"), "--seconds", "2"])

    def wait(run) -> int:
        asked.clear()
        started = time.monotonic()
        assert run.wait_for_completion(show_output=False, timeout_seconds=120) == "Finished"
        expected = 2 + int((time.monotonic() - started) / RUNNER_CHECK_S)  # the first, the last, the checks
        return len(asked) - expected

    run = _exp(ws).submit(Pipeline(ws, [step]))
    assert run._runner is not None
    assert wait(run) <= 0
    assert run.get_steps()[0].get_status() == "Finished"

    from prefect_aml.flows.launch import LocalRunner

    run = _exp(ws).submit(Pipeline(ws, [step]))
    real, run._runner = run._runner, LocalRunner()  # one that cannot tell (as beyond MAX_OPEN): ask the server
    assert wait(run) > 5  # asked every 0.1 s at first
    assert real.wait(60)  # and the runner itself ends (while the server is up)


def test_waiting_on_a_run_started_elsewhere_listens_to_the_events_stream(ws, src, monkeypatch):
    """A run this process did not start (`PipelineRun.get`) is waited on through Prefect's events stream: the server
    is asked when the run or a step changed (a handful of times), not every 0.1-1 s, and the end is noticed at once."""
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.client.schemas.objects import StateType

    step = PythonScriptStep("sleepy.py", source_directory=src, allow_reuse=False,
                            arguments=["--out", OutputFileDatasetConfig("t"), "--seconds", "4"])
    submitted = _exp(ws).submit(Pipeline(ws, [step]))
    found = PipelineRun.get(ws, submitted.id)
    assert found._runner is None
    asked = []
    read = SyncPrefectClient.read_flow_run
    monkeypatch.setattr(SyncPrefectClient, "read_flow_run", lambda self, *a, **k: asked.append(1) or read(self, *a, **k))
    assert found.wait_for_completion(show_output=False, timeout_seconds=120) == "Finished"
    returned = time.time()
    monkeypatch.undo()
    assert len(asked) < 12  # polling every 0.1 s, then every 2% of the time waited, asks ~40 times here
    fr = found._flow_run
    assert fr.state_type == StateType.COMPLETED and returned - fr.end_time.timestamp() < 1.5
    assert submitted._runner.wait(60)  # its runner winds down while the server is up


def test_cancellation_is_heard_on_the_events_stream(ws, monkeypatch):
    """A run's watcher hears its cancellation on Prefect's events stream: no polling of the run's state while
    the stream is up (one read when it subscribes), and the run and its unfinished steps end Cancelled."""
    import threading

    from prefect import flow, task
    from prefect.client.orchestration import PrefectClient, get_client
    from prefect.states import Cancelling, Running

    from prefect_aml.flows.cancel import watch_for_cancel

    @flow(name="aml-cancel-watch-test")
    def noop() -> None:
        pass

    @task
    def a_step() -> None:
        pass

    polled = []  # the observer's fallback: reads of flow runs in Cancelling
    reads = PrefectClient.read_flow_runs
    monkeypatch.setattr(PrefectClient, "read_flow_runs", lambda self, *a, **k: polled.append(1) or reads(self, *a, **k))
    with get_client(sync_client=True) as client:
        fr = client.create_flow_run(noop, state=Running())
        step = client.create_task_run(a_step, flow_run_id=fr.id, dynamic_key="0", name="step", state=Running())
        done = threading.Event()
        watcher = threading.Thread(target=watch_for_cancel, args=(fr.id, done, True), daemon=True)
        watcher.start()
        time.sleep(4)  # subscribed after 1 s; then quiet
        assert watcher.is_alive()
        client.set_flow_run_state(fr.id, Cancelling(), force=True)
        watcher.join(15)
        assert not watcher.is_alive(), "the cancellation was not heard"
        assert client.read_flow_run(fr.id).state.name == "Cancelled"
        assert client.read_task_run(step.id).state.name == "Cancelled"
    done.set()
    assert polled == []


def test_local_runner_connections_are_bounded(monkeypatch):
    """Runs submitted and not yet waited for keep a connection each, up to MAX_OPEN: the oldest then ask the server."""
    import socket

    from prefect_aml.flows.launch import LocalRunner

    monkeypatch.setattr(LocalRunner, "MAX_OPEN", 2)
    monkeypatch.setattr(LocalRunner, "_open", __import__("collections").deque())
    pairs = [socket.socketpair() for _ in range(3)]
    runners = [LocalRunner(sock=a) for a, _ in pairs]
    assert runners[0].wait(0) is True  # closed to stay within the bound: "ask the server"
    assert runners[1].wait(0) is False and runners[2].wait(0) is False
    pairs[1][1].sendall(b'{"ended": 0}\n')  # the runner's line at the end of its run
    pairs[2][1].close()  # or the runner exited
    assert runners[1].wait(5) is True and runners[2].wait(5) is True
    assert not LocalRunner._open
    for a, b in pairs:
        a.close()
        b.close()


def test_warm_runner_address_is_one_per_environment_and_code(tmp):
    """The same interpreter reached by another path finds the same warm runner; other logging settings do not."""
    import os
    import sys

    code = "from prefect_aml.flows import forkserver; print(forkserver.address()[1:])"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_LOGGING_")}

    def addr(python: str, cwd=None, **extra) -> str:
        out = subprocess.run([python, "-c", code], cwd=cwd, env={**env, **extra}, capture_output=True, text=True,
                             check=True).stdout.strip()
        assert out.startswith("prefect-aml-runner-")
        return out

    absolute = addr(sys.executable)
    assert addr(os.path.relpath(sys.executable, tmp), cwd=tmp) == absolute  # e.g. ../../.venv/bin/python
    assert addr(sys.executable, PREFECT_LOGGING_LEVEL="DEBUG") != absolute
