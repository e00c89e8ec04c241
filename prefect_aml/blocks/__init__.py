"""Prefect Block types kept in the server: datastores, dataset versions, computes, environments, published pipelines."""

from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError

from prefect_aml.blocks.datastores import (
    DATASTORE_BLOCK_TYPES,
    AzureBlobDatastore,
    AzureDataLakeGen2Datastore,
    DatastoreBlock,
    LocalDatastore,
    S3Datastore,
)

__all__ = [
    "DATASTORE_BLOCK_TYPES",
    "AzureBlobDatastore",
    "AzureDataLakeGen2Datastore",
    "DatastoreBlock",
    "LocalDatastore",
    "S3Datastore",
    "saved_blocks",
]


def saved_blocks(client, block_cls) -> list:
    """Every saved block of `block_cls` (none while its type has never been registered)."""
    try:
        docs = client.read_block_documents_by_type(block_cls.get_block_type_slug())
    except (ObjectNotFound, PrefectHTTPStatusError) as err:
        if getattr(getattr(err, "response", None), "status_code", 404) != 404:
            raise
        return []
    return [block_cls._from_block_document(doc) for doc in docs]
