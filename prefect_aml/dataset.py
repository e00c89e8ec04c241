"""Datasets: lazy File and Tabular definitions over datastore files.

    iris = Dataset.Tabular.from_delimited_files([(store, "train-dataset/iris.csv")])
    df = iris.take(100).keep_columns(["sepal_length", "species"]).to_pandas_dataframe()
    step = PythonScriptStep("train.py", arguments=["--data", iris.as_named_input("iris").as_download()])

A definition names datastores and glob patterns plus read options; nothing is read until asked
(`to_pandas_dataframe`, `download`, `to_path`). Tabular reads go through `pyarrow.dataset`.
In a pipeline, `as_named_input(name)` hands the step the dataset itself (`Run.get_context().
input_datasets[name]`), `.as_download()` / `.as_mount()` a local path; the files' fingerprints
are part of the step's reuse key.
"""

from __future__ import annotations

import os
import posixpath
from pathlib import Path
from typing import Any

from prefect_aml.exceptions import UserErrorException
from prefect_aml.pipeline.data import DataPath, InputPort, datastore_name


def _paths(path: Any) -> list[tuple[Any, str]]:
    """Normalise Azure ML's path forms: a DataPath, a (datastore, pattern) tuple, or a list of them."""
    items = path if isinstance(path, list) else [path]
    out = []
    for item in items:
        if isinstance(item, DataPath):
            out.append((item.datastore or item.datastore_name, item.path_on_datastore))
        elif isinstance(item, tuple) and len(item) == 2:
            out.append((item[0], str(item[1])))
        else:
            raise UserErrorException(
                f"Dataset path {item!r} is not supported: give a DataPath, a (datastore, 'folder/**/*.csv') tuple, "
                "or a list of them."
            )
    if not out:
        raise UserErrorException("A dataset needs at least one path.")
    return out


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

    # -- definition
    def _derive(self, op: list) -> _Dataset:
        new = type(self)([(self._stores.get(d, d), p) for d, p in self._paths], self._options, [*self._ops, op])
        new._resolver = self._resolver
        return new

    def _definition(self) -> dict:
        return {"kind": self._kind, "paths": [list(p) for p in self._paths], "options": self._options,
                "ops": self._ops}

    @staticmethod
    def _from_definition(definition: dict, resolver=None) -> _Dataset:
        kind = {"file": FileDataset, "tabular": TabularDataset}[definition["kind"]]
        ds = kind([(d, p) for d, p in definition["paths"]], definition["options"], definition["ops"])
        ds._resolver = resolver
        return ds

    def _input_spec(self) -> dict:
        return {"type": "dataset", **self._definition()}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(paths={self._paths!r})"

    # -- the registry
    @property
    def id(self) -> str | None:
        return self._id

    def _fingerprint(self) -> dict:
        from prefect_aml.tasks.reuse import dataset_fingerprint

        return dataset_fingerprint(self._definition(), self._store)

    def register(self, workspace, name: str, description: str | None = None, tags: dict | None = None,
                 create_new_version: bool = False) -> _Dataset:
        """Register this definition under `name`: version 1, or a new version when the definition or data changed."""
        from datetime import UTC, datetime

        from prefect_aml.blocks.datasets import DatasetVersion, version_block_name

        if not isinstance(name, str) or not name.strip():
            raise UserErrorException(f"Dataset name {name!r} is not valid: give a non-empty string.")
        versions = _versions(workspace, name)
        fingerprint = self._fingerprint()
        if versions:
            latest = versions[-1]
            if latest.definition == self._definition() and latest.fingerprint == fingerprint:
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
        workspace._activate()
        try:
            block.save(version_block_name(name, version), overwrite=False)  # versions are immutable
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
                from prefect_aml.datastore import Datastore
                from prefect_aml.workspace import Workspace

                ws = Workspace.from_config()
                self._stores[name] = Datastore.get(ws, name) if name else ws.get_default_datastore()
        return self._stores[name]

    def _files(self) -> list[tuple[Any, str]]:
        """(datastore, path relative to its root) of every file the definition matches, sorted."""
        found = []
        for ds_name, pattern in self._paths:
            store = self._store(ds_name)
            fs = store.filesystem()
            root = fs._strip_protocol(store.root()).rstrip("/")
            full = fs._strip_protocol(store.full_path(pattern)) if pattern else root
            if any(c in pattern for c in "*?["):
                matches = [p for p in fs.glob(full) if fs.isfile(p)]
            elif fs.isdir(full):
                matches = fs.find(full)
            else:
                matches = [full] if fs.exists(full) else []
            found += [(store, posixpath.relpath(m, root)) for m in sorted(matches)]
        return found

    def to_path(self) -> list[str]:
        """The files' paths, relative to the common folder of the dataset (as Azure ML lists them)."""
        rels = [p for _, p in self._files()]
        base = posixpath.commonpath([posixpath.dirname(p) for p in rels]) if rels else ""
        return ["/" + posixpath.relpath(p, base) if base else "/" + p for p in rels]

    def download(self, target_path: str | os.PathLike | None = None, overwrite: bool = False) -> list[str]:
        """Copy the files under `target_path` (keeping their paths below the common folder); returns the paths."""
        files = self._files()
        if not files:
            raise UserErrorException(f"{self!r} matches no files; check the paths and patterns.")
        target = Path(target_path or os.getcwd()).resolve()
        base = posixpath.commonpath([posixpath.dirname(p) for _, p in files])
        out = []
        for store, rel in files:
            local = target / (posixpath.relpath(rel, base) if base else rel)
            if local.exists() and not overwrite:
                raise UserErrorException(f"{str(local)!r} exists: pass overwrite=True to replace it.")
            local.parent.mkdir(parents=True, exist_ok=True)
            store.filesystem().get(store.full_path(rel), str(local))
            out.append(str(local))
        return out


