"""Where the `azureml` alias package lives, and whether the real Azure ML SDK is installed (no side effects)."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

SHIM_DIR = Path(__file__).resolve().parent / "_shim"
_REAL_SDK_DISTRIBUTIONS = ("azureml-core", "azureml-pipeline-core", "azureml-sdk")


def real_sdk() -> str | None:
    """The installed Azure ML SDK distribution and version, if any."""
    for dist in _REAL_SDK_DISTRIBUTIONS:
        try:
            return f"{dist} {importlib.metadata.version(dist)}"
        except importlib.metadata.PackageNotFoundError:
            continue
    return None
