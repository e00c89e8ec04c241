"""Per-step overhead: a 20-step chain of trivial scripts as a prefect-aml pipeline, as a hand-written
Prefect flow running the same scripts as tasks, and as plain subprocesses (the floor), in one run.

Starts a Prefect server on PostgreSQL (127.0.0.1:5432). Reports medians over --repeat rounds:
end to end (submit to completion; the hand-written flow is called in-process) and the flow run's
own duration as the server recorded it.

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

PG_URL = os.environ.get("PREFECT_AML_TEST_PG", "postgresql://postgres@127.0.0.1:5432")


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
                results[key].append(fn())
        for k, vals in results.items():
            print(f"{k:27} rounds (end to end / flow run): "
                  + " ".join(f"{e:.2f}/{f:.2f}" for e, f in vals))
        summary = {k: {"end_to_end_s": statistics.median(v[0] for v in vals),
                       "flow_run_s": statistics.median(v[1] for v in vals)} for k, vals in results.items()}
        base = summary["hand-written Prefect flow"]
        for k, v in summary.items():
            v["ratio_end_to_end"] = v["end_to_end_s"] / base["end_to_end_s"]
            v["ratio_flow_run"] = v["flow_run_s"] / base["flow_run_s"]
            v["per_step_ms"] = 1000 * v["flow_run_s"] / args.steps
            print(f"{k:27} end-to-end {v['end_to_end_s']:6.2f} s (x{v['ratio_end_to_end']:.2f})   flow run "
                  f"{v['flow_run_s']:6.2f} s (x{v['ratio_flow_run']:.2f})   {v['per_step_ms']:6.1f} ms/step")
        if args.json:
            Path(args.json).write_text(json.dumps(summary, indent=2))
    finally:
        from prefect_aml.flows import forkserver
        forkserver.stop()  # the warm runner this benchmark's submits started
        server.stop()


if __name__ == "__main__":
    main()
