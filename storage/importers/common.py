"""Helpers shared by several importer formats: folder listing, CSV headers and columns, column mappings."""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TypeVar

import numpy as np
import pyarrow as pa

from storage.errors import InputError
from storage.table import check_unique_columns
from storage.vocab import group_codes, group_label

CSV_EMBEDDING_PREFIX = "e"   # a CSV table's embedding columns: e0, e1, ...
T = TypeVar("T")


def scandir(path: Path) -> list[os.DirEntry]:
    """The entries of folder ``path`` not starting with ``.``, sorted by name; InputError if it cannot be listed."""
    try:
        with os.scandir(path) as it:
            return sorted((e for e in it if not e.name.startswith(".")), key=lambda e: e.name)
    except OSError as exc:
        raise InputError(f"{path}: cannot list the folder ({exc.strerror or exc})") from exc


def is_matrix(name: str) -> bool:
    """Whether a file name is a ``.npy`` or ``.npz`` array (any case)."""
    return name.lower().endswith((".npy", ".npz"))


def by_group(named: Iterable[tuple[str, T]], unknown: Callable[[T], str],
             twice: Callable[[T, T, str], str]) -> dict[tuple[int, int], T]:
    """Items named after their group (any naming of :func:`storage.vocab.group_codes`) by (ethnicity, gender)
    codes, in code order. InputError with message ``unknown(item)`` for a name that is no group, and
    ``twice(first, second, group label)`` for a group named twice."""
    found: dict[tuple[int, int], T] = {}
    for name, item in named:
        codes = group_codes(name)
        if codes is None:
            raise InputError(unknown(item))
        if codes in found:
            raise InputError(twice(found[codes], item, group_label(codes)))
        found[codes] = item
    return dict(sorted(found.items()))


def csv_header(path: Path) -> list[str]:
    """The first row of a CSV file (empty list for an empty file); InputError when a column name repeats."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            header = next(csv.reader(f), [])
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{path}: cannot read the CSV header ({exc})") from exc
    check_unique_columns([h.strip() for h in header], str(path))
    if len(header) == 1:
        other = next((d for d in (";", "\t", "|") if d in header[0]), None)
        if other:
            shown = {"\t": "tabs"}.get(other, repr(other))
            raise InputError(f"{path}: the header reads as one column ({header[0][:60]!r}...); the file seems to "
                             f"separate columns with {shown}, but biasgrid reads comma-separated CSV: convert it, "
                             f"e.g. pandas.read_csv(path, sep={other!r}).to_csv(new_path, index=False)")
    return header


def looks_like_csv_table(header: list[str], prefix: str | None = None) -> bool:
    """Whether a CSV header has the table format's first embedding column (``e0``, or ``<prefix>0``)."""
    return f"{prefix or CSV_EMBEDDING_PREFIX}0" in {h.strip() for h in header}


def column_key(name: str) -> str:
    """A column name as matched against aliases: case, spaces, ``-`` and ``_`` ignored."""
    return re.sub(r"[\s_\-]+", "", name.strip().lower())


def pick_column(header: list[str], key: str, aliases: tuple[str, ...], mapping: Mapping[str, str],
                path: Path, required: bool) -> int | None:
    """Index in ``header`` of the column for ``key``: the one ``mapping`` names, else the first alias found
    (aliases in order of preference, compared by :func:`column_key`); None if absent and not ``required``."""
    if key in mapping:
        wanted = mapping[key]
        for i, h in enumerate(header):
            if h == wanted:
                return i
        for i, h in enumerate(header):
            if h.strip().lower() == wanted.strip().lower():
                return i
        raise InputError(f"{path}: no column {wanted!r} (mapped to {key}); columns: {', '.join(header)}")
    for alias in aliases:  # in order of preference: "identity" wins over "id"
        matches = [i for i, h in enumerate(header) if column_key(h) == alias]
        if len(matches) > 1:
            raise InputError(f"{path}: columns {', '.join(header[i] for i in matches)} could all be {key}; name one "
                             f"with --map {key}=<column>")
        if matches:
            return matches[0]
    if required:
        raise InputError(f"{path}: no {key} column; expected one named {', '.join(aliases)} (case, spaces, - and _ "
                         f"ignored) or --map {key}=<column> (columns: {', '.join(header)})")
    return None


def check_mapping(mapping: Mapping[str, str], allowed: tuple[str, ...], fmt: str) -> None:
    """Refuse a column mapping with keys outside ``allowed`` or values that are not column names."""
    for key, value in mapping.items():
        if key not in allowed:
            raise InputError(f"column mapping: {key!r} is not a column of the {fmt} format; expected some of "
                             f"{', '.join(allowed)}")
        if not isinstance(value, str) or not value:
            raise InputError(f"column mapping: {key} must name a column, got {value!r}")


def csv_error(path: Path, exc: Exception) -> InputError:
    """The InputError for a CSV that Arrow or pandas could not parse."""
    text = str(exc).strip()
    return InputError(f"{path}: cannot read the CSV ({text[:300]}{'...' if len(text) > 300 else ''})")


def float_columns_to_matrix(batch: pa.RecordBatch | pa.Table, names: list[str], header_names: list[str],
                            path: Path, first_row: int) -> np.ndarray:
    """(rows, len(names)) float32 from float columns of ``batch``; InputError naming the first empty cell."""
    rows = batch.num_rows
    out = np.empty((rows, len(names)), dtype=np.float32)
    for j, name in enumerate(names):
        col = batch.column(name)
        if col.null_count:
            bad = int(np.flatnonzero(col.is_null().to_numpy(zero_copy_only=False))[0])
            raise InputError(f"{path}: column {header_names[j]!r} is empty at data row {first_row + bad} "
                             f"(line {first_row + bad + 2}); expected a number in every cell")
        out[:, j] = col.to_numpy(zero_copy_only=False)
    return out


def strings_column(values: np.ndarray, field: str, path: Path) -> np.ndarray:
    """A CSV label column as an object array of stripped strings; InputError naming the first empty row."""
    out = np.array([str(v).strip() for v in values], dtype=object)
    empty = np.flatnonzero(out == "")
    if len(empty):
        raise InputError(f"{path}: column {field!r} is empty at data row {empty[0]} (line {empty[0] + 2}); expected "
                         f"a value in every row")
    return out
