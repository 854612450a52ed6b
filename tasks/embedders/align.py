"""Face geometry in numpy: the ArcFace template, similarity transforms, warping, crops and resizing.

Coordinates are (x, y) in pixels with pixel centres at integers (as OpenCV's ``warpAffine`` and scikit-image's
``warp`` use them), so an aligned chip is ``chip[y, x] = image(M^-1 (x, y))`` sampled bilinearly, 0 outside.
"""

from __future__ import annotations

import numpy as np

# InsightFace's ArcFace five-point template for 112 x 112 chips (python-package/insightface/utils/face_align.py,
# ``arcface_dst``/``arcface_src``): the eye centres, the nose tip and the mouth corners, in image order
# (left of the picture first: the subject's right eye, then the subject's left eye, ...).
ARCFACE_TEMPLATE_112 = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                                 [41.5493, 92.3655], [70.7299, 92.2041]], dtype=np.float64)


def arcface_template(size: int) -> np.ndarray:
    """(5, 2) ArcFace landmark positions for a ``size`` x ``size`` chip: the 112 template scaled by size / 112."""
    return ARCFACE_TEMPLATE_112 * (float(size) / 112.0)


def umeyama(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 3 x 3 similarity transform (rotation, uniform scale, translation; no reflection) that maps the points
    ``src`` (n, 2) onto ``dst`` (n, 2) with least squared error (Umeyama 1991), in homogeneous form.

    With centred points a = src - mean(src), b = dst - mean(dst), covariance C = b^T a / n = U S V^T:
    R = U D V^T (D = diag(1, sign det C)), scale = trace(S D) / (sum of a's per-axis variances),
    t = mean(dst) - scale R mean(src).
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or len(src) < 2:
        raise ValueError(f"expected two (n, 2) point sets of the same shape, n >= 2; got {src.shape}, {dst.shape}")
    mu_s, mu_d = src.mean(axis=0), dst.mean(axis=0)
    a, b = src - mu_s, dst - mu_d
    cov = b.T @ a / len(src)
    d = np.ones(2)
    if np.linalg.det(cov) < 0:
        d[-1] = -1.0
    u, s, vt = np.linalg.svd(cov)
    rot = u @ np.diag(d) @ vt
    var = a.var(axis=0).sum()
    scale = float(s @ d / var) if var > 0 else 1.0
    m = np.eye(3)
    m[:2, :2] = scale * rot
    m[:2, 2] = mu_d - scale * rot @ mu_s
    return m


def warp_affine(image: np.ndarray, matrix: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Warp ``image`` (h, w, 3) uint8 by the forward 3 x 3 ``matrix`` (image -> chip) into a chip of ``size``
    = (height, width): bilinear sampling at M^-1 (x, y), 0 (black) outside the image. Returns uint8."""
    height, width = size
    inv = np.linalg.inv(np.asarray(matrix, dtype=np.float64))
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    sx = inv[0, 0] * xs + inv[0, 1] * ys + inv[0, 2]
    sy = inv[1, 0] * xs + inv[1, 1] * ys + inv[1, 2]
    return _bilinear(np.asarray(image), sx, sy)


def _bilinear(image: np.ndarray, sx: np.ndarray, sy: np.ndarray) -> np.ndarray:
    h, w = image.shape[:2]
    img = image.astype(np.float32)
    x0 = np.floor(sx).astype(np.int64)
    y0 = np.floor(sy).astype(np.int64)
    fx = (sx - x0).astype(np.float32)[..., None]
    fy = (sy - y0).astype(np.float32)[..., None]
    out = np.zeros(sx.shape + image.shape[2:], dtype=np.float32)
    for dy, wy in ((0, 1 - fy), (1, fy)):
        for dx, wx in ((0, 1 - fx), (1, fx)):
            xi, yi = x0 + dx, y0 + dy
            inside = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
            vals = img[np.clip(yi, 0, h - 1), np.clip(xi, 0, w - 1)]
            out += np.where(inside[..., None], vals, 0.0) * (wx * wy)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def align_to_template(image: np.ndarray, landmarks: np.ndarray, template: np.ndarray,
                      size: tuple[int, int]) -> np.ndarray:
    """The chip of ``size`` = (height, width) in which ``landmarks`` (5, 2) land on ``template`` (5, 2) as closely
    as a similarity transform allows (:func:`umeyama`)."""
    return warp_affine(image, umeyama(landmarks, template), size)


def resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``image`` (h, w, 3) uint8 resized to ``size`` = (height, width) with Pillow's bilinear filter."""
    from PIL import Image

    height, width = size
    if image.shape[:2] == (height, width):
        return np.ascontiguousarray(image)
    return np.asarray(Image.fromarray(np.ascontiguousarray(image)).resize((width, height), Image.BILINEAR))


def centre_crop(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The fallback chip: the central square of side min(h, w) (top = (h - side) // 2, left = (w - side) // 2),
    resized to ``size`` = (height, width) (:func:`resize`)."""
    h, w = image.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    return resize(image[top:top + side, left:left + side], size)


def five_points_from_68(points: np.ndarray) -> np.ndarray:
    """ArcFace's five points from the 68 iBUG-300W landmarks (0-based) dlib's 68-point predictor gives:
    mean of 36-41 (eye on the picture's left), mean of 42-47 (other eye), 30 (nose tip), 48 and 54 (mouth
    corners, picture's left first)."""
    p = np.asarray(points, dtype=np.float64)
    if p.shape != (68, 2):
        raise ValueError(f"expected (68, 2) landmarks, got {p.shape}")
    return np.stack([p[36:42].mean(axis=0), p[42:48].mean(axis=0), p[30], p[48], p[54]])
