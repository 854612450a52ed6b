"""``reductions``: Fairlearn's ExponentiatedGradient (Agarwal et al., "A Reductions Approach to Fair
Classification", ICML 2018): a randomized mixture of models, each trained with sample weights set by the
Lagrange multipliers of the constraint (``EqualizedOdds`` or ``DemographicParity``, allowed violation ``eps``),
the sensitive feature being the group of the training rows. Predictions are randomized as Fairlearn's: each row
draws its prediction from the mixture with a generator seeded by the job's seed (the same seed, the same
predictions)."""

from __future__ import annotations

from typing import Any

import numpy as np

from tasks.mitigation.classifier import Build, quiet_fairlearn, training_rows, weightable


class Reductions:
    """ExponentiatedGradient around the cell's model; ``predict`` seeded by ``seed``."""

    def __init__(self, seed: int, constraint: str = "equalized_odds", eps: float = 0.01, max_iter: int = 50) -> None:
        self.seed = seed
        self.constraint = constraint
        self.eps = eps
        self.max_iter = max_iter
        self.model_: Any = None

    def fit(self, build: Build, X: np.ndarray, y: np.ndarray, group: Any, identity: Any = None) -> Reductions:
        from fairlearn.reductions import DemographicParity, EqualizedOdds, ExponentiatedGradient

        X, y, group, _ = training_rows("reductions", X, y, group, identity)
        estimator = weightable("reductions", build())
        moment = {"equalized_odds": EqualizedOdds, "demographic_parity": DemographicParity}[self.constraint]
        self.model_ = ExponentiatedGradient(estimator, constraints=moment(), eps=self.eps, max_iter=self.max_iter)
        with quiet_fairlearn():
            self.model_.fit(X, y, sensitive_features=group)
        return self

    def predict(self, X: np.ndarray, group: Any = None) -> np.ndarray:
        """Randomized 0/1 predictions of rows X (``group`` is not needed), seeded by the job's seed."""
        if self.model_ is None:
            raise RuntimeError("predict before fit")
        with quiet_fairlearn():
            pred = np.asarray(self.model_.predict(X, random_state=self.seed)).astype(np.int64)
        return pred
