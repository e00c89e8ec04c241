"""Datasets: lazy File and Tabular definitions over datastore files, and an immutable, versioned registry.

    iris = Dataset.Tabular.from_delimited_files([(store, "train-dataset/*.csv")])
    df = iris.filter(iris["sepal_length"] > 5).take(100).keep_columns(["sepal_length", "species"]).to_pandas_dataframe()
    step = PythonScriptStep("train.py", arguments=["--data", iris.as_named_input("iris").as_download()])

A definition names datastores and glob patterns plus read options and lazy operations; nothing is
read until asked (`to_pandas_dataframe`, `to_batches`, `download`, `mount`, `to_path`). Tabular
reads go through `pyarrow.dataset` (`_tabular`; conditions in `_expr`). In a pipeline,
`as_named_input(name)` hands the step the dataset itself (`Run.get_context().input_datasets[name]`),
`.as_download()` / `.as_mount()` a local path; the files' fingerprints are part of the step's reuse key.

A registered version pins its data: it keeps a fingerprint of every file it matched (path, size,
ETag or content hash). Reading a version whose files changed since it was registered fails with
`DatasetChangedError` naming the files; it never silently returns the new data.
"""

from __future__ import annotations

import difflib
import os
import posixpath
import random
import re
import shutil
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect.artifacts import create_table_artifact
from prefect.context import FlowRunContext, TaskRunContext

from prefect_aml import _expr, _runctx, workspace
from prefect_aml.blocks import saved_blocks
from prefect_aml.blocks.datasets import DatasetVersion, version_block_name
from prefect_aml.blocks.datastores import AzureBlobDatastore, LocalDatastore, S3Datastore
from prefect_aml.datastore import Datastore
from prefect_aml.exceptions import DatasetChangedError, UserErrorException
from prefect_aml.names import artifact_key
from prefect_aml.pipeline.data import DataPath, InputPort, datastore_name, partition_option, tabular_options
from prefect_aml.records import digest, file_tag, find_detail
from prefect_aml.workspace import Workspace

ITEMS_LIMIT = 20_000  # files whose identity a registered version lists one by one (beyond: only the digest)


def _tabular():
    """The table reader, on first use: pyarrow and pandas load only when a table is read (not at import)."""
    from prefect_aml import _tabular

    return _tabular


# -- paths -----------------------------------------------------------------------------------------
def _url_prefixes(store) -> list[str]:
    """Every URL prefix that names `store`'s root (s3://bucket, https://acct.blob.core.windows.net/c, ...)."""
    if isinstance(store, LocalDatastore):
        return [f"file://{store.root()}", store.root()]
    if isinstance(store, S3Datastore):
        return [f"s3://{store.bucket_name}", f"s3a://{store.bucket_name}"]
    if isinstance(store, AzureBlobDatastore):
        c, a = store.container_name, store.account_name
        out = [f"abfs://{c}", f"abfss://{c}", f"az://{c}"]
        if a:
            out += [f"https://{a}.blob.core.windows.net/{c}", f"https://{a}.dfs.core.windows.net/{c}",
                    f"wasbs://{c}@{a}.blob.core.windows.net", f"abfss://{c}@{a}.dfs.core.windows.net"]
        return out
    return []


def _resolve_url(url: str) -> tuple[Any, str]:
    """(datastore, path) for a URL or absolute path, from the workspace's registered datastores."""
    target = url.rstrip("/")
    best: tuple[int, Any, str] | None = None
    for store in Workspace.from_config().datastores.values():
        for prefix in _url_prefixes(store):
            if target == prefix or target.startswith(prefix.rstrip("/") + "/"):
                if best is None or len(prefix) > best[0]:
                    best = (len(prefix), store, target[len(prefix):].lstrip("/"))
    if best is None:
        raise UserErrorException(
            f"No registered datastore holds {url!r}: register one for it (Datastore.register_s3, "
            "register_azure_blob_container or register_local), or pass (datastore, 'path/**/*.csv')."
        )
    return best[1], best[2]


