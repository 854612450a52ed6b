"""What the score-side mitigations share: cosine-ready rows, the fitting identities' scored pairs, seeded
k-means, group codes, the checks of the pairs to transform, and the threshold offsets of ``group_thresholds``
and ``fsn`` (one definition: a label's own threshold at the target FMR minus the global one)."""

from __future__ import annotations

from typing import Any

import numpy as np

from storage.errors import InputError
from tasks.stats import rates, scoring


def unit_rows(X: np.ndarray) -> np.ndarray:
    """The L2-normalised float32 rows of X, exactly as biasgrid's cosine scores normalise them."""
    rows = np.arange(len(X))
    return scoring.row_norms(X, rows).unit(X, rows)


def fitting_scores(X: np.ndarray, identity: np.ndarray, seed: int, max_impostor_pairs: int) -> scoring.Scores:
    """Genuine and impostor cosine scores of the fitting images (all impostor pairs, or a uniform sample of
    ``max_impostor_pairs`` drawn from ``seed``), as the scores kind scores a group (tasks.stats.scoring)."""
    return scoring.score_pairs(np.asarray(X), identity, np.arange(len(X)), seed=seed,
                               max_impostor_pairs=max_impostor_pairs, what="the fitting identities' images")


def kmeans(Xn: np.ndarray, n_clusters: int, n_init: int, seed: int, name: str) -> Any:
    """scikit-learn's KMeans (k-means++, Lloyd) of the rows Xn, ``random_state=seed``, ``n_init`` restarts."""
    from sklearn.cluster import KMeans

    if n_clusters > len(Xn):
        raise InputError(f"mitigation {name!r}: n_clusters = {n_clusters} exceeds the {len(Xn)} fitting images")
    return KMeans(n_clusters=n_clusters, n_init=n_init, random_state=seed).fit(Xn)


def known_codes(known: np.ndarray, labels: Any, n: int, name: str) -> np.ndarray:
    """Positions in ``known`` (sorted) of ``labels`` (one per row of n rows); InputError for a label with no
    fitting rows or a wrong count."""
    labels = np.asarray(labels)
    if labels.shape != (n,):
        raise InputError(f"mitigation {name!r}: expected {n} group labels, one per image, got shape {labels.shape}")
    codes = np.searchsorted(known, labels)
    bad = (codes >= len(known)) | (known[np.minimum(codes, len(known) - 1)] != labels)
    if bad.any():
        raise InputError(f"mitigation {name!r}: group {str(labels[bad][0])!r} has no fitting images")
    return codes


def checked_pairs(X: np.ndarray, a: Any, b: Any, scores: Any, name: str) -> tuple[np.ndarray, ...]:
    """(X, a, b, scores) checked: a 2-D matrix, pair positions a, b in [0, len(X)) and one score per pair."""
    X = np.asarray(X)
    a, b, s = np.asarray(a), np.asarray(b), np.asarray(scores, dtype=np.float64)
    if X.ndim != 2:
        raise InputError(f"mitigation {name!r}: embedding matrix must be 2-D, got shape {X.shape}")
    if not (a.shape == b.shape == s.shape and a.ndim == 1):
        raise InputError(f"mitigation {name!r}: pair positions a, b and scores must be 1-D of one length, got "
                         f"{a.shape}, {b.shape}, {s.shape}")
    if len(a) and not (np.issubdtype(a.dtype, np.integer) and np.issubdtype(b.dtype, np.integer)
                       and min(a.min(), b.min()) >= 0 and max(a.max(), b.max()) < len(X)):
        raise InputError(f"mitigation {name!r}: pair positions must be integers in [0, {len(X)})")
    return X, a.astype(np.int64), b.astype(np.int64), s


def threshold_offsets(impostor: np.ndarray, label_a: np.ndarray, label_b: np.ndarray, n_labels: int,
                      target_fmr: float, within: bool) -> tuple[float, np.ndarray, np.ndarray]:
    """(t, t_l, offset_l) from impostor scores with a label per side (codes 0..n_labels-1): t = the threshold
    at ``target_fmr`` of every impostor score (tasks.stats.rates.threshold_at_fmr, the one convention); t_l the
    threshold of label l's impostors (both sides l when ``within``, else either side l); offset_l = t_l - t.
    A label with fewer than 1/target impostor scores cannot resolve the target: t_l = NaN and offset_l = 0
    (its images keep the global threshold)."""
    t = rates.threshold_at_fmr(impostor, target_fmr)
    own = np.full(n_labels, np.nan)
    for k in range(n_labels):
        mask = (label_a == k) & (label_b == k) if within else (label_a == k) | (label_b == k)
        if rates.target_fraction(target_fmr) * int(mask.sum()) >= 1:
            own[k] = rates.threshold_at_fmr(impostor[mask], target_fmr)
    return t, own, np.where(np.isnan(own), 0.0, own - t)


def shifted(scores: np.ndarray, offsets: np.ndarray, label_a: np.ndarray, label_b: np.ndarray) -> np.ndarray:
    """s - (offset_{label a} + offset_{label b}) / 2: a pair of two images of label l is accepted at the global
    threshold t exactly when its score reaches l's own threshold t_l."""
    return np.asarray(scores, dtype=np.float64) - 0.5 * (offsets[label_a] + offsets[label_b])
