"""Compute targets and registered environments as Prefect blocks.

A compute target's block says what kind it is and how to reach it; a process or Docker compute
also owns a Prefect work pool of the same name (its workers are the compute's nodes), a Dask
compute names a cluster (one started per pipeline run, or an existing scheduler's address).
"""

from __future__ import annotations

import re
from typing import Any, Literal

from prefect.blocks.core import Block
from pydantic import Field

from prefect_aml.blocks.datasets import version_block_name
from prefect_aml.exceptions import ComputeTargetException

_COMPUTE_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9-]{1,31}$")


def compute_block_name(name: str) -> str:
    if not isinstance(name, str) or not _COMPUTE_NAME_RE.match(name):
        raise ComputeTargetException(
            f"Compute name {name!r} is not valid: use 2-32 letters, digits and hyphens, starting with a letter "
            "(e.g. 'cpu-cluster')."
        )
    return "compute-" + name.lower()


def environment_block_name(name: str, version: int) -> str:
    return "env-" + version_block_name(name, version)


class ComputeTargetBlock(Block):
    """One compute target of a prefect-aml workspace."""

    _block_type_name = "AML Compute Target"
    _description = "A prefect-aml compute target: a Prefect work pool (process or Docker) or a Dask cluster."

    compute_name: str
    compute_type: Literal["AmlCompute", "DockerCompute", "DaskCompute"]
    work_pool: str | None = None
    vm_size: str | None = None
    vm_priority: str | None = None
    min_nodes: int = 0
    max_nodes: int | None = None
    idle_seconds_before_scaledown: int | None = None
    description: str | None = None
    # Dask: an existing scheduler's address, or a cluster started for each pipeline run
    address: str | None = None
    n_workers: int | None = None
    threads_per_worker: int | None = None
    gpu: bool = False
    # Docker: defaults for every step on this compute
    image: str | None = None
    volumes: list[str] = Field(default_factory=list)
    network_mode: str | None = None
    created: str | None = None
    tags: dict[str, Any] = Field(default_factory=dict)


class EnvironmentVersion(Block):
    """One registered version of an environment."""

    _block_type_name = "AML Environment Version"
    _description = "A registered version of a prefect-aml environment: variables, image, interpreter, packages."

    environment_name: str
    version: int
    definition: dict[str, Any]
