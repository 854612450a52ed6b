"""Importers: the forms real users hold, each turned into an :class:`~storage.table.EmbeddingTable`.

Formats (``fmt``; detected from ``src`` by :func:`detect_format` when not given):

``diveface``
    A DiveFace-layout folder of per-image embeddings ``<root>/<GROUP>/<identity>/<image>.npy`` (one vector of
    shape ``(d,)`` or ``(1, d)`` per file). identity = the identity folder's name, image = the file's stem
    (``9469948405_7``, also from ``9469948405_7.jpg.npy``). ``root`` may also be the parent of a single folder
    such as ``4K_120`` holding the groups.
``npy``
    One ``.npy``/``.npz`` matrix ``(rows, d)`` per group, the file named after the group (``HA4K_120.npy``,
    ``Group1_Male.npz``). A ``.npz`` holds one array, or several with the matrix under ``embeddings``.
    Identities come from a sidecar list per group: a ``.txt`` file named after the same group (either naming)
    in the ``identities`` folder (default: beside the matrices), or the file ``identities`` itself when
    importing one matrix. One line per matrix row, no header: either an identity (``100016927@N02_identity_1``;
    image = the row number) or DiveFace's annotation form ``<identity>/<image>.jpg`` (image = the file stem).
    Without sidecar lists every row is its own identity ``<file stem>_<row>`` (classification works,
    verification has no genuine pairs).
``uam-csv``
    The UAM CSV pair: an embeddings CSV (header row, an optional index column, then d feature columns) and an
    attributes CSV with one row per embedding row. ``src`` is the folder holding both (told apart by their
    headers) or the embeddings CSV, with ``attributes`` naming the other file (default: the one CSV beside it
    with attribute columns). The embeddings CSV's first column is an index when its header is empty or one of
    ``index, idx, id, row, unnamed: 0``. Attribute columns are matched ignoring case, spaces, ``-`` and ``_``:

    * gender: ``gender`` or ``sex``; values ``0`` = male, ``1`` = female (or ``male``/``female``/``m``/``f``);
    * ethnicity: ``ethnicity``, ``ethnic``, ``ethnic_group``, ``race``; values ``0`` = black, ``1`` = asian,
      ``2`` = caucasian (UAM's codes), or the names ``asian``/``caucasian``/``black``;
    * identity: ``identity``, ``identity_id``, ``id``, ``identity_index``, ``subject``, ``subject_id``,
      ``person``, ``person_id``;
    * image (optional; default: the row number): ``image``, ``image_id``, ``image_index``, ``image_name``,
      ``img``, ``pose``, ``pose_id``, ``pose_index``, ``pose/image``, ``file``, ``filename``.

    ``columns`` names a column explicitly, e.g. ``{"identity": "ID_person"}``. When both files have an index
    column, the indices must agree row by row.
``table``
    An existing Parquet or CSV table with columns identity, image, ethnicity, gender (values ``asian`` /
    ``caucasian`` / ``black`` and ``male`` / ``female``, any case) and the embedding: in Parquet one
    ``embedding`` column (``fixed_size_list<float>`` or ``list<float>``); in CSV the columns ``e0, e1, ...,
    e{d-1}`` (in any order). ``columns`` maps other names, e.g. ``{"identity": "subject_id"}``; for CSV,
    ``{"embedding": "emb_"}`` changes the embedding columns' prefix (``emb_0 ... emb_{d-1}``).

Group names (case ignored): the study's ``HA4K_120`` (asian male), ``MA4K_120`` (asian female), ``HB4K_120`` /
``MB4K_120`` (caucasian), ``HN4K_120`` / ``MN4K_120`` (black); DiveFace's own ``Group1_Male`` / ``Group1_Female``
(asian), ``Group2_*`` (black: Sub-Saharan and South Indian), ``Group3_*`` (caucasian); or ``asian_male`` ...

Every importer refuses bad input with InputError naming the file, group or field and what was expected, before
anything is written: missing files or folders, unknown group names, mixed dimensions, NaN or inf, empty
groups, labels outside the known values, duplicate (identity, image) rows, an identity with two different
labels (when identity names are only unique within a group, ``prefix_group=True`` makes them
``<ethnicity>_<gender>/<identity>``). Nothing is ever unpickled (``allow_pickle=False``).
"""

from __future__ import annotations

import csv
import os
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv

