"""Beta calibration (Kull, Silva Filho & Flach, AISTATS 2017), the calibration map FairCal fits per cluster.

A score s in [lo, hi] is read as p = (s - lo) / (hi - lo), clipped to [e, 1 - e] (e = float64 epsilon); the
map is mu(s) = 1 / (1 + exp(-(a ln p - b ln(1 - p) + c))), i.e. a logistic regression of the labels on the
features (ln p, -ln(1 - p)), fitted unpenalised by maximum likelihood (scikit-learn's Newton solver, to a
tolerance of 1e-10: the two features are strongly correlated, and a loose fit lands far from the optimum). When
the fit gives a < 0 it is refitted with b alone (a = 0), when it gives b < 0 with a alone (b = 0), so the map is
monotone (the authors' betacal package and the FairCal code do the same).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from scipy.special import expit

from storage.errors import InputError


def features(scores: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """(n, 2) columns ln p and -ln(1 - p) of the clipped p = (s - lo) / (hi - lo)."""
    e = np.finfo(np.float64).eps
    p = np.clip((np.asarray(scores, dtype=np.float64) - lo) / (hi - lo), e, 1 - e)
    return np.column_stack([np.log(p), -np.log1p(-p)])


def _logistic(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    with warnings.catch_warnings():  # separable labels: the MLE diverges, the solver stops (a steep map)
        warnings.simplefilter("ignore", ConvergenceWarning)
        lr = LogisticRegression(C=np.inf, solver="newton-cholesky", tol=1e-10, max_iter=100).fit(x, y)
    return lr.coef_[0], float(lr.intercept_[0])


@dataclass(frozen=True)
class BetaMap:
    a: float
    b: float
    c: float
    lo: float = -1.0
    hi: float = 1.0

    @classmethod
    def fit(cls, scores: np.ndarray, labels: np.ndarray, lo: float = -1.0, hi: float = 1.0) -> BetaMap:
        """The map of scores with 0/1 labels (both present; 1 = genuine)."""
        y = np.asarray(labels).astype(np.int64)
        if len(np.unique(y)) < 2:
            raise InputError("beta calibration needs scores of both classes (genuine and impostor)")
        x = features(scores, lo, hi)
        (a, b), c = _logistic(x, y)
        if a < 0:
            (b,), c = _logistic(x[:, 1:], y)
            a = 0.0
        elif b < 0:
            (a,), c = _logistic(x[:, :1], y)
            b = 0.0
        return cls(float(a), float(b), c, lo, hi)

    def __call__(self, scores: np.ndarray) -> np.ndarray:
        x = features(scores, self.lo, self.hi)
        return expit(self.a * x[:, 0] + self.b * x[:, 1] + self.c)
