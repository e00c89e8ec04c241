"""`PipelineParameter`: a value chosen when a pipeline is submitted (or a published one is run)."""

from __future__ import annotations

from typing import Any

from prefect_aml.exceptions import PipelineValidationError
from prefect_aml.pipeline.data import DataPath

_TYPES = {bool: "bool", int: "int", float: "float", str: "str", DataPath: "DataPath"}
# the Python type of each parameter type in a published pipeline's flow signature (the UI's form)
ANNOTATIONS = {"int": int, "float": float, "str": str, "bool": bool, "DataPath": dict}


def type_name(value: Any, param_name: str | None = None) -> str:
    for py, name in _TYPES.items():  # bool before int: True is an int too
        if type(value) is py or (py is DataPath and isinstance(value, DataPath)):
            return name
    named = f" {param_name!r}" if param_name else ""
    raise PipelineValidationError(
        f"PipelineParameter{named}: default {value!r} has type {type(value).__name__}; use int, float, str, bool or "
        "DataPath."
    )


def coerce(param_name: str, type_: str, value: Any) -> Any:
    """Check an assignment against the parameter's type; ints are accepted for floats."""
    if type_ == "DataPath":
        if isinstance(value, DataPath):
            return value._spec()
        if isinstance(value, dict) and {"datastore", "path"} <= set(value):
            return {"type": "datapath", "datastore": value["datastore"], "path": value["path"]}
    elif type_ == "bool" and type(value) is bool:
        return value
    elif type_ == "int" and type(value) is int:
        return value
    elif type_ == "float" and type(value) in (int, float):
        return float(value)
    elif type_ == "str" and isinstance(value, str):
        return value
    raise PipelineValidationError(
        f"Pipeline parameter {param_name!r} expects {type_}, got {value!r} ({type(value).__name__})."
    )


class PipelineParameter:
    """A named pipeline parameter with a default; pass it in `arguments` or `params` of a step."""

    def __init__(self, name: str, default_value: Any):
        if not isinstance(name, str) or not name.isidentifier():
            raise PipelineValidationError(
                f"PipelineParameter name {name!r} is not valid: use letters, digits and underscores."
            )
        self.name = name
        self.default_value = default_value
        self.type = type_name(default_value, name)

    def _default_spec(self) -> Any:
        return self.default_value._spec() if isinstance(self.default_value, DataPath) else self.default_value

    def __repr__(self) -> str:
        return f"PipelineParameter(name={self.name!r}, default_value={self.default_value!r})"