from storage.errors import InputError
from storage.table import (ETHNICITIES, GENDERS, EmbeddingTable, check_finite, parse_labels,
                           read_parquet_table, validate_table)

FORMATS: tuple[str, ...] = ("diveface", "npy", "uam-csv", "table")

STUDY_GROUPS = {"HA4K_120": ("asian", "male"), "MA4K_120": ("asian", "female"),
                "HB4K_120": ("caucasian", "male"), "MB4K_120": ("caucasian", "female"),
                "HN4K_120": ("black", "male"), "MN4K_120": ("black", "female")}
DIVEFACE_GROUPS = {"Group1_Male": ("asian", "male"), "Group1_Female": ("asian", "female"),
                   "Group2_Male": ("black", "male"), "Group2_Female": ("black", "female"),
                   "Group3_Male": ("caucasian", "male"), "Group3_Female": ("caucasian", "female")}
_GROUPS: dict[str, tuple[int, int]] = {
    name.lower(): (ETHNICITIES.index(e), GENDERS.index(g))
    for name, (e, g) in [*STUDY_GROUPS.items(), *DIVEFACE_GROUPS.items(),
                         *(((f"{e}_{g}"), (e, g)) for e in ETHNICITIES for g in GENDERS)]}

UAM_GENDER = {"0": 0, "1": 1, "male": 0, "female": 1, "m": 0, "f": 1}
UAM_ETHNICITY = {"0": 2, "1": 0, "2": 1, "black": 2, "asian": 0, "caucasian": 1}  # -> codes into ETHNICITIES
UAM_COLUMNS: dict[str, tuple[str, ...]] = {
    "gender": ("gender", "sex"),
    "ethnicity": ("ethnicity", "ethnic", "ethnicgroup", "race"),
    "identity": ("identity", "identityid", "id", "identityindex", "subject", "subjectid", "person", "personid"),
    "image": ("image", "imageid", "imageindex", "imagename", "img", "pose", "poseid", "poseindex", "pose/image",
              "file", "filename"),
}
_INDEX_NAMES = {"", "index", "idx", "id", "row", "unnamed:0"}
_CSV_EMBEDDING_PREFIX = "e"
_IMAGE_SUFFIXES = {"jpg", "jpeg", "png", "bmp", "webp", "tif", "tiff"}


def accepted_group_names() -> str:
    """The group names the importers accept (case ignored), for messages."""
    return ("HA4K_120, MA4K_120 (asian male, female), HB4K_120, MB4K_120 (caucasian), HN4K_120, MN4K_120 (black); "
            "Group1_Male, Group1_Female (asian), Group2_Male, Group2_Female (black), Group3_Male, Group3_Female "
            "(caucasian); or " + ", ".join(f"{e}_{g}" for e in ETHNICITIES for g in GENDERS))


def group_codes(name: str) -> tuple[int, int] | None:
    """(ethnicity code, gender code) of a group name in any accepted naming (case ignored), else None."""
    return _GROUPS.get(name.strip().lower())


def _group_label(codes: tuple[int, int]) -> str:
    return f"{ETHNICITIES[codes[0]]}_{GENDERS[codes[1]]}"


def _visible(entries: list[os.DirEntry]) -> list[os.DirEntry]:
    return sorted((e for e in entries if not e.name.startswith(".")), key=lambda e: e.name)


def _scandir(path: Path) -> list[os.DirEntry]:
    try:
        with os.scandir(path) as it:
            return _visible(list(it))
    except OSError as exc:
        raise InputError(f"{path}: cannot list the folder ({exc.strerror or exc})") from exc


def _is_matrix(name: str) -> bool:
    return name.lower().endswith((".npy", ".npz"))


def _header(path: Path) -> list[str]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            return next(csv.reader(f), [])
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{path}: cannot read the CSV header ({exc})") from exc


def _norm(name: str) -> str:
    return re.sub(r"[\s_\-]+", "", name.strip().lower())


def _looks_like_attributes(header: list[str]) -> bool:
    names = {_norm(h) for h in header}
    return any(a in names for a in UAM_COLUMNS["gender"]) and any(a in names for a in UAM_COLUMNS["ethnicity"])


def _looks_like_csv_table(header: list[str], prefix: str = _CSV_EMBEDDING_PREFIX) -> bool:
    return f"{prefix}0" in {h.strip() for h in header}


