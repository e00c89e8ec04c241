"""Per-step overhead: a 20-step chain of trivial scripts as a prefect-aml pipeline, as a hand-written
Prefect flow running the same scripts as tasks, and as plain subprocesses (the floor), in one run.

Starts a Prefect server on PostgreSQL (127.0.0.1:5432). Reports medians over --repeat rounds:
end to end (submit to completion; the hand-written flow is called in-process), the flow run's
own duration as the server recorded it, and the CPU time the whole machine spent on it (server,
database, runner and scripts; Linux). Ratios are the median of each round's ratio against the
hand-written flow of the same round.

    python benchmarks/step_overhead.py [--steps 20] [--repeat 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.services import PrefectServer  # noqa: E402

SETTLE_S = 1.5  # idle time before each measurement
PG_URL = os.environ.get("PREFECT_AML_TEST_PG", "postgresql://postgres@127.0.0.1:5432")


def machine_cpu_s() -> float | None:
    """CPU seconds the whole machine has spent (all processes: server, database, runner, scripts)."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:8]
    except OSError:
        return None
    busy = sum(int(v) for i, v in enumerate(fields) if i != 3 and i != 4)  # not idle, not iowait
    return busy / os.sysconf("SC_CLK_TCK")


def flow_duration(run_id) -> float:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        fr = client.read_flow_run(run_id)
    return (fr.end_time - fr.start_time).total_seconds()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    state = Path(tempfile.mkdtemp(prefix="aml-bench-steps-"))
    os.environ["PREFECT_AML_HOME"] = str(state / "home")
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    server = PrefectServer(state, PG_URL)
    os.environ["PREFECT_API_URL"] = server.url
    try:
        from prefect import flow, task
        from prefect.cache_policies import NONE
        from prefect.context import get_run_context, refresh_global_settings_context

        refresh_global_settings_context()
        from prefect_aml import Experiment, Pipeline, PythonScriptStep, StepSequence, Workspace

        src = state / "src"
        src.mkdir()
        names = [f"step_{i:02d}.py" for i in range(args.steps)]
        for n in names:
            (src / n).write_text(f"print('hello from {n}')\n")

        @task(cache_policy=NONE, persist_result=False)
        def run_script(name: str) -> int:
            return subprocess.run([sys.executable, name], cwd=src, capture_output=True, check=True).returncode

        @flow(persist_result=False)
        def hand_written_chain() -> str:
            future = None
            for n in names:
                future = run_script.with_options(task_run_name=n).submit(n, wait_for=[future] if future else [])
            future.result()
            return str(get_run_context().flow_run.id)

        ws = Workspace()
        exp = Experiment(ws, "bench-overhead")

        def ours() -> tuple[float, float]:
            steps = [PythonScriptStep(n, source_directory=str(src), allow_reuse=False) for n in names]
            t = time.perf_counter()
            run = exp.submit(Pipeline(ws, [StepSequence(steps=steps)]))
            run.wait_for_completion(show_output=False)
            return time.perf_counter() - t, flow_duration(run.id)

        def prefect_flow() -> tuple[float, float]:
            t = time.perf_counter()
            run_id = hand_written_chain()
            return time.perf_counter() - t, flow_duration(run_id)

        def floor() -> tuple[float, float]:
            t = time.perf_counter()
            for n in names:
                subprocess.run([sys.executable, n], cwd=src, capture_output=True, check=True)
            d = time.perf_counter() - t
            return d, d

        prefect_flow()  # warm up both paths once (imports, block registration, the snapshot upload)
        ours()
        results: dict[str, list] = {"prefect-aml": [], "hand-written Prefect flow": [], "plain subprocess": []}
        for i in range(args.repeat):
            order = [("prefect-aml", ours), ("hand-written Prefect flow", prefect_flow), ("plain subprocess", floor)]
            if i % 2:
                order.reverse()
            for key, fn in order:
                time.sleep(SETTLE_S)  # the server finishes the previous run's events and logs first
                cpu = machine_cpu_s()
                end_to_end, flow_run = fn()
                time.sleep(SETTLE_S)  # what the run left to the server (events, logs) is counted too
                results[key].append((end_to_end, flow_run, None if cpu is None else machine_cpu_s() - cpu))
        for k, vals in results.items():
            print(f"{k:27} rounds (end to end / flow run / machine CPU): "
                  + " ".join(f"{e:.2f}/{f:.2f}/{c or 0:.2f}" for e, f, c in vals))
        base_rounds = results["hand-written Prefect flow"]
        summary = {}
        for k, vals in results.items():
            v = summary[k] = {"end_to_end_s": statistics.median(r[0] for r in vals),
                              "flow_run_s": statistics.median(r[1] for r in vals),
                              "machine_cpu_s": statistics.median(r[2] or 0 for r in vals)}
            # side by side: each round's ratio against the hand-written flow of the same round (the machine
            # drifts between rounds), then the median of those
            for i, name in enumerate(("end_to_end", "flow_run", "machine_cpu")):
                v[f"ratio_{name}"] = statistics.median(r[i] / b[i] if b[i] else 0 for r, b in zip(vals, base_rounds, strict=True))
            v["per_step_ms"] = 1000 * v["flow_run_s"] / args.steps
            print(f"{k:27} end-to-end {v['end_to_end_s']:6.2f} s (x{v['ratio_end_to_end']:.2f})   flow run "
                  f"{v['flow_run_s']:6.2f} s (x{v['ratio_flow_run']:.2f})   {v['per_step_ms']:6.1f} ms/step   "
                  f"machine CPU {v['machine_cpu_s']:5.2f} s (x{v['ratio_machine_cpu']:.2f})")
        if args.json:
            Path(args.json).write_text(json.dumps(summary, indent=2))
    finally:
        from prefect.events.worker import EventsWorker
        from prefect.logging.handlers import APILogWorker

        from prefect_aml.flows import forkserver
        for service in (APILogWorker, EventsWorker):  # this process's last logs and events, while the server is up
            service.drain_all(timeout=10)
        forkserver.stop()  # the warm runner this benchmark's submits started
        server.stop()


if __name__ == "__main__":
    main()
