"""Datastores as Prefect blocks, each backed by an fsspec filesystem.

A datastore is saved in the Prefect server as a block document (visible and editable on the
UI's Blocks page); credentials are `SecretStr` fields, so neither reprs, logs nor the API show
them in clear text.

    from prefect_aml import Workspace, Datastore
    ws = Workspace.from_config()
    store = Datastore.register_s3(ws, "raw", bucket_name="raw", endpoint_url="http://127.0.0.1:5000")
    store.upload("./data", target_path="train-dataset", overwrite=True)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import fsspec
from prefect.blocks.core import Block
from pydantic import Field, PrivateAttr, SecretStr

from prefect_aml import _transfer
from prefect_aml.exceptions import DatastoreException
from prefect_aml.names import clean_relative
from prefect_aml.pipeline.data import DataReference

if TYPE_CHECKING:
    from prefect_aml.workspace import Workspace

class DatastoreBlock(Block):
    """Base of every datastore block: an fsspec filesystem plus a root path inside it."""

    _block_schema_capabilities = ["datastore"]
    datastore_type: ClassVar[str] = ""

    datastore_name: str = Field(description="The datastore's name as the Azure ML API knows it.")
    _workspace: Any = PrivateAttr(default=None)

    # -- what every kind provides
    def filesystem(self) -> fsspec.AbstractFileSystem:  # pragma: no cover - abstract
        raise NotImplementedError

    def root(self) -> str:  # pragma: no cover - abstract
        """The datastore's root inside `filesystem()`, without a trailing slash."""
        raise NotImplementedError

    def _transfer_kwargs(self, direction: str) -> dict[str, Any]:
        """Extra arguments for `fs.put` / `fs.get` ("put" / "get"): part sizes that keep memory flat."""
        return {}

    # -- shared behaviour
    @property
    def name(self) -> str:
        return self.datastore_name

    @property
    def workspace(self) -> Workspace | None:
        return self._workspace

    def full_path(self, path_on_datastore: str | None = "") -> str:
        rel = clean_relative(path_on_datastore, "Path")
        return f"{self.root()}/{rel}" if rel else self.root()

    def url(self, path_on_datastore: str | None = "") -> str:
        """A URL fsspec understands (for logs and dataset definitions)."""
        protocol = self.filesystem().protocol
        protocol = protocol[0] if isinstance(protocol, tuple) else protocol
        return f"{protocol}://{self.full_path(path_on_datastore)}"

    def upload(
        self,
        src_dir: str | os.PathLike,
        target_path: str | None = None,
        overwrite: bool = False,
        show_progress: bool = True,
    ):
        """Upload a local folder (recursively) to `target_path`; existing files are skipped unless `overwrite`."""
        return _transfer.upload_dir(self, src_dir, target_path, overwrite, show_progress)

    def upload_files(
        self,
        files: list[str | os.PathLike],
        relative_root: str | os.PathLike | None = None,
        target_path: str | None = None,
        overwrite: bool = False,
        show_progress: bool = True,
    ):
        """Upload files; each lands at `target_path/<its path relative to relative_root>`."""
        return _transfer.upload_files(self, files, relative_root, target_path, overwrite, show_progress)

    def download(
        self,
        target_path: str | os.PathLike,
        prefix: str | None = None,
        overwrite: bool = False,
        show_progress: bool = True,
    ) -> int:
        """Download the files under `prefix` to `target_path` (keeping their datastore paths); returns a count."""
        return _transfer.download(self, target_path, prefix, overwrite, show_progress)

    def path(self, path: str | None = None, data_reference_name: str | None = None):
        """A `DataReference` to `path` on this datastore (Azure ML's `datastore.path(...)`)."""
        return DataReference(self, data_reference_name=data_reference_name, path_on_datastore=path)

    def as_mount(self):
        return self.path("").as_mount()

    def as_download(self, path_on_compute: str | None = None):
        return self.path("").as_download(path_on_compute=path_on_compute)

    def set_as_default(self) -> None:
        self._require_workspace().set_default_datastore(self.datastore_name)

    def unregister(self) -> None:
        """Remove the datastore from the workspace (the data itself is left as it is)."""
        ws = self._require_workspace()
        doc_id = self._block_document_id
        if doc_id is None:
            raise DatastoreException(f"Datastore {self.datastore_name!r} was never saved; nothing to unregister.")
        with ws.client() as client:
            client.delete_block_document(doc_id)

    def _require_workspace(self) -> Workspace:
        if self._workspace is None:
            raise DatastoreException(
                f"Datastore {self.datastore_name!r} is not attached to a workspace: get it with "
                "Datastore.get(ws, name) first."
            )
        return self._workspace

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.datastore_name!r}, root={self.root()!r})"


