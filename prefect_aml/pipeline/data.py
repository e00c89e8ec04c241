"""Data references that wire a pipeline: where a step reads and writes.

Nothing here talks to a server or a store; these objects only describe data. A datastore may be
given as a datastore object or by name (resolved against the workspace when the pipeline runs).
"""

from __future__ import annotations

import itertools
from typing import Any

from prefect_aml import _expr
from prefect_aml.exceptions import PipelineValidationError

_counter = itertools.count()


def partition_option(partition_format: str | None) -> dict:
    """The read option of a `partition_format` ('{year}/{month}/*.csv'); a bad format fails now, not at a read."""
    if not partition_format:
        return {}
    _expr.parse_partition_format(partition_format)
    return {"partition_format": partition_format}


def tabular_options(fmt: str, include_path: bool, set_column_types, partition_format: str | None, **more) -> dict:
    """How a TabularDataset reads its files (delimited or parquet), as it is kept in a definition."""
    options = {"format": fmt, "include_path": bool(include_path), **more, **partition_option(partition_format)}
    if set_column_types:
        options["column_types"] = {str(c): _expr.type_name(t) for c, t in dict(set_column_types).items()}
    return options


def datastore_name(datastore: Any) -> str | None:
    """The name of a datastore object, or the string itself; None for the workspace default."""
    if datastore is None:
        return None
    if isinstance(datastore, str):
        return datastore
    name = getattr(datastore, "datastore_name", None) or getattr(datastore, "name", None)
    if not isinstance(name, str):
        raise TypeError(f"Expected a datastore or a datastore name, got {datastore!r}.")
    return name


class DataPath:
    """A path on a datastore: an input that is not produced by a step."""

    def __init__(self, datastore: Any = None, path_on_datastore: str | None = None, name: str | None = None):
        self.datastore = datastore
        self.datastore_name = datastore_name(datastore)
        self.path_on_datastore = path_on_datastore or ""
        self.name = name

    def create_data_reference(self, data_reference_name: str | None = None, datapath_compute_binding=None):
        mode = getattr(datapath_compute_binding, "mode", "mount")
        return DataReference(self.datastore, data_reference_name or self.name, self.path_on_datastore, mode=mode)

    def as_download(self, path_on_compute: str | None = None) -> InputPort:
        return InputPort(self, mode="download", path_on_compute=path_on_compute)

    def as_mount(self) -> InputPort:
        return InputPort(self, mode="mount")

    def _spec(self) -> dict:
        return {"type": "datapath", "datastore": self.datastore_name, "path": self.path_on_datastore}

    def __repr__(self) -> str:
        return f"DataPath(datastore={self.datastore_name!r}, path_on_datastore={self.path_on_datastore!r})"


class DataPathComputeBinding:
    """How a `DataPath` pipeline parameter is made available to a step."""

    def __init__(self, mode: str = "mount", path_on_compute: str | None = None, overwrite: bool = False):
        if mode not in ("mount", "download"):
            raise ValueError(f"DataPathComputeBinding mode {mode!r}: use 'mount' or 'download'.")
        self.mode = mode
        self.path_on_compute = path_on_compute
        self.overwrite = overwrite


class DataReference(DataPath):
    """Azure ML's `DataReference`: a named path on a datastore with an access mode."""

    def __init__(self, datastore: Any, data_reference_name: str | None = None, path_on_datastore: str | None = None,
                 mode: str = "mount", path_on_compute: str | None = None, overwrite: bool = False):
        super().__init__(datastore, path_on_datastore, name=data_reference_name or datastore_name(datastore))
        self.data_reference_name = self.name
        self.mode = mode
        self.path_on_compute = path_on_compute
        self.overwrite = overwrite

    def as_download(self, path_on_compute: str | None = None, overwrite: bool = False) -> InputPort:
        return InputPort(self, mode="download", path_on_compute=path_on_compute, name=self.name)

    def as_mount(self) -> InputPort:
        return InputPort(self, mode="mount", name=self.name)

    def as_upload(self, path_on_compute: str | None = None, overwrite: bool = False) -> DataReference:
        return DataReference(self.datastore, self.name, self.path_on_datastore, "upload", path_on_compute, overwrite)

    def __repr__(self) -> str:
        return (f"DataReference(datastore={self.datastore_name!r}, path_on_datastore="
                f"{self.path_on_datastore!r}, mode={self.mode!r})")


class InputPort:
    """A data source consumed by a step, with its access mode (download, mount or direct)."""

    def __init__(self, source: Any, mode: str = "download", path_on_compute: str | None = None,
                 name: str | None = None, tabular: dict | None = None):
        if mode not in ("download", "mount", "direct"):
            raise ValueError(f"Input mode {mode!r}: use 'download', 'mount' or 'direct'.")
        self.source = source
        self.mode = mode
        self.path_on_compute = path_on_compute
        self.name = name or getattr(source, "name", None)
        self.tabular = tabular  # read options when a step output is consumed as a TabularDataset

    def as_download(self, path_on_compute: str | None = None) -> InputPort:
        return InputPort(self.source, "download", path_on_compute, self.name, self.tabular)

    def as_mount(self) -> InputPort:
        return InputPort(self.source, "mount", None, self.name, self.tabular)

    def as_named_input(self, name: str) -> InputPort:
        return InputPort(self.source, self.mode, self.path_on_compute, name, self.tabular)

    def as_input(self, name: str | None = None) -> InputPort:
        return self.as_named_input(name or self.name)

    @property
    def input_name(self) -> str | None:
        return self.name

    def __repr__(self) -> str:
        return f"InputPort({self.source!r}, mode={self.mode!r}, name={self.name!r})"


