"""Where prefect-aml keeps its local state: the embedded server's database, local datastores."""

from __future__ import annotations

import os
from pathlib import Path


def aml_home() -> Path:
    """`PREFECT_AML_HOME`, or `~/.prefect-aml`."""
    return Path(os.environ.get("PREFECT_AML_HOME") or "~/.prefect-aml").expanduser().resolve()
