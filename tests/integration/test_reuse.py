"""Reuse: each key component re-runs the step when it changes (and the explanation names it); what is
outside the key does not; hits are served only while the outputs exist; identical steps run once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path

import pytest

from prefect_aml import (
    AmlCompute,
    ComputeTarget,
    DataPath,
    Experiment,
    OutputFileDatasetConfig,
    Pipeline,
    PipelineParameter,
    PythonScriptStep,
    Workspace,
)

ROOT = Path(__file__).resolve().parents[2]

PREP = """
    import argparse, os, time
    from prefect_aml import Run
    p = argparse.ArgumentParser(); p.add_argument("--raw"); p.add_argument("--out"); p.add_argument("--n", type=int)
    a = p.parse_args()
    ledger = os.environ.get("LEDGER")
    if ledger:
        with open(ledger, "a") as f:
            f.write(f"prep {os.getpid()}\\n")
    while os.path.exists(os.environ.get("HOLD", "/nonexistent")):
        time.sleep(0.2)
    time.sleep(float(os.environ.get("PREP_SLEEP", "0")))
    rows = open(a.raw).read().split()[: a.n]
    os.makedirs(a.out, exist_ok=True)
    open(os.path.join(a.out, "rows.txt"), "w").write("\\n".join(rows))
    Run.get_context().log("rows", len(rows))
"""
TRAIN = """
    import argparse, os
    p = argparse.ArgumentParser(); p.add_argument("--data"); p.add_argument("--model")
    a = p.parse_args()
    os.makedirs(a.model, exist_ok=True)
    rows = open(os.path.join(a.data, "rows.txt")).read().split()
    open(os.path.join(a.model, "model.txt"), "w").write(str(len(rows)))
