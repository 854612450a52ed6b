"""The ``diveface`` format: a DiveFace-layout folder of per-image embeddings.

Layout ``<root>/<GROUP>/<identity>/<image>.npy``, one vector of shape ``(d,)`` or ``(1, d)`` per file, GROUP
named in any naming of :func:`storage.vocab.group_codes`. identity = the identity folder's name, image = the
file's stem (``9469948405_7``, also from ``9469948405_7.jpg.npy``). ``root`` may also be the parent of a single
folder such as ``4K_120`` holding the groups. An identity folder name found in two groups is refused unless
``prefix_group`` (the identities are then told apart by their group).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from storage.errors import InputError
from storage.importers.common import by_group, is_matrix, scandir
from storage.table import EmbeddingTable
from storage.vocab import ETHNICITIES, accepted_group_names, group_codes, group_label

_IMAGE_SUFFIXES = {"jpg", "jpeg", "png", "bmp", "webp", "tif", "tiff"}


def _group_root(root: Path) -> tuple[Path, list[os.DirEntry]]:
    """``root`` and its entries, or its single sub-folder and that one's entries when the sub-folder (not itself a
    group) holds the group folders, as in ``DiveFace/4K_120/<GROUP>``."""
    entries = scandir(root)
    dirs = [e for e in entries if e.is_dir()]
    if len(dirs) == 1 and not group_codes(dirs[0].name):
        inner = scandir(Path(dirs[0].path))
        if any(e.is_dir() and group_codes(e.name) for e in inner):
            return Path(dirs[0].path), inner
    return root, entries


def detect(src: Path, embedding_prefix: str | None = None) -> bool:
    """Whether ``src`` is a folder holding group folders (directly or in its single sub-folder)."""
    if src.is_file():
        return False
    _, entries = _group_root(src)
    return any(e.is_dir() and group_codes(e.name) for e in entries)


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


def _subfolders(folder: Path, entries: list[os.DirEntry], level: str, expected: str,
                empty: str) -> list[os.DirEntry]:
    """The folders among ``entries`` of ``folder``; InputError if a matrix lies directly in it or it has none."""
    stray = [e.name for e in entries if e.is_file() and is_matrix(e.name)]
    if stray:
        raise InputError(f"{folder}: {stray[0]} lies directly in the {level} folder; expected {expected}")
    dirs = [e for e in entries if e.is_dir()]
    if not dirs:
        raise InputError(f"{folder}: {empty}")
    return dirs


def _group_folders(root: Path) -> dict[tuple[int, int], Path]:
    root, entries = _group_root(root)
    dirs = _subfolders(root, entries, "root", "<root>/<GROUP>/<identity>/<image>.npy (or --format npy for one "
                       "matrix per group)", f"no group folders; expected <root>/<GROUP>/<identity>/<image>.npy with "
                       f"GROUP one of {accepted_group_names()}")
    return by_group(
        ((e.name, Path(e.path)) for e in dirs),
        lambda folder: f"{root}: folder {folder.name!r} is not a known group; expected group folders named "
                       f"{accepted_group_names()}",
        lambda first, second, label: f"{root}: folders {first.name!r} and {second.name!r} are both group {label}; "
                                     f"expected one folder per group")


def read(src: Path, prefix_group: bool) -> EmbeddingTable:
    """The embeddings of a DiveFace-layout folder (not yet validated)."""
    if not src.is_dir():
        raise InputError(f"{src}: not a folder; the diveface format expects <root>/<GROUP>/<identity>/<image>.npy")
    paths: list[str] = []
    identity: list[str] = []
    image: list[str] = []
    eth: list[int] = []
    gen: list[int] = []
    owner: dict[str, str] = {}
    for codes, folder in _group_folders(src).items():
        ids = _subfolders(folder, scandir(folder), "group", f"{folder}/<identity>/<image>.npy",
                          f"group {group_label(codes)} is empty; expected identity folders holding <image>.npy files")
        before = len(paths)
        for ident in ids:
            if ident.name in owner and not prefix_group:
                raise InputError(f"identity {ident.name!r} appears in both {owner[ident.name]} and {folder.name}; "
                                 f"expected each identity in one group (if identity names are only unique within a "
                                 f"group, use --prefix-group)")
            owner[ident.name] = folder.name
            files = scandir(Path(ident.path))
            sub = [e.name for e in files if e.is_dir()]
            if sub:
                raise InputError(f"{ident.path}: unexpected folder {sub[0]!r}; expected only <image>.npy files")
            npys = [e for e in files if e.is_file() and e.name.lower().endswith(".npy")]
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
                          np.array(eth, dtype=np.int8), np.array(gen, dtype=np.int8), ETHNICITIES)   # the study's
