"""The embedding table: one row per face image, stored as Parquet.

Parquet schema (one row per image)::

    identity   string                          who the face belongs to
    image      string                          image name, unique within its identity
    ethnicity  string (optional)               any group names: asian | caucasian | black (the study's), or others
    gender     string                          male | female
    embedding  fixed_size_list<float32>[d]     any dimension d (2048 for DiveFace)
    face_detected  bool (optional)             written by ``biasgrid data embed``: False = no face was found and
                                               the image was embedded from its centre crop
    <attribute>    string | number (optional)  any further label column (:mod:`storage.attributes`): categorical
                                               (one value per identity) or numeric (per image, e.g. age)

In memory the table is an :class:`EmbeddingTable`: a C-contiguous ``(n, d)`` float32 matrix plus label
columns, ethnicity as int8 codes into the table's own ordered ``ethnicities`` (None without an ethnicity column) and
gender into :data:`storage.vocab.GENDERS` (the vocabulary and its rules live in :mod:`storage.vocab`), and any
further attributes (:mod:`storage.attributes`).

Over 400 lines, on purpose: the table's reader, writer, validation and fingerprint stay beside the one schema
they share.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from storage import vocab
from storage.attributes import Labels, check_attribute_name, check_per_identity, default_groups, is_numeric
from storage.atomic import write_atomic
from storage.errors import InputError

LABEL_COLUMNS: tuple[str, ...] = ("identity", "image", "ethnicity", "gender")
OPTIONAL_COLUMNS: frozenset[str] = frozenset({"ethnicity"})   # LFW and other data without ethnicity labels
EMBEDDING_COLUMN = "embedding"
FACE_COLUMN = "face_detected"   # optional
ROW_GROUP_SIZE = 8192
_READ_BATCH = 2048   # rows per batch when filling the matrix (with 1 MiB read buffers: peak ~1.15x the matrix)
_CHECK_BLOCK = 8192  # rows per block when scanning the matrix (bounded temporary memory)


@dataclass(frozen=True, eq=False)
class EmbeddingTable:
    """Face embeddings with identity, image and demographic labels (row i of each array = image i).

    ``embeddings`` is ``(n, d)`` float32 C-contiguous; ``identity`` and ``image`` are string arrays;
    ``ethnicity`` holds int8 codes into ``ethnicities`` (the table's own groups), or is None with ``ethnicities``
    ``()`` when the data have no ethnicity labels (LFW); ``gender`` int8 codes into :data:`storage.vocab.GENDERS`
    (0 = male, 1 = female). ``attributes``: further label columns by name, each (n,) object array of normalised
    strings (categorical) or float64 (numeric), see :mod:`storage.attributes`. Check a table built by hand with
    :func:`validate_table`. ``face_detected`` (optional, (n,) bool) says whether a face detector found the face
    (False: embedded from the centre crop); the verification's failure-to-acquire numbers read it, and
    :meth:`fingerprint` includes it when some face was not found (a column of True only says nothing more than
    none: such a table keeps the fingerprint of the same table without it).
    """

    embeddings: np.ndarray
    identity: np.ndarray
    image: np.ndarray
    ethnicity: np.ndarray | None
    gender: np.ndarray
    ethnicities: tuple[str, ...]
    face_detected: np.ndarray | None = None
    attributes: Mapping[str, np.ndarray] = field(default_factory=dict)

    def present_ethnicities(self) -> list[str]:
        """The ethnicity groups that have rows, in the vocabulary's order (none without ethnicity labels)."""
        return [] if self.ethnicity is None else [self.ethnicities[c] for c in np.unique(self.ethnicity)]

    def __len__(self) -> int:
        return int(self.embeddings.shape[0])

    @property
    def dim(self) -> int:
        """The embedding dimension d."""
        return int(self.embeddings.shape[1])

    def identity_codes(self) -> np.ndarray:
        """(n,) int64: one code per distinct identity string, numbered in sorted order of the strings
        (so the codes do not depend on row order). Computed once and cached."""
        cached = self.__dict__.get("_identity_codes")
        if cached is None:
            codes, _ = pd.factorize(np.asarray(self.identity, dtype=object), sort=True)
            cached = codes.astype(np.int64, copy=False)
            cached.setflags(write=False)
            object.__setattr__(self, "_identity_codes", cached)
        return cached

    def fingerprint(self) -> str:
        """SHA-256 hex digest of the content: shape, embedding bytes, every label column and the acquisition
        failures (``face_detected``, when some face was not found).

        The same content gives the same digest in every run and process (row order matters).
        Computed once and cached.
        """
        cached = self.__dict__.get("_fingerprint")
        if cached is None:
            h = hashlib.sha256(b"biasgrid-embedding-table-v1")
            emb = np.ascontiguousarray(self.embeddings, dtype="<f4")
            h.update(np.asarray(emb.shape, dtype="<i8").tobytes())
            h.update(memoryview(emb).cast("B"))
            for values in (self.identity, self.image):
                arr = pa.array(np.asarray(values, dtype=object), type=pa.large_string())
                _, offsets, data = arr.buffers()
                ends = np.frombuffer(offsets, dtype="<i8")[:len(arr) + 1]
                h.update(ends.tobytes())  # int64 offsets: separate the strings unambiguously
                if data is not None:
                    h.update(memoryview(data)[:int(ends[-1])])
            if self.ethnicity is None:
                h.update(b"\x00no-ethnicity")
            else:
                h.update(np.asarray(self.ethnicity, dtype=np.int8).tobytes())
            h.update(np.asarray(self.gender, dtype=np.int8).tobytes())
            if self.ethnicity is not None and tuple(self.ethnicities) != vocab.ETHNICITIES:   # other groups' names
                h.update("\x00".join(self.ethnicities).encode())
            if self.face_detected is not None and not np.all(self.face_detected):   # acquisition failures
                h.update(b"face_detected")
                h.update(np.packbits(np.asarray(self.face_detected, dtype=bool)).tobytes())
            for name in sorted(self.attributes):   # none: the digest of a table of the four labels is unchanged
                values = self.attributes[name]
                h.update(b"\x00attribute\x00" + name.encode())
                h.update(np.asarray(values, dtype="<f8").tobytes() if is_numeric(values)
                         else "\x00".join(values.tolist()).encode())
            cached = h.hexdigest()
            object.__setattr__(self, "_fingerprint", cached)
        return cached


def _row_name(table: EmbeddingTable, row: int) -> str:
    try:
        return f"row {row} (identity {table.identity[row]!r}, image {table.image[row]!r})"
    except Exception:  # noqa: BLE001 - label columns may be the broken part
        return f"row {row}"


def _check_strings(values: np.ndarray, field: str, n: int, source: str) -> None:
    if not isinstance(values, np.ndarray) or values.ndim != 1 or len(values) != n:
        raise InputError(f"{source}: '{field}' must be a 1-D array of {n} strings (one per embedding row), "
                         f"got {type(values).__name__} of shape {getattr(values, 'shape', '?')}")
    if values.dtype.kind == "U":
        bad = np.flatnonzero(values == "")
    elif values.dtype == object:
        ok = np.fromiter((type(v) is str and v != "" for v in values), dtype=bool, count=n)
        bad = np.flatnonzero(~ok)
    else:
        raise InputError(f"{source}: '{field}' must hold strings, got dtype {values.dtype}")
    if len(bad):
        raise InputError(f"{source}: '{field}' of row {bad[0]} is {values[bad[0]]!r}; expected a non-empty "
                         f"string ({len(bad)} such rows)")


def _check_codes(values: np.ndarray, field: str, names: tuple[str, ...], n: int, source: str) -> None:
    if not isinstance(values, np.ndarray) or values.ndim != 1 or len(values) != n:
        raise InputError(f"{source}: '{field}' must be a 1-D array of {n} codes, got shape "
                         f"{getattr(values, 'shape', '?')}")
    if values.dtype != np.int8:
        raise InputError(f"{source}: '{field}' must be int8 codes into {names}, got dtype {values.dtype}")
    bad = np.flatnonzero((values < 0) | (values >= len(names)))
    if len(bad):
        raise InputError(f"{source}: '{field}' code {values[bad[0]]} at row {bad[0]} is outside 0..{len(names) - 1} "
                         f"({', '.join(f'{i} = {v}' for i, v in enumerate(names))})")


def check_unique_columns(names: list[str], source: str) -> None:
    """InputError naming ``source`` and the first column name that appears more than once (readers would
    otherwise silently use one of them, or rename the other)."""
    seen: dict[str, int] = {}
    for i, name in enumerate(names):
        if name in seen:
            raise InputError(f"{source}: column {name!r} appears twice (columns {seen[name] + 1} and {i + 1}); "
                             f"expected each column once")
        seen[name] = i


def check_finite(matrix: np.ndarray, source: str, describe_row: Callable[[int], str] | None = None) -> None:
    """Raise InputError naming the first row of ``matrix`` holding NaN or inf (scanned in blocks)."""
    for start in range(0, matrix.shape[0], _CHECK_BLOCK):
        block = matrix[start:start + _CHECK_BLOCK]
        finite = np.isfinite(block)
        if not finite.all():
            rows = np.flatnonzero(~finite.all(axis=1))
            first = start + int(rows[0])
            col = int(np.flatnonzero(~finite[rows[0]])[0])
            where = describe_row(first) if describe_row else f"row {first}"
            total = sum(int((~np.isfinite(matrix[s:s + _CHECK_BLOCK])).any(axis=1).sum())
                        for s in range(start, matrix.shape[0], _CHECK_BLOCK))
            raise InputError(f"{source}: embedding of {where} has {matrix[first, col]} at position {col}; "
                             f"expected finite numbers ({total} rows have NaN or inf)")


def check_nonzero(matrix: np.ndarray, source: str, describe_row: Callable[[int], str] | None = None) -> None:
    """Raise InputError naming the first rows of ``matrix`` that are all zeros (no direction: cosine similarity,
    the verification score, is undefined for them), with their count (scanned in blocks)."""
    zero = np.concatenate([~np.any(matrix[s:s + _CHECK_BLOCK], axis=1)
                           for s in range(0, matrix.shape[0], _CHECK_BLOCK)] or [np.zeros(0, bool)])
    rows = np.flatnonzero(zero)
    if len(rows):
        shown = ", ".join(describe_row(int(r)) if describe_row else f"row {r}" for r in rows[:3])
        raise InputError(f"{source}: {len(rows)} embedding row(s) are all zeros ({shown}"
                         f"{', ...' if len(rows) > 3 else ''}); expected each embedding to have a direction "
                         f"(cosine similarity is undefined for a zero vector): remove those rows")


def validate_table(table: EmbeddingTable, source: str) -> None:
    """Check shapes, dtypes, labels and values; raise InputError naming ``source``, the field and the row.

    Refused: a matrix that is not 2-D C-contiguous float32 or has no rows/columns, label arrays of the wrong
    length or type, empty identity or image names, codes outside the known values, NaN or inf, all-zero rows,
    duplicate (identity, image) rows, and an identity labelled with two different ethnicities or genders.
    """
    emb = table.embeddings
    if not isinstance(emb, np.ndarray) or emb.ndim != 2:
        raise InputError(f"{source}: embeddings must be a 2-D (rows x dimension) array, got shape "
                         f"{getattr(emb, 'shape', type(emb).__name__)}")
    if emb.dtype != np.float32 or not emb.flags.c_contiguous:
        raise InputError(f"{source}: embeddings must be C-contiguous float32, got {emb.dtype}"
                         f"{'' if emb.flags.c_contiguous else ' (not C-contiguous)'}")
    n, d = emb.shape
    if n == 0:
        raise InputError(f"{source}: the table has no rows; expected at least one embedding")
    if d == 0:
        raise InputError(f"{source}: embeddings have dimension 0; expected at least one value per row")
    _check_strings(table.identity, "identity", n, source)
    _check_strings(table.image, "image", n, source)
    if table.ethnicity is None:
        if tuple(table.ethnicities):
            raise InputError(f"{source}: ethnicity groups {table.ethnicities!r} are given without ethnicity codes")
    else:
        if not table.ethnicities or len(set(table.ethnicities)) != len(table.ethnicities):
            raise InputError(f"{source}: the ethnicity groups {table.ethnicities!r} must be distinct names")
        for name in table.ethnicities:
            if vocab.check_group_name(name, f"{source}: ethnicity") != name:
                raise InputError(f"{source}: ethnicity group {name!r} must be given normalised "
                                 f"({vocab.normalise(name)!r})")
        _check_codes(table.ethnicity, "ethnicity", tuple(table.ethnicities), n, source)
    _check_codes(table.gender, "gender", vocab.GENDERS, n, source)
    _check_attributes(table, n, source)
    check_finite(emb, source, lambda row: _row_name(table, row))
    check_nonzero(emb, source, lambda row: _row_name(table, row))
    face = table.face_detected
    if face is not None and (not isinstance(face, np.ndarray) or face.dtype != np.bool_ or face.shape != (n,)):
        raise InputError(f"{source}: '{FACE_COLUMN}' must be a 1-D bool array of {n} values (one per embedding "
                         f"row), got {getattr(face, 'dtype', type(face).__name__)} of shape "
                         f"{getattr(face, 'shape', '?')}")

    frame = pd.DataFrame({"identity": np.asarray(table.identity, dtype=object),
                          "image": np.asarray(table.image, dtype=object)})
    dup = np.flatnonzero(frame.duplicated(keep=False).to_numpy())
    if len(dup):
        first = dup[0]
        same = dup[(frame["identity"].to_numpy()[dup] == table.identity[first])
                   & (frame["image"].to_numpy()[dup] == table.image[first])]
        groups = {(-1 if table.ethnicity is None else int(table.ethnicity[r]), int(table.gender[r])) for r in same}
        hint = ("; they are in different groups: if identity names are only unique within a group, import "
                "with --prefix-group") if len(groups) > 1 else ""
        raise InputError(f"{source}: duplicate (identity, image) ({table.identity[first]!r}, "
                         f"{table.image[first]!r}) at rows {', '.join(map(str, same[:5]))}; expected each image "
                         f"once ({len(dup)} rows are duplicates){hint}")

    codes = table.identity_codes()
    ethnicity = np.zeros(n, np.int16) if table.ethnicity is None else table.ethnicity.astype(np.int16)
    label = ethnicity * len(vocab.GENDERS) + table.gender
    per_identity = pd.Series(label).groupby(codes).nunique()
    mixed = per_identity.index[per_identity.to_numpy() > 1]
    if len(mixed):
        rows = np.flatnonzero(codes == mixed[0])
        groups = default_groups(table).per_row()
        seen: dict[str, int] = {}
        for r in rows:
            seen.setdefault(groups[r], int(r))
        listing = ", ".join(f"{g} (row {r})" for g, r in seen.items())
        raise InputError(f"{source}: identity {table.identity[rows[0]]!r} is labelled {listing}; expected one "
                         f"ethnicity and one gender per identity ({len(mixed)} identities are mixed). If identity "
                         f"names are only unique within each group, import with 'biasgrid data import --prefix-group'")
    for name, values in table.attributes.items():   # categorical attributes: one value per identity
        if not is_numeric(values):
            value_codes, uniques = pd.factorize(values)
            check_per_identity(table.identity, codes, Labels(value_codes, tuple(uniques), (name,)),
                               f"{source}: attribute {name!r}")


def _check_attributes(table: EmbeddingTable, n: int, source: str) -> None:
    """Each extra attribute: a valid name, (n,) float64 finite numbers or normalised non-empty strings."""
    if not isinstance(table.attributes, Mapping):
        raise InputError(f"{source}: attributes must be a mapping of name -> (n,) array")
    for name, values in table.attributes.items():
        check_attribute_name(name, source)
        if not isinstance(values, np.ndarray) or values.shape != (n,):
            raise InputError(f"{source}: attribute {name!r} must be a 1-D array of {n} values (one per embedding "
                             f"row), got shape {getattr(values, 'shape', '?')}")
        if values.dtype.kind == "f":
            if values.dtype != np.float64 or not np.isfinite(values).all():
                raise InputError(f"{source}: numeric attribute {name!r} must be finite float64 values")
            continue
        _check_strings(values, name, n, source)
        if values.dtype != object:
            raise InputError(f"{source}: attribute {name!r} must be an object array of strings or float64 numbers")
        bad = [v for v in dict.fromkeys(values.tolist()) if vocab.normalise(v) != v]
        if bad:
            raise InputError(f"{source}: attribute {name!r} value {bad[0]!r} must be given normalised "
                             f"({vocab.normalise(bad[0])!r})")


def _labels_arrow(table: EmbeddingTable) -> dict[str, pa.Array]:
    out = {"identity": pa.array(np.asarray(table.identity, dtype=object), type=pa.string()),
           "image": pa.array(np.asarray(table.image, dtype=object), type=pa.string())}
    if table.ethnicity is not None:
        out["ethnicity"] = pa.array(vocab.ethnicity_names(table.ethnicity, table.ethnicities), type=pa.string())
    out["gender"] = pa.array(vocab.gender_names(table.gender), type=pa.string())
    for name in sorted(table.attributes):
        values = table.attributes[name]
        out[name] = pa.array(values, type=pa.float64() if is_numeric(values) else pa.string())
    return out


def write_table(table: EmbeddingTable, path: str | Path) -> None:
    """Validate ``table`` and write it as Parquet at ``path`` (row groups of 8192 rows, LZ4 compression).

    Atomic: written under a temporary name in the same folder, then renamed over ``path``; on any error
    nothing is left behind. Creates the parent folder if needed.
    """
    path = Path(path)
    validate_table(table, "table to write")
    if path.is_dir():
        raise InputError(f"{path}: is a folder; expected a file name for the table, such as {path / 'data.parquet'}")
    path.parent.mkdir(parents=True, exist_ok=True)
    n, d = table.embeddings.shape
    flat = pa.array(table.embeddings.reshape(-1), type=pa.float32())  # zero-copy view of the matrix
    columns = _labels_arrow(table)
    columns[EMBEDDING_COLUMN] = pa.FixedSizeListArray.from_arrays(flat, d)
    if table.face_detected is not None:
        columns[FACE_COLUMN] = pa.array(table.face_detected, type=pa.bool_())
    arrow = pa.table(columns).replace_schema_metadata({"biasgrid": "embedding-table/1"})
    labels = [c for c in columns if c not in (EMBEDDING_COLUMN, FACE_COLUMN)]
    dictionary = [c for c in labels if c != "image" and pa.types.is_string(columns[c].type)]
    write_atomic(path, lambda sink: pq.write_table(arrow, sink, row_group_size=ROW_GROUP_SIZE, compression="lz4",
                                                   use_dictionary=dictionary, write_statistics=labels))


def parse_labels(values: pa.ChunkedArray | pa.Array, names: tuple[str, ...], field: str, source: str) -> np.ndarray:
    """String labels -> int8 codes into ``names``; InputError naming the first row whose value is missing or
    not one of ``names``.

    Values are compared by :func:`storage.vocab.normalise`'s rule (surrounding spaces and case ignored), applied
    here with Arrow's vectorised kernels (trim, then lower) instead of per value in Python."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks() if values.num_chunks != 1 else values.chunk(0)
    if pa.types.is_dictionary(values.type):
        values = values.cast(values.type.value_type)
    if not (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)):
        raise InputError(f"{source}: column '{field}' has type {values.type}; expected strings "
                         f"({' | '.join(names)})")
    normal = pc.utf8_lower(pc.utf8_trim_whitespace(values))
    codes = pc.index_in(normal, value_set=pa.array(names))
    if codes.null_count:
        bad = int(np.flatnonzero(codes.is_null().to_numpy(zero_copy_only=False))[0])
        raise InputError(f"{source}: column '{field}' of row {bad} is {values[bad].as_py()!r}; expected one of "
                         f"{', '.join(names)} ({codes.null_count} rows are outside these values)")
    return codes.to_numpy(zero_copy_only=False).astype(np.int8)


def parse_groups(values: pa.ChunkedArray | pa.Array, field: str, source: str) -> tuple[np.ndarray, tuple[str, ...]]:
    """Ethnicity group labels (any names, normalised as :func:`storage.vocab.normalise` does) -> int8 codes and
    the vocabulary they index (:func:`storage.vocab.ethnicity_vocabulary`); InputError naming the first bad row."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks() if values.num_chunks != 1 else values.chunk(0)
    if pa.types.is_dictionary(values.type):
        values = values.cast(values.type.value_type)
    if not (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)):
        raise InputError(f"{source}: column '{field}' has type {values.type}; expected group names (strings)")
    if values.null_count:
        bad = int(np.flatnonzero(values.is_null().to_numpy(zero_copy_only=False))[0])
        raise InputError(f"{source}: column '{field}' is missing at row {bad}; expected a group name in every row")
    normal = pc.utf8_lower(pc.utf8_trim_whitespace(values))
    found = pc.unique(normal).to_pylist()
    for name in found:
        vocab.check_group_name(name, f"{source}: column '{field}'")
    names = vocab.ethnicity_vocabulary(found)
    if len(names) > 127:
        raise InputError(f"{source}: column '{field}' has {len(names)} different groups; expected at most 127")
    return parse_labels(normal, names, field, source), names


