"""`Datastore`: register, get and list datastores the Azure ML way; each is a Prefect block.

    ds = Datastore.register_azure_blob_container(ws, "blobs", container_name="data",
                                                 account_name="acct", account_key="...")
    Datastore(ws, "blobs").upload_files(["iris.csv"], target_path="train-dataset", overwrite=True)
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import TYPE_CHECKING

from prefect.exceptions import ObjectNotFound

from prefect_aml.blocks import saved_blocks
from prefect_aml.blocks.datastores import (
    DATASTORE_BLOCK_TYPES,
    AzureBlobDatastore,
    AzureDataLakeGen2Datastore,
    DatastoreBlock,
    LocalDatastore,
    S3Datastore,
)
from prefect_aml.exceptions import DatastoreException
from prefect_aml.names import BUILTIN_DATASTORES, block_name_for

if TYPE_CHECKING:
    from prefect_aml.workspace import Workspace


def list_datastores(workspace: Workspace) -> list[DatastoreBlock]:
    found: list[DatastoreBlock] = []
    with workspace.client() as client:
        for block_cls in DATASTORE_BLOCK_TYPES:
            for block in saved_blocks(client, block_cls):
                block._workspace = workspace
                found.append(block)
    return sorted(found, key=lambda b: b.datastore_name)


def _load(workspace: Workspace, name: str) -> DatastoreBlock | None:
    block_name = block_name_for(name)
    with workspace.client() as client:
        for block_cls in DATASTORE_BLOCK_TYPES:
            try:
                doc = client.read_block_document_by_name(block_name, block_cls.get_block_type_slug())
            except ObjectNotFound:
                continue
            block = block_cls._from_block_document(doc)
            block._workspace = workspace
            return block
    return None


def ensure_builtin_datastores(workspace: Workspace) -> None:
    for name in BUILTIN_DATASTORES:
        _ensure_builtin(workspace, name)


def _ensure_builtin(workspace: Workspace, name: str) -> DatastoreBlock:
    """`workspaceblobstore` / `workspacefilestore` exist in every workspace: local folders under its home."""
    block = _load(workspace, name)
    if block is None:
        folder = workspace.home / "datastores" / name
        folder.mkdir(parents=True, exist_ok=True)
        block = _save(workspace, LocalDatastore(datastore_name=name, local_path=str(folder)), overwrite=True)
    return block


def _save(workspace: Workspace, block: DatastoreBlock, overwrite: bool) -> DatastoreBlock:
    existing = _load(workspace, block.datastore_name)
    if existing is not None:
        if not overwrite:
            raise DatastoreException(
                f"Datastore {block.datastore_name!r} is already registered (as {existing!r}); "
                "pass overwrite=True to replace it, or choose another name."
            )
        if type(existing) is not type(block):
            existing.unregister()
    with workspace.prefect():
        block.save(block_name_for(block.datastore_name), overwrite=True, _sync=True)
    block._workspace = workspace
    return block


def _check_create(block: DatastoreBlock, create_if_not_exists: bool) -> None:
    fs = block.filesystem()
    root = block.root()
    try:
        exists = fs.exists(root)
    except Exception as err:
        raise DatastoreException(
            f"Datastore {block.datastore_name!r}: cannot reach {block.url()}: {err}. Check the endpoint and "
            "credentials."
        ) from err
    if exists:
        return
    if not create_if_not_exists:
        raise DatastoreException(
            f"Datastore {block.datastore_name!r}: {block.url()} does not exist; create it first or pass "
            "create_if_not_exists=True."
        )
    fs.mkdir(root)


class Datastore:
    """Azure ML's `Datastore`: `Datastore(ws, name)` returns the registered datastore of that name."""

    def __new__(cls, workspace: Workspace, name: str | None = None) -> DatastoreBlock:  # type: ignore[misc]
        if name is None:
            return cls.get_default(workspace)
        return cls.get(workspace, name)

    @staticmethod
    def get(workspace: Workspace, datastore_name: str) -> DatastoreBlock:
        if datastore_name in BUILTIN_DATASTORES:
            return _ensure_builtin(workspace, datastore_name)
        block = _load(workspace, datastore_name)
        if block is None:
            known = sorted({*(d.datastore_name for d in list_datastores(workspace)), *BUILTIN_DATASTORES})
            close = difflib.get_close_matches(datastore_name, known, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else f" Registered datastores: {known}."
            raise DatastoreException(
                f"Datastore {datastore_name!r} is not registered in workspace {workspace.name!r}.{hint} "
                "Register it with Datastore.register_*(...)."
            )
        return block

    @staticmethod
    def get_default(workspace: Workspace) -> DatastoreBlock:
        return workspace.get_default_datastore()

    @staticmethod
    def list(workspace: Workspace) -> list[DatastoreBlock]:
        return list(workspace.datastores.values())

    # -- registration, with Azure ML's names and keywords
    @staticmethod
    def register_local(workspace: Workspace, datastore_name: str, path: str, overwrite: bool = False,
                       create_if_not_exists: bool = True) -> LocalDatastore:
        folder = Path(path).expanduser().resolve()
        block = LocalDatastore(datastore_name=datastore_name, local_path=str(folder))
        block_name_for(datastore_name)
        _check_create(block, create_if_not_exists)
        return _save(workspace, block, overwrite)

    @staticmethod
    def register_s3(workspace: Workspace, datastore_name: str, bucket_name: str, endpoint_url: str | None = None,
                    access_key_id: str | None = None, secret_access_key: str | None = None,
                    region_name: str | None = None, overwrite: bool = False,
                    create_if_not_exists: bool = False) -> S3Datastore:
        block_name_for(datastore_name)
        block = S3Datastore(datastore_name=datastore_name, bucket_name=bucket_name, endpoint_url=endpoint_url,
                            access_key_id=access_key_id, secret_access_key=secret_access_key,
                            region_name=region_name)
        _check_create(block, create_if_not_exists)
        return _save(workspace, block, overwrite)

    @staticmethod
    def register_azure_blob_container(
        workspace: Workspace, datastore_name: str, container_name: str, account_name: str | None = None,
        sas_token: str | None = None, account_key: str | None = None, protocol: str | None = None,
        endpoint: str | None = None, overwrite: bool = False, create_if_not_exists: bool = False,
        skip_validation: bool = False, blob_cache_timeout=None, grant_workspace_access: bool = False,
        subscription_id=None, resource_group=None, *, connection_string: str | None = None,
    ) -> AzureBlobDatastore:
        return _register_azure(AzureBlobDatastore, workspace, datastore_name, container_name, account_name,
                               sas_token, account_key, protocol, endpoint, overwrite, create_if_not_exists,
                               skip_validation, connection_string)

    @staticmethod
    def register_azure_data_lake_gen2(
        workspace: Workspace, datastore_name: str, filesystem: str, account_name: str | None = None,
        tenant_id=None, client_id=None, client_secret=None, resource_url=None, authority_url=None,
        protocol: str | None = None, endpoint: str | None = None, overwrite: bool = False,
        subscription_id=None, resource_group=None, grant_workspace_access: bool = False, *,
        account_key: str | None = None, sas_token: str | None = None, connection_string: str | None = None,
        create_if_not_exists: bool = False, skip_validation: bool = False,
    ) -> AzureDataLakeGen2Datastore:
        if client_secret is not None:
            raise DatastoreException(
                f"Datastore {datastore_name!r}: service-principal authentication (tenant_id/client_id/"
                "client_secret) is not supported here; pass account_key=, sas_token= or connection_string=."
            )
        return _register_azure(AzureDataLakeGen2Datastore, workspace, datastore_name, filesystem, account_name,
                               sas_token, account_key, protocol, endpoint, overwrite, create_if_not_exists,
                               skip_validation, connection_string)

    @staticmethod
    def register_azure_file_share(workspace: Workspace, datastore_name: str, *args, **kwargs):
        raise DatastoreException(
            f"Datastore {datastore_name!r}: Azure file shares are not supported; register the data as a blob "
            "container (Datastore.register_azure_blob_container) or an ADLS Gen2 file system "
            "(Datastore.register_azure_data_lake_gen2) instead."
        )


def _register_azure(block_cls, workspace, datastore_name, container_name, account_name, sas_token, account_key,
                    protocol, endpoint, overwrite, create_if_not_exists, skip_validation, connection_string):
    block_name_for(datastore_name)
    if connection_string is None and not account_name:
        raise DatastoreException(
            f"Datastore {datastore_name!r}: give account_name= (with account_key= or sas_token=) or "
            "connection_string=."
        )
    block = block_cls(datastore_name=datastore_name, container_name=container_name, account_name=account_name,
                      sas_token=sas_token, account_key=account_key, protocol=protocol, endpoint=endpoint,
                      connection_string=connection_string)
    if not skip_validation or create_if_not_exists:
        _check_create(block, create_if_not_exists)
    return _save(workspace, block, overwrite)
