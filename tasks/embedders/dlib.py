"""The ``dlib`` embedder: dlib's ResNet face-recognition network (128-d) on dlib-aligned 150 x 150 chips."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from tasks.embedders.align import centre_crop
from tasks.embedders.faces import import_dlib, largest_face, model_file, shape_predictor

CHIP_SIZE = 150  # the network's input (input_rgb_image_sized<150>)


class DlibEmbedder:
    """Detect (HOG, largest face, ``upsample``), 5-point landmarks, ``dlib.get_face_chip(size=150,
    padding)``, then ``face_recognition_model_v1.compute_face_descriptor(chips, num_jitters)``. No face: the
    centre crop resized to 150 x 150 (:func:`.align.centre_crop`)."""

    dim = 128

    def __init__(self, config: Mapping) -> None:
        dlib = import_dlib()
        self.upsample = int(config.get("upsample", 1))
        self.padding = float(config.get("padding", 0.25))
        self.num_jitters = int(config.get("num_jitters", 0))
        self.max_side = int(config.get("detect_max_side", 0))
        self.net = dlib.face_recognition_model_v1(str(model_file("recognition")))
        self.predictor = shape_predictor(5)
        self.dlib = dlib

    def chip(self, image: np.ndarray) -> tuple[np.ndarray, bool]:
        """The aligned 150 x 150 RGB chip of ``image`` and whether a face was detected."""
        rect = largest_face(image, self.upsample, self.max_side)
        if rect is None:
            return centre_crop(image, (CHIP_SIZE, CHIP_SIZE)), False
        shape = self.predictor(image, rect)
        return np.asarray(self.dlib.get_face_chip(image, shape, size=CHIP_SIZE, padding=self.padding)), True

    def embed(self, images: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        chips, detected = [], []
        for image in images:
            c, ok = self.chip(image)
            chips.append(np.ascontiguousarray(c, dtype=np.uint8))
            detected.append(ok)
        if not chips:
            return np.zeros((0, self.dim), dtype=np.float32), np.zeros(0, dtype=bool)
        vectors = self.net.compute_face_descriptor(chips, self.num_jitters)
        return np.array([np.asarray(v) for v in vectors], dtype=np.float32), np.array(detected, dtype=bool)
