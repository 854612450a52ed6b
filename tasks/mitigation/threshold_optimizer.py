"""``threshold_optimizer``: Fairlearn's ThresholdOptimizer (Hardt et al., "Equality of Opportunity in Supervised
Learning", NeurIPS 2016), post-processing for equalized odds. The training identities are split, per group and
identity-disjoint, into a fitting part (the model trains on it) and a validation part of ``validation_fraction``
of each group's identities (at least one identity on each side), drawn from the job's seed; the group-specific
randomized thresholds are fitted on the model's scores of the validation rows only, never on test rows.
Predictions need each row's group and are randomized as Fairlearn's, seeded by the job's seed."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator

from storage.errors import InputError
from tasks.mitigation.classifier import Build, quiet_fairlearn, training_rows

_STREAM = 0x7A11  # separates the validation split's random stream from other users of the seed


def validation_split(identity: np.ndarray, group: np.ndarray, fraction: float,
                     seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(fitting rows, validation rows), sorted: per group (sorted), round(fraction x its identities) of them,
    clipped to [1, identities - 1], drawn uniformly with ``default_rng([seed, _STREAM])``; every row of a drawn
    identity is a validation row. InputError for a group with fewer than two identities, or an identity in
    two groups."""
    pairs = np.unique(np.rec.fromarrays([identity, group]))
    ids, count = np.unique(pairs.f0, return_counts=True)
    if (count > 1).any():
        raise InputError(f"mitigation 'threshold_optimizer': identity {ids[count > 1][0]} has training rows in "
                         f"two groups; an identity must lie in one")
    rng = np.random.default_rng([seed, _STREAM])
    validation = np.zeros(len(identity), bool)
    for g in np.unique(group):
        in_group = group == g
        ids = np.unique(identity[in_group])
        if len(ids) < 2:
            raise InputError(f"mitigation 'threshold_optimizer': group {str(g)!r} has {len(ids)} training identity; "
                             f"a validation split needs at least 2")
        k = min(max(1, round(fraction * len(ids))), len(ids) - 1)
        validation |= in_group & np.isin(identity, rng.permutation(ids)[:k])
    return np.flatnonzero(~validation), np.flatnonzero(validation)


class _Float64Scores(BaseEstimator):
    """A trained model as the prefit estimator Fairlearn expects: an sklearn estimator (any model, the mlp
    too) whose soft scores (predict_proba, else decision_function, else predict) are float64 — Fairlearn 0.15
    under pandas 3 cannot store its interpolated float64 probabilities into a float32 score vector (the mlp's
    and xgboost's scores are float32)."""

    def __init__(self, model: Any = None) -> None:
        self.model = model

    @property
    def method(self) -> str:
        return next(m for m in ("predict_proba", "decision_function", "predict") if hasattr(self.model, m))

    def __sklearn_is_fitted__(self) -> bool:
        return True

    def fit(self, X: np.ndarray, y: np.ndarray) -> _Float64Scores:  # prefit: never called
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return np.asarray(self.model.predict_proba(X), dtype=np.float64)

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        return np.asarray(self.model.decision_function(X), dtype=np.float64)

    def predict(self, X: np.ndarray) -> np.ndarray:
        return np.asarray(self.model.predict(X), dtype=np.float64)


class ThresholdOptimizer:
    """The model trained on the fitting part, thresholds per group fitted on the validation part."""

    def __init__(self, seed: int, validation_fraction: float = 0.3) -> None:
        self.seed = seed
        self.validation_fraction = validation_fraction
        self.model_: Any = None
        self.groups_: np.ndarray | None = None

    def fit(self, build: Build, X: np.ndarray, y: np.ndarray, group: Any,
            identity: Any = None) -> ThresholdOptimizer:
        from fairlearn.postprocessing import ThresholdOptimizer as Fairlearn

        X, y, group, identity = training_rows("threshold_optimizer", X, y, group, identity)
        fit_rows, val_rows = validation_split(identity, group, self.validation_fraction, self.seed)
        for g in np.unique(group):
            labels = np.unique(y[val_rows][group[val_rows] == g])
            if len(labels) < 2:
                raise InputError(f"mitigation 'threshold_optimizer': the validation rows of group {str(g)!r} have "
                                 f"only label {labels[0]}; equalized odds needs both")
        scores = _Float64Scores(build().fit(X[fit_rows], y[fit_rows]))
        self.model_ = Fairlearn(estimator=scores, constraints="equalized_odds", prefit=True,
                                predict_method=scores.method)
        with quiet_fairlearn():
            self.model_.fit(X[val_rows], y[val_rows], sensitive_features=group[val_rows])
        self.groups_ = np.unique(group)
        return self

    def predict(self, X: np.ndarray, group: Any) -> np.ndarray:
        """Randomized 0/1 predictions of rows X of groups ``group`` (each seen in training), seeded."""
        if self.model_ is None:
            raise RuntimeError("predict before fit")
        group = np.asarray(group)
        if group.shape != (len(X),):
            raise InputError(f"mitigation 'threshold_optimizer': expected {len(X)} group labels, one per row, "
                             f"got shape {group.shape}")
        unseen = np.setdiff1d(np.unique(group), self.groups_)
        if len(unseen):
            raise InputError(f"mitigation 'threshold_optimizer': group {str(unseen[0])!r} has no thresholds (it has "
                             f"no training rows)")
        with quiet_fairlearn():
            pred = self.model_.predict(X, sensitive_features=group, random_state=self.seed)
        return np.asarray(pred).astype(np.int64)
