"""``reweight``: Kamiran & Calders' reweighing (Knowledge and Information Systems 33, 2012): every training row
of group g and class y gets the weight w(g, y) = P(g) P(y) / P(g, y) = n_g n_y / (n n_gy), counted over the
training rows, so that under the weights group and class are independent (each (g, y) cell weighs what it
would if they were); the model is then trained with these sample weights."""

from __future__ import annotations

from typing import Any

import numpy as np

from tasks.mitigation.classifier import Build, OneModel, training_rows, weightable


def reweighing_weights(group: Any, y: Any) -> np.ndarray:
    """w_i = n_{g_i} n_{y_i} / (n n_{g_i y_i}) for each row i (float64; every cell present has n_gy >= 1)."""
    _, g = np.unique(np.asarray(group), return_inverse=True)
    _, c = np.unique(np.asarray(y), return_inverse=True)
    g, c = g.reshape(-1), c.reshape(-1)
    n_g = np.bincount(g)
    n_y = np.bincount(c)
    n_gy = np.zeros((len(n_g), len(n_y)), np.int64)
    np.add.at(n_gy, (g, c), 1)
    return n_g[g] * n_y[c] / (len(g) * n_gy[g, c].astype(np.float64))


class Reweight(OneModel):
    """The model trained with :func:`reweighing_weights` of the training rows."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.weights_: np.ndarray | None = None

    def fit(self, build: Build, X: np.ndarray, y: np.ndarray, group: Any, identity: Any = None) -> Reweight:
        X, y, group, _ = training_rows("reweight", X, y, group, identity)
        self.weights_ = reweighing_weights(group, y)
        self.model_ = weightable("reweight", build()).fit(X, y, sample_weight=self.weights_)
        return self
