"""One shard of images -> embeddings: the worker function of ``biasgrid data embed``.

A shard is a list of image paths. :func:`shard_key` names its result by the files' contents and the model's
configuration, so a resumed run skips shards already stored and a changed configuration never reuses them:

    key = SHA-256("biasgrid-embed-shard", EMBED_CODE_VERSION, spec.identity() as sorted JSON,
                  model_fingerprint(spec), SHA-256 of each file's bytes in shard order)

(the paths' names, the batch size and the thread count are not part of it).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from storage.errors import InputError

if TYPE_CHECKING:
    from tasks.embedders import EmbedSpec


@dataclass(frozen=True, eq=False)
class ShardResult:
    """What :func:`embed_shard` returns for ``paths`` (the shard, in order).

    ``embeddings``: (k, d) float32, row i is the image ``paths[index[i]]``; ``index``: (k,) int64;
    ``face_detected``: (k,) bool (False = the centre-crop fallback); ``errors``: (path, reason) of images that
    could not be read or decoded, or for which the model gave NaN/inf (no row); ``skipped``: paths left out
    because no face was found (``skip_undetected``); ``sha256``: each path's content digest ("" if unreadable);
    ``key``: :func:`shard_key` of the bytes actually read; ``seconds``: wall time.
    """

    paths: tuple[str, ...]
    embeddings: np.ndarray
    index: np.ndarray
    face_detected: np.ndarray
    errors: tuple[tuple[str, str], ...]
    skipped: tuple[str, ...]
    sha256: tuple[str, ...]
    key: str
    seconds: float

    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[1])


def split_shards(n: int, size: int) -> list[range]:
    """Rows 0..n-1 cut into consecutive shards of ``size`` images (the last may be smaller). Cut a sorted image
    list (:class:`storage.images.LabelledImages` is sorted by path) so that the same files give the same
    shards, and so the same keys, on every run."""
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise InputError(f"shard size must be a positive integer, got {size!r}")
    return [range(lo, min(lo + size, n)) for lo in range(0, n, size)]


def file_digests(paths: Sequence[str | Path]) -> list[str]:
    """SHA-256 hex digest of each file's bytes ("" for a dangling symbolic link: embedded as unreadable, so it is
    listed in the errors with its reason); InputError naming a file that cannot be read."""
    out = []
    for p in paths:
        if os.path.islink(p) and not os.path.exists(p):
            out.append("")
            continue
        h = hashlib.sha256()
        try:
            with open(p, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
        except OSError as exc:
            raise InputError(f"{p}: cannot read the image ({exc.strerror or exc})") from None
        out.append(h.hexdigest())
    return out


def shard_key(paths: Sequence[str | Path], spec: EmbedSpec, digests: Sequence[str] | None = None) -> str:
    """The key of a shard's result (module docstring); ``digests`` (each file's SHA-256) saves re-reading the
    files when they are already known."""
    from tasks.embedders import EMBED_CODE_VERSION, model_fingerprint

    digests = list(digests) if digests is not None else file_digests(paths)
    if len(digests) != len(paths):
        raise ValueError(f"{len(digests)} digests for {len(paths)} paths")
    h = hashlib.sha256(f"biasgrid-embed-shard\0{EMBED_CODE_VERSION}\0".encode())
    h.update(json.dumps(spec.identity(), sort_keys=True, separators=(",", ":")).encode() + b"\0")
    h.update(model_fingerprint(spec).encode() + b"\0")
    h.update(str(len(digests)).encode() + b"\0")
    for d in digests:
        h.update(d.encode() + b"\0")
    return h.hexdigest()


def decode_image(data: bytes) -> np.ndarray:
    """Image bytes -> (h, w, 3) uint8 RGB with Pillow: EXIF orientation applied, grey/palette/CMYK converted,
    alpha dropped. Raises ValueError with the reason when the bytes are not a decodable image."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            im = ImageOps.exif_transpose(im)
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                arr = np.asarray(im, dtype=np.float64)
                im = Image.fromarray(np.clip(arr / max(arr.max(), 1) * 255, 0, 255).astype(np.uint8))
            rgb = np.asarray(im.convert("RGB"), dtype=np.uint8)
    except UnidentifiedImageError:
        raise ValueError("not an image Pillow can identify") from None
    except Image.DecompressionBombError as exc:
        raise ValueError(f"too large to decode safely ({exc})") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ValueError(f"cannot decode the image ({type(exc).__name__}: {exc})") from None
    if rgb.ndim != 3 or rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise ValueError(f"decoded to an empty image of shape {rgb.shape}")
    return np.ascontiguousarray(rgb)


def l2_normalise(x: np.ndarray) -> np.ndarray:
    """Rows divided by their Euclidean norm (computed in float64); an all-zero row stays zero."""
    norms = np.linalg.norm(x.astype(np.float64), axis=1, keepdims=True)
    return (x / np.where(norms > 0, norms, 1.0)).astype(np.float32)


