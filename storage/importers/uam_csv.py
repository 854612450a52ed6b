"""The ``uam-csv`` format: the UAM CSV pair of embeddings and attributes.

An embeddings CSV (header row, an optional index column, then d feature columns) and an attributes CSV with one
row per embedding row. ``src`` is the folder holding both (told apart by their headers) or the embeddings CSV,
with ``attributes`` naming the other file (default: the one CSV beside it with attribute columns). The embeddings
CSV's first column is an index when its header is empty or one of ``index, idx, id, row, unnamed: 0``. Attribute
columns are matched ignoring case, spaces, ``-`` and ``_``:

* gender: ``gender`` or ``sex``; values ``0`` = male, ``1`` = female (or ``male``/``female``/``m``/``f``);
* ethnicity: ``ethnicity``, ``ethnic``, ``ethnic_group``, ``race``; values ``0`` = black, ``1`` = asian,
  ``2`` = caucasian (UAM's codes), or the names ``asian``/``caucasian``/``black``;
* identity: ``identity``, ``identity_id``, ``id``, ``identity_index``, ``subject``, ``subject_id``,
  ``person``, ``person_id``;
* image (optional; default: the row number): ``image``, ``image_id``, ``image_index``, ``image_name``,
  ``img``, ``pose``, ``pose_id``, ``pose_index``, ``pose/image``, ``file``, ``filename``.

``columns`` names a column explicitly, e.g. ``{"identity": "ID_person"}``. When both files have an index
column, the indices must agree row by row. Any other column of the attributes CSV is kept as an attribute
(:mod:`storage.attributes`: numeric when every value is a number, else categorical).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv

from storage.errors import InputError
from storage.importers.common import (check_mapping, column_key, csv_error, csv_header, float_columns_to_matrix,
                                      looks_like_csv_table, pick_column, scandir, strings_column)
from storage.attributes import check_attribute_name, parse_values
from storage.table import EmbeddingTable, check_finite
from storage.vocab import ETHNICITIES, GENDERS, normalise


def _codes(names: tuple[str, ...], uam: dict[str, str]) -> dict[str, int]:
    """Accepted attribute values -> codes into ``names``: UAM's own codes and the vocabulary's names."""
    return {value: names.index(name) for value, name in {**uam, **{n: n for n in names}}.items()}


# UAM's codes are specific to this format; the names are storage.vocab's.
UAM_GENDER = _codes(GENDERS, {"0": "male", "1": "female", "m": "male", "f": "female"})
UAM_ETHNICITY = _codes(ETHNICITIES, {"0": "black", "1": "asian", "2": "caucasian"})
UAM_COLUMNS: dict[str, tuple[str, ...]] = {   # aliases in order of preference, as compared by column_key
    "gender": ("gender", "sex"),
    "ethnicity": ("ethnicity", "ethnic", "ethnicgroup", "race"),
    "identity": ("identity", "identityid", "id", "identityindex", "subject", "subjectid", "person", "personid"),
    "image": ("image", "imageid", "imageindex", "imagename", "img", "pose", "poseid", "poseindex", "pose/image",
              "file", "filename"),
}
_INDEX_NAMES = {"", "index", "idx", "id", "row", "unnamed:0"}


def _is_csv(name: str) -> bool:
    return name.lower().endswith(".csv")


def _looks_like_attributes(header: list[str]) -> bool:
    names = {column_key(h) for h in header}
    return any(a in names for a in UAM_COLUMNS["gender"]) and any(a in names for a in UAM_COLUMNS["ethnicity"])


def detect(src: Path, embedding_prefix: str | None = None) -> bool:
    """Whether ``src`` is a CSV without the table format's embedding columns, or a folder holding CSVs."""
    if src.is_file():
        return src.suffix.lower() == ".csv" and not looks_like_csv_table(csv_header(src), embedding_prefix)
    return any(e.is_file() and _is_csv(e.name) for e in scandir(src))