def detect_format(src: str | Path, embedding_prefix: str | None = None) -> str:
    """The importer format of ``src`` (one of :data:`FORMATS`), from its suffix, contents or CSV header.

    Folder with group folders -> ``diveface``; ``.npy``/``.npz`` file or folder of them -> ``npy``; ``.parquet``
    -> ``table``; CSV with columns ``e0 ...`` (or ``<embedding_prefix>0 ...``, the prefix a column mapping
    gives) -> ``table``; other CSV or folder of CSVs -> ``uam-csv``.
    """
    src = Path(src)
    if not src.exists():
        raise InputError(f"{src}: no such file or folder; expected embeddings to import "
                         f"(formats: {', '.join(FORMATS)})")
    if src.is_file():
        suffix = src.suffix.lower()
        if suffix in (".parquet", ".pq"):
            return "table"
        if suffix in (".npy", ".npz"):
            return "npy"
        if suffix == ".csv":
            return "table" if _looks_like_csv_table(_header(src), embedding_prefix or _CSV_EMBEDDING_PREFIX) \
                else "uam-csv"
        raise InputError(f"{src}: cannot tell the format from the suffix {suffix!r}; expected .parquet, .csv, "
                         f".npy or .npz, or name it with --format ({', '.join(FORMATS)})")
    entries = _scandir(src)
    dirs = [e for e in entries if e.is_dir()]
    files = [e for e in entries if e.is_file()]
    if any(group_codes(e.name) for e in dirs) or (
            len(dirs) == 1 and any(group_codes(e.name) for e in _scandir(Path(dirs[0].path)) if e.is_dir())):
        return "diveface"
    if any(_is_matrix(e.name) for e in files):
        return "npy"
    if any(e.name.lower().endswith(".csv") for e in files):
        return "uam-csv"
    raise InputError(f"{src}: cannot tell the format: no group folders ({accepted_group_names()}), no .npy/.npz "
                     f"matrices and no CSV files here; name it with --format ({', '.join(FORMATS)})")


def import_embeddings(src: str | Path, fmt: str | None = None, *, columns: Mapping[str, str] | None = None,
                      identities: str | Path | None = None, attributes: str | Path | None = None,
                      prefix_group: bool = False) -> EmbeddingTable:
    """Read embeddings in any supported form (see the module docstring) into a validated table.

    ``fmt``: one of :data:`FORMATS` (default: :func:`detect_format`). ``columns``: column mapping for
    ``table`` and ``uam-csv``. ``identities``: sidecar identity lists for ``npy``. ``attributes``: the attributes
    CSV for ``uam-csv``. ``prefix_group``: make identities ``<ethnicity>_<gender>/<identity>``.
    Raises InputError (nothing written) for any bad input.
    """
    src = Path(src)
    if not src.exists():
        raise InputError(f"{src}: no such file or folder; expected embeddings to import")
    fmt = fmt or detect_format(src, (columns or {}).get("embedding"))
    if fmt not in FORMATS:
        raise InputError(f"format {fmt!r} is unknown; expected one of {', '.join(FORMATS)}")
    if columns and fmt not in ("table", "uam-csv"):
        raise InputError(f"column mapping ({', '.join(f'{k}={v}' for k, v in columns.items())}) applies to the "
                         f"table and uam-csv formats, not {fmt}")
    if identities is not None and fmt != "npy":
        raise InputError(f"identities ({identities}) applies to the npy format, not {fmt}")
    if attributes is not None and fmt != "uam-csv":
        raise InputError(f"attributes ({attributes}) applies to the uam-csv format, not {fmt}")
    if fmt == "diveface":
        table = _import_diveface(src, prefix_group)
    elif fmt == "npy":
        table = _import_npy(src, None if identities is None else Path(identities))
    elif fmt == "uam-csv":
        table = _import_uam(src, None if attributes is None else Path(attributes), dict(columns or {}))
    else:
        table = _import_table(src, dict(columns or {}))
    if prefix_group:
        prefixed = np.array([f"{ETHNICITIES[e]}_{GENDERS[g]}/{i}"
                             for e, g, i in zip(table.ethnicity, table.gender, table.identity)], dtype=object)
        table = EmbeddingTable(table.embeddings, prefixed, table.image, table.ethnicity, table.gender)
    validate_table(table, str(src))
    return table


# ---------------------------------------------------------------------------------------------- diveface


