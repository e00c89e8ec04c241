"""The CPU a pipeline run costs its runner, for two checkouts of prefect-aml side by side (an A/B of a change).

Each round submits a fresh 20-step chain from each checkout in turn (its code first on PYTHONPATH), with the
runner started as a plain child process (`PREFECT_AML_FORKSERVER=0`) so its CPU, and its scripts', is counted
by `getrusage(RUSAGE_CHILDREN)`. On a busy machine this is steadier than wall time.

    python benchmarks/runner_cpu.py --before ../old-checkout --after . [--rounds 8]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.services import PG_URL, PrefectServer  # noqa: E402

ONE_RUN = r'''
import resource, sys, tempfile, uuid
from pathlib import Path
from prefect_aml import Experiment, OutputFileDatasetConfig, Pipeline, PythonScriptStep, Workspace

src = Path(tempfile.mkdtemp())
(src / "s.py").write_text("import os, sys\nout = sys.argv[-1]\nos.makedirs(out, exist_ok=True)\n"
                          "open(os.path.join(out, 'x'), 'w').write(sys.argv[1])\n")
ws, tag, prev, last = Workspace(), uuid.uuid4().hex[:6], None, None
for i in range(20):
    out = OutputFileDatasetConfig(name=f"o{i}")
    args = [f"{tag}{i}"] + (["--in", prev.as_input()] if prev is not None else []) + [out]
    last = PythonScriptStep("s.py", name=f"step_{i}", source_directory=str(src), arguments=args)
    prev = out
run = Experiment(ws, "runner-cpu").submit(Pipeline(ws, [last]))
status = run.wait_for_completion(show_output=False)
fr = run._refresh()
proc = getattr(run._runner, "_proc", None)
if proc is not None:
    proc.wait()
ru = resource.getrusage(resource.RUSAGE_CHILDREN)
print("RESULT", status, ru.ru_utime + ru.ru_stime, (fr.end_time - fr.start_time).total_seconds())
'''


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--before", required=True)
    parser.add_argument("--after", default=str(ROOT))
    parser.add_argument("--rounds", type=int, default=8)
    args = parser.parse_args()
    state = Path(tempfile.mkdtemp(prefix="aml-bench-runner-cpu-"))
    server = PrefectServer(state, PG_URL)
    sides = {"before": str(Path(args.before).resolve()), "after": str(Path(args.after).resolve())}
    found: dict[str, list[tuple[float, float]]] = {k: [] for k in sides}
    try:
        for i in range(args.rounds):
            for side, path in sides.items():
                env = dict(os.environ, PYTHONPATH=path, PREFECT_API_URL=server.url, PREFECT_AML_FORKSERVER="0",
                           PREFECT_AML_HOME=str(state / f"home-{side}"), PREFECT_SERVER_ANALYTICS_ENABLED="false")
                out = subprocess.run([sys.executable, "-c", ONE_RUN], env=env, capture_output=True, text=True, cwd=path)
                line = next((ln for ln in out.stdout.splitlines() if ln.startswith("RESULT")), None)
                if line is None:
                    raise SystemExit(f"{side}: the run failed:\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}")
                _, status, cpu, dur = line.split()
                found[side].append((float(cpu), float(dur)))
                print(f"round {i} {side:6} {status} runner CPU {float(cpu):.2f} s, flow run {float(dur):.2f} s", flush=True)
    finally:
        server.stop()
    for side, rows in found.items():
        print(f"{side:6} runner CPU median {statistics.median(c for c, _ in rows):.2f} s, flow run median "
              f"{statistics.median(d for _, d in rows):.2f} s ({len(rows)} runs)")


if __name__ == "__main__":
    main()