def _strings(values: pa.ChunkedArray, field: str, source: str) -> np.ndarray:
    if pa.types.is_dictionary(values.type):
        values = values.cast(values.type.value_type)
    if pa.types.is_integer(values.type):  # numeric ids, as the CSV forms read them: their decimal text
        values = values.cast(pa.string())
    if not (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)):
        raise InputError(f"{source}: column '{field}' has type {values.type}; expected strings (or integer ids)")
    if values.null_count:
        bad = int(np.flatnonzero(values.is_null().to_numpy(zero_copy_only=False))[0])
        raise InputError(f"{source}: column '{field}' is missing at row {bad}; expected a string in every row")
    return values.to_numpy(zero_copy_only=False).astype(object, copy=False)


def parse_attribute(values: pa.ChunkedArray | pa.Array, field: str, source: str) -> np.ndarray:
    """An extra label column -> float64 (integer or float column: numeric) or normalised strings (string or bool
    column: categorical); InputError naming the column and its first missing row, or an unsupported type."""
    check_attribute_name(field, f"{source}: column {field!r}")
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks() if values.num_chunks != 1 else values.chunk(0)
    if pa.types.is_dictionary(values.type):
        values = values.cast(values.type.value_type)
    if values.null_count:
        bad = int(np.flatnonzero(values.is_null().to_numpy(zero_copy_only=False))[0])
        raise InputError(f"{source}: attribute column '{field}' is missing at row {bad}; expected a value in every "
                         f"row ({values.null_count} missing)")
    if pa.types.is_integer(values.type) or pa.types.is_floating(values.type):
        out = values.to_numpy(zero_copy_only=False).astype(np.float64)
        if not np.isfinite(out).all():
            raise InputError(f"{source}: attribute column '{field}' has NaN or inf at row "
                             f"{int(np.flatnonzero(~np.isfinite(out))[0])}; expected finite numbers")
        return out
    if pa.types.is_boolean(values.type):
        values = values.cast(pa.string())
    if not (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)):
        raise InputError(f"{source}: column '{field}' has type {values.type}; expected an attribute of strings or "
                         f"numbers")
    normal = pc.utf8_lower(pc.utf8_trim_whitespace(values))
    out = normal.to_numpy(zero_copy_only=False).astype(object)
    empty = np.flatnonzero(out == "")
    if len(empty):
        raise InputError(f"{source}: attribute column '{field}' is empty at row {empty[0]}; expected a value in "
                         f"every row")
    return out