def _paths(path: Any) -> list[tuple[Any, str]]:
    """Normalise Azure ML's path forms: a DataPath, a (datastore, pattern) tuple, a URL, or a list of them."""
    items = path if isinstance(path, list) else [path]
    out = []
    for item in items:
        if isinstance(item, DataPath):
            out.append((item.datastore or item.datastore_name, item.path_on_datastore))
        elif isinstance(item, tuple) and len(item) == 2:
            out.append((item[0], str(item[1])))
        elif isinstance(item, str) and (re.match(r"^[a-z][a-z0-9+.-]*://", item, re.I) or item.startswith("/")):
            out.append(_resolve_url(item))
        else:
            raise UserErrorException(
                f"Dataset path {item!r} is not supported: give a DataPath, a (datastore, 'folder/**/*.csv') tuple, "
                "a URL of a registered datastore (s3://bucket/..., https://account.blob.core.windows.net/...), "
                "or a list of them."
            )
    if not out:
        raise UserErrorException("A dataset needs at least one path.")
    return out


def _listing(fs, full: str, pattern: str) -> dict[str, dict]:
    """{path: info} of the files under `full` (a folder, a file or a glob), from one listing."""
    if any(c in pattern for c in "*?["):
        found = fs.glob(full, detail=True)
        if isinstance(found, list):
            found = {p: fs.info(p) for p in found}
    else:
        found = find_detail(fs, full)
    out = {}
    for p, info in found.items():
        if not info:
            info = fs.info(p)
        if info.get("type", "file") != "directory":
            out[fs._strip_protocol(p)] = info
    return out


def _compare(old: list, new: list) -> dict[str, list[str]]:
    """Files ("datastore:path") added, removed and changed from one list of fingerprint items to another."""
    before = {f"{s}:{p}": (size, tag) for s, p, size, tag in old}
    after = {f"{s}:{p}": (size, tag) for s, p, size, tag in new}
    return {"added": sorted(set(after) - set(before)), "removed": sorted(set(before) - set(after)),
            "changed": sorted(k for k in before if k in after and before[k] != after[k]),
            "unchanged": sorted(k for k in before if k in after and before[k] == after[k])}


def _describe_change(old: list, new: list) -> str:
    diff = _compare(old, new)
    parts = [f"{k} {what}" for what in ("changed", "added", "removed") for k in diff[what]]
    return ", ".join(parts[:5]) + (f" and {len(parts) - 5} more" if len(parts) > 5 else "")


def _layout(files: list[tuple[Any, str]], target: Path) -> list[Path]:
    """Where each file goes under `target`: its path below the files' common folder (as Azure ML lays them out)."""
    base = posixpath.commonpath([posixpath.dirname(p) for _, p in files]) if files else ""
    return [target / (posixpath.relpath(rel, base) if base else rel) for _, rel in files]


