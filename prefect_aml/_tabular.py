"""How a TabularDataset is read: pyarrow datasets over datastore files, lazy operations streamed in order.

The definition's leading filters (and every column selection) are pushed into the pyarrow scan, so
partition columns and parquet statistics prune files and row groups before anything is read;
row operations (`take`, `skip`, samples, later filters) are applied batch by batch, and a `take`
stops the scan as soon as it has its rows. Conditions arrive as the serialisable trees built in
`_expr` (`ds["a"] > 1`), which is how a registered version keeps them.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.dataset as pads
from pyarrow.fs import FSSpecHandler, PyFileSystem

from prefect_aml._expr import COMPARISONS, TYPE_NAMES, columns_of, parse_partition_format, partition_values
from prefect_aml.blocks.datastores import LocalDatastore
from prefect_aml.exceptions import UserErrorException


def compile_node(node: list) -> Any:
    """The pyarrow expression (or literal) of a serialised condition."""
    kind = node[0]
    if kind == "col":
        return pc.field(node[1])
    if kind == "lit":
        return node[1]
    if kind == "ts":
        return pa.scalar(datetime.fromisoformat(node[1]), pa.timestamp("us"))
    if kind == "cmp":
        left, right = compile_node(node[2]), compile_node(node[3])
        if not isinstance(left, pc.Expression):
            left = pc.scalar(left)
        return getattr(pc, COMPARISONS[node[1]])(left, right)
    if kind == "and":
        return compile_node(node[1]) & compile_node(node[2])
    if kind == "or":
        return compile_node(node[1]) | compile_node(node[2])
    if kind == "not":
        return ~compile_node(node[1])
    if kind == "isin":
        return compile_node(node[1]).isin([compile_node(v) for v in node[2]])
    if kind == "str":
        return getattr(pc, node[1])(compile_node(node[2]), pattern=node[3])
    if kind == "null":
        return compile_node(node[1]).is_null()
    raise UserErrorException(f"Unknown condition {node!r} in a dataset definition.")


# -- the pyarrow dataset ---------------------------------------------------------------------------
def _arrow_type(name: str) -> pa.DataType:
    return pa.timestamp("us") if TYPE_NAMES[name] == "timestamp[us]" else pa.type_for_alias(TYPE_NAMES[name])


def _arrow_fs(store):
    if isinstance(store, LocalDatastore):
        return pa.fs.LocalFileSystem()
    return PyFileSystem(FSSpecHandler(store.filesystem()))


def _format(options: dict, names: list[str] | None = None):
    if options.get("format") == "parquet":
        return pads.ParquetFileFormat()
    read = pacsv.ReadOptions(column_names=names) if names and not options.get("header", True) else (
        pacsv.ReadOptions(autogenerate_column_names=not options.get("header", True)))
    types = {}
    if names and not options.get("infer_column_types", True):
        types = {n: pa.large_string() for n in names}
    types.update({c: _arrow_type(t) for c, t in (options.get("column_types") or {}).items()})
    return pads.CsvFileFormat(read_options=read, parse_options=pacsv.ParseOptions(
        delimiter=options.get("separator", ","), newlines_in_values=bool(options.get("support_multi_line"))),
        convert_options=pacsv.ConvertOptions(column_types=types, strings_can_be_null=not options.get(
            "empty_as_string", False)))


def arrow_dataset(files: list[tuple[Any, str]], options: dict) -> pads.Dataset:
    """One pyarrow dataset over the files, with partition and Path columns as partition expressions."""
    groups: dict[str, tuple[Any, Any, list, list]] = {}
    fmt_text = options.get("partition_format")
    extra: dict[str, pa.DataType] = {}
    if fmt_text:
        extra.update({c: pa.timestamp("us") if f else pa.large_string()
                      for c, f in parse_partition_format(fmt_text)[1].items()})
    if options.get("include_path"):
        extra["Path"] = pa.large_string()
    for store, rel in files:
        if store.name not in groups:
            groups[store.name] = (store, _arrow_fs(store), [], [])
        _, afs, paths, parts = groups[store.name]
        fs = store.filesystem()
        paths.append(fs._strip_protocol(store.full_path(rel)))
        expr = pc.scalar(True)
        values = partition_values(fmt_text, rel) if fmt_text else {}
        if options.get("include_path"):
            values["Path"] = rel
        for c, v in values.items():
            expr = expr & (pc.field(c) == pa.scalar(v, extra[c]))
        parts.append(expr)
    _, first_fs, first_paths, _ = next(iter(groups.values()))
    fmt = _format(options)
    names = None
    if options.get("format") != "parquet" and (not options.get("header", True)
                                               or not options.get("infer_column_types", True)):
        names = fmt.inspect(first_paths[0], filesystem=first_fs).names
        if not options.get("header", True):
            names = [f"Column{i + 1}" for i in range(len(names))]
        fmt = _format(options, names)
    # the schema: the first few readable files of each datastore (a broken file in a partition that a
    # filter excludes is never opened by the scan, so it must not stop the read here either)
    schemas, errors = [], []
    for store, afs, paths, _ in groups.values():
        found = 0
        for p in paths:
            try:
                schemas.append(fmt.inspect(p, filesystem=afs))
            except (pa.ArrowInvalid, OSError) as err:
                errors.append(f"{store.name}:{p}: {err}")
                continue
            found += 1
            if found >= max(1, 8 // len(groups)):
                break
    if not schemas:
        raise UserErrorException(f"No file of the dataset can be read as {options.get('format', 'delimited')}: "
                                 f"{errors[0]}")
    schema = pa.unify_schemas(schemas, promote_options="permissive")
    # text as large_string: what pandas' string dtype holds, so to_pandas() does not copy every string
    schema = pa.schema([f.with_type(pa.large_string()) if pa.types.is_string(f.type) else f for f in schema])
    for c, t in extra.items():
        if c in schema.names:
            raise UserErrorException(f"Column {c!r} is both in the files and a partition/Path column: rename one.")
        schema = schema.append(pa.field(c, t))
    if options.get("format") == "parquet":
        for c, t in (options.get("column_types") or {}).items():
            if c in schema.names:
                schema = schema.set(schema.get_field_index(c), pa.field(c, _arrow_type(t)))
    parts = [pads.FileSystemDataset.from_paths(paths, schema=schema, format=fmt, filesystem=afs, partitions=ex)
             for _, afs, paths, ex in groups.values()]
    return parts[0] if len(parts) == 1 else pads.dataset(parts)


# -- lazy operations ------------------------------------------------------------------------------
ROW_OPS = ("take", "skip", "sample", "split")


def plan_ops(names: list[str], ops: list) -> tuple[list[str], list[str], Any, list]:
    """(final columns, columns to read, filter pushed into the scan, operations applied per batch)."""
    cols = list(names)
    referenced: set[str] = set()
    pushdown = None
    row_ops: list = []
    for op in ops:
        kind = op[0]
        if kind in ("keep", "drop"):
            missing = [c for c in op[1] if c not in cols]
            if missing:
                raise UserErrorException(f"Columns {missing} are not in the dataset; its columns: {cols}.")
            cols = [c for c in cols if c in op[1]] if kind == "keep" else [c for c in cols if c not in op[1]]
        elif kind == "filter":
            missing = sorted(columns_of(op[1]) - set(cols))
            if missing:
                raise UserErrorException(f"The filter names columns {missing} that are not in the dataset; "
                                         f"its columns: {cols}.")
            referenced |= columns_of(op[1])
            expr = compile_node(op[1])
            if any(o[0] in ROW_OPS for o in row_ops):
                row_ops.append(["filter", expr])
            else:
                pushdown = expr if pushdown is None else pushdown & expr
        elif kind in ROW_OPS:
            row_ops.append(list(op))
        else:
            raise UserErrorException(f"Unknown dataset operation {kind!r}.")
    needed = [c for c in names if c in cols or c in referenced]
    return cols, needed, pushdown, row_ops


def uniform(seed: int, index: np.ndarray) -> np.ndarray:
    """A uniform [0, 1) number per row index, the same whatever the batch boundaries (splitmix64)."""
    x = index.astype(np.uint64) + np.uint64((seed * 0x9E3779B97F4A7C15) % 2**64)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    x = x ^ (x >> np.uint64(31))
    return (x >> np.uint64(11)).astype(np.float64) / float(2**53)


def _parquet(dataset: pads.Dataset) -> bool:
    return isinstance(getattr(dataset, "format", None), pads.ParquetFileFormat) or any(
        isinstance(getattr(c, "format", None), pads.ParquetFileFormat) for c in getattr(dataset, "children", []))


def stream(dataset: pads.Dataset, ops: list, batch_size: int | None = None, lean: bool = False
           ) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
    """The dataset's rows after the operations, batch by batch, in file order."""
    cols, needed, pushdown, row_ops = plan_ops(dataset.schema.names, ops)
    kwargs: dict[str, Any] = {"columns": needed, "filter": pushdown}
    if batch_size:
        kwargs["batch_size"] = batch_size
    if lean:  # flat memory: one file and a couple of batches in flight, parquet pages read as decoded
        kwargs.update(fragment_readahead=1, batch_readahead=2)
        if _parquet(dataset):
            kwargs["fragment_scan_options"] = pads.ParquetFragmentScanOptions(pre_buffer=False)
    schema = pa.schema([dataset.schema.field(c) for c in cols])
    return schema, _apply(dataset.scanner(**kwargs).to_batches(), row_ops, cols)