"""


class Project:
    """Two steps (prep -> train) in their own source folders, over a raw file on the default datastore."""

    def __init__(self, ws, root: Path, ledger: Path | None = None):
        self.ws, self.root = ws, root
        self.tag = uuid.uuid4().hex[:6]
        for name, body in (("prep_src/prep.py", PREP), ("train_src/train.py", TRAIN)):
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_text(textwrap.dedent(body))
        self.raw = f"reuse-{self.tag}/raw.txt"
        self.write_raw("a b c d e f")
        self.env = {"variables": {}}
        self.ledger = ledger

    def write_raw(self, text: str) -> None:
        store = self.ws.get_default_datastore()
        store.filesystem().pipe(store.full_path(self.raw), text.encode())

    def pipeline(self, n_default=3, version=None, compute_target=None, hash_paths=None, prep_name="prep"):
        prepped = OutputFileDatasetConfig("prepped")
        model = OutputFileDatasetConfig("model")
        prep = PythonScriptStep("prep.py", name=prep_name, source_directory=str(self.root / "prep_src"),
                                arguments=["--raw", DataPath("workspaceblobstore", self.raw).as_download(),
                                           "--out", prepped, "--n", PipelineParameter("n", n_default)],
                                version=version, compute_target=compute_target, hash_paths=hash_paths)
        train = PythonScriptStep("train.py", name=f"train-{self.tag}", source_directory=str(self.root / "train_src"),
                                 arguments=["--data", prepped.as_input(), "--model", model])
        return Pipeline(self.ws, [train])

    def run(self, pipeline=None, **kw):
        run = Experiment(self.ws, f"reuse-{self.tag}").submit(pipeline or self.pipeline(), **kw)
        assert run.wait_for_completion(show_output=False, timeout_seconds=240) == "Finished"
        return {s.name.split("-")[0]: s for s in run.get_steps()}


@pytest.fixture
def project(ws, tmp):
    return Project(ws, tmp)


def _reused(steps) -> dict[str, bool]:
    return {k: v.reused for k, v in steps.items()}


def test_rerun_reuses_and_shows_cached_task_runs(project, capsys):
    first = project.run()
    assert _reused(first) == {"prep": False, "train": False}
    second = project.run()
    assert _reused(second) == {"prep": True, "train": True}
    assert "will reuse run" in capsys.readouterr().out
    assert {s._refresh().state.name for s in second.values()} == {"Cached"}
    assert second["prep"].get_metrics() == {"rows": 3}  # the producing run's metrics, read from the new run
    assert second["prep"].get_details()["reusedFrom"] == first["prep"].id
    assert (second["train"].get_output_data("model").path_on_datastore
            == first["train"].get_output_data("model").path_on_datastore)


@pytest.mark.parametrize("change,expect", [
    ("script", "prep.py changed"),
    ("param", "parameter n: 3 -> 4"),
    ("input", "input raw.txt changed (etag)"),
    ("version", "step version: None -> 2"),
    ("new_file", "helper.py added"),
])
def test_each_component_reruns_the_step_and_says_why(project, change, expect):
    project.run()
    pipeline, kw = project.pipeline(), {}
    if change == "script":
        p = project.root / "prep_src" / "prep.py"
        p.write_text(p.read_text() + "\n# a comment\n")
    elif change == "param":
        kw["pipeline_parameters"] = {"n": 4}
    elif change == "input":
        project.write_raw("a b c d e f g")
    elif change == "version":
        pipeline = project.pipeline(version=2)
    elif change == "new_file":
        (project.root / "prep_src" / "helper.py").write_text("X = 1\n")
    explained = pipeline.explain_reuse(show_output=False, **kw)
    assert expect in explained["prep"], explained
    assert explained[f"train-{project.tag}"].startswith("will run: input")  # upstream changes flow down
    steps = project.run(pipeline, **kw)
    assert not steps["prep"].reused
    record = steps["prep"]._load_record()
    assert expect in record["explanation"]


def test_changes_outside_the_key_keep_reuse(project):
    project.run(project.pipeline(hash_paths=["prep.py"]))
    # compute target, a file outside hash_paths, a comment in another step's script: all outside prep's key
    (project.root / "prep_src" / "notes.md").write_text("unrelated\n")
    t = project.root / "train_src" / "train.py"
    t.write_text(t.read_text() + "\n# comment in another step\n")
    # a compute with no worker: the reused step is never sent there (it would fail for want of a worker)
    other = ComputeTarget.create(project.ws, f"other-{project.tag}", AmlCompute.provisioning_configuration())
    try:
        steps = project.run(project.pipeline(hash_paths=["prep.py"], compute_target=other))
    finally:
        other.delete()
    assert steps["prep"].reused and not steps["train"].reused


def test_hash_paths_file_change_reruns(project):
    project.run(project.pipeline(hash_paths=["prep.py"]))
    p = project.root / "prep_src" / "prep.py"
    p.write_text(p.read_text() + "\n# changed\n")
    explained = project.pipeline(hash_paths=["prep.py"]).explain_reuse(show_output=False)
    assert "prep.py changed" in explained["prep"]


def test_regenerate_and_allow_reuse_false(project):
    project.run()
    steps = project.run(regenerate_outputs=True)
    assert _reused(steps) == {"prep": False, "train": False}
    assert "regenerate_outputs=True" in steps["prep"]._load_record()["explanation"]
    again = project.run()
    assert _reused(again) == {"prep": True, "train": True}  # the regenerated records serve later runs
    p = project.pipeline()
    p._given[0]._upstream_steps()[0].allow_reuse = False  # prep: always run
    steps = project.run(p)
    assert _reused(steps) == {"prep": False, "train": False}  # train's input is new data


def test_deleted_outputs_rerun(project):
    first = project.run()
    out = first["prep"].get_output_data("prepped")
    store = out.datastore
    store.filesystem().rm(store.full_path(out.path_on_datastore), recursive=True)
    explained = project.pipeline().explain_reuse(show_output=False)
    assert "output 'prepped'" in explained["prep"] and "missing" in explained["prep"]
    steps = project.run()
    assert not steps["prep"].reused
    assert (Path(store.full_path(out.path_on_datastore)) / "rows.txt").exists()


def test_reuse_across_pipelines_and_processes(project, ws):
    project.run()
    # another pipeline sharing the prep step (same definition, other downstream)
    prepped = OutputFileDatasetConfig("prepped")
    prep = PythonScriptStep("prep.py", name="prep", source_directory=str(project.root / "prep_src"),
                            arguments=["--raw", DataPath("workspaceblobstore", project.raw).as_download(),
                                       "--out", prepped, "--n", PipelineParameter("n", 3)])
    other = PythonScriptStep("train.py", name=f"other-{project.tag}", source_directory=str(project.root / "train_src"),
                             arguments=["--data", prepped.as_input(), "--model", OutputFileDatasetConfig("model")])
    run = Experiment(ws, "other-pipeline").submit(Pipeline(ws, [other]))
    run.wait_for_completion(show_output=False)
    assert {s.name: s.reused for s in run.get_steps()} == {"prep": True, f"other-{project.tag}": False}
    # another process, same server and datastore
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(ROOT)!r})
        from pathlib import Path
        from prefect_aml import Workspace
        from tests.integration.test_reuse import Project
        p = Project.__new__(Project)
        p.ws, p.root, p.tag, p.raw = Workspace(), Path({str(project.root)!r}), {project.tag!r}, {project.raw!r}
        steps = p.run()
        print("REUSED", sorted(k for k, v in steps.items() if v.reused))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert "REUSED ['prep', 'train']" in out.stdout, out.stdout[-2000:] + out.stderr[-3000:]


def _ledger_lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


@pytest.mark.parametrize("backend", ["local-files", "redis"])
def test_concurrent_identical_steps_run_once(ws, tmp, request, backend, monkeypatch):
    from tests.services import make_store

    ledger = tmp / "ledger.txt"
    monkeypatch.setenv("LEDGER", str(ledger))
    monkeypatch.setenv("PREP_SLEEP", "3")
    project = Project(ws, tmp)
    pipeline_kw = {}
    if backend == "redis":
        s3 = make_store("s3", ws, request)
        project.ws = Workspace(redis_url="redis://127.0.0.1:6379/0")
        pipeline_kw = {"default_datastore": s3}
        s3.filesystem().pipe(s3.full_path(project.raw), b"a b c d e f")

    def build():
        p = project.pipeline()
        if pipeline_kw:
            p.default_datastore = pipeline_kw["default_datastore"].name
            p._given[0]._upstream_steps()[0].arguments[1] = DataPath(pipeline_kw["default_datastore"],
                                                                    project.raw).as_download()
        return p

    runs = [Experiment(project.ws, f"concurrent-{project.tag}").submit(build()) for _ in range(2)]
    for r in runs:
        assert r.wait_for_completion(show_output=False, timeout_seconds=240) == "Finished"
    assert len([x for x in _ledger_lines(ledger) if x.startswith("prep")]) == 1, _ledger_lines(ledger)
    reused = sorted(s.reused for r in runs for s in r.get_steps() if s.name == "prep")
    assert reused == [False, True]


def test_killed_runner_leaves_no_record(project, tmp, monkeypatch):
    hold = tmp / "hold"
    hold.write_text("x")
    monkeypatch.setenv("HOLD", str(hold))
    monkeypatch.setenv("LEDGER", str(tmp / "ledger.txt"))
    run = Experiment(project.ws, f"kill-{project.tag}").submit(project.pipeline())
    deadline = time.time() + 60
    while not _ledger_lines(tmp / "ledger.txt") and time.time() < deadline:
        time.sleep(0.2)
    step_pid = int(_ledger_lines(tmp / "ledger.txt")[0].split()[1])
    runner_pid = int(Path(f"/proc/{step_pid}/stat").read_text().split(")")[1].split()[1])
    os.kill(runner_pid, signal.SIGKILL)  # the machine is lost mid-step
    os.killpg(step_pid, signal.SIGKILL)
    hold.unlink()
    threading.Event().wait(1)
    explained = project.pipeline().explain_reuse(show_output=False)
    assert explained["prep"].startswith("will run")
    steps = project.run()
    assert not steps["prep"].reused and steps["prep"].get_status() == "Finished"
    assert run.get_status() in ("Running", "Failed", "Crashed", "Queued")  # never reported complete