def _label_codes(values: list[str] | np.ndarray, mapping: Mapping[str, int], field: str, path: Path,
                 accepted: str) -> np.ndarray:
    """Attribute values -> int8 codes by ``mapping`` (normalised; ``1.0`` reads as ``1``); InputError naming the
    first row outside it."""
    def norm(v: str) -> str:
        s = normalise(v)
        if re.fullmatch(r"[+-]?\d+(\.0*)?", s):
            s = str(int(float(s)))
        return s

    series = pd.Series(np.asarray(values, dtype=object)).map(norm)
    codes = series.map(mapping)
    bad = np.flatnonzero(codes.isna().to_numpy())
    if len(bad):
        raise InputError(f"{path}: column {field!r} is {values[bad[0]]!r} at data row {bad[0]} (line {bad[0] + 2}); "
                         f"expected {accepted} ({len(bad)} rows are outside these values)")
    return codes.to_numpy().astype(np.int8)


def _find_uam_pair(src: Path, attributes: Path | None) -> tuple[Path, Path]:
    """(embeddings CSV, attributes CSV) of ``src`` (a folder or the embeddings CSV) and ``attributes``."""
    if attributes is not None:
        if not attributes.is_file():
            raise InputError(f"{attributes}: no such file; expected the attributes CSV")
        if src.is_file():
            return src, attributes
        others = [Path(e.path) for e in scandir(src) if e.is_file() and _is_csv(e.name)
                  and Path(e.path).resolve() != attributes.resolve()]
        if len(others) != 1:
            raise InputError(f"{src}: expected exactly one embeddings CSV besides {attributes.name}, found "
                             f"{len(others)}; name the embeddings CSV as the source")
        return others[0], attributes
    folder = src if src.is_dir() else src.parent
    csvs = [Path(e.path) for e in scandir(folder) if e.is_file() and _is_csv(e.name)]
    attrs = [p for p in csvs if _looks_like_attributes(csv_header(p))]
    if src.is_file():
        attrs = [p for p in attrs if p.resolve() != src.resolve()]
        if _looks_like_attributes(csv_header(src)):
            raise InputError(f"{src}: this is an attributes CSV (it has gender and ethnicity columns); give the "
                             f"embeddings CSV as the source and this file with --attributes")
        if len(attrs) != 1:
            raise InputError(f"{src}: found {len(attrs)} attributes CSVs (with gender and ethnicity columns) beside "
                             f"it; name the attributes CSV with --attributes")
        return src, attrs[0]
    embs = [p for p in csvs if p not in attrs]
    if len(attrs) != 1 or len(embs) != 1:
        raise InputError(f"{src}: expected exactly two CSV files, one of embeddings and one of attributes (with "
                         f"gender and ethnicity columns); found {len(embs)} embeddings and {len(attrs)} attributes "
                         f"CSVs. Name them: biasgrid data import EMBEDDINGS.csv --attributes ATTRIBUTES.csv")
    return embs[0], attrs[0]