def _load_vector(path: str) -> np.ndarray:
    try:
        v = np.load(path, allow_pickle=False)
    except ValueError as exc:
        raise InputError(f"{path}: cannot load without unpickling ({exc}); expected a numeric .npy array") from exc
    except (OSError, EOFError) as exc:
        raise InputError(f"{path}: not a readable .npy file ({exc})") from exc
    if not isinstance(v, np.ndarray):
        raise InputError(f"{path}: expected a .npy array, found an archive")
    if v.dtype.kind != "f":
        raise InputError(f"{path}: has dtype {v.dtype}; expected floating-point embeddings")
    if v.ndim == 2 and v.shape[0] == 1:
        v = v[0]
    if v.ndim != 1 or v.size == 0:
        raise InputError(f"{path}: has shape {v.shape}; expected one embedding of shape (d,) or (1, d)")
    return v


def _image_name(filename: str) -> str:
    """``9469948405_7.npy`` -> ``9469948405_7``; also drops an image suffix kept before .npy (``x.jpg.npy``)."""
    stem = filename[:-4]
    base, dot, suffix = stem.rpartition(".")
    return base if dot and base and suffix.lower() in _IMAGE_SUFFIXES else stem


def _group_folders(root: Path) -> list[tuple[tuple[int, int], Path]]:
    entries = _scandir(root)
    dirs = [e for e in entries if e.is_dir()]
    if len(dirs) == 1 and not group_codes(dirs[0].name):
        inner = [e for e in _scandir(Path(dirs[0].path)) if e.is_dir()]
        if any(group_codes(e.name) for e in inner):
            root, entries, dirs = Path(dirs[0].path), _scandir(Path(dirs[0].path)), inner
    stray = [e.name for e in entries if e.is_file() and _is_matrix(e.name)]
    if stray:
        raise InputError(f"{root}: {stray[0]} lies directly in the root folder; expected "
                         f"<root>/<GROUP>/<identity>/<image>.npy (or --format npy for one matrix per group)")
    if not dirs:
        raise InputError(f"{root}: no group folders; expected <root>/<GROUP>/<identity>/<image>.npy with GROUP one "
                         f"of {accepted_group_names()}")
    found: dict[tuple[int, int], Path] = {}
    for e in dirs:
        codes = group_codes(e.name)
        if codes is None:
            raise InputError(f"{root}: folder {e.name!r} is not a known group; expected group folders named "
                             f"{accepted_group_names()}")
        if codes in found:
            raise InputError(f"{root}: folders {found[codes].name!r} and {e.name!r} are both group "
                             f"{_group_label(codes)}; expected one folder per group")
        found[codes] = Path(e.path)
    return sorted(found.items())


def _import_diveface(root: Path, prefix_group: bool) -> EmbeddingTable:
    if not root.is_dir():
        raise InputError(f"{root}: not a folder; the diveface format expects <root>/<GROUP>/<identity>/<image>.npy")
    paths: list[str] = []
    identity: list[str] = []
    image: list[str] = []
    eth: list[int] = []
    gen: list[int] = []
    owner: dict[str, str] = {}
    for codes, folder in _group_folders(root):
        ids = [e for e in _scandir(folder) if e.is_dir()]
        stray = [e.name for e in _scandir(folder) if e.is_file() and _is_matrix(e.name)]
        if stray:
            raise InputError(f"{folder}: {stray[0]} lies directly in the group folder; expected "
                             f"{folder}/<identity>/<image>.npy")
        if not ids:
            raise InputError(f"{folder}: group {_group_label(codes)} is empty; expected identity folders holding "
                             f"<image>.npy files")
        before = len(paths)
        for ident in ids:
            if ident.name in owner and not prefix_group:
                raise InputError(f"identity {ident.name!r} appears in both {owner[ident.name]} and {folder.name}; "
                                 f"expected each identity in one group (if identity names are only unique within a "
                                 f"group, use --prefix-group)")
            owner[ident.name] = folder.name
            entries = _scandir(Path(ident.path))
            sub = [e.name for e in entries if e.is_dir()]
            if sub:
                raise InputError(f"{ident.path}: unexpected folder {sub[0]!r}; expected only <image>.npy files")
            npys = [e for e in entries if e.is_file() and e.name.lower().endswith(".npy")]
            if not npys:
                raise InputError(f"{ident.path}: identity folder has no .npy files; expected one embedding per image")
            for f in npys:
                paths.append(f.path)
                identity.append(ident.name)
                image.append(_image_name(f.name))
        eth += [codes[0]] * (len(paths) - before)
        gen += [codes[1]] * (len(paths) - before)
    first = _load_vector(paths[0])
    d = first.size
    matrix = np.empty((len(paths), d), dtype=np.float32)
    for i, p in enumerate(paths):
        v = first if i == 0 else _load_vector(p)
        if v.size != d:
            raise InputError(f"{p}: embedding has {v.size} values, expected {d} like {paths[0]}; every embedding "
                             f"must have the same dimension")
        matrix[i] = v
        if not np.isfinite(matrix[i]).all():
            raise InputError(f"{p}: embedding has NaN or inf (or a value too large for float32); expected finite "
                             f"numbers")
    return EmbeddingTable(matrix, np.array(identity, dtype=object), np.array(image, dtype=object),
                          np.array(eth, dtype=np.int8), np.array(gen, dtype=np.int8))


