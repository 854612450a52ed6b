"""``faircal``: FairCal (Salvador et al., "FairCal: Fairness Calibration for Face Verification", ICLR 2022).

The fitting images (L2-normalised) are clustered by k-means (``n_clusters``, seeded, ``n_init`` restarts). Each
cluster k gets a beta calibration map mu_k (:mod:`.beta`) fitted on the fitting pairs (genuine, and impostor:
all or a uniform sample) with at least one image in k; n_k is their count. A pair (a, b) with score s and
clusters k_a, k_b gets the calibrated probability

    P(a, b) = (n_{k_a} mu_{k_a}(s) + n_{k_b} mu_{k_b}(s)) / (n_{k_a} + n_{k_b}),

the cluster-size-weighted mix of its two images' maps (the paper's theta = n_{k_a} / (n_{k_a} + n_{k_b})). A
cluster whose pairs lack a class (or have none) uses the map fitted on all fitting pairs. Probabilities are
calibrated to the fitting pairs' mix of genuine and (sampled) impostor pairs; each mu_k is monotone in s.
Evaluated images take the cluster of their nearest centre. Uses no group labels.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tasks.mitigation.beta import BetaMap
from tasks.mitigation.fitting import checked_pairs, fitting_scores, kmeans, unit_rows


class FairCal:
    """FairCal: a beta calibration map per k-means cluster, mixed per pair (module docstring). Uses no
    group labels."""

    def __init__(self, seed: int, n_clusters: int = 100, n_init: int = 1,
                 max_impostor_pairs: int = 5_000_000) -> None:
        self.seed = seed
        self.n_clusters = n_clusters
        self.n_init = n_init
        self.max_impostor_pairs = max_impostor_pairs

    def fit(self, X: np.ndarray, identity: Any, group: Any = None) -> FairCal:
        """Clusters and maps from every image of the fitting identities (``group`` is not used)."""
        self.kmeans_ = kmeans(unit_rows(X), self.n_clusters, self.n_init, self.seed, "faircal")
        cluster = self.kmeans_.labels_
        sc = fitting_scores(X, identity, self.seed, self.max_impostor_pairs)
        s = np.r_[sc.gen, sc.imp].astype(np.float64)
        genuine = np.r_[np.ones(len(sc.gen), np.int64), np.zeros(len(sc.imp), np.int64)]
        ka, kb = cluster[np.r_[sc.gen_a, sc.imp_a]], cluster[np.r_[sc.gen_b, sc.imp_b]]
        self.global_map_ = BetaMap.fit(s, genuine)
        self.pairs_ = np.zeros(self.n_clusters, np.int64)
        self.maps_: list[BetaMap] = []
        self.fallback_: list[int] = []  # clusters that use the global map
        for k in range(self.n_clusters):
            mask = (ka == k) | (kb == k)
            self.pairs_[k] = mask.sum()
            if len(np.unique(genuine[mask])) == 2:
                self.maps_.append(BetaMap.fit(s[mask], genuine[mask]))
            else:
                self.maps_.append(self.global_map_)
                self.fallback_.append(k)
        return self

    def transform(self, X: np.ndarray, group: Any, a: Any, b: Any, scores: Any) -> np.ndarray:
        """Calibrated probabilities of the pairs (a[i], b[i]) of the evaluated images X (``group`` not used)."""
        X, a, b, s = checked_pairs(X, a, b, scores, "faircal")
        cluster = self.kmeans_.predict(unit_rows(X))
        ka, kb = cluster[a], cluster[b]
        mixed = np.zeros(len(s))
        for k in np.unique(np.r_[ka, kb]):
            for side in (ka, kb):
                m = side == k
                if m.any():
                    mixed[m] += self.pairs_[k] * self.maps_[k](s[m])
        weight = (self.pairs_[ka] + self.pairs_[kb]).astype(np.float64)
        none = weight == 0
        out = np.divide(mixed, weight, out=np.zeros(len(s)), where=~none)
        out[none] = self.global_map_(s[none])
        return out
