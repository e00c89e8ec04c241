"""Source snapshots: each `source_directory` hashed, archived once per content hash, restored per step run.

`.amlignore` wins over `.gitignore` (gitignore semantics through `pathspec`); `.git/` is never
included. Beyond Azure ML's limits (300 MB or 2,000 files) a warning is printed, not an error.
"""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import warnings
import zipfile
from pathlib import Path

import pathspec

SNAPSHOT_PREFIX = "azureml/snapshots"
WARN_BYTES = 300 * 1024 * 1024
WARN_FILES = 2000


def _ignore_spec(src: Path) -> pathspec.PathSpec:
    lines: list[str] = [".git/"]
    for name in (".amlignore", ".gitignore"):
        f = src / name
        if f.is_file():
            lines += f.read_text().splitlines()
            break
    return pathspec.PathSpec.from_lines("gitignore", lines)


def list_files(src: str | os.PathLike) -> list[str]:
    """The files of a source directory that go into its snapshot, as sorted POSIX relative paths."""
    root = Path(src)
    spec = _ignore_spec(root)
    files = []
    for dirpath, dirs, names in os.walk(root):
        rel_dir = Path(dirpath).relative_to(root).as_posix()
        rel_dir = "" if rel_dir == "." else rel_dir + "/"
        dirs[:] = [d for d in dirs if not spec.match_file(rel_dir + d + "/")]
        files += [rel_dir + n for n in names if not spec.match_file(rel_dir + n)]
    return sorted(files)


def file_hashes(src: str | os.PathLike, files: list[str] | None = None) -> dict[str, str]:
    root = Path(src)
    out = {}
    for rel in files if files is not None else list_files(root):
        h = hashlib.sha256()
        with open(root / rel, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        out[rel] = h.hexdigest()
    return out


def snapshot_id(hashes: dict[str, str]) -> str:
    h = hashlib.sha256()
    for rel in sorted(hashes):
        h.update(f"{rel}\0{hashes[rel]}\n".encode())
    return h.hexdigest()[:40]


def git_info(src: str | os.PathLike) -> dict | None:
    """Repository, branch, commit and dirty flag when `src` is inside a git work tree."""
    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", "-C", str(src), *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    top = git("rev-parse", "--show-toplevel")
    if not top:
        return None
    return {
        "repository": git("config", "--get", "remote.origin.url") or top,
        "branch": git("rev-parse", "--abbrev-ref", "HEAD"),
        "commit": git("rev-parse", "HEAD"),
        "dirty": bool(git("status", "--porcelain")),
    }


def ensure_snapshot(store, src: str | os.PathLike) -> tuple[str, dict[str, str]]:
    """Hash `src` and store its archive on `store` unless that content is already there."""
    root = Path(src)
    files = list_files(root)
    size = sum((root / f).stat().st_size for f in files)
    if size > WARN_BYTES or len(files) > WARN_FILES:
        warnings.warn(
            f"Snapshot of {str(root)!r} holds {len(files)} files, {size / 1e6:.0f} MB (Azure ML's limits: 2,000 "
            "files, 300 MB). Add what the steps do not need to .amlignore to keep runs fast.", stacklevel=2,
        )
    hashes = file_hashes(root, files)
    sid = snapshot_id(hashes)
    fs = store.filesystem()
    target = store.full_path(f"{SNAPSHOT_PREFIX}/{sid}.zip")
    if not fs.exists(target):
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
            for rel in files:
                z.write(root / rel, rel)
        tmp = f"{target}.{os.getpid()}.partial"
        with fs.open(tmp, "wb") as f:
            f.write(buf.getvalue())
        fs.mv(tmp, target)
    return sid, hashes


def restore_snapshot(store, sid: str, dest: str | os.PathLike, cache_dir: str | os.PathLike) -> None:
    """Extract snapshot `sid` into `dest` (the archive is cached locally, once per hash)."""
    cache = Path(cache_dir) / f"{sid}.zip"
    if not cache.exists():
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(f".{os.getpid()}.partial")
        store.filesystem().get(store.full_path(f"{SNAPSHOT_PREFIX}/{sid}.zip"), str(tmp))
        os.replace(tmp, cache)
    with zipfile.ZipFile(cache) as z:
        z.extractall(dest)
