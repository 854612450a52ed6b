"""``erase``: linear concept erasure of the group from the embeddings before training — LEACE (Belrose et al.,
"LEACE: Perfect linear concept erasure in closed form", NeurIPS 2023), closed form in numpy.

Fitted on the training rows x (n, d) with the group one-hot z (n, k): mean mu, covariance S_xx, cross-covariance
S_xz (divisor n). With the whitening W = (S_xx^{1/2})^+ and P the orthogonal projection onto the column space
of W S_xz, the eraser is r(x) = x - W^+ P W (x - mu). Afterwards the cross-covariance of r(x) with z is zero on
the fitting rows, so no linear classifier predicts the group better than a constant, with the least change of x
in the (whitened) mean-squared sense. Computed from S_xx's eigenvectors V and the square roots sd of its
eigenvalues, kept where the eigenvalue exceeds d x machine epsilon x the largest (the authors' implementation's
pseudo-inverse cut): W = V diag(1/sd) V^T, W^+ = V diag(sd) V^T,
P = U U^T with U an orthonormal basis of W S_xz (rank <= k - 1). The paper's estimator as it stands: no covariance
shrinkage or trace constraint (options of the authors' library). Float64 throughout; the model trains on the
erased rows (float32) and predicts erased rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from tasks.mitigation.classifier import Build, OneModel, training_rows


@dataclass(frozen=True)
class LeaceEraser:
    """r(x) = x - ((x - mean) right^T) left^T, left = W^+ U (d, r), right = U^T W (r, d)."""

    mean: np.ndarray
    left: np.ndarray
    right: np.ndarray

    @classmethod
    def fit(cls, X: np.ndarray, group: Any) -> LeaceEraser:
        """The LEACE eraser of ``group`` (labels, one per row) from the rows X (module docstring)."""
        X = np.asarray(X, dtype=np.float64)
        _, codes = np.unique(np.asarray(group), return_inverse=True)
        Z = np.eye(codes.max() + 1)[codes.reshape(-1)]
        n, d = X.shape
        mean = X.mean(axis=0)
        Xc = X - mean
        cross = Xc.T @ (Z - Z.mean(axis=0)) / n                      # S_xz (d, k)
        lam, V = np.linalg.eigh(Xc.T @ Xc / n)                       # S_xx = V diag(lam) V^T
        keep = lam > lam.max(initial=0.0) * d * np.finfo(np.float64).eps
        V, sd = V[:, keep], np.sqrt(lam[keep])
        M = V @ ((V.T @ cross) / sd[:, None])                       # W S_xz
        U, sv, _ = np.linalg.svd(M, full_matrices=False)
        U = U[:, sv > sv.max(initial=0.0) * max(M.shape) * np.finfo(np.float64).eps]
        left = V @ (sd[:, None] * (V.T @ U))                        # W^+ U
        right = ((U.T @ V) / sd[None, :]) @ V.T                     # U^T W
        return cls(mean, left, right)

    def __call__(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        return X - ((X - self.mean) @ self.right.T) @ self.left.T


class Erase(OneModel):
    """The model trained on the training rows with the group erased (:class:`LeaceEraser`)."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.eraser_: LeaceEraser | None = None

    def fit(self, build: Build, X: np.ndarray, y: np.ndarray, group: Any, identity: Any = None) -> Erase:
        X, y, group, _ = training_rows("erase", X, y, group, identity)
        self.eraser_ = LeaceEraser.fit(X, group)
        self.model_ = build().fit(self.features(X), y)
        return self

    def features(self, X: np.ndarray) -> np.ndarray:
        return self.eraser_(X).astype(np.float32)
