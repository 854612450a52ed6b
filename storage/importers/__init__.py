"""Importers: the forms real users hold, each turned into an :class:`~storage.table.EmbeddingTable`.

Formats (``fmt``; detected from ``src`` by :func:`detect_format` when not given), one module each (its docstring
describes the form in full) and one :class:`Format` entry in :data:`FORMATS`:

``diveface`` (:mod:`.diveface`)
    A DiveFace-layout folder of per-image embeddings ``<root>/<GROUP>/<identity>/<image>.npy``.
``npy`` (:mod:`.npy`)
    One ``.npy``/``.npz`` matrix per group, named after the group, with optional ``<group>.txt`` identity lists.
``uam-csv`` (:mod:`.uam_csv`)
    The UAM CSV pair: an embeddings CSV and an attributes CSV with one row per embedding row.
``table`` (:mod:`.table`)
    An existing Parquet or CSV table with columns identity, image, ethnicity (optional), gender, any further
    attributes and the embedding.

A new format is one module (a ``read`` function, and a ``detect`` one if it can be recognised) plus one line in
:data:`FORMATS`; :func:`import_embeddings` refuses the options the format does not declare.

Group names (case ignored; :mod:`storage.vocab`): the study's ``HA4K_120`` (asian male), ``MA4K_120`` (asian
female), ``HB4K_120`` / ``MB4K_120`` (caucasian), ``HN4K_120`` / ``MN4K_120`` (black); DiveFace's own
``Group1_Male`` / ``Group1_Female`` (asian), ``Group2_*`` (black: Sub-Saharan and South Indian), ``Group3_*``
(caucasian); or ``asian_male`` ...

Every importer refuses bad input with InputError naming the file, group or field and what was expected, before
anything is written: missing files or folders, unknown group names, mixed dimensions, NaN or inf, empty
groups, labels outside the known values, duplicate (identity, image) rows, an identity with two different
labels (when identity names are only unique within a group, ``prefix_group=True`` makes them
``<ethnicity>_<gender>/<identity>``). Nothing is ever unpickled (``allow_pickle=False``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from storage.attributes import default_groups
from storage.errors import InputError
from storage.importers import diveface, npy, table, uam_csv
from storage.table import EMBEDDING_COLUMN, EmbeddingTable, validate_table
from storage.vocab import accepted_group_names

__all__ = ["FORMATS", "FORMAT_NAMES", "Format", "detect_format", "import_embeddings"]


@dataclass(frozen=True)
class Format:
    """One importer format.

    ``read(src, **options)`` returns the table of ``src`` (:func:`import_embeddings` validates it); it receives
    exactly the ``options`` the format declares, out of ``columns`` (dict, possibly empty), ``identities`` and
    ``attributes`` (Path or None) and ``prefix_group`` (bool). Giving ``columns``, ``identities`` or
    ``attributes`` to a format that does not declare it is refused; ``prefix_group`` applies to every format and
    is declared only by those whose reading depends on it. ``detect(src, embedding_prefix)`` says whether ``src``
    (an existing file or folder) is in this format; None: never detected, the user names it.
    """

    name: str
    read: Callable[..., EmbeddingTable]
    description: str   # one line, for help
    options: frozenset[str] = frozenset()
    detect: Callable[[Path, str | None], bool] | None = None


# The registry. Detection tries the formats in this order and takes the first that recognises the source.
FORMATS: dict[str, Format] = {f.name: f for f in (
    Format("diveface", diveface.read, "folder <root>/<GROUP>/<identity>/<image>.npy, one embedding per file",
           frozenset({"prefix_group"}), diveface.detect),
    Format("npy", npy.read, "one .npy/.npz matrix per group, named after it, with optional <group>.txt identities",
           frozenset({"identities"}), npy.detect),
    Format("uam-csv", uam_csv.read, "UAM's embeddings CSV and attributes CSV (gender, ethnicity, identity)",
           frozenset({"columns", "attributes"}), uam_csv.detect),
    Format("table", table.read, "Parquet or CSV table: identity, image, ethnicity, gender and the embedding",
           frozenset({"columns"}), table.detect),
)}
FORMAT_NAMES: tuple[str, ...] = tuple(FORMATS)   # the built-in formats, for argparse choices and config checks


def detect_format(src: str | Path, embedding_prefix: str | None = None) -> str:
    """The importer format of ``src`` (a name in :data:`FORMATS`), from its suffix, contents or CSV header.

    Folder with group folders -> ``diveface``; ``.npy``/``.npz`` file or folder of them -> ``npy``; ``.parquet``
    -> ``table``; CSV with columns ``e0 ...`` (or ``<embedding_prefix>0 ...``, the prefix a column mapping
    gives) -> ``table``; other CSV or folder of CSVs -> ``uam-csv``.
    """
    src = Path(src)
    if not src.exists():
        raise InputError(f"{src}: no such file or folder; expected embeddings to import "
                         f"(formats: {', '.join(FORMATS)})")
    for f in FORMATS.values():
        if f.detect is not None and f.detect(src, embedding_prefix):
            return f.name
    if src.is_file():
        raise InputError(f"{src}: cannot tell the format from the suffix {src.suffix.lower()!r}; expected .parquet, "
                         f".csv, .npy or .npz, or name it with --format ({', '.join(FORMATS)})")
    raise InputError(f"{src}: cannot tell the format: no group folders ({accepted_group_names()}), no .npy/.npz "
                     f"matrices and no CSV files here; name it with --format ({', '.join(FORMATS)})")


def _accepting(option: str) -> str:
    """``"the npy format"``, ``"the table and uam-csv formats"``: the formats declaring ``option``, sorted."""
    names = sorted(name for name, f in FORMATS.items() if option in f.options)
    if len(names) == 1:
        return f"the {names[0]} format"
    return f"the {', '.join(names[:-1])} and {names[-1]} formats"


def import_embeddings(src: str | Path, fmt: str | None = None, *, columns: Mapping[str, str] | None = None,
                      identities: str | Path | None = None, attributes: str | Path | None = None,
                      prefix_group: bool = False) -> EmbeddingTable:
    """Read embeddings in any supported form (see the module docstring) into a validated table.

    ``fmt``: a name in :data:`FORMATS` (default: :func:`detect_format`). ``columns``: column mapping for
    ``table`` and ``uam-csv``. ``identities``: sidecar identity lists for ``npy``. ``attributes``: the attributes
    CSV for ``uam-csv``. ``prefix_group``: make identities ``<ethnicity>_<gender>/<identity>``.
    Raises InputError (nothing written) for any bad input.
    """
    src = Path(src)
    if not src.exists():
        raise InputError(f"{src}: no such file or folder; expected embeddings to import")
    fmt = fmt or detect_format(src, (columns or {}).get(EMBEDDING_COLUMN))
    if fmt not in FORMATS:
        raise InputError(f"format {fmt!r} is unknown; expected one of {', '.join(FORMATS)}")
    spec = FORMATS[fmt]
    given: dict[str, str] = {}   # the options given, as messages name them
    if columns:
        given["columns"] = f"column mapping ({', '.join(f'{k}={v}' for k, v in columns.items())})"
    if identities is not None:
        given["identities"] = f"identities ({identities})"
    if attributes is not None:
        given["attributes"] = f"attributes ({attributes})"
    for option, described in given.items():
        if option not in spec.options:
            raise InputError(f"{described} applies to {_accepting(option)}, not {fmt}")
    values = {"columns": dict(columns or {}), "identities": None if identities is None else Path(identities),
              "attributes": None if attributes is None else Path(attributes), "prefix_group": prefix_group}
    out = spec.read(src, **{option: values[option] for option in spec.options})
    if prefix_group:
        groups = default_groups(out).per_row()
        prefixed = np.array([f"{g}/{i}" for g, i in zip(groups, out.identity)], dtype=object)
        out = dataclasses.replace(out, identity=prefixed)
    validate_table(out, str(src))
    return out