class MountContext:
    """A read-only local view of a FileDataset: `with ds.mount() as m: os.listdir(m.mount_point)`.

    Files on a local datastore are linked (nothing is copied); files on S3 or Azure Blob are
    downloaded when the context starts. The view is removed when it stops.
    """

    def __init__(self, dataset: _Dataset, mount_point: str | os.PathLike | None = None):
        self._dataset = dataset
        self._given = mount_point is not None
        self.mount_point = str(mount_point) if mount_point is not None else None
        self._started = False

    def start(self) -> MountContext:
        files = self._dataset._files()
        if not files:
            raise UserErrorException(f"{self._dataset!r} matches no files; check the paths and patterns.")
        if self._given:
            target = Path(self.mount_point)
            if target.exists() and any(target.iterdir()):
                raise UserErrorException(f"Mount point {str(target)!r} is not empty: give an empty or new folder.")
            target.mkdir(parents=True, exist_ok=True)
        else:
            target = Path(tempfile.mkdtemp(prefix="aml-mount-"))
        self.mount_point = str(target)
        try:
            for (store, rel), local in zip(files, _layout(files, target), strict=True):
                local.parent.mkdir(parents=True, exist_ok=True)
                if isinstance(store, LocalDatastore):
                    local.symlink_to(store.full_path(rel))
                else:
                    store.filesystem().get(store.full_path(rel), str(local))
        except BaseException:
            self._clear()
            raise
        self._started = True
        return self

    def _clear(self) -> None:
        target = Path(self.mount_point)
        if self._given:
            for child in target.iterdir():
                shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
        else:
            shutil.rmtree(target, ignore_errors=True)

    def stop(self) -> None:
        if self._started:
            self._clear()
            self._started = False

    def __enter__(self) -> MountContext:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class _Dataset:
    _kind = ""

    def __init__(self, paths: list[tuple[Any, str]], options: dict | None = None, ops: list | None = None):
        self._stores = {datastore_name(s): s for s, _ in paths if s is not None and not isinstance(s, str)}
        self._paths = [(datastore_name(s), p.lstrip("/")) for s, p in paths]
        self._options = dict(options or {})
        self._ops = list(ops or [])
        self.name: str | None = None
        self.version: int | None = None
        self.description: str | None = None
        self.tags: dict = {}
        self._resolver = None  # name -> datastore, set when a pipeline run hands the dataset over
        self._id: str | None = None
        self._pin: dict | None = None  # {"name", "version", "digest"} of a registered version
        self._registered_items: list | None = None

    # -- definition
    def _derive(self, op: list) -> _Dataset:
        new = type(self)([(self._stores.get(d, d), p) for d, p in self._paths], self._options, [*self._ops, op])
        new._resolver, new._pin, new._registered_items = self._resolver, self._pin, self._registered_items
        return new

    def _definition(self) -> dict:
        return {"kind": self._kind, "paths": [list(p) for p in self._paths], "options": self._options,
                "ops": self._ops}

    @staticmethod
    def _from_definition(definition: dict, resolver=None) -> _Dataset:
        kind = {"file": FileDataset, "tabular": TabularDataset}[definition["kind"]]
        ds = kind([(d, p) for d, p in definition["paths"]], definition["options"], definition["ops"])
        ds._resolver = resolver
        pin = definition.get("pin")
        if pin:
            ds._pin = {k: pin[k] for k in ("name", "version", "digest")}
            ds._registered_items = pin.get("items")
        return ds

    def _input_spec(self) -> dict:
        if not self._pin:
            return {"type": "dataset", **self._definition()}
        pin = dict(self._pin)
        if self._registered_items is not None and len(self._registered_items) <= 1000:
            pin["items"] = self._registered_items  # lets a changed version name its changed files
        return {"type": "dataset", **self._definition(), "pin": pin}

    def __repr__(self) -> str:
        named = f"name={self.name!r}, version={self.version}, " if self.name else ""
        return f"{type(self).__name__}({named}paths={self._paths!r})"

    # -- the registry
    @property
    def id(self) -> str | None:
        return self._id

    def _fingerprint(self, items: bool = False, check: bool = False) -> dict:
        found = self._fingerprint_items(check)
        out = {"files": len(found), "digest": digest(found)}
        if items and len(found) <= ITEMS_LIMIT:
            out["items"] = found
        return out

    def _fingerprint_items(self, check: bool = False) -> list:
        return [[s.name, rel, info.get("size"), tag] for s, rel, info, tag in self._scan(check=check, tags=True)]

    def register(self, workspace, name: str, description: str | None = None, tags: dict | None = None,
                 create_new_version: bool = False) -> _Dataset:
        """Register this definition under `name`: version 1, or a new version when the definition or data changed."""
        if not isinstance(name, str) or not name.strip():
            raise UserErrorException(f"Dataset name {name!r} is not valid: give a non-empty string.")
        versions = _versions(workspace, name)
        fingerprint = self._fingerprint(items=True)
        if versions:
            latest = versions[-1]
            if latest.definition == self._definition() and latest.fingerprint["digest"] == fingerprint["digest"]:
                return _from_block(latest, workspace)  # unchanged definition over unchanged data: no new version
            if not create_new_version:
                raise UserErrorException(
                    f"Dataset {name!r} is already registered (latest version {latest.version}); pass "
                    "create_new_version=True to add a version, or register under another name."
                )
        version = versions[-1].version + 1 if versions else 1
        block = DatasetVersion(dataset_name=name, version=version, definition=self._definition(),
                               fingerprint=fingerprint, description=description,
                               tags={str(k): str(v) for k, v in (tags or {}).items()},
                               registered=datetime.now(UTC).isoformat())
        try:
            with workspace.prefect():  # versions are immutable: a version of that number is never overwritten
                block.save(version_block_name(name, version), overwrite=False, _sync=True)
        except ValueError as err:
            raise UserErrorException(f"Dataset {name!r} version {version} was registered at the same time by "
                                     f"another client; register again. ({err})") from None
        return _from_block(block, workspace)

    # -- consumption in a pipeline
    def as_named_input(self, name: str) -> InputPort:
        return InputPort(self, mode="direct", name=name)

    def as_download(self, path_on_compute: str | None = None) -> InputPort:
        return InputPort(self, mode="download", path_on_compute=path_on_compute)

    def as_mount(self, path_on_compute: str | None = None) -> InputPort:
        return InputPort(self, mode="mount", path_on_compute=path_on_compute)

    # -- files
    def _store(self, name: str | None):
        if name not in self._stores:
            if self._resolver is not None:  # inside a pipeline run: the run's datastores
                self._stores[name] = self._resolver(name)
            else:
                ws = Workspace.from_config()
                self._stores[name] = Datastore.get(ws, name) if name else ws.get_default_datastore()
        return self._stores[name]

    def _scan(self, check: bool = True, tags: bool = False) -> list[tuple[Any, str, dict, str | None]]:
        """(datastore, path relative to its root, info, tag) of every file the definition matches, sorted.

        For a registered version, `check` compares the files with those it was registered over; tags
        (ETag, or a content hash for small local files) are computed only for that or when asked."""
        tags = tags or bool(check and self._pin)
        found = []
        for ds_name, pattern in self._paths:
            store = self._store(ds_name)
            fs = store.filesystem()
            local = fs.protocol in ("file", ("file", "local"))
            root = fs._strip_protocol(store.root()).rstrip("/")
            full = fs._strip_protocol(store.full_path(pattern)) if pattern else root
            for p, info in sorted(_listing(fs, full, pattern).items()):
                found.append((store, posixpath.relpath(p, root), info, file_tag(local, p, info) if tags else None))
        if check and self._pin:
            items = [[s.name, rel, info.get("size"), tag] for s, rel, info, tag in found]
            if digest(items) != self._pin["digest"]:
                what = _describe_change(self._registered_items, items) if self._registered_items else (
                    f"{len(items)} files now")
                raise DatasetChangedError(
                    f"Dataset {self._pin['name']!r} version {self._pin['version']}: its files changed since it was "
                    f"registered ({what}). A version pins its data: register the current files as a new version "
                    "(create_new_version=True), or restore the files."
                )
        return found

    def _files(self) -> list[tuple[Any, str]]:
        return [(s, rel) for s, rel, _, _ in self._scan()]

    def to_path(self) -> list[str]:
        """The files' paths, relative to the common folder of the dataset (as Azure ML lists them)."""
        return ["/" + p.as_posix() for p in _layout(self._files(), Path())]

    def download(self, target_path: str | os.PathLike | None = None, overwrite: bool = False) -> list[str]:
        """Copy the files under `target_path` (keeping their paths below the common folder); returns the paths."""
        files = self._files()
        if not files:
            raise UserErrorException(f"{self!r} matches no files; check the paths and patterns.")
        target = Path(target_path or os.getcwd()).resolve()
        plan = [(store, rel, local) for (store, rel), local in zip(files, _layout(files, target), strict=True)]
        existing = [str(local) for _, _, local in plan if local.exists()]
        if existing and not overwrite:  # checked for every file before any is written
            raise UserErrorException(f"{existing[0]!r} exists ({len(existing)} file(s) in all): pass overwrite=True "
                                     "to replace them.")
        for store, rel, local in plan:
            local.parent.mkdir(parents=True, exist_ok=True)
            store.filesystem().get(store.full_path(rel), str(local))
        return [str(local) for _, _, local in plan]

    def diff(self, other: _Dataset) -> dict:
        """What differs from this dataset to `other` (e.g. version 1 to version 2): files added, removed and
        changed; for tables also columns and rows (rows compared by content, as a multiset)."""
        def items(ds: _Dataset) -> list:
            return ds._registered_items if ds._registered_items is not None else ds._fingerprint_items()

        files = _compare(items(self), items(other))
        out: dict[str, Any] = {"files": {**files, "unchanged": len(files["unchanged"])}}
        if isinstance(self, TabularDataset) and isinstance(other, TabularDataset):
            try:
                left, right = self.to_pandas_dataframe(), other.to_pandas_dataframe()
            except DatasetChangedError as err:
                out["columns"] = out["rows"] = None
                out["note"] = f"rows and columns not compared: {err}"
                return out
            out["columns"] = {"added": [c for c in right.columns if c not in left.columns],
                              "removed": [c for c in left.columns if c not in right.columns],
                              "changed": {c: f"{left[c].dtype} -> {right[c].dtype}" for c in left.columns
                                          if c in right.columns and left[c].dtype != right[c].dtype}}
            common = [c for c in left.columns if c in right.columns]
            out["rows"] = {"before": len(left), "after": len(right), **_row_changes(left[common], right[common])}
        return out


