"""Where a worker finds a published pipeline's flow: `prefect_aml.deployments.entry.published_<id>`.

A deployment's entrypoint names this module and an attribute made of the published pipeline's id;
the attribute is built on first access (PEP 562 `__getattr__`) from the pipeline's record, so any
Prefect worker with prefect-aml installed can load it without a copy of the user's code.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from prefect_aml.flows.published import published_flow
from prefect_aml.names import PUBLISHED_ENTRY_PREFIX


def __getattr__(name: str) -> Any:
    if not name.startswith(PUBLISHED_ENTRY_PREFIX):
        raise AttributeError(name)
    try:
        pipeline_id = str(UUID(name[len(PUBLISHED_ENTRY_PREFIX):]))
    except ValueError:
        raise AttributeError(name) from None
    fl = published_flow(pipeline_id)
    globals()[name] = fl
    return fl
