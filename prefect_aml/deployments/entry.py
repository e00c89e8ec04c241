"""Where a worker finds a published pipeline's flow: `prefect_aml.deployments.entry.published_<id>`.

A deployment's entrypoint names this module and an attribute made of the published pipeline's id;
the attribute is built on first access (PEP 562 `__getattr__`) from the pipeline's record, so any
Prefect worker with prefect-aml installed can load it without a copy of the user's code.
"""

from __future__ import annotations

from typing import Any

_PREFIX = "published_"


def __getattr__(name: str) -> Any:
    if not name.startswith(_PREFIX):
        raise AttributeError(name)
    from uuid import UUID

    from prefect_aml.deployments.published import build_flow, load_record

    try:
        pipeline_id = str(UUID(name[len(_PREFIX):]))
    except ValueError:
        raise AttributeError(name) from None
    record = load_record(pipeline_id)
    if record is None:
        raise AttributeError(f"{name}: published pipeline {pipeline_id} is not in this workspace's Prefect API")
    fl = build_flow(record)
    globals()[name] = fl
    return fl
