"""Face images with their labels: what ``biasgrid data embed`` turns into an embedding table.

Three label sources, each giving a :class:`LabelledImages` (one entry per image file, sorted by path):

``diveface``
    The DiveFace image layout ``<root>/<GROUP>/<identity>/<image>.jpg``; GROUP is any group name the importers
    know (``HA4K_120``, ``Group1_Male``, ``asian_male``, case ignored; see :mod:`storage.importers`), and
    ``root`` may be the parent of a single folder holding the groups. identity = the identity folder's name,
    image = the file's stem.
``manifest``
    A CSV or Parquet file with columns ``path, identity, ethnicity, gender`` (``identity``, ``image`` and
    ``ethnicity`` are optional; FairFace's ``file`` and ``race`` are taken for ``path`` and ``ethnicity`` when
    those are absent). Other column names are mapped like the importers' ``--map``: ``columns={"path": "file",
    "gender": "sex"}``. Every other column is an attribute (``age``, ``skin_tone``, ...). Relative paths are
    relative to the manifest's folder (or to ``root`` when given).
``pattern``
    Labels parsed from the file name: ``pattern="{age}_{gender}_{ethnicity}_{*}"`` is matched against every
    image file's name without its last suffix (``26_0_2_20170104023102422.jpg.chip`` for UTKFace's
    ``26_0_2_20170104023102422.jpg.chip.jpg``). ``{gender}``, ``{ethnicity}`` (optional) and ``{identity}``
    (optional) are the labels; any other ``{name}`` is an attribute (UTKFace's ``{age}``), ``{*}`` matches
    anything and is ignored. Fields are matched shortest-first, left to right (``.+?``), and ``{*}`` matches any
    text, possibly empty.

Values (all sources): ``values={"gender": {"0": "male", "1": "female"}, "ethnicity": {"0": "white", ...}}``
maps raw values first (keys compared after stripping spaces; with a map, every value must be one of its keys);
any field may have one. Ethnicity is then a free group name (RFW's four, FairFace's seven, ...): stripped,
lower-cased, inner spaces collapsed to one. Gender is binary: ``male`` (``m``, ``man``, ``men``) or ``female``
(``f``, ``woman``, ``women``), case ignored; ``0``/``1`` only through a value map. An attribute is numeric when
every value is a number (an age: it may vary between an identity's images), else categorical
(:func:`storage.attributes.parse_values`). One ethnicity, one gender and one value of each categorical attribute
per identity.

Without identities (a manifest without an ``identity`` column, a pattern without ``{identity}``) each image is
its own identity, named by its path relative to the source without the suffix, and
:attr:`LabelledImages.own_identities` is True: classification works, verification needs identities with two
or more images.

Every problem is an :class:`~storage.errors.InputError` naming the file, row (manifest line) and field and what
was expected, raised before any image is decoded.

Over 400 lines, on purpose: the three label sources share the listing, the value maps and the label checks, and
one module keeps one definition of each.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from storage.attributes import Labels, check_attribute_name, check_per_identity, is_numeric, parse_values
from storage.errors import InputError
from storage.importers.common import csv_header, scandir
from storage.table import check_unique_columns
from storage.vocab import ETHNICITIES, GENDERS, accepted_group_names, group_codes

IMAGE_SUFFIXES: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
LAYOUTS: tuple[str, ...] = ("diveface", "manifest", "pattern")
MANIFEST_COLUMNS: tuple[str, ...] = ("path", "identity", "image", "ethnicity", "gender")
GENDER_SPELLINGS: dict[str, str] = {"male": "male", "m": "male", "man": "male", "men": "male",
                                    "female": "female", "f": "female", "woman": "female", "women": "female"}
LABEL_FIELDS: tuple[str, ...] = ("ethnicity", "gender", "identity")
MANIFEST_ALIASES: dict[str, tuple[str, ...]] = {"path": ("file",), "ethnicity": ("race",)}   # FairFace's names


@dataclass(frozen=True, eq=False)
class LabelledImages:
    """Image files with labels; entry i of each array is image i.

    ``path``: absolute file paths (str); ``identity``: who; ``image``: name unique within its identity (the file
    stem); ``ethnicity``: a free group name (normalised, see the module docstring), or None when the source has
    no ethnicity labels; ``gender``: ``male`` or ``female``. All are 1-D object arrays of str. ``attributes``: the
    further labels by name, each float64 (numeric) or normalised strings (categorical). ``own_identities``: True
    when every image is its own identity (the source had none). ``source``: what was read, for messages.
    """

    path: np.ndarray
    identity: np.ndarray
    image: np.ndarray
    ethnicity: np.ndarray | None
    gender: np.ndarray
    own_identities: bool
    source: str
    attributes: Mapping[str, np.ndarray] = dataclasses.field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.path)

    def groups(self) -> dict[str, int]:
        """Image count per ``f"{ethnicity}_{gender}"`` group (``gender`` alone without ethnicity), sorted by name."""
        eth = self.ethnicity if self.ethnicity is not None else [None] * len(self)
        keys = pd.Series([g if e is None else f"{e}_{g}" for e, g in zip(eth, self.gender)], dtype=object)
        return {str(k): int(v) for k, v in sorted(keys.value_counts().items())}


# ------------------------------------------------------------------------------------------------ values


def normalise_ethnicity(value: str) -> str:
    """A free ethnicity label: surrounding spaces stripped, lower-cased, inner runs of spaces -> one space."""
    return re.sub(r"\s+", " ", str(value).strip().lower())


def normalise_gender(value: str) -> str | None:
    """``male``/``female`` from the usual spellings (case and spaces ignored), else None."""
    return GENDER_SPELLINGS.get(str(value).strip().lower())


def parse_value_maps(items: list[str] | tuple[str, ...]) -> dict[str, dict[str, str]]:
    """``["gender=0:male,1:female", "ethnicity=0:white,1:black"]`` -> ``{"gender": {"0": "male", ...}, ...}``.

    Each item is ``FIELD=RAW:VALUE,RAW:VALUE,...`` with FIELD ethnicity, gender or an attribute; InputError
    otherwise.
    """
    maps: dict[str, dict[str, str]] = {}
    for item in items:
        field, eq, body = str(item).partition("=")
        field = field.strip()
        if not eq or not body.strip():
            raise InputError(f"value map {item!r}: expected FIELD=RAW:VALUE,..., e.g. gender=0:male,1:female")
        if not field or field in ("identity", "image", "path"):
            raise InputError(f"value map {item!r}: field {field!r} is not ethnicity, gender or an attribute")
        if field in maps:
            raise InputError(f"value map: {field} is mapped twice")
        pairs: dict[str, str] = {}
        for part in body.split(","):
            raw, colon, value = part.partition(":")
            if not colon or not raw.strip() or not value.strip():
                raise InputError(f"value map {item!r}: {part!r} is not RAW:VALUE, e.g. 0:male")
            if raw.strip() in pairs:
                raise InputError(f"value map {item!r}: {raw.strip()!r} is mapped twice")
            pairs[raw.strip()] = value.strip()
        maps[field] = pairs
    _check_value_maps(maps)
    return maps


def _check_value_maps(values: Mapping[str, Mapping[str, str]] | None) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for field, mapping in (values or {}).items():
        if not isinstance(field, str) or not field or field in ("identity", "image", "path"):
            raise InputError(f"value map for {field!r}: only ethnicity, gender and attributes take value maps")
        if not isinstance(mapping, Mapping) or not mapping:
            raise InputError(f"value map for {field}: expected RAW -> VALUE pairs, got {mapping!r}")
        pairs = {str(k).strip(): str(v) for k, v in mapping.items()}
        if field == "gender":
            bad = [v for v in pairs.values() if normalise_gender(v) is None]
            if bad:
                raise InputError(f"value map for gender: {bad[0]!r} is not a gender; expected male or female")
        else:
            bad = [v for v in pairs.values() if not normalise_ethnicity(v)]
            if bad:
                raise InputError(f"value map for {field}: maps to an empty name")
        out[field] = pairs
    return out


def _label(field: str, raw: object, maps: Mapping[str, Mapping[str, str]], where: str) -> str:
    """One ethnicity, gender or attribute value -> its normal form (an attribute's: the text, stripped, parsed
    later by :func:`storage.attributes.parse_values`); InputError naming ``where`` and ``field``."""
    text = "" if raw is None or (isinstance(raw, float) and np.isnan(raw)) else str(raw)
    if isinstance(raw, float) and float(raw).is_integer():
        text = str(int(raw))  # a CSV column of 0/1 read as numbers
    if field in maps:
        mapped = maps[field].get(text.strip())
        if mapped is None:
            raise InputError(f"{where}: {field} is {text!r}; expected one of the value map's keys "
                             f"{', '.join(repr(k) for k in maps[field])}")
        text = mapped
    if field == "gender":
        g = normalise_gender(text)
        if g is None:
            hint = " (0/1 codes need a value map, e.g. gender=0:male,1:female)" if text.strip() in ("0", "1") else ""
            raise InputError(f"{where}: gender is {text!r}; expected male or female (m, man, f, woman, ...){hint}")
        return g
    if field != "ethnicity":
        if not text.strip():
            raise InputError(f"{where}: {field} is empty; expected a value")
        return text.strip()
    e = normalise_ethnicity(text)
    if not e:
        raise InputError(f"{where}: ethnicity is empty; expected a group name such as asian")
    return e


# ------------------------------------------------------------------------------------------------ listing


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_SUFFIXES) and not name.startswith(".")


def _stem(name: str) -> str:
    """File name without its last suffix."""
    base, dot, _ = name.rpartition(".")
    return base if dot and base else name


def _absolute(p: Path) -> str:
    """An image's absolute path: resolved, except a dangling symbolic link, kept as the link (which the embedder
    then lists in the errors with its reason) rather than named by its missing target."""
    return str(p.resolve() if p.exists() or not p.is_symlink() else p.absolute())


def _image_entry(e: os.DirEntry) -> bool:
    """An image file in a folder listing; a dangling symbolic link with an image name counts (it must not be left
    out silently: the embedder reports it)."""
    return _is_image(e.name) and (e.is_file() or (e.is_symlink() and not os.path.exists(e.path)))


def _walk_images(root: Path) -> list[Path]:
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found += [Path(dirpath) / f for f in sorted(filenames) if _is_image(f)]
    return found


def _finish(path: list[str], identity: list[str], image: list[str], ethnicity: list[str] | None, gender: list[str],
            own: bool, source: str, where: list[str],
            attributes: Mapping[str, list[str]] | None = None) -> LabelledImages:
    """Checks common to every source: something found, no duplicate files or (identity, image), one label per
    identity (ethnicity, gender, each categorical attribute). Sorted by path."""
    if not path:
        raise InputError(f"{source}: no images found; expected files ending in {', '.join(IMAGE_SUFFIXES)}")
    order = np.argsort(np.asarray(path, dtype=object), kind="stable")
    no_ethnicity = ethnicity is None
    arrays = [np.asarray(a, dtype=object)[order]
              for a in (path, identity, image, [""] * len(path) if no_ethnicity else ethnicity, gender)]
    where_sorted = np.asarray(where, dtype=object)[order]
    p, ident, img, eth, gen = arrays
    dup = np.flatnonzero(p[1:] == p[:-1])
    if len(dup):
        i = dup[0]
        raise InputError(f"{source}: {where_sorted[i]} and {where_sorted[i + 1]} name the same file {p[i]}; "
                         f"expected each image once")
    seen: dict[tuple[str, str], int] = {}
    label: dict[str, int] = {}
    for i in range(len(p)):
        key = (ident[i], img[i])
        if key in seen:
            raise InputError(f"{source}: {where_sorted[seen[key]]} and {where_sorted[i]} are both image {img[i]!r} of "
                             f"identity {ident[i]!r}; expected image names unique within an identity")
        seen[key] = i
        first = label.setdefault(ident[i], i)
        if (eth[first], gen[first]) != (eth[i], gen[i]):
            raise InputError(f"{source}: identity {ident[i]!r} is {eth[first]} {gen[first]} at {where_sorted[first]} "
                             f"but {eth[i]} {gen[i]} at {where_sorted[i]}; expected one ethnicity and one gender "
                             f"per identity".replace("  ", " "))
    attrs = {name: parse_values(np.asarray(values, dtype=object)[order], name, source)
             for name, values in (attributes or {}).items()}
    id_codes = pd.factorize(ident)[0]
    for name, values in attrs.items():
        if not is_numeric(values):
            codes, uniques = pd.factorize(values)
            check_per_identity(ident, id_codes, Labels(codes, tuple(uniques), (name,)), f"{source}: attribute {name!r}")
    return LabelledImages(p, ident, img, None if no_ethnicity else eth, gen, own, source, attrs)


def list_diveface(root: str | Path) -> LabelledImages:
    """Images in the DiveFace layout ``<root>/<GROUP>/<identity>/<image>.jpg`` (see the module docstring).

    Files that are not images (by suffix) are ignored; an unknown group folder, an empty group or identity
    folder, an image directly in a group folder, a subfolder in an identity folder, or one identity name in two
    groups raise InputError.
    """
    root = Path(root)
    if not root.exists():
        raise InputError(f"{root}: no such folder; expected face images in <root>/<GROUP>/<identity>/<image>.jpg")
    if not root.is_dir():
        raise InputError(f"{root}: not a folder; the diveface layout is <root>/<GROUP>/<identity>/<image>.jpg")
    dirs = [e for e in scandir(root) if e.is_dir()]
    if len(dirs) == 1 and group_codes(dirs[0].name) is None:
        inner = [e for e in scandir(Path(dirs[0].path)) if e.is_dir()]
        if any(group_codes(e.name) for e in inner):
            root, dirs = Path(dirs[0].path), inner
    if not dirs:
        raise InputError(f"{root}: no group folders; expected <root>/<GROUP>/<identity>/<image>.jpg with GROUP one of "
                         f"{accepted_group_names()}")
    path: list[str] = []
    identity: list[str] = []
    image: list[str] = []
    eth: list[str] = []
    gen: list[str] = []
    owner: dict[str, str] = {}
    groups: dict[tuple[int, int], str] = {}
    for g in dirs:
        codes = group_codes(g.name)
        if codes is None:
            raise InputError(f"{root}: folder {g.name!r} is not a known group; expected group folders named "
                             f"{accepted_group_names()}")
        if codes in groups:
            raise InputError(f"{root}: folders {groups[codes]!r} and {g.name!r} are the same group "
                             f"{ETHNICITIES[codes[0]]}_{GENDERS[codes[1]]}; expected one folder per group")
        groups[codes] = g.name
        entries = scandir(Path(g.path))
        stray = [e.name for e in entries if e.is_file() and _is_image(e.name)]
        if stray:
            raise InputError(f"{g.path}: image {stray[0]!r} lies directly in the group folder; expected "
                             f"{g.path}/<identity>/<image>.jpg")
        idents = [e for e in entries if e.is_dir()]
        if not idents:
            raise InputError(f"{g.path}: group folder has no identity folders; expected <identity>/<image>.jpg")
        for ident in idents:
            if ident.name in owner:
                raise InputError(f"identity {ident.name!r} appears in both {owner[ident.name]} and {g.name}; expected "
                                 f"each identity in one group")
            owner[ident.name] = g.name
            files = scandir(Path(ident.path))
            sub = [e.name for e in files if e.is_dir()]
            if sub:
                raise InputError(f"{ident.path}: unexpected folder {sub[0]!r}; expected only image files")
            imgs = [e for e in files if _image_entry(e)]
            if not imgs:
                raise InputError(f"{ident.path}: identity folder has no images; expected files ending in "
                                 f"{', '.join(IMAGE_SUFFIXES)}")
            for f in imgs:
                path.append(_absolute(Path(f.path)))
                identity.append(ident.name)
                image.append(_stem(f.name))
                eth.append(ETHNICITIES[codes[0]])
                gen.append(GENDERS[codes[1]])
    return _finish(path, identity, image, eth, gen, False, str(root), path)


def _read_manifest(path: Path) -> pd.DataFrame:
    suffix = path.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            import pyarrow.parquet as pq

            check_unique_columns(pq.read_schema(path).names, str(path))
            frame = pd.read_parquet(path)
        elif suffix == ".csv":
            csv_header(path)   # a repeated column is refused (pandas would rename it)
            frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False, encoding="utf-8-sig")
        else:
            raise InputError(f"{path}: a manifest must be a .csv or .parquet file")
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - any reader error is bad input
        raise InputError(f"{path}: cannot read the manifest ({str(exc).strip()})") from exc
    return frame


def list_manifest(manifest: str | Path, *, columns: Mapping[str, str] | None = None,
                  values: Mapping[str, Mapping[str, str]] | None = None,
                  root: str | Path | None = None) -> LabelledImages:
    """Images listed in a CSV or Parquet manifest with columns ``path, identity, ethnicity, gender`` (``identity``,
    ``image`` and ``ethnicity`` optional; ``image`` defaults to the file's stem; every other column an attribute).

    ``columns`` maps these names to the manifest's (``{"path": "file"}``); ``values`` holds value maps; relative
    paths are taken from ``root`` (default: the manifest's folder). Rows are named by their CSV line (header =
    line 1) or Parquet row. InputError for a missing column, an empty cell, an unknown label or a missing file.
    """
    manifest = Path(manifest)
    if not manifest.exists():
        raise InputError(f"{manifest}: no such file; expected a manifest (.csv or .parquet) with columns "
                         f"path, identity, ethnicity, gender")
    if manifest.is_dir():
        raise InputError(f"{manifest}: is a folder; expected a manifest file (.csv or .parquet)")
    maps = _check_value_maps(values)
    names = {c: c for c in MANIFEST_COLUMNS}
    for key, value in (columns or {}).items():
        if key not in names:
            raise InputError(f"column mapping: {key!r} is not a manifest column; expected some of "
                             f"{', '.join(MANIFEST_COLUMNS)}")
        if not isinstance(value, str) or not value:
            raise InputError(f"column mapping: {key} must name a column, got {value!r}")
        names[key] = value
    frame = _read_manifest(manifest)
    header = [str(c) for c in frame.columns]
    lookup = {h.strip().lower(): h for h in header}
    picked: dict[str, str | None] = {}
    for key in MANIFEST_COLUMNS:
        wanted = names[key]
        col = wanted if wanted in header else lookup.get(wanted.strip().lower())
        if col is None and key not in (columns or {}):   # FairFace's names (file, race) when the usual are absent
            col = next((lookup[a] for a in MANIFEST_ALIASES.get(key, ()) if a in lookup), None)
        if col is None and (key in ("path", "gender") or key in (columns or {})):
            raise InputError(f"{manifest}: no column {wanted!r} ({key}); expected columns path, identity, ethnicity, "
                             f"gender (found: {', '.join(header) or 'none'}); map other names, e.g. "
                             f"--map {key}=<column>")
        picked[key] = col
    if not len(frame):
        raise InputError(f"{manifest}: no rows; expected one row per image")
    extra = [h for h in header if h not in set(picked.values())]
    for h in extra:
        check_attribute_name(h.strip(), f"{manifest}: column {h!r}")
    base = Path(root) if root is not None else manifest.parent
    csv = manifest.suffix.lower() == ".csv"
    path: list[str] = []
    identity: list[str] = []
    image: list[str] = []
    eth: list[str] = []
    gen: list[str] = []
    where: list[str] = []
    attrs: dict[str, list[str]] = {h.strip(): [] for h in extra}
    cols = {k: (frame[c].tolist() if c is not None else None) for k, c in picked.items()}
    extra_cols = {h.strip(): frame[h].tolist() for h in extra}
    for r in range(len(frame)):
        at = f"{manifest} line {r + 2}" if csv else f"{manifest} row {r}"
        raw_path = cols["path"][r]
        if raw_path is None or not str(raw_path).strip():
            raise InputError(f"{at}: {picked['path']} is empty; expected an image file path")
        p = Path(str(raw_path).strip())
        full = p if p.is_absolute() else base / p
        if not full.is_file():
            raise InputError(f"{at}: {picked['path']} {str(raw_path)!r}: no such file ({full})")
        if cols["ethnicity"] is not None:
            eth.append(_label("ethnicity", cols["ethnicity"][r], maps, f"{at}, column {picked['ethnicity']!r}"))
        for name, values in extra_cols.items():
            attrs[name].append(_label(name, values[r], maps, f"{at}, column {name!r}"))
        gen.append(_label("gender", cols["gender"][r], maps, f"{at}, column {picked['gender']!r}"))
        rel = _relative_name(p)
        if cols["identity"] is not None:
            ident = "" if cols["identity"][r] is None else str(cols["identity"][r]).strip()
            if not ident or ident == "nan":
                raise InputError(f"{at}: {picked['identity']} is empty; expected an identity in every row")
        else:
            ident = rel
        if cols["image"] is not None:
            img = "" if cols["image"][r] is None else str(cols["image"][r]).strip()
            if not img:
                raise InputError(f"{at}: {picked['image']} is empty; expected an image name in every row")
        else:
            img = _stem(p.name)
        path.append(str(full.resolve()))
        identity.append(ident)
        image.append(img)
        where.append(at)
    return _finish(path, identity, image, eth if cols["ethnicity"] is not None else None, gen,
                   cols["identity"] is None, str(manifest), where, attrs)


def _relative_name(p: Path) -> str:
    """An image's path without its suffix, with / separators: its name when it is its own identity."""
    return _stem(p.as_posix()) if p.suffix else p.as_posix()


_FIELD = re.compile(r"\{([^{}]*)\}")


def compile_pattern(pattern: str) -> tuple[re.Pattern, tuple[str, ...]]:
    """A file-name pattern -> (regex matched against the whole name without its last suffix, label fields).

    ``{name}`` -> a named group ``.+?`` (shortest first); ``{*}`` -> ``.*``; other text literally.
    InputError for an empty or repeated field name, stray braces, or no gender field. The fields returned are
    every named field (labels and attributes).
    """
    if not isinstance(pattern, str) or not pattern:
        raise InputError(f"name pattern {pattern!r}: expected text such as '{{age}}_{{gender}}_{{ethnicity}}_{{*}}'")
    parts: list[str] = []
    fields: list[str] = []
    pos = 0
    for m in _FIELD.finditer(pattern):
        literal = pattern[pos:m.start()]
        if "{" in literal or "}" in literal:
            raise InputError(f"name pattern {pattern!r}: unbalanced brace in {literal!r}")
        parts.append(re.escape(literal))
        name = m.group(1).strip()
        if name == "*":
            parts.append(".*")
        elif re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            if name in fields:
                raise InputError(f"name pattern {pattern!r}: field {{{name}}} appears twice")
            fields.append(name)
            parts.append(f"(?P<{name}>.+?)")
        else:
            raise InputError(f"name pattern {pattern!r}: {{{m.group(1)}}} is not a field; expected {{name}} "
                             f"(letters, digits, _) or {{*}}")
        pos = m.end()
    tail = pattern[pos:]
    if "{" in tail or "}" in tail:
        raise InputError(f"name pattern {pattern!r}: unbalanced brace in {tail!r}")
    parts.append(re.escape(tail))
    if "gender" not in fields:
        raise InputError(f"name pattern {pattern!r}: no {{gender}} field; expected {{gender}} (and optionally "
                         f"{{ethnicity}}, {{identity}} and attributes such as {{age}})")
    for f in fields:
        if f not in LABEL_FIELDS:
            check_attribute_name(f, f"name pattern {pattern!r}")
    return re.compile("".join(parts), re.DOTALL), tuple(fields)


def list_pattern(root: str | Path, pattern: str, *,
                 values: Mapping[str, Mapping[str, str]] | None = None) -> LabelledImages:
    """Every image file under ``root`` (recursively), labelled from its name by ``pattern`` (see the module
    docstring). InputError naming the first file whose name does not match, or whose value is unknown."""
    root = Path(root)
    regex, fields = compile_pattern(pattern)
    maps = _check_value_maps(values)
    if not root.exists():
        raise InputError(f"{root}: no such folder; expected a folder of face images")
    files = [root] if root.is_file() else _walk_images(root)
    base = root.parent if root.is_file() else root
    path: list[str] = []
    identity: list[str] = []
    image: list[str] = []
    eth: list[str] = []
    gen: list[str] = []
    attrs: dict[str, list[str]] = {f: [] for f in fields if f not in LABEL_FIELDS}
    bad = [f for f in files if regex.fullmatch(_stem(f.name)) is None]
    if bad:
        raise InputError(f"{bad[0]}: name {_stem(bad[0].name)!r} does not match the pattern {pattern!r} "
                         f"({len(bad)} of {len(files)} files do not); expected names such as "
                         f"{_example(pattern)!r}")
    for f in files:
        m = regex.fullmatch(_stem(f.name))
        assert m is not None
        at = f"{f} (name pattern {pattern!r})"
        if "ethnicity" in fields:
            eth.append(_label("ethnicity", m.group("ethnicity"), maps, at))
        gen.append(_label("gender", m.group("gender"), maps, at))
        for name, values in attrs.items():
            values.append(_label(name, m.group(name), maps, at))
        rel = _relative_name(f.relative_to(base))
        if "identity" in fields:
            ident = m.group("identity").strip()
            if not ident:
                raise InputError(f"{at}: identity is empty")
            identity.append(ident)
        else:
            identity.append(rel)
        image.append(_stem(f.name))
        path.append(_absolute(f))
    return _finish(path, identity, image, eth if "ethnicity" in fields else None, gen, "identity" not in fields,
                   str(root), path, attrs)


def _example(pattern: str) -> str:
    return _FIELD.sub(lambda m: "..." if m.group(1).strip() == "*" else f"<{m.group(1).strip()}>", pattern)


def list_images(src: str | Path, *, layout: str | None = None, pattern: str | None = None,
                columns: Mapping[str, str] | None = None,
                values: Mapping[str, Mapping[str, str]] | None = None,
                root: str | Path | None = None) -> LabelledImages:
    """Face images and labels from ``src`` by ``layout`` (one of :data:`LAYOUTS`).

    Without ``layout``: ``pattern`` given -> ``pattern``; a ``.csv``/``.parquet`` file -> ``manifest``; a folder
    -> ``diveface``. ``columns`` and ``root`` apply to manifests, ``values`` to manifests and patterns.
    """
    src = Path(src)
    if not src.exists():
        raise InputError(f"{src}: no such file or folder; expected face images (a DiveFace-layout folder, a folder "
                         f"with a name pattern, or a manifest .csv/.parquet)")
    if layout is None:
        layout = "pattern" if pattern else ("manifest" if src.is_file() else "diveface")
    if layout not in LAYOUTS:
        raise InputError(f"image layout {layout!r} is unknown; expected one of {', '.join(LAYOUTS)}")
    if pattern is not None and layout != "pattern":
        raise InputError(f"a name pattern applies to the pattern layout, not {layout}")
    if columns and layout != "manifest":
        raise InputError(f"a column mapping applies to manifests, not the {layout} layout")
    if values and layout == "diveface":
        raise InputError("value maps apply to manifests and name patterns; the diveface layout's labels come "
                         "from its group folders")
    if root is not None and layout != "manifest":
        raise InputError(f"root applies to manifests (the folder of relative paths), not the {layout} layout")
    if layout == "diveface":
        return list_diveface(src)
    if layout == "manifest":
        return list_manifest(src, columns=columns, values=values, root=root)
    if not pattern:
        raise InputError("the pattern layout needs a name pattern, e.g. '{age}_{gender}_{ethnicity}_{*}'")
    return list_pattern(src, pattern, values=values)
