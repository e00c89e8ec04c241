"""Dataset reads: prefect-aml's TabularDataset against pandas / pyarrow on the same local files, same run.

Writes a ~1 GB parquet dataset partitioned as <year>/<month>/data.parquet and a ~200 MB CSV under a
temporary folder, then, alternating ours and theirs, times:

- `to_pandas_dataframe()` of the parquet dataset (with partition_format, so year/month become
  columns) against `pyarrow.dataset` with the same directory partitioning and `pandas.read_parquet`
  of the folder (which does less: no partition columns);
- `to_pandas_dataframe()` of the CSV against `pandas.read_csv` (C engine) and `engine="pyarrow"`;
- the peak memory of iterating `to_batches()` over the parquet dataset, in a fresh process
  (resident set sampled every 20 ms, minus the process's size before the first batch).

    python benchmarks/datasets.py [--repeat 3] [--gb 1.0] [--json out.json]
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

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.csv as pacsv  # noqa: E402
import pyarrow.dataset as pads  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from prefect_aml import Dataset, LocalDatastore  # noqa: E402


def make_parquet(root: Path, gb: float) -> int:
    """16 partitions (4 years x 4 months) of random data; returns the bytes written."""
    parts = [(y, m) for y in range(2021, 2025) for m in range(1, 5)]
    rows = int(gb * 1024**3 / 28 / len(parts))  # ~28 bytes a row on disk (float64, float32, int64, dict string)
    rng = np.random.default_rng(0)
    cats = np.array(["red", "green", "blue", "amber"])
    for i, (y, m) in enumerate(parts):
        d = root / str(y) / f"{m:02d}"
        d.mkdir(parents=True)
        table = pa.table({"id": np.arange(i * rows, (i + 1) * rows), "x": rng.random(rows),
                          "y": rng.random(rows, dtype=np.float32), "cat": cats[rng.integers(0, 4, rows)]})
        pq.write_table(table, d / "data.parquet", row_group_size=1 << 20)
    return sum(p.stat().st_size for p in root.rglob("*.parquet"))


def make_csv(path: Path, mb: float) -> int:
    rows = int(mb * 1024**2 / 62)
    rng = np.random.default_rng(1)
    table = pa.table({"id": np.arange(rows), "x": rng.random(rows), "y": rng.normal(size=rows),
                      "n": rng.integers(0, 1_000_000, rows),
                      "name": pa.array(np.char.add("item-", rng.integers(0, 50_000, rows).astype(str)))})
    pacsv.write_csv(table, path)
    return path.stat().st_size


def timed(fn) -> tuple[float, object]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


MEMORY_SCRIPT = r"""
import sys, threading, time
sys.path.insert(0, sys.argv[1])
from prefect_aml import Dataset, LocalDatastore
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096
store = LocalDatastore(datastore_name="bench", local_path=sys.argv[2])
ds = Dataset.Tabular.from_parquet_files((store, "parquet/**/data.parquet"),
                                        partition_format="/{year}/{month}/data.parquet")
batches = ds.to_batches()
base = rss(); peak = [base]; stop = False
def sample():
    while not stop:
        peak[0] = max(peak[0], rss()); time.sleep(0.02)
t = threading.Thread(target=sample, daemon=True); t.start()
rows = 0; total = 0.0
for b in batches:
    rows += b.num_rows; total += b.column("x").to_numpy().sum()
    peak[0] = max(peak[0], rss())
stop = True; t.join()
print(rows, base, peak[0])
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--gb", type=float, default=1.0)
    ap.add_argument("--csv-mb", type=float, default=200.0)
    ap.add_argument("--json")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="aml-bench-ds-"))
    results: dict[str, dict] = {}
    try:
        pq_bytes = make_parquet(work / "parquet", args.gb)
        csv_bytes = make_csv(work / "data.csv", args.csv_mb)
        print(f"parquet: {pq_bytes / 1024**3:.2f} GB in 16 files; csv: {csv_bytes / 1024**2:.0f} MB")
        store = LocalDatastore(datastore_name="bench", local_path=str(work))
        ours_pq = Dataset.Tabular.from_parquet_files((store, "parquet/**/data.parquet"),
                                                     partition_format="/{year}/{month}/data.parquet")
        ours_csv = Dataset.Tabular.from_delimited_files((store, "data.csv"))
        part = pads.partitioning(pa.schema([("year", pa.string()), ("month", pa.string())]))

        cases = {
            "parquet 1 GB -> pandas": {
                "prefect-aml to_pandas_dataframe": lambda: ours_pq.to_pandas_dataframe(),
                "pyarrow.dataset (same partitioning)": lambda: pads.dataset(
                    work / "parquet", format="parquet", partitioning=part).to_table().to_pandas(),
                "pandas.read_parquet(folder)": lambda: pd.read_parquet(work / "parquet"),
            },
            "csv 200 MB -> pandas": {
                "prefect-aml to_pandas_dataframe": lambda: ours_csv.to_pandas_dataframe(),
                "pandas.read_csv": lambda: pd.read_csv(work / "data.csv"),
                "pandas.read_csv(engine='pyarrow')": lambda: pd.read_csv(work / "data.csv", engine="pyarrow"),
            },
        }
        for case, fns in cases.items():
            times: dict[str, list[float]] = {k: [] for k in fns}
            shapes = {}
            for _ in range(args.repeat):
                for name, fn in fns.items():
                    t, df = timed(fn)
                    times[name].append(t)
                    shapes[name] = df.shape
                    del df
            med = {k: statistics.median(v) for k, v in times.items()}
            ours = med["prefect-aml to_pandas_dataframe"]
            results[case] = {"median_s": med, "shapes": {k: list(v) for k, v in shapes.items()},
                             "throughput_vs_ours": {k: v / ours for k, v in med.items()}}
            print(f"\n{case}")
            for k, v in med.items():
                print(f"  {k:40s} {v:7.2f} s  shape {shapes[k]}  their time / ours = {v / ours:.2f}")

        out = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT, str(ROOT), str(work)], capture_output=True,
                             text=True, check=True).stdout.split()
        rows, base, peak = int(out[0]), int(out[1]), int(out[2])
        results["to_batches memory"] = {"rows": rows, "base_mb": base / 1024**2, "peak_mb": peak / 1024**2,
                                        "growth_mb": (peak - base) / 1024**2}
        print(f"\nto_batches over {pq_bytes / 1024**3:.2f} GB ({rows:,} rows): resident {base / 1024**2:.0f} MB "
              f"before the first batch, peak {peak / 1024**2:.0f} MB (+{(peak - base) / 1024**2:.0f} MB)")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    main()