def _apply(batches: Iterator[pa.RecordBatch], row_ops: list, cols: list[str]) -> Iterator[pa.RecordBatch]:
    """Row operations in order over a stream of batches; a `take` ends the stream once it has its rows."""
    state = [0] * len(row_ops)
    for batch in batches:
        done = False
        for i, op in enumerate(row_ops):
            kind = op[0]
            if kind == "filter":
                batch = batch.filter(op[1])
            elif kind == "take":
                batch = batch.slice(0, max(0, op[1] - state[i]))
                state[i] += batch.num_rows
                done = done or state[i] >= op[1]
            elif kind == "skip":
                drop = min(batch.num_rows, max(0, op[1] - state[i]))
                state[i] += drop
                batch = batch.slice(drop)
            else:  # sample / split: a row is in by a seeded number of its position here
                u = uniform(op[2], np.arange(state[i], state[i] + batch.num_rows))
                state[i] += batch.num_rows
                mask = u < op[1] if kind == "sample" or op[3] == 0 else u >= op[1]
                batch = batch.filter(pa.array(mask))
        if batch.num_rows:
            yield batch.select(cols)
        if done:
            return


def _delimited_files(dataset: pads.Dataset, needed: list[str], pushdown=None) -> Iterator[tuple]:
    """Each file of a delimited dataset whose partition values can match `pushdown`: its format, its
    fragment, its partition values and the needed columns that are in the file itself."""
    for part in dataset.children if isinstance(dataset, pads.UnionDataset) else [dataset]:
        for fragment in part.get_fragments(filter=pushdown):
            keys = {c: v for c, v in pads.get_partition_keys(fragment.partition_expression).items() if c in needed}
            yield part.format, fragment, keys, [c for c in needed if c not in keys]


