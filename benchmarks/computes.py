"""Compute targets: a Dask fan-out against the sequential time, and the latency to a work pool.

1. Fan-out: 8 independent CPU-bound steps (~2 s of work each) as one pipeline on a 2-worker Dask
   compute, against the same 8 scripts run one after another as plain subprocesses (the sequential
   time). The ideal on 2 workers is half the sequential time; the ratio is pipeline / ideal. Both an
   attached cluster (scheduler and workers already running) and a cluster started per run.
2. Latency: `submit()` to the first line of a step's script on an `AmlCompute` (a real worker), with
   the pipeline flow in a local runner process or itself on the pool (`pipeline_compute=`): for
   `prefect-aml worker start` (1 s poll, runs warm) and Prefect's own `prefect worker start` (a new
   process per flow run) with a 1 s poll and with its default 10 s poll.

Starts a Prefect server on PostgreSQL (127.0.0.1:5432). Reports medians over --repeat rounds.

    python benchmarks/computes.py [--repeat 3] [--only fan-out|latency] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.services import PrefectServer, Service, free_port  # noqa: E402

PG_URL = os.environ.get("PREFECT_AML_TEST_PG", "postgresql://postgres@127.0.0.1:5432")
BIN = Path(sys.executable).parent
BURN = """
    import json, os, sys, time
    start = time.time()
    n = 0
    while time.time() - start < float(sys.argv[1]):
        n += sum(i * i for i in range(2000))
    out = sys.argv[2] if len(sys.argv) > 2 else None
    if out:
        os.makedirs(out, exist_ok=True)
        json.dump({"start": start, "end": time.time()}, open(os.path.join(out, "t.json"), "w"))
"""
FIRST_LINE = """
    import json, os, sys, time
    started = time.time()
    os.makedirs(sys.argv[1], exist_ok=True)
    json.dump({"started": started}, open(os.path.join(sys.argv[1], "t.json"), "w"))
