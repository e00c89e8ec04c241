"""Datastores: blocks saved in and loaded back from a real Prefect server; transfers on local, S3, Azure."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap

import httpx
import pytest

from prefect_aml import Datastore, DatastoreException, UserErrorException


def _tree(root) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _make_files(root, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)


def test_block_saved_and_loaded_back(store, ws):
    again = Datastore(ws, store.name)
    assert type(again) is type(store)
    assert again.model_dump() == store.model_dump()
    assert store.name in ws.datastores
    assert again._block_document_id == store._block_document_id


def test_round_trip_nested_and_overwrite(store, tmp):
    src = tmp / "src"
    files = {"a.txt": b"alpha", "nested/b.csv": b"1,2\n3,4\n", "nested/deeper/c.bin": os.urandom(2048)}
    _make_files(src, files)
    store.upload(str(src), target_path="round/trip", overwrite=False, show_progress=False)
    out = tmp / "out"
    assert store.download(str(out), prefix="round/trip", show_progress=False) == 3
    assert _tree(out / "round" / "trip") == files

    # overwrite=False skips files already on the datastore: the old content stays
    (src / "a.txt").write_bytes(b"changed")
    store.upload(str(src), target_path="round/trip", overwrite=False, show_progress=False)
    out2 = tmp / "out2"
    store.download(str(out2), prefix="round/trip", show_progress=False)
    assert (out2 / "round/trip/a.txt").read_bytes() == b"alpha"
    # overwrite=True replaces it
    store.upload(str(src), target_path="round/trip", overwrite=True, show_progress=False)
    # download without overwrite keeps local files, with overwrite replaces them
    assert store.download(str(out2), prefix="round/trip", show_progress=False) == 0
    assert (out2 / "round/trip/a.txt").read_bytes() == b"alpha"
    assert store.download(str(out2), prefix="round/trip", overwrite=True, show_progress=False) == 3
    assert (out2 / "round/trip/a.txt").read_bytes() == b"changed"


def test_upload_files_relative_root_and_default(store, tmp):
    _make_files(tmp, {"data/x/one.csv": b"1", "data/x/two.csv": b"2", "data/y/three.csv": b"3"})
    store.upload_files([str(tmp / "data/x/one.csv")], target_path="train-dataset", overwrite=True,
                       show_progress=False)
    store.upload_files([str(tmp / "data/x/two.csv"), str(tmp / "data/y/three.csv")], relative_root=str(tmp / "data"),
                       target_path="rel", overwrite=True, show_progress=False)
    out = tmp / "out"
    store.download(str(out), prefix="train-dataset", show_progress=False)
    store.download(str(out), prefix="rel", show_progress=False)
    assert _tree(out) == {"train-dataset/one.csv": b"1", "rel/x/two.csv": b"2", "rel/y/three.csv": b"3"}


def test_thousand_small_files(store, tmp):
    files = {f"d{i % 10}/f{i:04d}.txt": f"file {i}".encode() for i in range(1000)}
    _make_files(tmp / "many", files)
    store.upload(str(tmp / "many"), target_path="many", show_progress=False)
    out = tmp / "out"
    assert store.download(str(out), prefix="many", show_progress=False) == 1000
    assert _tree(out / "many") == files


def test_paths_that_escape_are_rejected(store, tmp):
    _make_files(tmp, {"f.txt": b"x", "other/g.txt": b"y"})
    for bad in ("../up", "/abs/path", "a/../../b"):
        with pytest.raises(UserErrorException, match="target_path"):
            store.upload_files([str(tmp / "f.txt")], target_path=bad, show_progress=False)
    with pytest.raises(UserErrorException, match="relative_root"):
        store.upload_files([str(tmp / "other/g.txt")], relative_root=str(tmp / "f.txt"), show_progress=False)
    with pytest.raises(UserErrorException, match="prefix"):
        store.download(str(tmp / "o"), prefix="../x", show_progress=False)
    with pytest.raises(UserErrorException, match="not files"):
        store.upload_files([str(tmp / "missing.txt")], show_progress=False)


LARGE = 200 * 1024 * 1024

_LARGE_SCRIPT = textwrap.dedent("""
    import hashlib, json, os, resource, sys
    from prefect_aml import Workspace, Datastore
    name, src, out = sys.argv[1:4]
    store = Datastore(Workspace(), name)
    store.filesystem().ls(store.root())  # load the client libraries before measuring
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    store.upload_files([src], target_path="large", overwrite=True, show_progress=False)
    store.download(out, prefix="large", overwrite=True, show_progress=False)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    h = hashlib.sha256()
    with open(os.path.join(out, "large", os.path.basename(src)), "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    print(json.dumps({"growth_kb": peak - base, "sha": h.hexdigest()}))
""")


def test_large_file_streams(store, tmp):
    """A 200 MB file goes up and comes back intact while the process's memory stays far below its size."""
    import hashlib

    src = tmp / "big.bin"
    h = hashlib.sha256()
    with open(src, "wb") as f:
        for _ in range(LARGE // (4 << 20)):
            chunk = os.urandom(4 << 20)
            h.update(chunk)
            f.write(chunk)
    res = subprocess.run([sys.executable, "-c", _LARGE_SCRIPT, store.name, str(src), str(tmp / "out")],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    report = json.loads(res.stdout.strip().splitlines()[-1])
    assert report["sha"] == h.hexdigest()
    assert report["growth_kb"] * 1024 < LARGE / 2, report


def test_secrets_stay_secret(ws, request, prefect_server, caplog, tmp):
    from tests.services import make_store

    s3 = make_store("s3", ws, request)
    secret = "testing-secret-value"
    assert secret not in repr(s3) and secret not in str(s3.model_dump())
    with caplog.at_level(logging.DEBUG):
        (tmp / "f.txt").write_text("x")
        s3.upload_files([str(tmp / "f.txt")], show_progress=False)
    assert secret not in caplog.text
    doc = httpx.get(f"{prefect_server}/block_documents/{s3._block_document_id}").json()
    assert doc["data"]["secret_access_key"] != secret and secret not in json.dumps(doc)
    az = make_store("azure", ws, request)
    az_key = az.connection_string.get_secret_value().split("AccountKey=")[1].split(";")[0]
    doc = httpx.get(f"{prefect_server}/block_documents/{az._block_document_id}").json()
    assert az_key not in json.dumps(doc) and az_key not in repr(az)
    # the loaded block can still use the secret
    again = Datastore(ws, az.name)
    assert again.connection_string.get_secret_value() == az.connection_string.get_secret_value()


def test_registration_errors(ws, tmp, request):
    from tests.services import make_store

    with pytest.raises(DatastoreException, match="not supported"):
        Datastore.register_azure_file_share(ws, "files", "share", "acct")
    local = Datastore.register_local(ws, "dup_check", str(tmp / "d1"))
    with pytest.raises(DatastoreException, match="already registered.*overwrite=True"):
        Datastore.register_local(ws, "dup_check", str(tmp / "d2"))
    Datastore.register_local(ws, "dup_check", str(tmp / "d2"), overwrite=True)
    assert Datastore(ws, "dup_check").local_path == str(tmp / "d2")
    with pytest.raises(DatastoreException, match="Did you mean 'dup_check'"):
        Datastore.get(ws, "dup_chek")
    with pytest.raises(DatastoreException, match="not valid"):
        Datastore.register_local(ws, "bad name!", str(tmp))
    with pytest.raises(DatastoreException, match="does not exist.*create_if_not_exists"):
        Datastore.register_s3(ws, "nobucket", bucket_name="no-such-bucket", endpoint_url=request.getfixturevalue("moto"),
                              access_key_id="a", secret_access_key="b")
    local.unregister()
    with pytest.raises(DatastoreException, match="not registered"):
        Datastore.get(ws, "dup_check")
    make_store("local", ws, request)


def test_default_datastore(ws, tmp):
    assert ws.get_default_datastore().name == "workspaceblobstore"
    assert Datastore(ws, "workspacefilestore").name == "workspacefilestore"
    other = Datastore.register_local(ws, "other_default", str(tmp / "o"))
    other.set_as_default()
    try:
        from prefect_aml import Workspace

        assert Workspace().get_default_datastore().name == "other_default"
        assert Datastore.get_default(ws).name == "other_default"
    finally:
        ws.set_default_datastore("workspaceblobstore")