# ---------------------------------------------------------------------------------------------- npy / npz


def _read_npy_header(fp, where: str) -> tuple[tuple[int, ...], np.dtype]:
    try:
        version = np.lib.format.read_magic(fp)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(fp)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(fp)
        else:
            raise ValueError(f"unsupported .npy format version {version}")
    except (ValueError, OSError, EOFError) as exc:
        raise InputError(f"{where}: not a readable .npy array ({exc})") from exc
    return shape, dtype


def _npz_member(path: Path) -> str:
    try:
        with zipfile.ZipFile(path) as z:
            names = [n[:-4] for n in z.namelist() if n.endswith(".npy")]
    except (zipfile.BadZipFile, OSError) as exc:
        raise InputError(f"{path}: not a readable .npz archive ({exc})") from exc
    if len(names) == 1:
        return names[0]
    for key in ("embeddings", "embedding"):
        if key in names:
            return key
    raise InputError(f"{path}: holds arrays {', '.join(names) or '(none)'}; expected one array, or the matrix "
                     f"under the name 'embeddings'")


def _matrix_shape(path: Path) -> tuple[tuple[int, ...], np.dtype, str | None]:
    if path.suffix.lower() == ".npz":
        key = _npz_member(path)
        with zipfile.ZipFile(path) as z, z.open(key + ".npy") as fp:
            shape, dtype = _read_npy_header(fp, f"{path}[{key}]")
        return shape, dtype, key
    try:
        with open(path, "rb") as fp:
            shape, dtype = _read_npy_header(fp, str(path))
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc})") from exc
    return shape, dtype, None


def _load_matrix(path: Path, key: str | None) -> np.ndarray:
    try:
        if key is None:
            return np.load(path, mmap_mode="r", allow_pickle=False)
        with np.load(path, allow_pickle=False) as z:
            return z[key]
    except ValueError as exc:
        raise InputError(f"{path}: cannot load without unpickling ({exc}); expected a numeric matrix") from exc
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise InputError(f"{path}: cannot read ({exc})") from exc


def _read_sidecar(path: Path, rows: int, matrix: Path) -> tuple[list[str], list[str]]:
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read the identity list ({exc})") from exc
    while lines and not lines[-1].strip():
        lines.pop()
    if len(lines) != rows:
        raise InputError(f"{path}: {len(lines)} lines but {matrix.name} has {rows} rows; expected one line per "
                         f"matrix row (an identity or <identity>/<image>.jpg, no header)")
    identity, image = [], []
    for i, line in enumerate(lines):
        parts = [p for p in line.strip().replace("\\", "/").split("/") if p.strip()]
        if not parts:
            raise InputError(f"{path}: line {i + 1} is empty; expected an identity or <identity>/<image>.jpg")
        if len(parts) >= 2:
            identity.append(parts[-2].strip())
            image.append(PurePosixPath(parts[-1].strip()).stem or parts[-1].strip())
        else:
            identity.append(parts[0].strip())
            image.append(str(i))
    return identity, image


def _sidecars(folder: Path, groups: dict[tuple[int, int], Path]) -> dict[tuple[int, int], Path]:
    if not folder.is_dir():
        raise InputError(f"{folder}: identities folder not found; expected a folder of <group>.txt lists")
    found: dict[tuple[int, int], Path] = {}
    for e in _scandir(folder):
        if e.is_file() and e.name.lower().endswith(".txt"):
            codes = group_codes(e.name[:-4])
            if codes is None or codes not in groups:
                continue
            if codes in found:
                raise InputError(f"{folder}: both {found[codes].name} and {e.name} are identity lists of group "
                                 f"{_group_label(codes)}; keep one")
            found[codes] = Path(e.path)
    return found


