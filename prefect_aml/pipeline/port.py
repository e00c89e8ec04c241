"""The port through which graph objects reach the Prefect side: `Pipeline.submit`, `publish`, `explain_reuse`.

The graph layer describes what to run and never imports Prefect; the verbs that need a Prefect API
keep their Azure ML shape by calling the implementation named here, by module name (Azure ML v1
registered how `Experiment.submit` runs a pipeline the same way). It is `prefect_aml.verbs` unless
`install()` names another; the module is imported on first use, so `import prefect_aml` stays light.

    from prefect_aml.pipeline import port
    port.install("prefect_aml.verbs")
    port.verbs().explain_reuse(pipeline, None, False)
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any, Protocol


class Verbs(Protocol):
    """What the Prefect side provides to the graph (and to runs, which sit below publishing)."""

    def submit(self, pipeline: Any, experiment: Any, **options: Any) -> Any: ...

    def publish(self, pipeline: Any, name: str | None, description: str | None, version: str | None,
                continue_on_step_failure: bool | None, pipeline_compute: Any) -> Any: ...

    def publish_run(self, run: Any, name: str, description: str | None, version: str | None,
                    continue_on_step_failure: bool | None, pipeline_compute: Any) -> Any: ...

    def explain_reuse(self, pipeline: Any, pipeline_parameters: dict | None, regenerate_outputs: bool) -> dict: ...


_installed: str | ModuleType | None = "prefect_aml.verbs"  # the Prefect side (a name: not an import)


def install(implementation: str | ModuleType) -> None:
    """Install the verbs: a module, or the name of one to import on first use."""
    global _installed
    _installed = implementation


def verbs() -> Verbs:
    global _installed
    if _installed is None:
        raise RuntimeError("No Prefect implementation of the pipeline verbs is installed: import prefect_aml.")
    if isinstance(_installed, str):
        _installed = importlib.import_module(_installed)
    return _installed  # type: ignore[return-value]
