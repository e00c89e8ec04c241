"""Reuse benchmarks, side by side in one run:

1. a fully reused re-run of a 100-step pipeline against a bare Prefect flow with 100 cached tasks
   (Prefect's own cache, results on a local file system); Prefect server on PostgreSQL;
2. source snapshot hashing of a 5,000-file, 200 MB tree: cold against `sha256sum` over the same
   files (page cache warm for both), and warm (nothing changed: the stat cache answers).

    python benchmarks/reuse.py [--steps 100] [--repeat 3] [--json out.json]
"""

from __future__ import annotations

import argparse
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

from tests.services import PrefectServer  # noqa: E402

PG_URL = os.environ.get("PREFECT_AML_TEST_PG", "postgresql://postgres@127.0.0.1:5432")


def bench_hashing(work: Path, repeat: int) -> dict:
    from prefect_aml.tasks.snapshots import file_hashes, list_files

    tree = work / "tree"
    per_file = 200 * 1024 * 1024 // 5000
    for i in range(5000):
        p = tree / f"pkg{i % 50}" / f"mod{i:04d}.bin"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(os.urandom(per_file))
    files = sorted(str(p) for p in tree.rglob("*") if p.is_file())
    list_path = work / "files.txt"
    list_path.write_text("\0".join(files))

    def sha256sum() -> None:
        subprocess.run(f"xargs -0 sha256sum < {list_path} > /dev/null", shell=True, check=True)

    sha256sum()  # page cache warm for both
    cold, ref, warm = [], [], []
    for i in range(repeat):
        cache = work / f"cache{i}"
        t = time.perf_counter()
        sha256sum()
        ref.append(time.perf_counter() - t)
        t = time.perf_counter()
        hashes = file_hashes(tree, list_files(tree), cache)
        cold.append(time.perf_counter() - t)
        assert len(hashes) == 5000
        t = time.perf_counter()
        file_hashes(tree, list_files(tree), cache)
        warm.append(time.perf_counter() - t)
    mb = 200 * 1024 * 1024 / 1e6
    out = {"cold_s": statistics.median(cold), "sha256sum_s": statistics.median(ref), "warm_s": statistics.median(warm)}
    out["cold_MBps"], out["sha256sum_MBps"] = mb / out["cold_s"], mb / out["sha256sum_s"]
    out["cold_ratio"] = out["sha256sum_s"] / out["cold_s"]
    print(f"snapshot hashing 5000 files / 200 MB: cold {out['cold_s']:.2f} s ({out['cold_MBps']:.0f} MB/s), "
          f"sha256sum {out['sha256sum_s']:.2f} s ({out['sha256sum_MBps']:.0f} MB/s), throughput ratio "
          f"{out['cold_ratio']:.2f}; warm {1000 * out['warm_s']:.0f} ms", flush=True)
    return out


def bench_reuse(work: Path, steps: int, repeat: int) -> dict:
    from prefect import flow, task
    from prefect.client.orchestration import get_client
    from prefect.context import get_run_context
    from prefect.filesystems import LocalFileSystem

    from prefect_aml import Experiment, Pipeline, PythonScriptStep, StepSequence, Workspace

    src = work / "src"
    src.mkdir()
    names = [f"step_{i:03d}.py" for i in range(steps)]
    for n in names:
        (src / n).write_text(f"print('hello from {n}')\n")
    storage = LocalFileSystem(basepath=str(work / "prefect-results"))
    storage.save("bench-results", overwrite=True)

    @task(cache_key_fn=lambda ctx, params: f"bench-{params['name']}", persist_result=True, result_storage=storage)
    def cached_task(name: str) -> str:
        return subprocess.run([sys.executable, name], cwd=src, capture_output=True, text=True).stdout

    @flow(persist_result=False)
    def bare_chain() -> str:
        previous = None
        for n in names:
            previous = cached_task.with_options(task_run_name=n).submit(n, wait_for=[previous] if previous else [])
        previous.result()
        return str(get_run_context().flow_run.id)

    def flow_seconds(run_id) -> float:
        with get_client(sync_client=True) as client:
            fr = client.read_flow_run(run_id)
        return (fr.end_time - fr.start_time).total_seconds()

    ws = Workspace()
    exp = Experiment(ws, "bench-reuse")

    def ours():
        pipeline = Pipeline(ws, [StepSequence(steps=[PythonScriptStep(n, source_directory=str(src)) for n in names])])
        t = time.perf_counter()
        run = exp.submit(pipeline)
        run.wait_for_completion(show_output=False)
        return time.perf_counter() - t, flow_seconds(run.id), run

    def bare():
        t = time.perf_counter()
        run_id = bare_chain()
        return time.perf_counter() - t, flow_seconds(run_id), None

    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):
        ours()  # computes every step once
        bare()  # fills Prefect's cache
    res = {"prefect-aml": [], "bare Prefect, cached tasks": []}
    for i in range(repeat):
        order = [("prefect-aml", ours), ("bare Prefect, cached tasks", bare)]
        for key, fn in (reversed(order) if i % 2 else order):
            with contextlib.redirect_stdout(io.StringIO()):
                e2e, fl, run = fn()
            if run is not None:
                missed = [(s.name, s._task_run.state.name) for s in run.get_steps() if not s.reused]
                assert not missed, f"steps not reused: {missed[:5]} ({len(missed)})"
            res[key].append((e2e, fl))
    out = {k: {"end_to_end_s": statistics.median(v[0] for v in vals), "flow_run_s": statistics.median(v[1] for v in vals)}
           for k, vals in res.items()}
    base = out["bare Prefect, cached tasks"]
    for k, v in out.items():
        v["ratio_end_to_end"] = v["end_to_end_s"] / base["end_to_end_s"]
        v["ratio_flow_run"] = v["flow_run_s"] / base["flow_run_s"]
        print(f"{steps}-step re-run, all reused  {k:27} end-to-end {v['end_to_end_s']:6.2f} s "
              f"(x{v['ratio_end_to_end']:.2f})   flow run {v['flow_run_s']:6.2f} s (x{v['ratio_flow_run']:.2f})",
              flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", default=None)
    parser.add_argument("--only", choices=["hashing", "reuse"], default=None)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="aml-bench-reuse-"))
    os.environ["PREFECT_AML_HOME"] = str(work / "home")
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    results = {}
    try:
        if args.only in (None, "hashing"):
            results["hashing"] = bench_hashing(work, args.repeat)
        if args.only in (None, "reuse"):
            server = PrefectServer(work, PG_URL)
            os.environ["PREFECT_API_URL"] = server.url
            from prefect.context import refresh_global_settings_context

            refresh_global_settings_context()
            try:
                results["reuse"] = bench_reuse(work, args.steps, args.repeat)
            finally:
                from prefect_aml.flows import forkserver
                forkserver.stop()  # the warm runner this benchmark's submits started
                server.stop()
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
