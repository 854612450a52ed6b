"""``fsn``: Fair Score Normalization (Terhörst et al., "Post-comparison mitigation of demographic bias in face
recognition using fair score normalization", 2020). The fitting images (L2-normalised) are clustered by k-means
(``n_clusters``, seeded, ``n_init`` restarts); each cluster c gets its own threshold t_c at the target FMR from
the fitting impostor pairs with at least one image in c (as the FairCal authors' implementation of FSN), t is
the threshold of all fitting impostor pairs, and a pair's score is shifted by the mean of its two images'
cluster offsets: s' = s - ((t_c(a) - t) + (t_c(b) - t)) / 2 (:func:`fitting.shifted`). A cluster with fewer
than 1/target impostor pairs keeps the global threshold (offset 0). Evaluated images take the cluster of their
nearest centre. Uses no group labels."""

from __future__ import annotations

from typing import Any

import numpy as np

from tasks.mitigation.fitting import checked_pairs, fitting_scores, kmeans, shifted, threshold_offsets, unit_rows


class FSN:
    """FSN: a threshold offset per k-means cluster (module docstring). Uses no group labels."""

    def __init__(self, seed: int, n_clusters: int = 100, target_fmr: float = 1e-3, n_init: int = 1,
                 max_impostor_pairs: int = 5_000_000) -> None:
        self.seed = seed
        self.n_clusters = n_clusters
        self.target_fmr = target_fmr
        self.n_init = n_init
        self.max_impostor_pairs = max_impostor_pairs

    def fit(self, X: np.ndarray, identity: Any, group: Any = None) -> FSN:
        """Clusters and thresholds from every image of the fitting identities (``group`` is not used)."""
        self.kmeans_ = kmeans(unit_rows(X), self.n_clusters, self.n_init, self.seed, "fsn")
        cluster = self.kmeans_.labels_
        sc = fitting_scores(X, identity, self.seed, self.max_impostor_pairs)
        self.global_threshold_, self.thresholds_, self.offsets_ = threshold_offsets(
            sc.imp, cluster[sc.imp_a], cluster[sc.imp_b], self.n_clusters, self.target_fmr, within=False)
        return self

    def clusters(self, X: np.ndarray) -> np.ndarray:
        """The cluster of each row of X (its nearest centre, after L2 normalisation)."""
        return self.kmeans_.predict(unit_rows(X))

    def transform(self, X: np.ndarray, group: Any, a: Any, b: Any, scores: Any) -> np.ndarray:
        """Normalised scores of the pairs (a[i], b[i]) of the evaluated images X (``group`` is not used)."""
        X, a, b, s = checked_pairs(X, a, b, scores, "fsn")
        cluster = self.clusters(X)
        return shifted(s, self.offsets_, cluster[a], cluster[b])
