"""Built environments, side by side in one run:

1. a first build of `pandas scikit-learn` (conda packages, as the seed's environment asks) with
   prefect-aml (`uv venv` + `uv pip install`, uv's cache empty: everything downloaded) against
   `python -m venv` + `pip install --no-cache-dir` of the same; then both again with their caches warm
   (a new environment on a machine that has built others);
2. what a cached environment adds to a step script's start against the worker's own interpreter: the
   look-up (`envbuild.ensure` finding it), then `from azureml.core import Run; Run.get_context().log(...)`
   run with the environment's interpreter and the light runtime, against the worker's interpreter with the
   `azureml` shim (which loads prefect_aml); and a bare `pass` both ways (the interpreters alone);
3. the same at step level: chains of pipeline steps (real runs against a Prefect server on PostgreSQL)
   whose environment is built and cached, against the same steps in the worker's own environment, each
   step's task-run duration compared (a look-up, the process set-up and the script included).

    python benchmarks/envs.py [--repeat 3] [--starts 15] [--steps 8] [--json out.json]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from prefect_aml import (  # noqa: E402
    CondaDependencies,
    Environment,
    Experiment,
    Pipeline,
    PythonScriptStep,
    RunConfiguration,
    StepSequence,
    Workspace,
    envbuild,
)
from prefect_aml._azureml import SHIM_DIR  # noqa: E402

PACKAGES = ["pandas", "scikit-learn"]


def _definition(name: str) -> dict:
    env = Environment(name)
    env.python.conda_dependencies = CondaDependencies.create(conda_packages=PACKAGES)
    return env._definition()


def build_ours(work: Path, uv_cache: Path) -> tuple[float, int]:
    os.environ["UV_CACHE_DIR"] = str(uv_cache)
    try:
        t = time.perf_counter()
        built = envbuild.ensure(_definition("bench"), work / "home")
        return time.perf_counter() - t, len(built.lock)
    finally:
        os.environ.pop("UV_CACHE_DIR")


# pip as it comes, against PyPI alone, as uv is run (this machine's pip configuration adds local indexes
# and a constraints file that uv does not read)
PIP_ENV = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")} | {"PIP_CONFIG_FILE": os.devnull}


def build_pip(work: Path, pip_cache: Path, compile_pyc: bool = True) -> tuple[float, int]:
    venv = work / "venv"
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", "--cache-dir",
                    str(pip_cache), *([] if compile_pyc else ["--no-compile"]), *PACKAGES], check=True, env=PIP_ENV)
    seconds = time.perf_counter() - t
    frozen = subprocess.run([str(venv / "bin" / "pip"), "freeze"], capture_output=True, text=True).stdout
    return seconds, len(frozen.split())


def bench_builds(repeat: int) -> dict:
    """Each round: both sides with an empty cache of their own (cold: everything downloaded), then again with
    what that left in it (warm); the sides alternate which goes first."""
    rows: dict[str, list[float]] = {"ours cold": [], "pip cold": [], "ours warm": [], "pip warm": [],
                                    "pip-no-compile cold": [], "pip-no-compile warm": []}
    counts = {}
    with tempfile.TemporaryDirectory(prefix="aml-bench-envs-") as tmp:
        base = Path(tmp)
        for i in range(repeat):
            # pip compiles every module to bytecode as it installs, uv does not (a module is compiled at its
            # first import instead): pip --no-compile is the like-for-like side, pip the one users run
            order = [("ours", build_ours), ("pip", build_pip),
                     ("pip-no-compile", lambda work, cache: build_pip(work, cache, compile_pyc=False))]
            for name, fn in order if i % 2 == 0 else order[::-1]:
                cache = base / f"{name}-cache-{i}"
                for phase in ("cold", "warm"):
                    work = base / f"{name}-{phase}-{i}"
                    work.mkdir()
                    seconds, counts[name] = fn(work, cache)
                    rows[f"{name} {phase}"].append(seconds)
                    shutil.rmtree(work, ignore_errors=True)
                shutil.rmtree(cache, ignore_errors=True)
    med = {k: statistics.median(v) for k, v in rows.items()}
    return {"median_s": med, "rounds": rows, "distributions": counts,
            "ratio_cold": med["pip cold"] / med["ours cold"], "ratio_warm": med["pip warm"] / med["ours warm"],
            "ratio_cold_no_compile": med["pip-no-compile cold"] / med["ours cold"],
            "ratio_warm_no_compile": med["pip-no-compile warm"] / med["ours warm"]}


RUN_SCRIPT = "from azureml.core import Run\nRun.get_context().log('x', 1)\n"


def _time(argv: list[str], env: dict, cwd: Path) -> float:
    t = time.perf_counter()
    subprocess.run(argv, env=env, cwd=cwd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t


def bench_starts(starts: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="aml-bench-starts-") as tmp:
        work = Path(tmp)
        definition = {"name": "start", "packages": {"pip_packages": ["tabulate==0.9.0"]}}
        envbuild.ensure(definition, work / "home")
        (work / "run").mkdir()
        (work / "run" / "context.json").write_text(json.dumps({
            "run_id": "r", "parent_run_id": "p", "experiment_name": "e", "step_name": "s", "workspace": {},
            "default_datastore": "d", "input_datasets": {}, "outputs": {}, "dir": str(work / "run")}))
        (work / "run.py").write_text(RUN_SCRIPT)
        (work / "pass.py").write_text("pass\n")
        base_env = dict(os.environ, AZUREML_RUN_CONTEXT=str(work / "run" / "context.json"))
        worker_env = dict(base_env, PYTHONPATH=os.pathsep.join([str(SHIM_DIR), str(ROOT)]))  # as a step gets it
        rows: dict[str, list[float]] = {"lookup": [], "worker run.py": [], "env run.py": [], "worker pass.py": [],
                                        "env pass.py": []}
        for i in range(starts + 1):
            t = time.perf_counter()
            built = envbuild.ensure(definition, work / "home")  # what a step pays to find its environment
            lookup = time.perf_counter() - t
            env = dict(base_env)
            python = envbuild.step_process(built, env)
            sides = [("worker", sys.executable, worker_env), ("env", python, env)]
            times = {}
            for side, interpreter, variables in sides if i % 2 == 0 else sides[::-1]:
                for script in ("run.py", "pass.py"):
                    times[f"{side} {script}"] = _time([interpreter, script], variables, work)
            if i == 0:
                continue  # the first round warms the page cache
            rows["lookup"].append(lookup)
            for k, v in times.items():
                rows[k].append(v)
    med = {k: statistics.median(v) for k, v in rows.items()}
    return {"median_s": med, "added_run_ms": (med["lookup"] + med["env run.py"] - med["worker run.py"]) * 1000,
            "added_pass_ms": (med["lookup"] + med["env pass.py"] - med["worker pass.py"]) * 1000}


def bench_steps(steps: int, repeat: int) -> dict:
    """Per-step task-run durations of `steps`-step chains, with a cached environment and in the worker's own,
    for both scripts; the sides alternate which goes first in each round."""
    from tests.services import PG_URL, PrefectServer

    state = Path(tempfile.mkdtemp(prefix="aml-bench-env-steps-"))
    os.environ.update(PREFECT_AML_HOME=str(state / "home"), PREFECT_SERVER_ANALYTICS_ENABLED="false")
    server = PrefectServer(state, PG_URL)
    os.environ["PREFECT_API_URL"] = server.url
    try:
        from prefect.context import refresh_global_settings_context

        refresh_global_settings_context()
        ws = Workspace()
        exp = Experiment(ws, "bench-env-steps")
        src = state / "src"
        src.mkdir()
        (src / "run.py").write_text(RUN_SCRIPT)
        (src / "pass.py").write_text("pass\n")
        cached = RunConfiguration()
        cached.environment = Environment("bench-steps")
        cached.environment.python.conda_dependencies = CondaDependencies.create(pip_packages=["tabulate==0.9.0"])

        def chain(script: str, rc) -> list[float]:
            chained = [PythonScriptStep(script, name=f"s{i:02d}", source_directory=str(src), runconfig=rc,
                                        allow_reuse=False) for i in range(steps)]
            with contextlib.redirect_stdout(io.StringIO()):  # the plan it prints, step by step
                run = exp.submit(Pipeline(ws, [StepSequence(steps=chained)]))
            assert run.wait_for_completion(show_output=False) == "Finished"
            return [s.get_details()["durationSeconds"] for s in run.get_steps()]

        chain("pass.py", cached)  # warm up: the environment built once, the runner, the snapshot stored
        chain("pass.py", None)
        rows: dict[str, list[float]] = {f"{side} {script}": [] for side in ("worker", "env")
                                        for script in ("run.py", "pass.py")}
        for i in range(repeat):
            sides = [("worker", None), ("env", cached)]
            for side, rc in sides if i % 2 == 0 else sides[::-1]:
                for script in ("run.py", "pass.py"):
                    time.sleep(1.5)  # the server finishes the previous run's events and logs first
                    rows[f"{side} {script}"] += chain(script, rc)
    finally:
        from prefect.events.worker import EventsWorker
        from prefect.logging.handlers import APILogWorker

        from prefect_aml.flows import forkserver

        for service in (APILogWorker, EventsWorker):
            service.drain_all(timeout=10)
        forkserver.stop()
        server.stop()
        shutil.rmtree(state, ignore_errors=True)
    med = {k: statistics.median(v) for k, v in rows.items()}
    return {"median_s": med, "steps_per_side": len(rows["env pass.py"]),
            "added_run_ms": (med["env run.py"] - med["worker run.py"]) * 1000,
            "added_pass_ms": (med["env pass.py"] - med["worker pass.py"]) * 1000}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--starts", type=int, default=15)
    parser.add_argument("--json")
    parser.add_argument("--skip-builds", action="store_true")
    parser.add_argument("--skip-starts", action="store_true")
    parser.add_argument("--steps", type=int, default=8, help="steps per chain at step level (0: skip)")
    args = parser.parse_args()
    out = {}
    if not args.skip_builds:
        b = out["builds"] = bench_builds(args.repeat)
        m = b["median_s"]
        print(f"first build of {' '.join(PACKAGES)} ({b['distributions']} distributions), median of {args.repeat}:")
        print(f"  cold caches: prefect-aml (uv) {m['ours cold']:.1f} s, venv + pip {m['pip cold']:.1f} s, "
              f"ratio {b['ratio_cold']:.1f}x")
        print(f"  warm caches: prefect-aml (uv) {m['ours warm']:.1f} s, venv + pip {m['pip warm']:.1f} s, "
              f"ratio {b['ratio_warm']:.1f}x")
        print(f"  pip --no-compile: cold {m['pip-no-compile cold']:.1f} s (ratio {b['ratio_cold_no_compile']:.1f}x), "
              f"warm {m['pip-no-compile warm']:.1f} s (ratio {b['ratio_warm_no_compile']:.1f}x)")
    if not args.skip_starts:
        s = out["starts"] = bench_starts(args.starts)
        m = s["median_s"]
        print(f"script start, median of {args.starts}: look-up {m['lookup'] * 1e3:.2f} ms;")
        print(f"  run.py: worker {m['worker run.py'] * 1e3:.0f} ms, cached env {m['env run.py'] * 1e3:.0f} ms "
              f"(added {s['added_run_ms']:+.0f} ms)")
        print(f"  pass.py: worker {m['worker pass.py'] * 1e3:.0f} ms, cached env {m['env pass.py'] * 1e3:.0f} ms "
              f"(added {s['added_pass_ms']:+.0f} ms)")
    if args.steps:
        s = out["steps"] = bench_steps(args.steps, args.repeat)
        m = s["median_s"]
        print(f"pipeline steps (task-run duration), median of {s['steps_per_side']} steps a side:")
        print(f"  run.py: worker {m['worker run.py'] * 1e3:.0f} ms, cached env {m['env run.py'] * 1e3:.0f} ms "
              f"(added {s['added_run_ms']:+.0f} ms)")
        print(f"  pass.py: worker {m['worker pass.py'] * 1e3:.0f} ms, cached env {m['env pass.py'] * 1e3:.0f} ms "
              f"(added {s['added_pass_ms']:+.0f} ms)")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