def _face_detected(pf: pq.ParquetFile, source: str) -> np.ndarray:
    """The optional ``face_detected`` column as (n,) bool; InputError when it is not a bool column without gaps."""
    values = pf.read(columns=[FACE_COLUMN]).column(0)
    if not pa.types.is_boolean(values.type) or values.null_count:
        raise InputError(f"{source}: column '{FACE_COLUMN}' has type {values.type}"
                         f"{' with missing values' if values.null_count else ''}; expected true/false in every row")
    return values.to_numpy().astype(np.bool_)


def _embedding_dim(field: pa.Field, name: str, source: str) -> int | None:
    """d for fixed_size_list<float>[d], None for list<float> (known after reading); InputError otherwise."""
    t = field.type
    if pa.types.is_fixed_size_list(t) and pa.types.is_floating(t.value_type):
        return int(t.list_size)
    if (pa.types.is_list(t) or pa.types.is_large_list(t)) and pa.types.is_floating(t.value_type):
        return None
    raise InputError(f"{source}: column '{name}' has type {t}; expected fixed_size_list<float32>[d] "
                     f"(or a list<float> whose rows all have the same length)")


def table_width(path: str | Path) -> int | None:
    """The embedding width that a table file's schema declares (``fixed_size_list<float>[d]``), from its footer
    alone; None when the schema does not say (``list<float>``) or the file does not read as a table
    (:func:`read_table` then says why)."""
    try:
        return _embedding_dim(pq.read_schema(path).field(EMBEDDING_COLUMN), EMBEDDING_COLUMN, str(path))
    except (pa.ArrowException, OSError, KeyError, InputError):
        return None


