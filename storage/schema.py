"""The result tables' schemas: columns, their types and the partition key of every table, and their registry.

The writer (:class:`storage.results.ResultStore`) stores exactly these columns with these Arrow types, the readers
(``storage.load``, the report) get them back with these pandas types. Each job kind declares the tables it fills
(``tasks.kinds``: a :class:`TableSchema` in the kind's module, registered with the kind by
:func:`register_table`); this module knows only the store's own ``failures`` table. Adding a column is one edit
in its kind's module (and the job that computes it).
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import pyarrow as pa

# Column types: name -> (Arrow type written, pandas dtype read back).
_TYPES: dict[str, tuple[pa.DataType, str]] = {
    "string": (pa.string(), "object"),
    "int": (pa.int64(), "int64"),
    "float": (pa.float64(), "float64"),
    "bool": (pa.bool_(), "bool"),
}
JOB_COLUMNS = {"job_id": "string"}                                   # every table: which job wrote the row
PROVENANCE_COLUMNS = {"node": "string", "finished_at": "string"}     # where and when (summary tables)


@dataclass(frozen=True)
class TableSchema:
    """One results table: ``columns`` (name -> "string" | "int" | "float" | "bool", in order) and the column
    whose values name the Hive partitions (``<table>/<partition>=<value>/<job_id>.parquet``)."""

    name: str
    columns: dict[str, str]
    partition: str

    def __post_init__(self) -> None:
        unknown = {t for t in self.columns.values() if t not in _TYPES}
        if unknown or self.partition not in self.columns:
            raise ValueError(f"table {self.name!r}: unknown column types {sorted(unknown)} or partition "
                             f"{self.partition!r} not among its columns")

    @property
    def names(self) -> list[str]:
        return list(self.columns)

    def arrow_schema(self, without: str | None = None) -> pa.Schema:
        """The Arrow schema of the stored files (``without`` the partition column, kept in folder names)."""
        return pa.schema([(c, _TYPES[t][0]) for c, t in self.columns.items() if c != without])

    def empty(self, columns: list[str] | None = None) -> pd.DataFrame:
        """An empty DataFrame with this table's columns (or ``columns`` of them) and types."""
        return pd.DataFrame({c: pd.Series(dtype=_TYPES[t][1]) for c, t in self.columns.items()
                             if columns is None or c in columns})

    def conform(self, frame: pd.DataFrame, columns: list[str] | None = None) -> pd.DataFrame:
        """``frame``'s columns of this table (or ``columns`` of them), in order and with this table's pandas types
        (as read back): strings as Python str (None when missing), numbers as int64/float64 (float64 if an int
        column has gaps)."""
        out = pd.DataFrame(index=frame.index)
        for col, kind in self.columns.items():
            if columns is not None and col not in columns:
                continue
            values = frame[col]
            if isinstance(values.dtype, pd.CategoricalDtype):
                values = values.astype(values.cat.categories.dtype)
            if kind == "string":
                values = values.astype(object).where(values.notna(), None)
                out[col] = values.map(lambda v: v if v is None else str(v))
            elif kind == "bool":
                out[col] = values.astype(bool)
            else:
                values = pd.to_numeric(values, errors="coerce")
                out[col] = values.astype("int64") if kind == "int" and values.notna().all() else values.astype(float)
        return out.reset_index(drop=True)


def result_table(name: str, partition: str, columns: dict[str, str], provenance: bool = False) -> TableSchema:
    """A job kind's table: ``columns``, then ``job_id`` (and ``node``, ``finished_at`` with ``provenance``)."""
    return TableSchema(name, {**columns, **JOB_COLUMNS, **(PROVENANCE_COLUMNS if provenance else {})}, partition)


def mitigated_table(base: TableSchema) -> TableSchema:
    """The mitigation axis' copy of table ``base``: ``mitigated_<name>``, a ``mitigation`` column first (the
    grid mitigation's name) and the partition, then ``base``'s columns. The ``none`` rows stay in ``base``."""
    return TableSchema(f"mitigated_{base.name}", {"mitigation": "string", **base.columns}, "mitigation")


# The store's own table; the job kinds register theirs (tasks.kinds: each kind declares its tables).
TABLES: dict[str, TableSchema] = {t.name: t for t in (
    TableSchema("failures", {"job_id": "string", "kind": "string", "description": "string", "error": "string",
                             "traceback": "string", "finished_at": "string"}, "kind"),
)}


def register_table(schema: TableSchema) -> None:
    """Add a table (for a new job kind); registering the same schema again is a no-op, a different one an error."""
    known = TABLES.get(schema.name)
    if known is not None and known != schema:
        raise ValueError(f"results table {schema.name!r} is already defined with other columns")
    TABLES[schema.name] = schema


def schema(name: str) -> TableSchema:
    """The schema of table ``name``; KeyError naming the known tables otherwise."""
    try:
        return TABLES[name]
    except KeyError:
        raise KeyError(f"unknown results table {name!r}; known: {', '.join(TABLES)}") from None
