"""The result tables' schemas, defined once: columns, their types and the partition key of every table.

The writer (:class:`storage.results.ResultStore`) stores exactly these columns with these Arrow types, the readers
(``storage.load``, the report) get them back with these pandas types, and a job kind names the tables it fills.
Adding a column is one edit here (and the job that computes it). A new job kind may add a table with
:func:`register_table`.
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

    def empty(self) -> pd.DataFrame:
        """An empty DataFrame with this table's columns and types."""
        return pd.DataFrame({c: pd.Series(dtype=_TYPES[t][1]) for c, t in self.columns.items()})

    def conform(self, frame: pd.DataFrame) -> pd.DataFrame:
        """``frame``'s columns of this table, in order and with this table's pandas types (as read back):
        strings as Python str (None when missing), numbers as int64/float64 (float64 if an int column has gaps)."""
        out = pd.DataFrame(index=frame.index)
        for col, kind in self.columns.items():
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


def _table(name: str, partition: str, columns: dict[str, str], provenance: bool = False) -> TableSchema:
    return TableSchema(name, {**columns, **JOB_COLUMNS, **(PROVENANCE_COLUMNS if provenance else {})}, partition)


TABLES: dict[str, TableSchema] = {t.name: t for t in (
    _table("accuracy", "model", {
        "model": "string", "train_group": "string", "test_group": "string", "seed": "int", "accuracy": "float",
        "accuracy_male": "float", "accuracy_female": "float", "balanced_accuracy": "float", "n_test": "int",
        "n_train": "int", "train_seconds": "float"},
        provenance=True),
    _table("predictions", "model", {
        "model": "string", "train_group": "string", "test_group": "string", "seed": "int", "row": "int",
        "identity": "int", "y_true": "int", "y_pred": "int", "score": "float"}),
    _table("verification", "test_group", {
        "test_group": "string", "seed": "int", "eer": "float", "eer_threshold": "float",
        "fnmr_at_fmr_1e_2": "float", "fnmr_at_fmr_1e_3": "float", "genuine_mean": "float",
        "impostor_mean": "float", "n_genuine": "int", "n_impostor": "int", "impostor_sampled": "bool",
        "eer_ci_low": "float", "eer_ci_high": "float", "fnmr_at_fmr_1e_2_ci_low": "float",
        "fnmr_at_fmr_1e_2_ci_high": "float", "fnmr_at_fmr_1e_3_ci_low": "float", "fnmr_at_fmr_1e_3_ci_high": "float",
        "n_resamples": "int"},
        provenance=True),
    _table("verification_curve", "test_group", {
        "test_group": "string", "seed": "int", "threshold": "float", "fmr": "float", "fnmr": "float"}),
    _table("verification_hist", "test_group", {
        "test_group": "string", "seed": "int", "kind": "string", "bin_left": "float", "bin_right": "float",
        "count": "int"}),
    _table("impostor_matrix", "seed", {
        "seed": "int", "group_a": "string", "group_b": "string", "fmr": "float", "n_pairs": "int",
        "threshold": "float", "false_matches": "int", "ci_low": "float", "ci_high": "float", "display": "string",
        "resolved": "bool", "reason": "string"}),
    _table("demographic_rates", "seed", {
        "seed": "int", "group": "string", "fmr": "float", "fnmr": "float", "threshold": "float",
        "n_genuine": "int", "n_impostor": "int", "false_matches": "int", "false_non_matches": "int",
        "fmr_ci_low": "float", "fmr_ci_high": "float", "fnmr_ci_low": "float", "fnmr_ci_high": "float",
        "resolved": "bool", "reason": "string"}),
    _table("group_eer", "seed", {
        "seed": "int", "group": "string", "eer": "float", "eer_threshold": "float", "n_genuine": "int",
        "n_impostor": "int"}),
    _table("operating_points", "seed", {
        "seed": "int", "group": "string", "target_fmr": "float", "threshold_kind": "string", "threshold": "float",
        "false_matches": "int", "n_impostor": "int", "fmr": "float", "fmr_ci_low": "float",
        "fmr_ci_high": "float", "fmr_display": "string", "false_non_matches": "int", "n_genuine": "int",
        "fnmr": "float", "fnmr_ci_low": "float", "fnmr_ci_high": "float", "fnmr_display": "string",
        "resolved": "bool", "reason": "string"}),
    _table("verification_ci", "seed", {
        "seed": "int", "quantity": "string", "group_a": "string", "group_b": "string", "target_fmr": "float",
        "metric": "string", "estimate": "float", "k": "int", "n": "int", "ci_low": "float", "ci_high": "float",
        "n_resamples": "int", "n_defined": "int", "cp_low": "float", "cp_high": "float", "display": "string",
        "note": "string"}),
    _table("allpairs_counts", "shard", {
        "shard": "int", "n_shards": "int", "bits": "int", "group_a": "string", "group_b": "string",
        "kind": "string", "bin": "int", "count": "int"}),
    _table("allpairs_tail", "shard", {
        "shard": "int", "n_shards": "int", "bits": "int", "lo_bin": "int", "kind": "string", "identity_a": "int",
        "identity_b": "int", "bin": "int", "count": "int"}),
    _table("allpairs_identities", "shard", {
        "shard": "int", "n_shards": "int", "bits": "int", "lo_bin": "int", "identity": "int", "group": "string",
        "n_images": "int"}),
    _table("pair_groups", "pairs_file", {
        "pairs_file": "string", "group": "string", "n_pairs": "int", "n_genuine": "int", "n_impostor": "int",
        "accuracy_mean": "float", "accuracy_std": "float", "accuracy_se": "float", "eer": "float",
        "eer_threshold": "float"}),
    _table("pair_operating_points", "pairs_file", {
        "pairs_file": "string", "group": "string", "target_fmr": "float", "threshold": "float",
        "false_matches": "int", "n_impostor": "int", "fnmr": "float", "resolved": "bool", "reason": "string"}),
    _table("pair_across", "pairs_file", {
        "pairs_file": "string", "n_groups": "int", "accuracy_std_groups": "float", "skewed_error_ratio": "float",
        "best_group": "string", "worst_group": "string", "note": "string"}),
    _table("tsne", "subset", {
        "seed": "int", "subset": "string", "x": "float", "y": "float", "ethnicity": "string", "gender": "string",
        "identity": "string"}),
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