def _named_sidecars(folder: Path, groups: dict[tuple[int, int], Path]) -> dict[tuple[int, int], Path]:
    """The lists of a folder the user named with --identities: it must hold one for every matrix."""
    found = _sidecars(folder, groups)
    lacking = [groups[c].stem for c in groups if c not in found]
    if lacking:
        raise InputError(f"{folder}: no identity list for {', '.join(lacking)}; expected <group>.txt files "
                         f"named like the matrices (e.g. {lacking[0]}.txt)")
    return found


def _import_npy(src: Path, identities: Path | None) -> EmbeddingTable:
    if src.is_file():
        files = [src]
    else:
        files = [Path(e.path) for e in _scandir(src) if e.is_file() and _is_matrix(e.name)]
        if not files:
            raise InputError(f"{src}: no .npy or .npz files; expected one matrix per group named after the group "
                             f"({accepted_group_names()})")
    groups: dict[tuple[int, int], Path] = {}
    for f in files:
        if not _is_matrix(f.name):
            raise InputError(f"{f}: expected a .npy or .npz matrix")
        codes = group_codes(f.stem)
        if codes is None:
            raise InputError(f"{f}: {f.stem!r} is not a known group; expected files named after the group: "
                             f"{accepted_group_names()}")
        if codes in groups:
            raise InputError(f"{groups[codes]} and {f} are both group {_group_label(codes)}; expected one matrix "
                             f"per group")
        groups[codes] = f
    groups = dict(sorted(groups.items()))

    if identities is not None and identities.is_file():
        if len(groups) != 1:
            raise InputError(f"{identities}: one identity list for {len(groups)} matrices; with several groups "
                             f"give a folder of <group>.txt lists")
        sidecars = {next(iter(groups)): identities}
    elif identities is not None and not identities.exists():
        raise InputError(f"{identities}: no such file or folder; expected the identity list(s)")
    elif identities is not None:
        sidecars = _named_sidecars(identities, groups)
    else:
        sidecars = _sidecars(src if src.is_dir() else src.parent, groups)
    if sidecars and len(sidecars) != len(groups):
        lacking = [groups[c].name for c in groups if c not in sidecars]
        raise InputError(f"identity lists found for {', '.join(p.name for p in sidecars.values())} but not for "
                         f"{', '.join(lacking)}; give a <group>.txt list for every matrix or for none")

    shapes = {}
    d = None
    for codes, f in groups.items():
        shape, dtype, key = _matrix_shape(f)
        where = f"{f}[{key}]" if key and f.suffix.lower() == ".npz" else str(f)
        if dtype.hasobject:
            raise InputError(f"{where}: holds Python objects; expected a numeric matrix (biasgrid never unpickles)")
        if dtype.kind != "f":
            raise InputError(f"{where}: has dtype {dtype}; expected floating-point embeddings")
        if len(shape) != 2:
            raise InputError(f"{where}: has shape {shape}; expected a (rows, dimension) matrix")
        if shape[0] == 0:
            raise InputError(f"{where}: group {_group_label(codes)} is empty (0 rows); expected embeddings")
        if d is None:
            d, first = shape[1], where
        elif shape[1] != d:
            raise InputError(f"{where}: has dimension {shape[1]}, expected {d} like {first}; every embedding must "
                             f"have the same dimension")
        shapes[codes] = (shape[0], key)
    assert d is not None and d > 0
    n = sum(r for r, _ in shapes.values())
    matrix = np.empty((n, d), dtype=np.float32)
    identity: list[str] = []
    image: list[str] = []
    eth = np.empty(n, dtype=np.int8)
    gen = np.empty(n, dtype=np.int8)
    pos = 0
    for codes, f in groups.items():
        rows, key = shapes[codes]
        if codes in sidecars:
            ids, imgs = _read_sidecar(sidecars[codes], rows, f)
        else:
            ids = [f"{f.stem}_{i}" for i in range(rows)]
            imgs = [str(i) for i in range(rows)]
        block = matrix[pos:pos + rows]
        block[...] = _load_matrix(f, key)
        check_finite(block, str(f), lambda r: f"row {r}")
        identity += ids
        image += imgs
        eth[pos:pos + rows], gen[pos:pos + rows] = codes
        pos += rows
    return EmbeddingTable(matrix, np.array(identity, dtype=object), np.array(image, dtype=object), eth, gen)