def _constant(schema: pa.Schema, column: str, value, rows: int) -> pa.Array:
    """A partition (or Path) column of one file: its value on every row."""
    return pa.repeat(pa.scalar(value, schema.field(column).type), rows)


def _read_delimited(dataset: pads.Dataset, needed: list[str], pushdown) -> pa.Table:
    """Whole delimited files through pyarrow's multi-threaded CSV reader (a dataset scan of CSV is
    slower), one file at a time; files whose partition values cannot match are skipped."""
    tables = []
    for fmt, fragment, keys, own in _delimited_files(dataset, needed, pushdown):
        convert = fmt.default_fragment_scan_options.convert_options
        types = {c: dataset.schema.field(c).type for c in own}
        opts = pacsv.ConvertOptions(column_types=types, include_columns=own,
                                    strings_can_be_null=convert.strings_can_be_null)
        with fragment.filesystem.open_input_stream(fragment.path) as f:
            table = pacsv.read_csv(f, read_options=fmt.default_fragment_scan_options.read_options,
                                   parse_options=fmt.parse_options, convert_options=opts)
        for c in keys:
            table = table.append_column(dataset.schema.field(c), _constant(dataset.schema, c, keys[c], table.num_rows))
        tables.append(table.select(needed))
    schema = pa.schema([dataset.schema.field(c) for c in needed])
    table = pa.concat_tables(tables) if tables else schema.empty_table()
    return table.filter(pushdown) if pushdown is not None else table


def read_pandas(dataset: pads.Dataset, ops: list):
    """The whole result as a pandas DataFrame read by pandas' own CSV parser, or None where that parser
    would not give exactly what the arrow path gives (then the caller reads through `read_table`).

    Taken for delimited files read whole (every column, no filter, no row operation) whose columns are
    integers, floats or text: pandas' C parser is about twice as fast per core as pyarrow's, and with
    pyarrow's null markers it returns the same frame. It is called with no more options than that
    (pandas' column selection and explicit text types each double its time); every column's type is
    checked against the arrow schema afterwards, and any difference falls back to the arrow path."""
    if _parquet(dataset):
        return None
    cols, needed, pushdown, row_ops = plan_ops(dataset.schema.names, ops)
    if pushdown is not None or row_ops or needed != dataset.schema.names:
        return None
    schema = dataset.schema
    dtypes = schema.empty_table().to_pandas().dtypes  # what the arrow path gives each column (no nulls)
    frames = []
    for fmt, fragment, keys, own in _delimited_files(dataset, needed):
        read, convert = fmt.default_fragment_scan_options.read_options, fmt.default_fragment_scan_options.convert_options
        if (read.autogenerate_column_names or read.skip_rows or read.skip_rows_after_names
                or read.encoding != "utf8" or not convert.strings_can_be_null):
            return None
        kinds = {c: _pandas_kind(schema.field(c).type) for c in own}
        if None in kinds.values() or any(not pa.types.is_large_string(schema.field(c).type) for c in keys):
            return None
        source = fragment.path if isinstance(fragment.filesystem, pa.fs.LocalFileSystem) else (
            fragment.filesystem.open_input_stream(fragment.path))
        try:
            df = pd.read_csv(source, sep=fmt.parse_options.delimiter, header=None if read.column_names else 0,
                             names=read.column_names or None, keep_default_na=False,
                             na_values=list(convert.null_values),
                             dtype={c: dtypes[c] for c in own if kinds[c] == "float"})
        except (ValueError, TypeError, UnicodeError, pd.errors.ParserError):
            return None
        finally:
            if not isinstance(source, str):
                source.close()
        if list(df.columns) != own:
            return None
        for c in own:  # integers as the arrow path gives them: int64, or float64 where a value is missing
            if not (df[c].dtype == dtypes[c] or (kinds[c] == "int" and df[c].dtype == "float64"
                                                 and df[c].isna().any())):
                return None
        for c in keys:
            df[c] = _constant(schema, c, keys[c], len(df)).to_pandas()
        frames.append(df[needed])
    if not frames:
        return None
    df = frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)
    return df[cols]