class FileDataset(_Dataset):
    """References to files on datastores."""

    _kind = "file"


class TabularDataset(_Dataset):
    """A table read from delimited or parquet files; operations are lazy until a read."""

    _kind = "tabular"

    def take(self, count: int) -> TabularDataset:
        return self._derive(["take", int(count)])

    def skip(self, count: int) -> TabularDataset:
        return self._derive(["skip", int(count)])

    def keep_columns(self, columns) -> TabularDataset:
        return self._derive(["keep", [columns] if isinstance(columns, str) else list(columns)])

    def drop_columns(self, columns) -> TabularDataset:
        return self._derive(["drop", [columns] if isinstance(columns, str) else list(columns)])

    def to_pandas_dataframe(self):
        """Read the table (via pyarrow) and apply the lazy operations."""
        import pyarrow as pa
        import pyarrow.csv as pacsv
        import pyarrow.parquet as pq

        tables = []
        opts = self._options
        for store, rel in self._files():
            with store.filesystem().open(store.full_path(rel), "rb") as f:
                if opts.get("format") == "parquet":
                    table = pq.read_table(f)
                else:
                    table = pacsv.read_csv(
                        f, read_options=pacsv.ReadOptions(autogenerate_column_names=not opts.get("header", True)),
                        parse_options=pacsv.ParseOptions(delimiter=opts.get("separator", ",")))
            if opts.get("include_path"):
                table = table.append_column("Path", pa.array([rel] * table.num_rows))
            tables.append(table)
        if not tables:
            raise UserErrorException(f"{self!r} matches no files; check the paths and patterns.")
        df = pa.concat_tables(tables, promote_options="default").to_pandas()
        for op, arg in self._ops:
            if op == "take":
                df = df.head(arg)
            elif op == "skip":
                df = df.iloc[arg:]
            elif op in ("keep", "drop"):
                missing = [c for c in arg if c not in df.columns]
                if missing:
                    raise UserErrorException(f"Columns {missing} are not in the dataset; its columns: {list(df.columns)}.")
                df = df[arg] if op == "keep" else df.drop(columns=arg)
        return df.reset_index(drop=True)


def _versions(workspace, name: str) -> list:
    """Every registered version of `name`, oldest first."""
    return [b for b in _all_versions(workspace) if b.dataset_name == name]


def _all_versions(workspace) -> list:
    from prefect.client.orchestration import get_client

    from prefect_aml.blocks import saved_blocks
    from prefect_aml.blocks.datasets import DatasetVersion

    workspace._activate()
    with get_client(sync_client=True) as client:
        blocks = saved_blocks(client, DatasetVersion)
    return sorted(blocks, key=lambda b: (b.dataset_name, b.version))


def _from_block(block, workspace) -> _Dataset:
    from prefect_aml.datastore import Datastore

    def resolve(name):
        return Datastore.get(workspace, name) if name else workspace.get_default_datastore()

    ds = _Dataset._from_definition(block.definition, resolve)
    ds.name, ds.version, ds.description, ds.tags = block.dataset_name, block.version, block.description, block.tags
    ds._id = str(block._block_document_id) if block._block_document_id else None
    return ds


class _FileFactory:
    @staticmethod
    def from_files(path, validate: bool = True, partition_format: str | None = None) -> FileDataset:
        ds = FileDataset(_paths(path))
        if validate and not ds._files():
            raise UserErrorException(f"Dataset.File.from_files: {ds._paths} matches no files (or pass validate=False).")
        return ds


class _TabularFactory:
    @staticmethod
    def from_delimited_files(path, validate: bool = True, include_path: bool = False, infer_column_types: bool = True,
                             set_column_types=None, separator: str = ",", header: bool = True,
                             partition_format: str | None = None, support_multi_line: bool = False,
                             empty_as_string: bool = False, encoding: str = "utf8") -> TabularDataset:
        ds = TabularDataset(_paths(path), {"format": "delimited", "separator": separator, "header": bool(header),
                                           "include_path": include_path})
        if validate and not ds._files():
            raise UserErrorException(f"Dataset.Tabular.from_delimited_files: {ds._paths} matches no files "
                                     "(or pass validate=False).")
        return ds

    @staticmethod
    def from_parquet_files(path, validate: bool = True, include_path: bool = False,
                           set_column_types=None, partition_format: str | None = None) -> TabularDataset:
        ds = TabularDataset(_paths(path), {"format": "parquet", "include_path": include_path})
        if validate and not ds._files():
            raise UserErrorException(f"Dataset.Tabular.from_parquet_files: {ds._paths} matches no files "
                                     "(or pass validate=False).")
        return ds


class Dataset:
    """Azure ML's `Dataset`: `Dataset.File.from_files(...)`, `Dataset.Tabular.from_delimited_files(...)`,
    and the registry (`get_by_name`, `get_by_id`, `get_all`)."""

    File = _FileFactory
    Tabular = _TabularFactory

    @staticmethod
    def get_by_name(workspace, name: str, version: int | str = "latest") -> _Dataset:
        import difflib

        versions = _versions(workspace, name)
        if not versions:
            known = sorted({b.dataset_name for b in _all_versions(workspace)})
            close = difflib.get_close_matches(name, known, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else f" Registered datasets: {known}."
            raise UserErrorException(f"Dataset {name!r} is not registered.{hint}")
        if version == "latest":
            return _from_block(versions[-1], workspace)
        for b in versions:
            if b.version == int(version):
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