def read(src: Path, columns: dict[str, str], attributes: Path | None) -> EmbeddingTable:
    """The embeddings and attributes of a UAM CSV pair (not yet validated)."""
    check_mapping(columns, tuple(UAM_COLUMNS), "uam-csv")
    emb_path, attr_path = _find_uam_pair(src, attributes)

    # Attributes: small, read as strings.
    csv_header(attr_path)   # a repeated column is refused (pandas would rename it)
    try:
        attrs = pd.read_csv(attr_path, dtype=str, keep_default_na=False, na_filter=False, encoding="utf-8-sig")
    except (OSError, ValueError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        raise csv_error(attr_path, exc) from exc
    header = [str(c) for c in attrs.columns]
    if not len(attrs):
        raise InputError(f"{attr_path}: no data rows; expected one attributes row per embedding")
    picked = {key: pick_column(header, key, aliases, columns, attr_path, required=key != "image")
              for key, aliases in UAM_COLUMNS.items()}
    used = {i for i in picked.values() if i is not None}
    attr_index = None
    if 0 not in used and column_key(header[0]) in _INDEX_NAMES:
        attr_index = attrs.iloc[:, 0].astype(str).str.strip().to_numpy()
    gender = _label_codes(attrs.iloc[:, picked["gender"]].to_numpy(), UAM_GENDER, header[picked["gender"]],
                          attr_path, "0 (male), 1 (female), male or female")
    ethnicity = _label_codes(attrs.iloc[:, picked["ethnicity"]].to_numpy(), UAM_ETHNICITY,
                             header[picked["ethnicity"]], attr_path,
                             "0 (black), 1 (asian), 2 (caucasian), or asian, caucasian, black")
    identity = strings_column(attrs.iloc[:, picked["identity"]].to_numpy(), header[picked["identity"]], attr_path)
    if picked["image"] is not None:
        image = strings_column(attrs.iloc[:, picked["image"]].to_numpy(), header[picked["image"]], attr_path)
    else:
        image = np.array([str(i) for i in range(len(attrs))], dtype=object)
    extra = [i for i in range(len(header)) if i not in used and not (i == 0 and attr_index is not None)]
    extras = {check_attribute_name(header[i].strip(), f"{attr_path}: column {header[i]!r}"):
              parse_values(attrs.iloc[:, i].tolist(), header[i].strip(), str(attr_path)) for i in extra}
    del attrs

    # Embeddings: large, streamed.
    emb_header = csv_header(emb_path)
    if not emb_header:
        raise InputError(f"{emb_path}: empty file; expected a header row and one row of features per image")
    has_index = column_key(emb_header[0]) in _INDEX_NAMES
    first_feature = 1 if has_index else 0
    names = [f"c{i}" for i in range(len(emb_header))]
    features = names[first_feature:]
    if not features:
        raise InputError(f"{emb_path}: no feature columns; expected a header row, an index column and d features")
    types = {c: pa.float32() for c in features}
    if has_index:
        types[names[0]] = pa.string()
    blocks: list[np.ndarray] = []
    index_values: list[np.ndarray] = []
    pos = 0
    try:
        reader = pacsv.open_csv(emb_path, read_options=pacsv.ReadOptions(column_names=names, skip_rows=1,
                                                                         block_size=1 << 24),
                                convert_options=pacsv.ConvertOptions(column_types=types, null_values=[""]))
        for batch in reader:
            if batch.num_rows == 0:
                continue
            block = float_columns_to_matrix(batch, features, emb_header[first_feature:], emb_path, pos)
            check_finite(block, str(emb_path), lambda r, p=pos: f"data row {p + r} (line {p + r + 2})")
            blocks.append(block)
            if has_index:
                index_values.append(np.asarray(batch.column(names[0]).to_pylist(), dtype=object))
            pos += batch.num_rows
    except pa.ArrowException as exc:
        raise csv_error(emb_path, exc) from exc
    if pos == 0:
        raise InputError(f"{emb_path}: no data rows; expected one row of features per image")
    if pos != len(identity):
        raise InputError(f"{emb_path} has {pos} rows but {attr_path} has {len(identity)}; expected one attributes row "
                         f"per embedding row, in the same order")
    if has_index and attr_index is not None:
        emb_index = np.array([str(v).strip() for v in np.concatenate(index_values)], dtype=object)
        differ = np.flatnonzero(emb_index != attr_index)
        if len(differ):
            i = differ[0]
            raise InputError(f"{emb_path} and {attr_path} disagree at data row {i}: index {emb_index[i]!r} vs "
                             f"{attr_index[i]!r}; expected the same rows in the same order")
    matrix = blocks[0] if len(blocks) == 1 else np.concatenate(blocks)
    del blocks
    return EmbeddingTable(matrix, identity, image, ethnicity, gender, ETHNICITIES,   # UAM's codes: the study's
                          None, extras)

