"""Moving files between a local disk and a datastore: many files at once, large files streamed.

Every byte goes through fsspec. Lists of files are handed to one `fs.put` / `fs.get`, which the
async filesystems (s3fs, adlfs) run concurrently in batches; single files stream in chunks
(multipart / block uploads), so memory stays flat whatever their size.
"""

from __future__ import annotations

import os
import posixpath
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from fsspec.callbacks import Callback, NoOpCallback
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from prefect_aml.exceptions import UserErrorException
from prefect_aml.names import clean_relative
from prefect_aml.pipeline.data import DataReference

if TYPE_CHECKING:
    from prefect_aml.blocks.datastores import DatastoreBlock


class _RichCallback(Callback):
    """An fsspec callback drawing a rich progress bar (files done / files to do)."""

    def __init__(self, description: str, total: int):
        console = Console(stderr=True)
        self._progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            console=console, disable=not console.is_terminal, transient=False,
        )
        self._task = self._progress.add_task(description, total=total)
        self._progress.start()
        super().__init__(size=total)

    def call(self, *args, **kwargs):
        self._progress.update(self._task, completed=self.value)

    def branched(self, path_1, path_2, **kwargs):
        return NoOpCallback()  # per-file byte progress is not drawn; the bar counts files

    def close(self):
        self._progress.update(self._task, completed=self.value)
        self._progress.stop()


def _callback(show_progress: bool, description: str, total: int) -> Callback:
    if show_progress and total:
        return _RichCallback(description, total)
    return Callback()


def _say(message: str) -> None:
    print(message, file=sys.stderr)


def _remote_listing(fs, path: str) -> set[str]:
    try:
        return {p.rstrip("/") for p in fs.find(path)}
    except FileNotFoundError:
        return set()


def _strip_protocol(fs, path: str) -> str:
    return fs._strip_protocol(path).rstrip("/")


def upload_files(
    store: DatastoreBlock,
    files,
    relative_root=None,
    target_path: str | None = None,
    overwrite: bool = False,
    show_progress: bool = True,
):
    if isinstance(files, (str, os.PathLike)):
        files = [files]
    target = clean_relative(target_path, "target_path")
    paths = [Path(f).resolve() for f in files]
    missing = [str(f) for f, p in zip(files, paths, strict=True) if not p.is_file()]
    if missing:
        raise UserErrorException(
            f"upload_files to datastore {store.name!r}: these are not files: {missing[:5]}"
            + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
            + ". Give existing file paths (use upload(src_dir) for a folder)."
        )
    if not paths:
        return DataReference(store, path_on_datastore=target or None)
    if relative_root is None:
        root = Path(os.path.commonpath([str(p.parent) for p in paths]))
    else:
        root = Path(relative_root).resolve()
    rels = []
    for p in paths:
        try:
            rels.append(p.relative_to(root).as_posix())
        except ValueError:
            raise UserErrorException(
                f"upload_files to datastore {store.name!r}: file {str(p)!r} is not under relative_root "
                f"{str(root)!r}; choose a relative_root that contains every file."
            ) from None
    _put(store, [str(p) for p in paths], [posixpath.join(target, r) if target else r for r in rels],
         overwrite, show_progress)
    return DataReference(store, path_on_datastore=target or None)


def upload_dir(store: DatastoreBlock, src_dir, target_path=None, overwrite=False, show_progress=True):
    src = Path(src_dir).resolve()
    if not src.is_dir():
        raise UserErrorException(f"upload to datastore {store.name!r}: {str(src_dir)!r} is not a folder.")
    target = clean_relative(target_path, "target_path")
    lpaths, rels = [], []
    for dirpath, _dirs, names in os.walk(src):
        for name in names:
            full = Path(dirpath, name)
            lpaths.append(str(full))
            rels.append(full.relative_to(src).as_posix())
    _put(store, lpaths, [posixpath.join(target, r) if target else r for r in rels], overwrite, show_progress)
    return DataReference(store, path_on_datastore=target or None)


def _put(store: DatastoreBlock, lpaths: list[str], rels: list[str], overwrite: bool, show_progress: bool) -> None:
    fs = store.filesystem()
    rpaths = [store.full_path(r) for r in rels]
    if not overwrite and rpaths:
        prefix = posixpath.commonpath(rpaths) if len(rpaths) > 1 else posixpath.dirname(rpaths[0])
        existing = _remote_listing(fs, prefix or store.root())
        keep = [i for i, r in enumerate(rpaths) if _strip_protocol(fs, r) not in existing]
        skipped = len(rpaths) - len(keep)
        if skipped:
            _say(f"Skipped {skipped} file(s) already on datastore {store.name!r} (pass overwrite=True to replace them).")
        lpaths = [lpaths[i] for i in keep]
        rpaths = [rpaths[i] for i in keep]
    if not lpaths:
        return
    if getattr(fs, "auto_mkdir", True) is False or fs.protocol in ("file", ("file", "local")):
        for d in {posixpath.dirname(r) for r in rpaths}:
            fs.makedirs(d, exist_ok=True)
    cb = _callback(show_progress, f"Uploading to {store.name}", len(lpaths))
    try:
        fs.put(lpaths, rpaths, callback=cb, **store._transfer_kwargs("put"))
    finally:
        cb.close()
    if show_progress:
        _say(f"Uploaded {len(lpaths)} file(s) to datastore {store.name!r}.")


def download(store: DatastoreBlock, target_path, prefix=None, overwrite=False, show_progress=True) -> int:
    fs = store.filesystem()
    rel_prefix = clean_relative(prefix, "prefix")
    root = _strip_protocol(fs, store.root())
    base = _strip_protocol(fs, store.full_path(rel_prefix))
    try:
        remote = sorted(p.rstrip("/") for p in fs.find(base))  # one listing: a folder's files, or the file itself
    except FileNotFoundError:
        remote = []
    if rel_prefix and not remote:
        # Azure ML prefixes are string prefixes, not only folders ("train-" matches "train-1/a.csv")
        parent = posixpath.dirname(base) or root
        remote = sorted(p for p in fs.find(parent) if p.startswith(base))
    target = Path(target_path).resolve()
    lpaths, rpaths = [], []
    for r in remote:
        rel = posixpath.relpath(r, root)
        local = (target / rel).resolve()
        if local != target and target not in local.parents:
            raise UserErrorException(
                f"download from datastore {store.name!r}: {r!r} would be written outside {str(target)!r}; "
                "rename that file on the datastore."
            )
        if not overwrite and local.exists():
            continue
        lpaths.append(str(local))
        rpaths.append(r)
    skipped = len(remote) - len(rpaths)
    if skipped:
        _say(f"Skipped {skipped} file(s) that already exist under {str(target)!r} (pass overwrite=True to replace them).")
    if not rpaths:
        return 0
    for d in {os.path.dirname(lp) for lp in lpaths}:
        os.makedirs(d, exist_ok=True)
    cb = _callback(show_progress, f"Downloading from {store.name}", len(rpaths))
    try:
        fs.get(rpaths, lpaths, callback=cb, **store._transfer_kwargs("get"))
    finally:
        cb.close()
    if show_progress:
        _say(f"Downloaded {len(rpaths)} file(s) from datastore {store.name!r}.")
    return len(rpaths)
