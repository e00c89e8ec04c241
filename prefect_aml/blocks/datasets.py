"""Registered dataset versions as Prefect blocks: one immutable block per (name, version).

Each version keeps the dataset's definition (datastores, paths, read options, lazy operations) and
a fingerprint of the files it matched when it was registered, so a version pins the data too.
"""

from __future__ import annotations

import re
from typing import Any

from prefect.blocks.core import Block
from pydantic import Field


def version_block_name(name: str, version: int) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "dataset"
    return f"{slug[:80]}-v{version}"


class DatasetVersion(Block):
    """One registered version of an Azure-ML-style dataset."""

    _block_type_name = "AML Dataset Version"
    _description = "An immutable, registered version of a prefect-aml dataset: its definition and data fingerprint."

    dataset_name: str
    version: int
    definition: dict[str, Any]
    fingerprint: dict[str, Any]
    description: str | None = None
    tags: dict[str, str] = Field(default_factory=dict)
    registered: str