def _row_changes(left, right) -> dict:
    import pandas as pd  # loaded by the tables compared already; not at import

    lc = pd.util.hash_pandas_object(left.astype(str), index=False).value_counts()
    rc = pd.util.hash_pandas_object(right.astype(str), index=False).value_counts()
    both = lc.index.union(rc.index)
    delta = rc.reindex(both, fill_value=0) - lc.reindex(both, fill_value=0)
    return {"added": int(delta[delta > 0].sum()), "removed": int(-delta[delta < 0].sum())}


class FileDataset(_Dataset):
    """References to files on datastores."""

    _kind = "file"

    def mount(self, mount_point: str | os.PathLike | None = None, **kwargs) -> MountContext:
        """A context manager giving a local folder with the dataset's files (see MountContext)."""
        return MountContext(self, mount_point)


class TabularDataset(_Dataset):
    """A table read from delimited or parquet files; operations are lazy until a read."""

    _kind = "tabular"

    def __getitem__(self, column: str) -> _expr.ColumnExpression:
        """A column, for conditions: `ds.filter(ds["age"] > 30)`."""
        if not isinstance(column, str):
            raise UserErrorException(f"Index a dataset by a column name, e.g. ds['age']; got {column!r}.")
        return _expr.ColumnExpression(["col", column])

    def take(self, count: int) -> TabularDataset:
        return self._derive(["take", int(count)])

    def skip(self, count: int) -> TabularDataset:
        return self._derive(["skip", int(count)])

    def keep_columns(self, columns, validate: bool = False) -> TabularDataset:
        return self._derive(["keep", [columns] if isinstance(columns, str) else list(columns)])

    def drop_columns(self, columns) -> TabularDataset:
        return self._derive(["drop", [columns] if isinstance(columns, str) else list(columns)])

    def filter(self, expression: _expr.ColumnExpression) -> TabularDataset:
        """Rows where `expression` holds, e.g. `ds.filter((ds["a"] > 1) & ds["b"].starts_with("x"))`."""
        if not isinstance(expression, _expr.ColumnExpression):
            raise UserErrorException(f"filter() takes a condition built from columns, e.g. ds.filter(ds['a'] > 1); "
                                     f"got {expression!r}.")
        return self._derive(["filter", expression._node])

    @staticmethod
    def _seed(seed: int | None) -> int:
        if seed is None:
            return random.SystemRandom().randrange(2**62)  # fixed into the definition: the same rows every read
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise UserErrorException(f"seed {seed!r} must be an integer.")
        return seed

    def take_sample(self, probability: float, seed: int | None = None) -> TabularDataset:
        """Each row with `probability` (a Bernoulli sample); the same rows on every read."""
        if not 0.0 <= float(probability) <= 1.0:
            raise UserErrorException(f"take_sample: probability {probability!r} must be between 0 and 1.")
        return self._derive(["sample", float(probability), self._seed(seed)])

    def random_split(self, percentage: float, seed: int | None = None) -> tuple[TabularDataset, TabularDataset]:
        """Two datasets: about `percentage` of the rows, and the rest (disjoint, together the whole)."""
        if not 0.0 < float(percentage) < 1.0:
            raise UserErrorException(f"random_split: percentage {percentage!r} must be between 0 and 1 (exclusive).")
        seed = self._seed(seed)
        return (self._derive(["split", float(percentage), seed, 0]),
                self._derive(["split", float(percentage), seed, 1]))

    # -- reading
    def _arrow(self):
        files = self._files()
        if not files:
            raise UserErrorException(f"{self!r} matches no files; check the paths and patterns.")
        return _tabular().arrow_dataset(files, self._options)

    def to_pandas_dataframe(self):
        """Read the table (only the columns and files needed; pyarrow's multi-threaded readers, or pandas'
        CSV parser for delimited files read whole, which gives the same frame faster)."""
        dataset = self._arrow()
        df = _tabular().read_pandas(dataset, self._ops)
        return df if df is not None else _tabular().read_table(dataset, self._ops).to_pandas()

    def to_batches(self, batch_size: int | None = None) -> Iterator:
        """The rows as a stream of `pyarrow.RecordBatch` (`.to_pandas()` each), for tables larger than memory."""
        return _tabular().stream(self._arrow(), self._ops, batch_size=batch_size, lean=True)[1]

    def get_profile(self):
        """Per-column summary statistics (one streaming pass); a table artifact when computed in a run."""
        df = _tabular().profile(*_tabular().stream(self._arrow(), self._ops, lean=True))
        _publish_profile(self.name or "dataset", df)
        return df

    describe = get_profile


