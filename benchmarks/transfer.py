"""Upload/download throughput: prefect-aml datastores against plain s3fs / adlfs put/get, same run.

Starts moto_server and Azurite on loopback, then for each store measures 1,000 x 10 KB files and
1 x 200 MB, both ways, alternating ours and raw; reports medians and ratios (ours / raw time).

    python benchmarks/transfer.py [--repeat 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from prefect_aml import AzureBlobDatastore, S3Datastore  # noqa: E402
from tests.conftest import AZURITE_KEY  # noqa: E402
from tests.services import Service, free_port, http_ok  # noqa: E402

BIN = Path(sys.executable).parent


def start_services(state: Path):
    s3_port, az_port = free_port(), free_port()
    moto = Service("moto", state, [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(s3_port)],
                   lambda: http_ok(f"http://127.0.0.1:{s3_port}/moto-api/"))
    (state / "azurite").mkdir()
    azurite = Service("azurite", state, [str(ROOT / "node_modules/.bin/azurite-blob"), "--blobHost", "127.0.0.1",
                                         "--blobPort", str(az_port), "--location", str(state / "azurite"),
                                         "--skipApiVersionCheck", "--loose", "--silent"],
                      lambda: http_ok(f"http://127.0.0.1:{az_port}/devstoreaccount1?comp=list"))
    s3 = S3Datastore(datastore_name="bench_s3", bucket_name="bench", endpoint_url=f"http://127.0.0.1:{s3_port}",
                     access_key_id="a", secret_access_key="b")
    az = AzureBlobDatastore(datastore_name="bench_az", container_name="bench", account_name="devstoreaccount1",
                            connection_string=f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
                            f"AccountKey={AZURITE_KEY};BlobEndpoint=http://127.0.0.1:{az_port}/devstoreaccount1;")
    for store in (s3, az):
        store.filesystem().mkdir(store.root())
    return [moto, azurite], {"moto S3": s3, "Azurite": az}


def raw_fs(store):
    """The plain fsspec filesystem with library defaults (what a user would write by hand)."""
    import fsspec

    if isinstance(store, S3Datastore):
        return fsspec.filesystem("s3", endpoint_url=store.endpoint_url, key="a", secret="b", skip_instance_cache=True)
    return fsspec.filesystem("abfs", connection_string=store.connection_string.get_secret_value(),
                             skip_instance_cache=True)


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def bench_case(store, src: Path, files: list[Path], nbytes: int, repeat: int, work: Path) -> dict:
    fs = raw_fs(store)
    times = {"ours_up": [], "raw_up": [], "ours_down": [], "raw_down": []}
    for i in range(repeat):
        tag = uuid.uuid4().hex[:6]
        ours_prefix, raw_prefix = f"ours-{tag}", f"raw-{tag}"
        rels = [f.relative_to(src).as_posix() for f in files]
        steps = [
            ("ours_up", lambda: store.upload(str(src), target_path=ours_prefix, overwrite=True, show_progress=False)),
            ("raw_up", lambda: fs.put([str(f) for f in files], [f"{store.root()}/{raw_prefix}/{r}" for r in rels])),
        ]
        if i % 2:
            steps.reverse()
        for key, fn in steps:
            times[key].append(timed(fn))
        d1, d2 = work / f"d1-{tag}", work / f"d2-{tag}"
        steps = [
            ("ours_down", lambda: store.download(str(d1), prefix=ours_prefix, overwrite=True, show_progress=False)),
            ("raw_down", lambda: fs.get(f"{store.root()}/{raw_prefix}/", str(d2) + "/", recursive=True)),
        ]
        if i % 2:
            steps.reverse()
        for key, fn in steps:
            times[key].append(timed(fn))
    med = {k: statistics.median(v) for k, v in times.items()}
    mb = nbytes / 1e6
    return {
        "upload": {"ours_s": med["ours_up"], "raw_s": med["raw_up"], "ours_MBps": mb / med["ours_up"],
                   "raw_MBps": mb / med["raw_up"], "throughput_ratio": med["raw_up"] / med["ours_up"]},
        "download": {"ours_s": med["ours_down"], "raw_s": med["raw_down"], "ours_MBps": mb / med["ours_down"],
                     "raw_MBps": mb / med["raw_down"], "throughput_ratio": med["raw_down"] / med["ours_down"]},
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "a")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "b")
    work = Path(tempfile.mkdtemp(prefix="aml-bench-"))
    services, stores = start_services(work)
    try:
        small = work / "small"
        for i in range(1000):
            p = small / f"d{i % 10}" / f"f{i:04d}.bin"
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(os.urandom(10 * 1024))
        large = work / "large"
        large.mkdir()
        with open(large / "big.bin", "wb") as f:
            for _ in range(50):
                f.write(os.urandom(4 << 20))
        cases = {"1000 x 10 KB": (small, sorted(p for p in small.rglob("*") if p.is_file()), 1000 * 10 * 1024),
                 "1 x 200 MB": (large, [large / "big.bin"], 200 * 1024 * 1024)}
        results = {}
        for store_name, store in stores.items():
            for case, (src, files, nbytes) in cases.items():
                r = bench_case(store, src, files, nbytes, args.repeat, work)
                results[f"{store_name} / {case}"] = r
                for way in ("upload", "download"):
                    x = r[way]
                    print(f"{store_name:9} {case:13} {way:8}  ours {x['ours_MBps']:8.1f} MB/s  raw "
                          f"{x['raw_MBps']:8.1f} MB/s  ratio {x['throughput_ratio']:.2f}", flush=True)
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=2))
    finally:
        for s in services:
            s.stop()
        import shutil

        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
