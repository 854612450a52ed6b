"""``group_thresholds``: each demographic group's own threshold at the target FMR, from the fitting
identities' impostor pairs within the group, applied as a score shift (:func:`fitting.shifted`) so that every
verification number biasgrid reports applies unchanged: s' = s - (d_g(a) + d_g(b)) / 2, d_g = t_g - t, with t
the threshold of all fitting impostor pairs. A pair within group g is accepted at t exactly when s >= t_g; a
cross-group pair is held to the mean of its two groups' thresholds. Uses group labels."""

from __future__ import annotations

from typing import Any

import numpy as np

from tasks.mitigation import require_several_groups
from tasks.mitigation.fitting import checked_pairs, fitting_scores, known_codes, shifted, threshold_offsets


class GroupThresholds:
    """Each group's own threshold as a score shift (module docstring)."""

    def __init__(self, seed: int, target_fmr: float = 1e-3, max_impostor_pairs: int = 5_000_000) -> None:
        self.seed = seed
        self.target_fmr = target_fmr
        self.max_impostor_pairs = max_impostor_pairs

    def fit(self, X: np.ndarray, identity: Any, group: Any) -> GroupThresholds:
        """Thresholds from every image of the fitting identities (``group``: one label per image)."""
        group = require_several_groups(group, "mitigation 'group_thresholds'")
        self.groups_ = np.unique(group)
        codes = known_codes(self.groups_, group, len(X), "group_thresholds")
        sc = fitting_scores(X, identity, self.seed, self.max_impostor_pairs)
        self.global_threshold_, self.thresholds_, self.offsets_ = threshold_offsets(
            sc.imp, codes[sc.imp_a], codes[sc.imp_b], len(self.groups_), self.target_fmr, within=True)
        return self

    def transform(self, X: np.ndarray, group: Any, a: Any, b: Any, scores: Any) -> np.ndarray:
        """Shifted scores of the pairs (a[i], b[i]) of the evaluated images (``group``: one label each)."""
        X, a, b, s = checked_pairs(X, a, b, scores, "group_thresholds")
        codes = known_codes(self.groups_, group, len(X), "group_thresholds")
        return shifted(s, self.offsets_, codes[a], codes[b])
