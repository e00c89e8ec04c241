"""The files of a step's run context: how a step's process and the step task talk, with the standard library only.

The step task writes ``context.json`` into a folder of the step's scratch space and names it in
``AZUREML_RUN_CONTEXT``; the script (through `Run.get_context()`, or any engine) appends its metrics
to ``metrics.jsonl`` (one JSON object a line: name, kind, value), its tags to ``tags.json`` and the
files it uploads under ``artifacts/``. When the script has exited, the task reads them back.

    ctx = load()                                  # None outside a step
    emit(ctx["dir"], "accuracy", "scalar", 0.93)
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

CONTEXT_ENV = "AZUREML_RUN_CONTEXT"
RUN_ID_ENV = "AZUREML_RUN_ID"
CONTEXT_FILE = "context.json"
METRICS_FILE = "metrics.jsonl"
TAGS_FILE = "tags.json"
ARTIFACTS_DIR = "artifacts"
METRIC_KINDS = ("scalar", "list", "row", "table", "image")


def write(folder: Path, context: dict[str, Any]) -> Path:
    """Write a step's context into `folder` (which becomes its `dir`); returns the file to name in the env."""
    path = folder / CONTEXT_FILE
    path.write_text(json.dumps({**context, "dir": str(folder)}))
    return path


def load() -> dict[str, Any] | None:
    """The context of the step this process runs in, or None outside a step."""
    path = os.environ.get(CONTEXT_ENV)
    if path and os.path.exists(path):
        return json.loads(Path(path).read_text())
    return None


def emit(folder: str | os.PathLike, name: str, kind: str, value: Any) -> None:
    """Record one metric of the step whose context lives in `folder`."""
    with open(Path(folder) / METRICS_FILE, "a") as f:
        f.write(json.dumps({"name": name, "kind": kind, "value": value}, default=str) + "\n")


def collect_metrics(folder: str | os.PathLike) -> dict[str, Any]:
    """The metrics a step recorded, as `get_metrics()` returns them: a scalar logged twice becomes a list,
    rows become columns, and for lists, tables and images the last value wins."""
    path = Path(folder) / METRICS_FILE
    metrics: dict[str, Any] = {}
    if not path.exists():
        return metrics
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        m = json.loads(line)
        name, kind, value = m["name"], m["kind"], m["value"]
        if kind == "scalar":
            if name in metrics:
                prev = metrics[name]
                metrics[name] = (prev if isinstance(prev, list) else [prev]) + [value]
            else:
                metrics[name] = value
        elif kind == "row":
            table = metrics.setdefault(name, {})
            for col, v in value.items():
                table.setdefault(col, []).append(v)
        else:
            metrics[name] = value
    return metrics


def read_tags(folder: str | os.PathLike) -> dict[str, Any]:
    f = Path(folder) / TAGS_FILE
    return json.loads(f.read_text()) if f.exists() else {}


def set_tags(folder: str | os.PathLike, tags: dict) -> None:
    current = read_tags(folder)
    current.update({str(k): (None if v is None else str(v)) for k, v in tags.items()})
    (Path(folder) / TAGS_FILE).write_text(json.dumps(current))