def _pandas_kind(t: pa.DataType) -> str | None:
    if pa.types.is_int64(t):
        return "int"
    if pa.types.is_float64(t) or pa.types.is_float32(t):
        return "float"
    if pa.types.is_large_string(t) or pa.types.is_string(t):
        return "text"
    return None


def read_table(dataset: pads.Dataset, ops: list) -> pa.Table:
    """The whole result as one table; the common shapes take pyarrow's multi-threaded paths."""
    cols, needed, pushdown, row_ops = plan_ops(dataset.schema.names, ops)
    if not _parquet(dataset):
        table = _read_delimited(dataset, needed, pushdown)
        if row_ops:
            table = pa.Table.from_batches(list(_apply(iter(table.to_batches()), row_ops, needed)),
                                          schema=table.schema)
        return table.select(cols)
    if not row_ops:
        return dataset.to_table(columns=needed, filter=pushdown).select(cols)
    if len(row_ops) == 1 and row_ops[0][0] == "take":
        return dataset.head(row_ops[0][1], columns=needed, filter=pushdown).select(cols)
    schema, batches = stream(dataset, ops)
    return pa.Table.from_batches(list(batches), schema=schema)


# -- profile ---------------------------------------------------------------------------------------
DISTINCT_LIMIT = 10_000


def profile(schema: pa.Schema, batches: Iterator[pa.RecordBatch]):
    """Per-column summary statistics in one pass (flat memory): type, count, missing, distinct, min, max,
    mean, std. Returns a pandas DataFrame with one column per dataset column."""
    stats = {f.name: {"type": "string" if pa.types.is_large_string(f.type) else str(f.type), "count": 0,
                      "missing": 0, "min": None, "max": None, "sum": 0.0, "sumsq": 0.0, "distinct": set()}
             for f in schema}
    rows = 0
    for batch in batches:
        rows += batch.num_rows
        for f, col in zip(schema, batch.columns, strict=True):
            s = stats[f.name]
            s["missing"] += col.null_count
            s["count"] += len(col) - col.null_count
            if len(col) == col.null_count:
                continue
            if pa.types.is_nested(f.type):
                continue
            mm = pc.min_max(col)
            lo, hi = mm["min"].as_py(), mm["max"].as_py()
            s["min"] = lo if s["min"] is None else min(s["min"], lo)
            s["max"] = hi if s["max"] is None else max(s["max"], hi)
            if pa.types.is_integer(f.type) or pa.types.is_floating(f.type):
                as_float = pc.cast(col, pa.float64())
                s["sum"] += pc.sum(as_float).as_py() or 0.0
                s["sumsq"] += pc.sum(pc.multiply(as_float, as_float)).as_py() or 0.0
            if s["distinct"] is not None:
                s["distinct"].update(pc.unique(col).to_pylist())
                s["distinct"].discard(None)
                if len(s["distinct"]) > DISTINCT_LIMIT:
                    s["distinct"] = None
    table = {}
    for name, s in stats.items():
        numeric = s["type"].startswith(("int", "uint", "float", "double"))
        n = s["count"]
        mean = s["sum"] / n if numeric and n else None
        std = float(np.sqrt(max(0.0, (s["sumsq"] - n * mean * mean) / (n - 1)))) if numeric and n > 1 else None
        table[name] = {"type": s["type"], "count": n, "missing": s["missing"],
                       "distinct": len(s["distinct"]) if s["distinct"] is not None else f">{DISTINCT_LIMIT}",
                       "min": s["min"], "max": s["max"], "mean": mean, "std": std}
    df = pd.DataFrame(table, dtype=object)
    df.attrs["rows"] = rows
    return df
