"""Dataset reads: prefect-aml's TabularDataset against pandas / pyarrow on the same local files, same run.

Writes a ~1 GB parquet dataset partitioned as <year>/<month>/data.parquet and a ~200 MB CSV under a
temporary folder, then, alternating ours and theirs, times:

- `to_pandas_dataframe()` of the parquet dataset (with partition_format, so year/month become
  columns) against `pyarrow.dataset` with the same directory partitioning and `pandas.read_parquet`
  of the folder (which does less: no partition columns), and the same without partition_format
  (the 4 columns pandas returns);
- `to_pandas_dataframe()` of the CSV against `pandas.read_csv` (C engine) and `engine="pyarrow"`;
- the peak memory of iterating `to_batches()` over the parquet dataset, and over half of it, each in
  a fresh process (resident set sampled every 20 ms, and its size before the first batch).

    python benchmarks/datasets.py [--repeat 3] [--gb 1.0] [--only parquet|csv|memory] [--json out.json]
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
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.csv as pacsv  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402


def make_parquet(root: Path, gb: float) -> int:
    """16 partitions (4 years x 4 months) of random data, ~`gb` GB on disk in all; returns the bytes written."""
    parts = [(y, m) for y in range(2021, 2025) for m in range(1, 5)]
    rng = np.random.default_rng(0)
    cats = np.array(["red", "green", "blue", "amber"])
    rows, start = 1 << 20, 0
    for i, (y, m) in enumerate(parts):
        d = root / str(y) / f"{m:02d}"
        d.mkdir(parents=True)
        table = pa.table({"id": np.arange(start, start + rows), "x": rng.random(rows),
                          "y": rng.random(rows, dtype=np.float32), "cat": cats[rng.integers(0, 4, rows)]})
        pq.write_table(table, d / "data.parquet", row_group_size=1 << 20)
        start += rows
        if i == 0:  # size the other partitions from the first one's bytes per row
            rows = int(gb * 1024**3 / len(parts) / ((d / "data.parquet").stat().st_size / rows))
    return sum(p.stat().st_size for p in root.rglob("*.parquet"))


def make_csv(path: Path, mb: float) -> int:
    rows = int(mb * 1024**2 / 62)
    rng = np.random.default_rng(1)
    table = pa.table({"id": np.arange(rows), "x": rng.random(rows), "y": rng.normal(size=rows),
                      "n": rng.integers(0, 1_000_000, rows),
                      "name": pa.array(np.char.add("item-", rng.integers(0, 50_000, rows).astype(str)))})
    pacsv.write_csv(table, path)
    return path.stat().st_size


# Each read runs in a fresh process (imports done before the clock starts), so no reader pays for the
# heap another one left behind; the timed part includes building the dataset object.
READERS = {
    "parquet 1 GB -> pandas": {
        "prefect-aml to_pandas_dataframe": "Dataset.Tabular.from_parquet_files((store, 'parquet/**/data.parquet'), "
                                           "partition_format='/{year}/{month}/data.parquet').to_pandas_dataframe()",
        "pyarrow.dataset (same partitioning)": "pads.dataset(work + '/parquet', format='parquet', partitioning="
                                               "pads.partitioning(pa.schema([('year', pa.string()), ('month', "
                                               "pa.string())]))).to_table().to_pandas()",
        "pandas.read_parquet(folder), 4 columns": "pd.read_parquet(work + '/parquet')",
        "prefect-aml, no partition_format, 4 columns": "Dataset.Tabular.from_parquet_files((store, "
                                                       "'parquet/**/data.parquet')).to_pandas_dataframe()",
    },
    "csv 200 MB -> pandas": {
        "prefect-aml to_pandas_dataframe": "Dataset.Tabular.from_delimited_files((store, 'data.csv'))"
                                           ".to_pandas_dataframe()",
        "pandas.read_csv": "pd.read_csv(work + '/data.csv')",
        "pandas.read_csv(engine='pyarrow')": "pd.read_csv(work + '/data.csv', engine='pyarrow')",
    },
}
READ_SCRIPT = r"""
import sys, time
sys.path.insert(0, sys.argv[1])
import pandas as pd, pyarrow as pa, pyarrow.dataset as pads
from prefect_aml import Dataset, LocalDatastore
work = sys.argv[2]
store = LocalDatastore(datastore_name="bench", local_path=work)
t = time.perf_counter()
df = eval(sys.argv[3])
print(time.perf_counter() - t, df.shape[0], df.shape[1])
"""


def read_once(case: str, name: str, work: Path) -> tuple[float, list[int]]:
    out = subprocess.run([sys.executable, "-c", READ_SCRIPT, str(ROOT), str(work), READERS[case][name]],
                         capture_output=True, text=True, check=True).stdout.split()
    return float(out[0]), [int(out[1]), int(out[2])]


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
if sys.argv[3] == "half":
    ds = ds.filter(ds["year"] <= "2022")
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
    ap.add_argument("--only", choices=["parquet", "csv", "memory"], help="one part only")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="aml-bench-ds-"))
    results: dict[str, dict] = {}
    try:
        pq_bytes = make_parquet(work / "parquet", args.gb) if args.only != "csv" else 0
        csv_bytes = make_csv(work / "data.csv", args.csv_mb) if args.only in (None, "csv") else 0
        print(f"parquet: {pq_bytes / 1024**3:.2f} GB in 16 files; csv: {csv_bytes / 1024**2:.0f} MB")
        for case, readers in READERS.items():
            if args.only and not case.startswith(args.only):
                continue
            times: dict[str, list[float]] = {k: [] for k in readers}
            shapes = {}
            for name in readers:  # warm-up: the page cache holds the files for every reader
                read_once(case, name, work)
            for i in range(args.repeat):  # alternating order, each read in a fresh process
                for name in (list(readers) if i % 2 == 0 else list(readers)[::-1]):
                    t, shape = read_once(case, name, work)
                    times[name].append(t)
                    shapes[name] = shape
            med = {k: statistics.median(v) for k, v in times.items()}
            ours = med["prefect-aml to_pandas_dataframe"]
            results[case] = {"median_s": med, "shapes": shapes, "their_time_over_ours": {
                k: v / ours for k, v in med.items()}}
            print(f"\n{case}")
            for k, v in med.items():
                print(f"  {k:40s} {v:7.2f} s  shape {tuple(shapes[k])}  their time / ours = {v / ours:.2f}")
        print()
        for label, where in (("all 16 files", "all"), ("half (8 files)", "half")) if args.only in (None, "memory") else ():
            out = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT, str(ROOT), str(work), where],
                                 capture_output=True, text=True, check=True).stdout.split()
            rows, base, peak = int(out[0]), int(out[1]), int(out[2])
            results[f"to_batches memory, {label}"] = {"rows": rows, "base_mb": base / 1024**2,
                                                     "peak_mb": peak / 1024**2, "growth_mb": (peak - base) / 1024**2}
            print(f"to_batches over {label} ({rows:,} rows): resident {base / 1024**2:.0f} MB before the first "
                  f"batch, peak {peak / 1024**2:.0f} MB (+{(peak - base) / 1024**2:.0f} MB)")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    main()
