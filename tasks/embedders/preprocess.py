"""Pixel preprocessing of face chips before a network: each mode maps RGB uint8 ``(n, h, w, 3)`` to float32.

=============  ============================================================================================
mode           formula (x = pixel value 0..255, channel order of the result)
=============  ============================================================================================
``none``       x, RGB
``unit``       x / 255, RGB
``arcface``    (x - 127.5) / 127.5, RGB (InsightFace ArcFace; also Keras' ``mode="tf"``)
``vggface2``   BGR, x - (91.4953, 103.8827, 131.0912) per B, G, R channel (keras-vggface
               ``utils.preprocess_input(version=2)``: the VGGFace2 ResNet-50/SENet-50 of the study)
``imagenet``   BGR, x - (103.939, 116.779, 123.68) per B, G, R channel (Keras applications' ResNet50/VGG16,
               ``imagenet_utils.preprocess_input(mode="caffe")``)
``imagenet-torch``  (x / 255 - (0.485, 0.456, 0.406)) / (0.229, 0.224, 0.225), RGB (``mode="torch"``)
=============  ============================================================================================
"""

from __future__ import annotations

import numpy as np

PREPROCESS: tuple[str, ...] = ("none", "unit", "arcface", "vggface2", "imagenet", "imagenet-torch")
VGGFACE2_MEAN_BGR = np.array([91.4953, 103.8827, 131.0912], dtype=np.float32)
IMAGENET_CAFFE_MEAN_BGR = np.array([103.939, 116.779, 123.68], dtype=np.float32)
IMAGENET_TORCH_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_TORCH_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def preprocess(batch: np.ndarray, mode: str) -> np.ndarray:
    """``(n, h, w, 3)`` RGB uint8 -> float32 of the same shape by ``mode`` (see the module table)."""
    x = np.asarray(batch, dtype=np.float32)
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"expected a batch of RGB images (n, h, w, 3), got shape {x.shape}")
    if mode == "none":
        return x
    if mode == "unit":
        return x / np.float32(255.0)
    if mode == "arcface":
        return (x - np.float32(127.5)) / np.float32(127.5)
    if mode == "vggface2":
        return x[..., ::-1] - VGGFACE2_MEAN_BGR
    if mode == "imagenet":
        return x[..., ::-1] - IMAGENET_CAFFE_MEAN_BGR
    if mode == "imagenet-torch":
        return (x / np.float32(255.0) - IMAGENET_TORCH_MEAN) / IMAGENET_TORCH_STD
    raise ValueError(f"unknown preprocess mode {mode!r}; expected one of {', '.join(PREPROCESS)}")