"""


def median(xs):
    return statistics.median(xs)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--json", default=None)
    parser.add_argument("--only", choices=["fan-out", "latency"], default=None)
    args = parser.parse_args()
    state = Path(tempfile.mkdtemp(prefix="aml-bench-computes-"))
    os.environ["PREFECT_AML_HOME"] = str(state / "home")
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    server = PrefectServer(state, PG_URL)
    os.environ["PREFECT_API_URL"] = server.url
    services: list[Service] = []
    try:
        from prefect.context import refresh_global_settings_context

        refresh_global_settings_context()
        from prefect_aml import (
            AmlCompute,
            ComputeTarget,
            DaskCompute,
            Experiment,
            OutputFileDatasetConfig,
            Pipeline,
            PythonScriptStep,
            Workspace,
        )

        ws = Workspace()
        src = state / "src"
        src.mkdir()
        (src / "burn.py").write_text(textwrap.dedent(BURN))
        (src / "first.py").write_text(textwrap.dedent(FIRST_LINE))

        # -- 1. fan-out on Dask
        port = free_port()
        address = f"tcp://127.0.0.1:{port}"
        services.append(Service("dask-scheduler", state, [str(BIN / "dask"), "scheduler", "--host", "127.0.0.1",
                                                          "--port", str(port), "--dashboard-address", ":0"],
                                lambda: subprocess.run([sys.executable, "-c", "from distributed import Client; "
                                                        f"Client('{address}', timeout=2).close()"],
                                                       capture_output=True).returncode == 0))
        for i in range(2):
            services.append(Service(f"dask-worker-{i}", state, [str(BIN / "dask"), "worker", address, "--nthreads",
                                                                "1", "--nworkers", "1", "--no-dashboard"], lambda: True))
        attached = ComputeTarget.attach(ws, "bench-dask", DaskCompute.attach_configuration(address=address))
        attached.wait_for_completion(min_node_count=2, timeout_in_minutes=1)
        local = ComputeTarget.create(ws, "bench-local-dask", DaskCompute.provisioning_configuration(n_workers=2))
        exp = Experiment(ws, "bench-computes")

        def sequential() -> float:
            t0 = time.perf_counter()
            for _ in range(args.steps):
                subprocess.run([sys.executable, "burn.py", str(args.seconds)], cwd=src, check=True)
            return time.perf_counter() - t0

        def fan_out(compute) -> tuple[float, float, float]:
            """End to end (submit to completion), the flow run's own duration, and the span of the scripts."""
            from prefect.client.orchestration import get_client

            steps = [PythonScriptStep("burn.py", name=f"burn{i}", source_directory=str(src), compute_target=compute,
                                      arguments=[args.seconds, OutputFileDatasetConfig("o")], allow_reuse=False)
                     for i in range(args.steps)]
            t0 = time.perf_counter()
            run = exp.submit(Pipeline(ws, steps))
            assert run.wait_for_completion(show_output=False) == "Finished"
            took = time.perf_counter() - t0
            with get_client(sync_client=True) as client:
                fr = client.read_flow_run(run.id)
            ivs = []
            for s in run.get_steps():
                folder = s.get_output_data("o").download(str(state / s.id), show_progress=False)
                ivs.append(json.loads(Path(folder, "t.json").read_text()))
            span = max(i["end"] for i in ivs) - min(i["start"] for i in ivs)
            if os.environ.get("BENCH_DEBUG"):
                t = min(i["start"] for i in ivs)
                print([(round(i["start"] - t, 1), round(i["end"] - t, 1)) for i in sorted(ivs, key=lambda i: i["start"])])
            return took, (fr.end_time - fr.start_time).total_seconds(), span

        rows = {"sequential": [], "attached": [], "per_run_cluster": []}
        for _ in range(args.repeat if args.only != "latency" else 0):
            rows["sequential"].append(sequential())
            rows["attached"].append(fan_out(attached))
            rows["per_run_cluster"].append(fan_out(local))
        seq = median(rows["sequential"] or [1.0])
        ideal = seq / 2
        fan = {"steps": args.steps, "seconds_each": args.seconds, "sequential_s": round(seq, 2),
               "ideal_s": round(ideal, 2)}
        for k in ("attached", "per_run_cluster"):
            for i, what in enumerate(("end_to_end", "flow_run", "scripts_span")):
                value = median([r[i] for r in rows[k]] or [0])
                fan[f"{k}_{what}_s"] = round(value, 2)
                fan[f"{k}_{what}_vs_ideal"] = round(value / ideal, 3)
        print("fan-out:", json.dumps(fan), flush=True)
        for s in services:
            s.stop()
        services.clear()

        # -- 2. submit -> first line of a step on a process pool
        latency = {}

        def first_line(cpu, mode: str, poll: float) -> float:
            step = PythonScriptStep("first.py", source_directory=str(src), compute_target=cpu,
                                    arguments=[OutputFileDatasetConfig("o")], allow_reuse=False)
            t0 = time.time()
            run = exp.submit(Pipeline(ws, [step]), pipeline_compute=cpu if mode == "pipeline_on_pool" else None)
            assert run.wait_for_completion(show_output=False) == "Finished"
            folder = run.get_steps()[0].get_output_data("o").download(str(state / run.id), show_progress=False)
            took = json.loads(Path(folder, "t.json").read_text())["started"] - t0
            time.sleep(poll * 0.37)  # the next submit lands at another point of the poll cycle
            return took

        workers = (("prefect_aml_worker", 1.0, ["prefect-aml", "worker", "start", "{name}", "--poll-seconds", "1"]),
                   ("prefect_worker", 1.0, ["prefect", "worker", "start", "--pool", "{name}", "--type", "process"]),
                   ("prefect_worker", 10.0, ["prefect", "worker", "start", "--pool", "{name}", "--type", "process"]))
        for kind, poll, argv in workers if args.only != "fan-out" else ():
            name = f"bench-{kind.replace('_', '-')}-{int(poll)}s"
            cpu = ComputeTarget.create(ws, name, AmlCompute.provisioning_configuration(max_nodes=2))
            env = dict(os.environ, PREFECT_WORKER_QUERY_SECONDS=str(poll), PREFECT_WORKER_PREFETCH_SECONDS="10")
            worker = Service(f"worker-{name}", state, [str(BIN / argv[0]), *(a.format(name=name) for a in argv[1:])],
                             lambda n=name: ComputeTarget(ws, n).get_status().serialize()["currentNodeCount"] >= 1,
                             env=env)
            services.append(worker)
            time.sleep(poll + 1)  # the worker is polling in its steady state
            for mode in ("local_runner", "pipeline_on_pool"):
                lat = [first_line(cpu, mode, poll) for _ in range(args.repeat)]
                latency[f"{kind}_poll_{int(poll)}s_{mode}"] = {"median_s": round(median(lat), 2),
                                                               "min_s": round(min(lat), 2), "max_s": round(max(lat), 2)}
                print(f"latency {kind} poll {poll:g}s {mode}: {latency[f'{kind}_poll_{int(poll)}s_{mode}']}",
                      flush=True)
            worker.stop()
            services.remove(worker)
        print("latency:", json.dumps(latency), flush=True)
        if args.json:
            Path(args.json).write_text(json.dumps({"fan_out": fan, "latency": latency}, indent=2))
    finally:
        for s in services:
            s.stop()
        from prefect_aml.flows import forkserver
        forkserver.stop()  # the warm runner this benchmark's submits started
        server.stop()


if __name__ == "__main__":
    main()
