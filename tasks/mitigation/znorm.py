"""``znorm``: demographic Z-normalisation (Linghu et al., "Score Normalization for Demographic Fairness in Face
Recognition", IJCB 2024): Z-norm whose cohort is restricted to a demographic group. An evaluated image x of
group g is compared with the cohort C_g, every fitting image of group g (fitting identities are disjoint from
the evaluated ones, so these are impostor comparisons); mu_x and sd_x are the mean and standard deviation
(ddof = 1, as the authors' code) of those cosine scores. biasgrid's pairs have no enrolment or probe side, so
both images are normalised and averaged:

    s' = ((s - mu_a) / sd_a + (s - mu_b) / sd_b) / 2.

For a pair within one group this is the authors' demographic Z-norm applied from both sides. Uses group
labels (of the fitting images and of the evaluated ones).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from storage.errors import InputError
from tasks.mitigation import require_several_groups
from tasks.mitigation.fitting import checked_pairs, known_codes, unit_rows

_BLOCK = 1024  # evaluated images per block of cohort scores


class ZNorm:
    """Demographic Z-norm against each group's cohort of fitting images (module docstring)."""

    def __init__(self, seed: int) -> None:
        self.seed = seed  # nothing is random; kept for the common constructor

    def fit(self, X: np.ndarray, identity: Any, group: Any) -> ZNorm:
        """The cohorts: the L2-normalised fitting images of each group (at least two per group)."""
        group = require_several_groups(group, "mitigation 'znorm'")
        self.groups_ = np.unique(group)
        codes = known_codes(self.groups_, group, len(X), "znorm")
        Xn = unit_rows(X)
        self.cohorts_ = [Xn[codes == k] for k in range(len(self.groups_))]
        small = [g for g, c in zip(self.groups_, self.cohorts_) if len(c) < 2]
        if small:
            raise InputError(f"mitigation 'znorm': group {str(small[0])!r} has fewer than 2 fitting images")
        return self

    def cohort_statistics(self, X: np.ndarray, group: Any) -> tuple[np.ndarray, np.ndarray]:
        """(mu, sd) of each row of X against the cohort of its group (``group``: one label per row)."""
        codes = known_codes(self.groups_, group, len(X), "znorm")
        Xn = unit_rows(X)
        mu, sd = np.empty(len(X)), np.empty(len(X))
        for k, cohort in enumerate(self.cohorts_):
            rows = np.flatnonzero(codes == k)
            for s in range(0, len(rows), _BLOCK):
                r = rows[s:s + _BLOCK]
                S = Xn[r] @ cohort.T
                mu[r] = S.mean(axis=1, dtype=np.float64)
                sd[r] = S.std(axis=1, ddof=1, dtype=np.float64)
        return mu, sd

    def transform(self, X: np.ndarray, group: Any, a: Any, b: Any, scores: Any) -> np.ndarray:
        """Z-normalised scores of the pairs (a[i], b[i]) of the evaluated images X."""
        X, a, b, s = checked_pairs(X, a, b, scores, "znorm")
        mu, sd = self.cohort_statistics(X, group)
        return 0.5 * ((s - mu[a]) / sd[a] + (s - mu[b]) / sd[b])