class LocalDatastore(DatastoreBlock):
    """A folder on a local or shared file system."""

    _block_type_name = "AML Local Datastore"
    _description = "An Azure-ML-style datastore backed by a local (or network-mounted) folder."
    datastore_type: ClassVar[str] = "LocalFolder"

    local_path: str = Field(description="Absolute path of the folder.")

    def filesystem(self) -> fsspec.AbstractFileSystem:
        return fsspec.filesystem("file", auto_mkdir=True)

    def root(self) -> str:
        return str(Path(self.local_path)).rstrip("/") or "/"


class S3Datastore(DatastoreBlock):
    """An S3 bucket, or any S3-compatible store (MinIO, moto) through `endpoint_url`."""

    _block_type_name = "AML S3 Datastore"
    _description = "An Azure-ML-style datastore on Amazon S3 or an S3-compatible service (s3fs)."
    datastore_type: ClassVar[str] = "AmazonS3"

    bucket_name: str
    endpoint_url: str | None = None
    region_name: str | None = None
    access_key_id: SecretStr | None = None
    secret_access_key: SecretStr | None = None

    def filesystem(self) -> fsspec.AbstractFileSystem:
        kwargs: dict[str, Any] = {"client_kwargs": {}}
        if self.endpoint_url:
            kwargs["endpoint_url"] = self.endpoint_url
        if self.region_name:
            kwargs["client_kwargs"]["region_name"] = self.region_name
        if self.access_key_id is not None:
            kwargs["key"] = self.access_key_id.get_secret_value()
        if self.secret_access_key is not None:
            kwargs["secret"] = self.secret_access_key.get_secret_value()
        if self.access_key_id is None and self.secret_access_key is None and self.endpoint_url:
            kwargs["anon"] = False
        return fsspec.filesystem("s3", max_concurrency=4, **kwargs)

    def root(self) -> str:
        return self.bucket_name

    def _transfer_kwargs(self, direction: str) -> dict[str, Any]:
        # uploads: 8 MB parts, 4 in flight; downloads: one streamed GET per file (64 KB reads), which is
        # both flat in memory and faster than ranged parts held in memory (see BENCHMARKS.md)
        return {"chunksize": 8 * 1024 * 1024} if direction == "put" else {"max_concurrency": 1}

    @property
    def container_name(self) -> str:
        return self.bucket_name


class AzureBlobDatastore(DatastoreBlock):
    """An Azure Blob Storage container (adlfs); account key, SAS token or connection string."""

    _block_type_name = "AML Azure Blob Datastore"
    _description = "An Azure-ML-style datastore on an Azure Blob Storage container (adlfs)."
    datastore_type: ClassVar[str] = "AzureBlob"

    container_name: str
    account_name: str | None = None
    protocol: str | None = None
    endpoint: str | None = None
    account_key: SecretStr | None = None
    sas_token: SecretStr | None = None
    connection_string: SecretStr | None = None

    def filesystem(self) -> fsspec.AbstractFileSystem:
        kwargs: dict[str, Any] = {}
        if self.connection_string is not None:
            kwargs["connection_string"] = self.connection_string.get_secret_value()
        else:
            kwargs["account_name"] = self.account_name
            if self.account_key is not None:
                kwargs["account_key"] = self.account_key.get_secret_value()
            if self.sas_token is not None:
                kwargs["sas_token"] = self.sas_token.get_secret_value().lstrip("?")
            if self.endpoint and self.endpoint != "core.windows.net":
                kwargs["account_host"] = f"{self.account_name}.blob.{self.endpoint}"
        return fsspec.filesystem("abfs", **kwargs)

    def root(self) -> str:
        return self.container_name


class AzureDataLakeGen2Datastore(AzureBlobDatastore):
    """An ADLS Gen2 file system (a container with a hierarchical namespace), through adlfs."""

    _block_type_name = "AML ADLS Gen2 Datastore"
    _description = "An Azure-ML-style datastore on an Azure Data Lake Storage Gen2 file system (adlfs)."
    datastore_type: ClassVar[str] = "AzureDataLakeGen2"

    @property
    def filesystem_name(self) -> str:
        return self.container_name


DATASTORE_BLOCK_TYPES: tuple[type[DatastoreBlock], ...] = (
    LocalDatastore,
    S3Datastore,
    AzureBlobDatastore,
    AzureDataLakeGen2Datastore,
)
