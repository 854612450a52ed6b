"""The ``npy`` format: one ``.npy``/``.npz`` matrix ``(rows, d)`` per group.

Each file is named after its group in any naming of :func:`storage.vocab.group_codes` (``HA4K_120.npy``,
``Group1_Male.npz``). A ``.npz`` holds one array, or several with the matrix under ``embeddings``. Identities come
from a sidecar list per group: a ``.txt`` file named after the same group (either naming) in the ``identities``
folder (default: beside the matrices), or the file ``identities`` itself when importing one matrix. One line per
matrix row, no header: either an identity (``100016927@N02_identity_1``; image = the row number) or DiveFace's
annotation form ``<identity>/<image>.jpg`` (image = the file stem). Without sidecar lists every row is its own
identity ``<file stem>_<row>`` (classification works, verification has no genuine pairs).
"""

from __future__ import annotations

import zipfile
from pathlib import Path, PurePosixPath

import numpy as np

from storage.errors import InputError
from storage.importers.common import by_group, is_matrix, scandir
from storage.table import EmbeddingTable, check_finite
from storage.vocab import ETHNICITIES, accepted_group_names, group_codes, group_label


def detect(src: Path, embedding_prefix: str | None = None) -> bool:
    """Whether ``src`` is a ``.npy``/``.npz`` file or a folder holding some."""
    if src.is_file():
        return src.suffix.lower() in (".npy", ".npz")
    return any(e.is_file() and is_matrix(e.name) for e in scandir(src))


def _read_npycsv_header(fp, where: str) -> tuple[tuple[int, ...], np.dtype]:
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
            shape, dtype = _read_npycsv_header(fp, f"{path}[{key}]")
        return shape, dtype, key
    try:
        with open(path, "rb") as fp:
            shape, dtype = _read_npycsv_header(fp, str(path))
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
    for e in scandir(folder):
        if e.is_file() and e.name.lower().endswith(".txt"):
            codes = group_codes(e.name[:-4])
            if codes is None or codes not in groups:
                continue
            if codes in found:
                raise InputError(f"{folder}: both {found[codes].name} and {e.name} are identity lists of group "
                                 f"{group_label(codes)}; keep one")
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


def read(src: Path, identities: Path | None) -> EmbeddingTable:
    """The embeddings of one matrix or a folder of matrices, one per group (not yet validated)."""
    if src.is_file():
        if not is_matrix(src.name):
            raise InputError(f"{src}: expected a .npy or .npz matrix")
        files = [src]
    else:
        files = [Path(e.path) for e in scandir(src) if e.is_file() and is_matrix(e.name)]
        if not files:
            raise InputError(f"{src}: no .npy or .npz files; expected one matrix per group named after the group "
                             f"({accepted_group_names()})")
    groups = by_group(
        ((f.stem, f) for f in files),
        lambda f: f"{f}: {f.stem!r} is not a known group; expected files named after the group: "
                  f"{accepted_group_names()}",
        lambda first, second, label: f"{first} and {second} are both group {label}; expected one matrix per group")

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
            raise InputError(f"{where}: group {group_label(codes)} is empty (0 rows); expected embeddings")
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
    return EmbeddingTable(matrix, np.array(identity, dtype=object), np.array(image, dtype=object), eth, gen,
                          ETHNICITIES)   # group names (the study's, DiveFace's) code into the study's groups

