"""The ``table`` format: an existing Parquet or CSV table.

Columns identity, image, ethnicity (optional), gender (values ``asian`` / ``caucasian`` / ``black`` or any group
names, and ``male`` / ``female``, any case), any further attribute columns (:mod:`storage.attributes`: numbers,
or strings) and the embedding: in Parquet one ``embedding`` column (``fixed_size_list<float>`` or
``list<float>``); in CSV the columns ``e0, e1, ..., e{d-1}`` (in any order). ``columns`` maps other names, e.g.
``{"identity": "subject_id"}``; for CSV, ``{"embedding": "emb_"}`` changes the embedding columns' prefix
(``emb_0 ... emb_{d-1}``).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from storage.errors import InputError
from storage.importers.common import (CSV_EMBEDDING_PREFIX, check_mapping, csv_error, csv_header,
                                      float_columns_to_matrix, looks_like_csv_table, pick_column, strings_column)
from storage.attributes import parse_values
from storage.table import (EMBEDDING_COLUMN, LABEL_COLUMNS, OPTIONAL_COLUMNS, EmbeddingTable, check_attribute_name,
                           check_finite, parse_groups, parse_labels, read_parquet_table)
from storage.vocab import GENDERS

_PARQUET_SUFFIXES = (".parquet", ".pq")


def detect(src: Path, embedding_prefix: str | None = None) -> bool:
    """Whether ``src`` is a Parquet file, or a CSV with embedding columns ``e0 ...`` (``<embedding_prefix>0 ...``)."""
    if not src.is_file():
        return False
    suffix = src.suffix.lower()
    return suffix in _PARQUET_SUFFIXES or (suffix == ".csv" and looks_like_csv_table(csv_header(src),
                                                                                     embedding_prefix))


def read(src: Path, columns: dict[str, str]) -> EmbeddingTable:
    """The embedding table in a Parquet or CSV file (not yet validated when CSV)."""
    check_mapping(columns, (*LABEL_COLUMNS, EMBEDDING_COLUMN), "table")
    if src.is_dir():
        raise InputError(f"{src}: is a folder; the table format expects a .parquet or .csv file")
    if src.suffix.lower() in _PARQUET_SUFFIXES:
        return read_parquet_table(src, columns)
    if src.suffix.lower() != ".csv":
        raise InputError(f"{src}: expected a .parquet or .csv table")
    header = csv_header(src)
    prefix = columns.get(EMBEDDING_COLUMN, CSV_EMBEDDING_PREFIX)
    label_idx = {}
    for key in LABEL_COLUMNS:
        found = pick_column(header, key, (key,), columns, src, required=key not in OPTIONAL_COLUMNS)
        if found is not None:
            label_idx[key] = found
    feature_at: dict[int, int] = {}
    pattern = re.compile(re.escape(prefix) + r"(\d+)")
    for i, h in enumerate(header):
        m = pattern.fullmatch(h.strip())
        if m:
            k = int(m.group(1))
            if k in feature_at:
                raise InputError(f"{src}: embedding column {prefix}{k} appears twice")
            feature_at[k] = i
    if not feature_at:
        raise InputError(f"{src}: no embedding columns; expected columns {prefix}0, {prefix}1, ... (or --map "
                         f"embedding=<prefix>)")
    d = max(feature_at) + 1
    gaps = [k for k in range(d) if k not in feature_at]
    if gaps:
        raise InputError(f"{src}: embedding column {prefix}{gaps[0]} is missing; expected {prefix}0 ... "
                         f"{prefix}{d - 1} ({len(gaps)} missing)")
    extra = [i for i, h in enumerate(header) if i not in label_idx.values() and i not in feature_at.values()]
    for i in extra:
        check_attribute_name(header[i].strip(), f"{src}: column {header[i]!r}")
    names = [f"c{i}" for i in range(len(header))]
    feature_names = [names[feature_at[k]] for k in range(d)]
    types = {c: pa.float32() for c in feature_names}
    types.update({names[i]: pa.string() for i in [*label_idx.values(), *extra]})
    try:
        arrow = pacsv.read_csv(src, read_options=pacsv.ReadOptions(column_names=names, skip_rows=1),
                               convert_options=pacsv.ConvertOptions(
                                   column_types=types, include_columns=list(dict.fromkeys(
                                       [names[i] for i in [*label_idx.values(), *extra]] + feature_names)),
                                   null_values=[""], strings_can_be_null=True))
    except pa.ArrowException as exc:
        raise csv_error(src, exc) from exc
    if arrow.num_rows == 0:
        raise InputError(f"{src}: no data rows; expected one row per image")
    matrix = float_columns_to_matrix(arrow, feature_names, [f"{prefix}{k}" for k in range(d)], src, 0)
    check_finite(matrix, str(src), lambda r: f"data row {r} (line {r + 2})")
    labels = {}
    for key, i in label_idx.items():
        col = arrow.column(names[i])
        if col.null_count:
            bad = int(np.flatnonzero(col.is_null().to_numpy(zero_copy_only=False))[0])
            raise InputError(f"{src}: column {header[i]!r} is empty at data row {bad} (line {bad + 2}); expected a "
                             f"value in every row")
        labels[key] = col
    ethnicity, groups = (parse_groups(labels["ethnicity"], header[label_idx["ethnicity"]], str(src))
                         if "ethnicity" in labels else (None, ()))
    gender = parse_labels(labels["gender"], GENDERS, header[label_idx["gender"]], str(src))
    identity = strings_column(labels["identity"].to_numpy(), header[label_idx["identity"]], src)
    image = strings_column(labels["image"].to_numpy(), header[label_idx["image"]], src)
    attributes = {header[i].strip(): parse_values(arrow.column(names[i]).to_pylist(), header[i].strip(), str(src))
                  for i in extra}
    return EmbeddingTable(matrix, identity, image, ethnicity, gender, groups, None, attributes)