def _publish_profile(label: str, df) -> None:
    """Show a profile in the run that computed it: a step script's metric table, or a Prefect table artifact."""
    rows = [{"column": str(c), **{k: (v if isinstance(v, (int, float, str)) or v is None else str(v))
                                  for k, v in df[c].items()}} for c in df.columns]
    step = _runctx.load()
    if step is not None:
        _runctx.emit(step["dir"], f"profile {label}", "table", {k: [r[k] for r in rows] for k in rows[0]} if rows else {})
        return
    if FlowRunContext.get() or TaskRunContext.get():
        create_table_artifact(rows, key=artifact_key("profile", label), description=f"Profile of dataset {label}")


def _versions(workspace, name: str) -> list:
    """Every registered version of `name`, oldest first."""
    return [b for b in _all_versions(workspace) if b.dataset_name == name]


def _all_versions(workspace) -> list:
    with workspace.client() as client:
        blocks = saved_blocks(client, DatasetVersion)
    return sorted(blocks, key=lambda b: (b.dataset_name, b.version))


def _from_block(block, workspace) -> _Dataset:
    def resolve(name):
        return Datastore.get(workspace, name) if name else workspace.get_default_datastore()

    ds = _Dataset._from_definition(block.definition, resolve)
    ds.name, ds.version, ds.description, ds.tags = block.dataset_name, block.version, block.description, block.tags
    ds._id = str(block._block_document_id) if block._block_document_id else None
    ds._pin = {"name": block.dataset_name, "version": block.version, "digest": block.fingerprint["digest"]}
    ds._registered_items = block.fingerprint.get("items")
    return ds


