"""The light half of datasets' reading: conditions, partition formats and column type names.

No pyarrow here (importing prefect-aml must stay cheap); `_tabular` turns these into pyarrow.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from prefect_aml.exceptions import UserErrorException

# -- filter expressions ---------------------------------------------------------------------------
COMPARISONS = {"==": "equal", "!=": "not_equal", "<": "less", "<=": "less_equal", ">": "greater", ">=": "greater_equal"}


def _node(value: Any) -> list:
    if isinstance(value, ColumnExpression):
        return value._node
    if isinstance(value, datetime):
        return ["ts", value.isoformat()]
    if value is None or isinstance(value, (bool, int, float, str)):
        return ["lit", value]
    if type(value).__module__ == "numpy" and hasattr(value, "item"):  # numpy scalars
        return ["lit", value.item()]
    raise UserErrorException(f"Filter value {value!r} is not supported: use numbers, strings, booleans or datetimes.")


class ColumnExpression:
    """A lazy condition over dataset columns: `ds["age"] > 30`, `(ds["a"] == 1) | ds["b"].starts_with("x")`."""

    __hash__ = None  # type: ignore[assignment]

    def __init__(self, node: list):
        self._node = node

    def _cmp(self, op: str, other: Any) -> ColumnExpression:
        return ColumnExpression(["cmp", op, self._node, _node(other)])

    def __eq__(self, other):  # type: ignore[override]
        return self._cmp("==", other)

    def __ne__(self, other):  # type: ignore[override]
        return self._cmp("!=", other)

    def __lt__(self, other):
        return self._cmp("<", other)

    def __le__(self, other):
        return self._cmp("<=", other)

    def __gt__(self, other):
        return self._cmp(">", other)

    def __ge__(self, other):
        return self._cmp(">=", other)

    def __and__(self, other):
        return ColumnExpression(["and", self._node, _node(other)])

    def __or__(self, other):
        return ColumnExpression(["or", self._node, _node(other)])

    def __invert__(self):
        return ColumnExpression(["not", self._node])

    def __bool__(self):
        raise UserErrorException("A dataset condition has no truth value: combine conditions with & | ~ "
                                 "(not and/or/not), e.g. ds.filter((ds['a'] > 1) & (ds['b'] == 'x')).")

    def isin(self, values) -> ColumnExpression:
        return ColumnExpression(["isin", self._node, [_node(v) for v in values]])

    def starts_with(self, prefix: str) -> ColumnExpression:
        return ColumnExpression(["str", "starts_with", self._node, str(prefix)])

    def ends_with(self, suffix: str) -> ColumnExpression:
        return ColumnExpression(["str", "ends_with", self._node, str(suffix)])

    def contains(self, text: str) -> ColumnExpression:
        return ColumnExpression(["str", "match_substring", self._node, str(text)])

    def is_null(self) -> ColumnExpression:
        return ColumnExpression(["null", self._node])

    def __repr__(self) -> str:
        return f"ColumnExpression({self._node!r})"


def columns_of(node: list) -> set[str]:
    if node[0] == "col":
        return {node[1]}
    out: set[str] = set()
    for part in node[1:]:
        if isinstance(part, list) and part and isinstance(part[0], str):
            out |= columns_of(part)
        elif isinstance(part, list):
            for p in part:
                if isinstance(p, list):
                    out |= columns_of(p)
    return out


# -- partition_format ------------------------------------------------------------------------------
_DT = {"yyyy": (r"\d{4}", "%Y"), "MM": (r"\d{2}", "%m"), "dd": (r"\d{2}", "%d"), "HH": (r"\d{2}", "%H"),
       "mm": (r"\d{2}", "%M"), "ss": (r"\d{2}", "%S")}


def parse_partition_format(fmt: str) -> tuple[re.Pattern, dict[str, str | None]]:
    """A regex matching the end of a file's path, and each column's strptime format (None: a string column).

    `/{Department}/{PartitionDate:yyyy/MM/dd}/data.parquet` -> Department (string), PartitionDate (datetime).
    """
    columns: dict[str, str | None] = {}
    pattern = ""
    for part in re.split(r"(\{[^{}]*\})", fmt):
        if part.startswith("{") and part.endswith("}"):
            name, _, dt = part[1:-1].partition(":")
            if not name.isidentifier() or name in columns:
                raise UserErrorException(f"partition_format {fmt!r}: {{{name}}} is not a valid, unique column name.")
            if dt:
                sub, strp = "", ""
                for tok in re.split(r"(yyyy|MM|dd|HH|mm|ss)", dt):
                    sub += _DT[tok][0] if tok in _DT else re.escape(tok)
                    strp += _DT[tok][1] if tok in _DT else tok.replace("%", "%%")
                pattern += f"(?P<{name}>{sub})"
                columns[name] = strp
            else:
                pattern += f"(?P<{name}>[^/]+)"
                columns[name] = None
        else:
            pattern += ".*".join(re.escape(p) for p in part.split("**")).replace(r"\*", "[^/]*")
    if not columns:
        raise UserErrorException(f"partition_format {fmt!r} names no column: use e.g. '/{{year}}/{{month}}/*.parquet'.")
    return re.compile(pattern + "$"), columns


def partition_values(fmt: str, rel: str) -> dict[str, Any]:
    regex, columns = parse_partition_format(fmt)
    m = regex.search("/" + rel.lstrip("/"))
    if not m:
        raise UserErrorException(f"File {rel!r} does not match partition_format {fmt!r}: fix the format or the "
                                 "dataset's path pattern so that every file matches.")
    return {c: (datetime.strptime(m.group(c), f) if f else m.group(c)) for c, f in columns.items()}


TYPE_NAMES = {"int": "int64", "float": "float64", "str": "large_string", "string": "large_string", "bool": "bool",
              "boolean": "bool", "datetime": "timestamp[us]", "long": "int64", "double": "float64"}


def type_name(t: Any) -> str:
    """A column type given by the user (`int`, `"float"`, `str`, ...) as its name in a definition."""
    if isinstance(t, type):
        t = {int: "int", float: "float", str: "str", bool: "bool", datetime: "datetime"}.get(t, t.__name__)
    t = str(t).lower()
    if t not in TYPE_NAMES:
        raise UserErrorException(f"Column type {t!r} is not supported: use one of {sorted(TYPE_NAMES)}.")
    return t