def read_table(path: str | Path) -> EmbeddingTable:
    """Read and validate an embedding table written by :func:`write_table` (or any Parquet file with the
    same columns; ``embedding`` may also be a ``list<float>`` whose rows all have the same length).

    The ``(n, d)`` float32 matrix is allocated once from the file's metadata and filled batch by batch, so
    peak memory stays near one copy of the matrix. Raises InputError naming the file, column and row.
    """
    return read_parquet_table(path)


def read_parquet_table(path: str | Path, columns: Mapping[str, str] | None = None) -> EmbeddingTable:
    """:func:`read_table` for Parquet files whose columns have other names: ``columns`` maps the table's
    names (identity, image, ethnicity, gender, embedding) to the file's, e.g. ``{"identity": "subject_id"}``.
    Labels are matched as :func:`parse_labels` does (case and surrounding spaces ignored)."""
    path = Path(path)
    source = str(path)
    names = {c: c for c in (*LABEL_COLUMNS, EMBEDDING_COLUMN)}
    for key, value in (columns or {}).items():
        if key not in names:
            raise InputError(f"column mapping: unknown table column {key!r}; expected some of "
                             f"{', '.join(names)}")
        names[key] = value
    if not path.exists():
        raise InputError(f"{source}: no such file; expected a Parquet embedding table")
    if path.is_dir():
        raise InputError(f"{source}: is a folder; expected a Parquet embedding table file "
                         f"(use 'biasgrid data import' for folders of embeddings)")
    try:
        # No pre-buffering (it would hold many row groups at once) and 1 MiB read buffers: streams page by page.
        pf = pq.ParquetFile(path, pre_buffer=False, buffer_size=1 << 20)
    except (pa.ArrowException, OSError) as exc:
        raise InputError(f"{source}: not a readable Parquet file ({exc})") from exc
    schema = pf.schema_arrow
    check_unique_columns(schema.names, source)
    missing = [names[c] for c in (*LABEL_COLUMNS, EMBEDDING_COLUMN) if names[c] not in schema.names
               and (c not in OPTIONAL_COLUMNS or c in (columns or {}))]
    if missing:
        raise InputError(f"{source}: missing column(s) {', '.join(missing)}; expected identity, image, ethnicity "
                         f"(optional), gender, embedding (found: {', '.join(schema.names)}). Tables with other column "
                         f"names: 'biasgrid data import {source} --format table --map identity=<column> ...'")
    has_ethnicity = names["ethnicity"] in schema.names
    extra = [c for c in schema.names if c not in set(names.values()) | {FACE_COLUMN}]
    emb_name = names[EMBEDDING_COLUMN]
    d = _embedding_dim(schema.field(emb_name), emb_name, source)
    n = pf.metadata.num_rows
    if n == 0:
        raise InputError(f"{source}: the table has no rows; expected at least one embedding")

    labels = pf.read(columns=list(dict.fromkeys([*(names[c] for c in LABEL_COLUMNS if names[c] in schema.names),
                                                 *extra])))
    identity = _strings(labels.column(names["identity"]), names["identity"], source)
    image = _strings(labels.column(names["image"]), names["image"], source)
    ethnicity, groups = (parse_groups(labels.column(names["ethnicity"]), names["ethnicity"], source)
                         if has_ethnicity else (None, ()))
    gender = parse_labels(labels.column(names["gender"]), vocab.GENDERS, names["gender"], source)
    attributes = {c: parse_attribute(labels.column(c), c, source) for c in extra}
    del labels

    matrix: np.ndarray | None = None if d is None else np.empty((n, d), dtype=np.float32)
    pos = 0
    for batch in pf.iter_batches(batch_size=_READ_BATCH, columns=[emb_name]):
        col = batch.column(0)
        rows = len(col)
        if rows == 0:
            continue
        if col.null_count:
            bad = pos + int(np.flatnonzero(col.is_null().to_numpy(zero_copy_only=False))[0])
            raise InputError(f"{source}: '{emb_name}' of row {bad} is missing; expected {d or 'd'} numbers per row")
        if not pa.types.is_fixed_size_list(col.type):
            lengths = np.diff(col.offsets.to_numpy())
            if matrix is None:
                d = int(lengths[0])
                if d == 0:
                    raise InputError(f"{source}: '{emb_name}' of row {pos} is empty; expected at least one number")
                matrix = np.empty((n, d), dtype=np.float32)
            bad = np.flatnonzero(lengths != d)
            if len(bad):
                raise InputError(f"{source}: '{emb_name}' of row {pos + int(bad[0])} has {lengths[bad[0]]} values, "
                                 f"expected {d} like row 0; every embedding must have the same dimension")
        assert matrix is not None and d is not None
        values = col.flatten()  # honours the array's offset; zero-copy for float32 without nulls
        if values.null_count:
            flat_bad = int(np.flatnonzero(values.is_null().to_numpy(zero_copy_only=False))[0])
            raise InputError(f"{source}: '{emb_name}' of row {pos + flat_bad // d} has a missing value at "
                             f"position {flat_bad % d}; expected {d} numbers")
        matrix[pos:pos + rows] = values.to_numpy(zero_copy_only=False).reshape(rows, d)
        pos += rows
        del batch, col, values
    if matrix is None or pos != n:
        raise InputError(f"{source}: read {pos} embeddings but the metadata promises {n} rows; the file is damaged")
    face = _face_detected(pf, source) if FACE_COLUMN in schema.names else None
    table = EmbeddingTable(matrix, identity, image, ethnicity, gender, groups, face, attributes)
    validate_table(table, source)
    return table