def output_dataset(store, path: str, tabular: dict | None) -> _Dataset:
    """The dataset over a step output's folder: Tabular with `tabular`'s read options, else File."""
    options = dict(tabular or {})
    glob = options.pop("path_glob", None)
    where = f"{path}/{glob.lstrip('/')}" if glob else path
    return TabularDataset([(store, where)], options) if tabular is not None else FileDataset([(store, where)])


def _validated(ds: _Dataset, what: str, validate: bool) -> _Dataset:
    if validate and not ds._files():
        raise UserErrorException(f"{what}: {ds._paths} matches no files (or pass validate=False).")
    return ds


class _FileFactory:
    @staticmethod
    def from_files(path, validate: bool = True, partition_format: str | None = None,
                   is_file: bool = False) -> FileDataset:
        return _validated(FileDataset(_paths(path), partition_option(partition_format)), "Dataset.File.from_files",
                          validate)


class _TabularFactory:
    @staticmethod
    def from_delimited_files(path, validate: bool = True, include_path: bool = False, infer_column_types: bool = True,
                             set_column_types=None, separator: str = ",", header: bool = True,
                             partition_format: str | None = None, support_multi_line: bool = False,
                             empty_as_string: bool = False, encoding: str = "utf8") -> TabularDataset:
        if encoding.lower().replace("-", "") not in ("utf8", "ascii"):
            raise UserErrorException(f"from_delimited_files: encoding {encoding!r} is not supported; "
                                     "convert the files to UTF-8.")
        options = tabular_options("delimited", include_path, set_column_types, partition_format,
                                   separator=separator, header=bool(header),
                                   infer_column_types=bool(infer_column_types),
                                   support_multi_line=bool(support_multi_line), empty_as_string=bool(empty_as_string))
        return _validated(TabularDataset(_paths(path), options), "Dataset.Tabular.from_delimited_files", validate)

    @staticmethod
    def from_parquet_files(path, validate: bool = True, include_path: bool = False,
                           set_column_types=None, partition_format: str | None = None) -> TabularDataset:
        options = tabular_options("parquet", include_path, set_column_types, partition_format)
        return _validated(TabularDataset(_paths(path), options), "Dataset.Tabular.from_parquet_files", validate)


