"""Prefect Block types kept in the server: datastores (and later datasets, computes, environments)."""

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
]