class _StepOutput:
    """Base of the data a step produces; the producing step is the one that lists it as an output."""

    _explicit_producers: list
    _implicit_producer: Any

    def __init__(self, name: str | None, datastore: Any = None):
        self.name = name
        self.datastore = datastore
        self.datastore_name = datastore_name(datastore)
        self._order = next(_counter)
        self._explicit_producers = []
        self._implicit_producer = None

    @property
    def producer(self):
        if self._explicit_producers:
            return self._explicit_producers[0]
        return self._implicit_producer

    def as_download(self, path_on_compute: str | None = None, overwrite: bool = False, input_name=None) -> InputPort:
        return InputPort(self, "download", path_on_compute, input_name or self.name)

    def as_mount(self, input_name: str | None = None) -> InputPort:
        return InputPort(self, "mount", None, input_name or self.name)

    def as_input(self, name: str | None = None) -> InputPort:
        return InputPort(self, "mount", None, name or self.name)

    def as_named_input(self, name: str) -> InputPort:
        return self.as_input(name)


class PipelineData(_StepOutput):
    """Intermediate data: a folder written by one step and read by the steps after it."""

    def __init__(self, name: str, datastore: Any = None, output_name: str | None = None, output_mode: str = "mount",
                 output_path_on_compute: str | None = None, output_overwrite: bool | None = None,
                 data_type: str | None = None, is_directory: bool | None = None,
                 pipeline_output_name: str | None = None, training_output=None):
        if not name:
            raise ValueError("PipelineData needs a name, e.g. PipelineData('prepped', datastore=store).")
        super().__init__(output_name or name, datastore)
        self.output_mode = output_mode
        self.is_directory = True if is_directory is None else is_directory

    def __repr__(self) -> str:
        return f"PipelineData(name={self.name!r}, datastore={self.datastore_name!r})"


class OutputFileDatasetConfig(_StepOutput):
    """A step's output folder, uploaded (or written through) to a datastore when the step succeeds.

    `destination=(datastore, "path/{run-id}/{output-name}")` pins where it lands; without it the
    location is derived from the producing step's reuse key, so a reused step hands the same data on.
    """

    def __init__(self, name: str | None = None, destination: tuple | None = None, source: str | None = None,
                 partition_format: str | None = None):
        store, path = None, None
        if isinstance(destination, tuple) and len(destination) == 2:
            store, path = destination
        elif destination is not None and (isinstance(destination, str) or hasattr(destination, "datastore_name")):
            store = destination  # a datastore alone: the derived location, on that datastore
        elif destination is not None:
            raise PipelineValidationError(
                f"OutputFileDatasetConfig {name!r}: destination must be a datastore or a (datastore, path) tuple, "
                f"got {destination!r}.")
        super().__init__(name, store)
        self.destination_path = path
        self.source = source
        self.mode = "mount"
        self.overwrite = True
        self._register_as: dict | None = None

    def as_upload(self, overwrite: bool = False, source_globs=None) -> OutputFileDatasetConfig:
        self.mode = "upload"
        self.overwrite = overwrite
        return self

    def as_mount(self, disable_metadata_cache: bool = False):  # type: ignore[override]
        """On an output: write through (mount); the same object is returned, as in Azure ML."""
        self.mode = "mount"
        return self

    def register_on_complete(self, name: str, description: str | None = None, tags: dict | None = None):
        """Register the output as a FileDataset version named `name` whenever the step succeeds."""
        self._register_as = {"name": name, "description": description, "tags": tags or {}}
        return self

    def read_delimited_files(self, include_path: bool = False, separator: str = ",", header: bool = True,
                             partition_format: str | None = None, path_glob: str | None = None,
                             set_column_types=None) -> OutputTabularDatasetConfig:
        """Consume this output as a TabularDataset of delimited files (the next step gets the dataset)."""
        return OutputTabularDatasetConfig(self, tabular_options(
            "delimited", include_path, set_column_types, partition_format, separator=separator,
            header=bool(header), infer_column_types=True), path_glob)

    def read_parquet_files(self, include_path: bool = False, partition_format: str | None = None,
                           path_glob: str | None = None, set_column_types=None) -> OutputTabularDatasetConfig:
        """Consume this output as a TabularDataset of parquet files (the next step gets the dataset)."""
        return OutputTabularDatasetConfig(self, tabular_options(
            "parquet", include_path, set_column_types, partition_format), path_glob)

    def __repr__(self) -> str:
        return f"OutputFileDatasetConfig(name={self.name!r}, datastore={self.datastore_name!r})"


class OutputTabularDatasetConfig(InputPort):
    """A step's output read as a table: `prepped.read_delimited_files().as_input("prepped")` gives the next
    step `Run.get_context().input_datasets["prepped"]` as a TabularDataset over the output's files."""

    def __init__(self, output: OutputFileDatasetConfig, options: dict, path_glob: str | None = None):
        super().__init__(output, "direct", None, output.name, {**options, "path_glob": path_glob})
        self._output = output

    def register_on_complete(self, name: str, description: str | None = None, tags: dict | None = None):
        """Register the output as a TabularDataset version named `name` whenever the step succeeds."""
        self._output._register_as = {"name": name, "description": description, "tags": tags or {},
                                     "tabular": self.tabular}
        return self

    def __repr__(self) -> str:
        return f"OutputTabularDatasetConfig({self._output!r})"
