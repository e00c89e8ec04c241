"""Snapshot hashing: ignore files, the stat cache, and what a change does to the hash."""

from __future__ import annotations

import os

from prefect_aml.tasks.snapshots import file_hashes, list_files, scan, snapshot_id


def _tree(root, files):
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)


def test_amlignore_wins_over_gitignore(tmp):
    _tree(tmp, {"a.py": b"a", "data/big.csv": b"x", "logs/x.log": b"l", ".git/HEAD": b"ref",
                ".gitignore": b"logs/\n", ".amlignore": b"data/\n"})
    assert list_files(tmp) == [".amlignore", ".gitignore", "a.py", "logs/x.log"]
    (tmp / ".amlignore").unlink()
    assert list_files(tmp) == [".gitignore", "a.py", "data/big.csv"]


def test_stat_cache_sees_changes(tmp):
    src, cache = tmp / "src", tmp / "cache"
    _tree(src, {"a.py": b"print(1)", "pkg/b.py": b"x = 2"})
    first = file_hashes(src, scan(src), cache)
    assert file_hashes(src, scan(src), cache) == first  # warm: served from the cache
    (src / "a.py").write_bytes(b"print(2)")  # same size, new content
    st = os.stat(src / "a.py")
    os.utime(src / "a.py", ns=(st.st_atime_ns, st.st_mtime_ns + 1000))
    second = file_hashes(src, scan(src), cache)
    assert second["a.py"] != first["a.py"] and second["pkg/b.py"] == first["pkg/b.py"]
    assert snapshot_id(second) != snapshot_id(first)
    assert file_hashes(src, scan(src)) == second  # no cache: same answer


class _FolderStore:
    """The two calls snapshots make of a datastore, on a local folder."""

    def __init__(self, root):
        self.root = root

    def filesystem(self):
        import fsspec
        return fsspec.filesystem("file", auto_mkdir=True)

    def full_path(self, rel):
        return str(self.root / rel)


def _read_tree(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_restore_from_memory_and_from_archive_give_the_same_tree(tmp, monkeypatch):
    from prefect_aml.tasks import snapshots

    src = tmp / "src"
    files = {"train.py": b"print('t')\n", "pkg/__init__.py": b"", "pkg/deep/util.py": b"x = 1\n" * 500,
             ".amlignore": b"logs/\n", "logs/skip.log": b"no"}
    _tree(src, files)
    store = _FolderStore(tmp / "store")
    sid, _ = snapshots.ensure_snapshot(store, src, tmp / "cache")
    expected = {k: v for k, v in files.items() if not k.startswith("logs/")}

    snapshots._MEMBERS.pop(sid, None)
    snapshots.restore_snapshot(store, sid, tmp / "a", tmp / "cache")
    assert sid in snapshots._MEMBERS  # small: kept in memory
    snapshots.restore_snapshot(store, sid, tmp / "b", tmp / "cache")  # served from memory
    (tmp / "c").mkdir()
    (tmp / "c" / "train.py").write_bytes(b"an older, longer file that must be replaced entirely")
    snapshots.restore_snapshot(store, sid, tmp / "c", tmp / "cache")
    monkeypatch.setattr(snapshots, "MEMORY_SNAPSHOT_BYTES", 0)
    snapshots._MEMBERS.pop(sid, None)
    snapshots.restore_snapshot(store, sid, tmp / "d", tmp / "cache")  # too big for memory: extracted
    assert sid not in snapshots._MEMBERS
    for d in "abcd":
        assert _read_tree(tmp / d) == expected, d


def test_memory_kept_for_snapshots_is_bounded(tmp, monkeypatch):
    from prefect_aml.tasks import snapshots

    monkeypatch.setattr(snapshots, "_MEMBERS", snapshots.OrderedDict())
    monkeypatch.setattr(snapshots, "MEMORY_TOTAL_BYTES", 2500)
    store = _FolderStore(tmp / "store")
    sids = []
    for i in range(3):
        _tree(tmp / f"s{i}", {"f.py": bytes([65 + i]) * 1000})
        sid, _ = snapshots.ensure_snapshot(store, tmp / f"s{i}", tmp / "cache")
        snapshots.restore_snapshot(store, sid, tmp / f"out{i}", tmp / "cache")
        sids.append(sid)
    assert list(snapshots._MEMBERS) == sids[1:]  # the oldest went first
    for i in range(3):
        assert (tmp / f"out{i}" / "f.py").read_bytes() == bytes([65 + i]) * 1000
