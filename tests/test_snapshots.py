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