def embed_shard(paths: Sequence[str | Path], spec: EmbedSpec, threads: int = 1, gpu: bool = False) -> ShardResult:
    """Embed the images ``paths`` with ``spec`` (an :class:`~tasks.embedders.EmbedSpec`) in ``threads``
    threads (on a GPU with ``gpu``, where the model's library has one).

    Images are read, hashed, decoded and embedded ``spec.batch_size`` at a time, so memory holds one batch of
    decoded images plus the (k, d) result. Undecodable images are listed in ``errors`` (not raised); images
    without a detected face get the fallback and ``face_detected=False``, or are listed in ``skipped`` with
    ``spec.skip_undetected``. Raises InputError only for a model that cannot be opened.
    """
    from tasks.embedders import open_embedder
    from tasks.runtime import limit_threads

    start = time.perf_counter()
    limit_threads(threads)
    model = open_embedder(spec, threads, gpu)
    paths = tuple(str(p) for p in paths)
    digests: list[str] = []
    errors: list[tuple[str, str]] = []
    skipped: list[str] = []
    blocks: list[np.ndarray] = []
    index: list[int] = []
    detected: list[bool] = []
    for lo in range(0, len(paths), spec.batch_size):
        images: list[np.ndarray] = []
        where: list[int] = []
        for i in range(lo, min(lo + spec.batch_size, len(paths))):
            try:
                data = Path(paths[i]).read_bytes()
            except OSError as exc:
                digests.append("")
                link = os.path.islink(paths[i]) and not os.path.exists(paths[i])
                errors.append((paths[i], f"a symbolic link to a missing file ({os.readlink(paths[i])})" if link
                               else f"cannot read the file ({exc.strerror or exc})"))
                continue
            digests.append(hashlib.sha256(data).hexdigest())
            try:
                images.append(decode_image(data))
                where.append(i)
            except ValueError as exc:
                errors.append((paths[i], str(exc)))
            del data
        if not images:
            continue
        feats, found = model.embed(images)
        del images
        feats = np.asarray(feats, dtype=np.float32)
        found = np.asarray(found, dtype=bool)
        finite = np.isfinite(feats).all(axis=1)
        keep = finite & (found | (not spec.skip_undetected))
        for j in np.flatnonzero(~finite):
            errors.append((paths[where[j]], "the model gave NaN or inf features"))
        for j in np.flatnonzero(finite & ~found & spec.skip_undetected):
            skipped.append(paths[where[j]])
        if keep.any():
            block = feats[keep]
            blocks.append(l2_normalise(block) if spec.normalize else block)
            index += [where[j] for j in np.flatnonzero(keep)]
            detected += found[keep].tolist()
    dim = blocks[0].shape[1] if blocks else int(getattr(model, "dim", 0) or 0)
    matrix = np.concatenate(blocks) if blocks else np.zeros((0, dim), dtype=np.float32)
    key = shard_key(paths, spec, digests) if all(digests) else ""
    return ShardResult(paths, np.ascontiguousarray(matrix, dtype=np.float32), np.asarray(index, dtype=np.int64),
                       np.asarray(detected, dtype=bool), tuple(errors), tuple(skipped), tuple(digests), key,
                       time.perf_counter() - start)


SHARD_STATUSES: tuple[str, ...] = ("ok", "skipped", "undecodable", "unreadable")


def run_embed_job(payload: Mapping[str, Any], data: Mapping[str, np.ndarray]) -> dict[str, pd.DataFrame]:
    """The worker function of a ``data embed`` shard job (``tasks.runtime`` calls it; ``data`` is unused).

    ``payload``: ``job_id`` = the shard's key (:func:`shard_key`, computed by the driver), ``paths``, and
    ``params`` = ``{"spec": EmbedSpec.to_dict(), "threads": n}``; its threads and GPU are its ask's
    (``payload["resources"]``, from ``[run.resources] embed``: :func:`tasks.runtime.job_threads`, ``job_gpus``).
    Returns ``{"embed_shard": frame}`` with one row per path, in order: ``row`` (position in the shard), ``status``
    (:data:`SHARD_STATUSES`: ``ok``; ``skipped`` = no face with ``skip_undetected``; ``undecodable`` = the bytes are
    not an image or the model gave NaN/inf; ``unreadable`` = the file could not be read, so the shard is not
    complete), ``reason``, ``face_detected`` and ``embedding`` (float32 array for ``ok`` rows, else None). Raises
    when the files' content no longer matches the key (changed since the driver hashed them).
    """
    from tasks.embedders import EmbedSpec
    from tasks.runtime import job_gpus, job_threads

    spec = EmbedSpec(**payload["params"]["spec"])
    res = embed_shard(payload["paths"], spec, job_threads(payload), job_gpus(payload) > 0)
    if res.key and res.key != payload["job_id"]:
        raise RuntimeError("the images of this shard changed while the command ran; run it again")
    n = len(res.paths)
    status = np.full(n, "ok", dtype=object)
    reason = np.full(n, "", dtype=object)
    face = np.zeros(n, dtype=bool)
    embedding = np.full(n, None, dtype=object)
    where = {p: i for i, p in enumerate(res.paths)}
    for path, why in res.errors:
        i = where[path]
        status[i], reason[i] = ("unreadable" if not res.sha256[i] else "undecodable"), why
    for path in res.skipped:
        status[where[path]], reason[where[path]] = "skipped", "no face found"
    face[res.index] = res.face_detected
    for i, row in zip(res.index, res.embeddings):
        embedding[i] = row
    return {"embed_shard": pd.DataFrame({"row": np.arange(n, dtype=np.int64), "status": status, "reason": reason,
                                         "face_detected": face, "embedding": embedding})}