# ---------------------------------------------------------------------------------------------- CSV helpers


def _pick_column(header: list[str], key: str, aliases: tuple[str, ...], mapping: Mapping[str, str],
                 path: Path, required: bool) -> int | None:
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
        matches = [i for i, h in enumerate(header) if _norm(h) == alias]
        if len(matches) > 1:
            raise InputError(f"{path}: columns {', '.join(header[i] for i in matches)} could all be {key}; name one "
                             f"with --map {key}=<column>")
        if matches:
            return matches[0]
    if required:
        raise InputError(f"{path}: no {key} column; expected one named {', '.join(aliases)} (case, spaces, - and _ "
                         f"ignored) or --map {key}=<column> (columns: {', '.join(header)})")
    return None


def _check_mapping(mapping: Mapping[str, str], allowed: tuple[str, ...], fmt: str) -> None:
    for key, value in mapping.items():
        if key not in allowed:
            raise InputError(f"column mapping: {key!r} is not a column of the {fmt} format; expected some of "
                             f"{', '.join(allowed)}")
        if not isinstance(value, str) or not value:
            raise InputError(f"column mapping: {key} must name a column, got {value!r}")


def _csv_error(path: Path, exc: Exception) -> InputError:
    return InputError(f"{path}: cannot read the CSV ({str(exc).strip()})")