class Dataset:
    """Azure ML's `Dataset`: `Dataset.File.from_files(...)`, `Dataset.Tabular.from_delimited_files(...)`,
    and the registry (`get_by_name`, `get_by_id`, `get_all`)."""

    File = _FileFactory
    Tabular = _TabularFactory

    @staticmethod
    def get_by_name(workspace, name: str, version: int | str = "latest") -> _Dataset:
        versions = _versions(workspace, name)
        if not versions:
            known = sorted({b.dataset_name for b in _all_versions(workspace)})
            close = difflib.get_close_matches(name, known, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else f" Registered datasets: {known}."
            raise UserErrorException(f"Dataset {name!r} is not registered.{hint}")
        if version == "latest":
            return _from_block(versions[-1], workspace)
        for b in versions:
            if str(b.version) == str(version):
                return _from_block(b, workspace)
        raise UserErrorException(f"Dataset {name!r} has no version {version}; versions: "
                                 f"{[b.version for b in versions]}.")

    @staticmethod
    def get_by_id(workspace, id: str) -> _Dataset:
        for b in _all_versions(workspace):
            if str(b._block_document_id) == str(id):
                return _from_block(b, workspace)
        raise UserErrorException(f"No registered dataset version has id {id!r}.")

    @staticmethod
    def get_all(workspace) -> dict[str, _Dataset]:
        """The latest version of every registered dataset, by name."""
        latest: dict[str, Any] = {}
        for b in _all_versions(workspace):
            latest[b.dataset_name] = b
        return {n: _from_block(b, workspace) for n, b in latest.items()}


@workspace.collection("datasets")
def _datasets(ws) -> dict[str, _Dataset]:
    """`ws.datasets`: the latest version of every registered dataset, by name."""
    return Dataset.get_all(ws)