def _float_columns_to_matrix(batch: pa.RecordBatch | pa.Table, names: list[str], header_names: list[str],
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


def _label_codes(values: list[str] | np.ndarray, mapping: Mapping[str, int], field: str, path: Path,
                 accepted: str) -> np.ndarray:
    def norm(v: str) -> str:
        s = str(v).strip().lower()
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


def _strings_column(values: np.ndarray, field: str, path: Path) -> np.ndarray:
    out = np.array([str(v).strip() for v in values], dtype=object)
    empty = np.flatnonzero(out == "")
    if len(empty):
        raise InputError(f"{path}: column {field!r} is empty at data row {empty[0]} (line {empty[0] + 2}); expected "
                         f"a value in every row")
    return out


# ---------------------------------------------------------------------------------------------- UAM CSV pair


def _find_uam_pair(src: Path, attributes: Path | None) -> tuple[Path, Path]:
    if attributes is not None:
        if not attributes.is_file():
            raise InputError(f"{attributes}: no such file; expected the attributes CSV")
        if src.is_file():
            return src, attributes
        others = [Path(e.path) for e in _scandir(src) if e.is_file() and e.name.lower().endswith(".csv")
                  and Path(e.path).resolve() != attributes.resolve()]
        if len(others) != 1:
            raise InputError(f"{src}: expected exactly one embeddings CSV besides {attributes.name}, found "
                             f"{len(others)}; name the embeddings CSV as the source")
        return others[0], attributes
    folder = src if src.is_dir() else src.parent
    csvs = [Path(e.path) for e in _scandir(folder) if e.is_file() and e.name.lower().endswith(".csv")]
    attrs = [p for p in csvs if _looks_like_attributes(_header(p))]
    if src.is_file():
        attrs = [p for p in attrs if p.resolve() != src.resolve()]
        if _looks_like_attributes(_header(src)):
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


def _import_uam(src: Path, attributes: Path | None, mapping: dict[str, str]) -> EmbeddingTable:
    _check_mapping(mapping, tuple(UAM_COLUMNS), "uam-csv")
    emb_path, attr_path = _find_uam_pair(src, attributes)

    # Attributes: small, read as strings.
    try:
        attrs = pd.read_csv(attr_path, dtype=str, keep_default_na=False, na_filter=False, encoding="utf-8-sig")
    except (OSError, ValueError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        raise _csv_error(attr_path, exc) from exc
    header = [str(c) for c in attrs.columns]
    if not len(attrs):
        raise InputError(f"{attr_path}: no data rows; expected one attributes row per embedding")
    picked = {key: _pick_column(header, key, aliases, mapping, attr_path, required=key != "image")
              for key, aliases in UAM_COLUMNS.items()}
    used = {i for i in picked.values() if i is not None}
    attr_index = None
    if 0 not in used and _norm(header[0]) in _INDEX_NAMES | {"unnamed:0"}:
        attr_index = attrs.iloc[:, 0].astype(str).str.strip().to_numpy()
    gender = _label_codes(attrs.iloc[:, picked["gender"]].to_numpy(), UAM_GENDER, header[picked["gender"]],
                          attr_path, "0 (male), 1 (female), male or female")
    ethnicity = _label_codes(attrs.iloc[:, picked["ethnicity"]].to_numpy(), UAM_ETHNICITY,
                             header[picked["ethnicity"]], attr_path,
                             "0 (black), 1 (asian), 2 (caucasian), or asian, caucasian, black")
    identity = _strings_column(attrs.iloc[:, picked["identity"]].to_numpy(), header[picked["identity"]], attr_path)
    if picked["image"] is not None:
        image = _strings_column(attrs.iloc[:, picked["image"]].to_numpy(), header[picked["image"]], attr_path)
    else:
        image = np.array([str(i) for i in range(len(attrs))], dtype=object)
    del attrs

    # Embeddings: large, streamed.
    emb_header = _header(emb_path)
    if not emb_header:
        raise InputError(f"{emb_path}: empty file; expected a header row and one row of features per image")
    has_index = _norm(emb_header[0]) in _INDEX_NAMES
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
            block = _float_columns_to_matrix(batch, features, emb_header[first_feature:], emb_path, pos)
            check_finite(block, str(emb_path), lambda r, p=pos: f"data row {p + r} (line {p + r + 2})")
            blocks.append(block)
            if has_index:
                index_values.append(np.asarray(batch.column(names[0]).to_pylist(), dtype=object))
            pos += batch.num_rows
    except pa.ArrowException as exc:
        raise _csv_error(emb_path, exc) from exc
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
    return EmbeddingTable(matrix, identity, image, ethnicity, gender)


# ---------------------------------------------------------------------------------------------- table


def _import_table(src: Path, mapping: dict[str, str]) -> EmbeddingTable:
    allowed = ("identity", "image", "ethnicity", "gender", "embedding")
    _check_mapping(mapping, allowed, "table")
    if src.is_dir():
        raise InputError(f"{src}: is a folder; the table format expects a .parquet or .csv file")
    if src.suffix.lower() in (".parquet", ".pq"):
        return read_parquet_table(src, mapping)
    if src.suffix.lower() != ".csv":
        raise InputError(f"{src}: expected a .parquet or .csv table")
    header = _header(src)
    prefix = mapping.get("embedding", _CSV_EMBEDDING_PREFIX)
    label_idx = {}
    for key in ("identity", "image", "ethnicity", "gender"):
        label_idx[key] = _pick_column(header, key, (key,), mapping, src, required=True)
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
    names = [f"c{i}" for i in range(len(header))]
    feature_names = [names[feature_at[k]] for k in range(d)]
    types = {c: pa.float32() for c in feature_names}
    types.update({names[i]: pa.string() for i in label_idx.values()})
    try:
        arrow = pacsv.read_csv(src, read_options=pacsv.ReadOptions(column_names=names, skip_rows=1),
                               convert_options=pacsv.ConvertOptions(
                                   column_types=types, include_columns=list(dict.fromkeys(
                                       [names[i] for i in label_idx.values()] + feature_names)),
                                   null_values=[""], strings_can_be_null=True))
    except pa.ArrowException as exc:
        raise _csv_error(src, exc) from exc
    if arrow.num_rows == 0:
        raise InputError(f"{src}: no data rows; expected one row per image")
    matrix = _float_columns_to_matrix(arrow, feature_names, [f"{prefix}{k}" for k in range(d)], src, 0)
    check_finite(matrix, str(src), lambda r: f"data row {r} (line {r + 2})")
    labels = {}
    for key, i in label_idx.items():
        col = arrow.column(names[i])
        if col.null_count:
            bad = int(np.flatnonzero(col.is_null().to_numpy(zero_copy_only=False))[0])
            raise InputError(f"{src}: column {header[i]!r} is empty at data row {bad} (line {bad + 2}); expected a "
                             f"value in every row")
        labels[key] = col
    ethnicity = parse_labels(labels["ethnicity"], ETHNICITIES, header[label_idx["ethnicity"]], str(src))
    gender = parse_labels(labels["gender"], GENDERS, header[label_idx["gender"]], str(src))
    identity = _strings_column(labels["identity"].to_numpy(), header[label_idx["identity"]], src)
    image = _strings_column(labels["image"].to_numpy(), header[label_idx["image"]], src)
    return EmbeddingTable(matrix, identity, image, ethnicity, gender)
