"""Verification scores: genuine and impostor cosine similarities of a group's embeddings, and what they give.

- Genuine pairs: every pair of two images of the same identity. Impostor pairs: pairs of images of different
  identities, all of them when there are at most ``max_impostor_pairs``, otherwise a uniform sample without
  replacement of exactly that many, drawn from ``seed`` (``impostor_sampled`` says which); the impostor-matrix
  job tops a sample up per pair of demographic groups (:func:`stratify`, ``[verification] sampling``).
- All pairs are scored with blocked matrix products (``_GRAM_BLOCK`` rows at a time). Sampled pairs (sorted by
  their first image) too when they are many for the group's size (the normalised rows are then copied, at most
  ~14K x d); otherwise with one matrix-vector product per image, which touches only the sampled pairs' rows,
  so X is not copied (it can be a memory map). Memory is bounded by the pair count plus one block of products.
  Rows are first scaled by a power of two (:func:`scaled_rows`), so embeddings of any finite float32 size
  (x 1e20, x 1e-42) give the same cosines as at ordinary size, never an overflow to 0 or an underflow.
- EER: where FMR and FNMR cross on the ROC curve (scikit-learn's ``roc_curve``, every operating point), linearly
  interpolated between the two operating points around the crossing. FNMR at FMR = x: the FNMR at the
  threshold of :func:`threshold_at_fmr` (the lowest observed impostor score with FMR <= x, integer
  arithmetic: the one convention of :mod:`tasks.rates`). A pair is accepted when its score >= threshold.
- FMR/FNMR curves on a fixed grid of :data:`THRESHOLDS` and histograms on fixed :data:`HIST_EDGES`, the same for
  every job, so curves can be averaged over seeds and densities drawn without the raw scores.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import roc_curve

from storage.errors import InputError
from storage.vocab import demographic_names
from tasks import bootstrap, fairness, rates
from tasks.cell import check_rows
from tasks.kinds import JobKind, PlannedJob

THRESHOLDS = np.linspace(-1.0, 1.0, 1001)   # FMR/FNMR curve grid, the same for every job
HIST_EDGES = np.linspace(-1.0, 1.0, 401)    # 400 histogram bins, the same for every job
_GRAM_BLOCK = 1024                          # rows per block when scoring all pairs
_NORM_BLOCK = 8192                          # rows per block when computing norms
_GRAM_PAIRS_RATIO = 40                      # score sampled pairs by matrix products when rows^2 < this x pairs
SAMPLING = ("stratified", "uniform")         # impostor sampling of the impostor-matrix job
STRATUM_FALSE_MATCHES = 10                  # stratified sampling: >= this / target FMR pairs per pair of groups
SCORE_TARGETS = {1e-2: "fnmr_at_fmr_1e_2", 1e-3: "fnmr_at_fmr_1e_3"}   # a scores job's FNMR columns


@dataclass
class _Scores:
    """Scored pairs of a set of rows; pair members are positions in that set (a < b)."""

    gen_a: np.ndarray
    gen_b: np.ndarray
    gen: np.ndarray
    imp_a: np.ndarray
    imp_b: np.ndarray
    imp: np.ndarray
    sampled: bool
    imp_pooled: np.ndarray | None = None    # stratified sample: impostors of the uniform part (pooled rates)
    imp_stratum: np.ndarray | None = None   # ... and those that estimate their pair of groups' rates

    def pooled(self) -> np.ndarray:
        """Mask of the impostors that pooled rates (the global threshold, the EER over all) count."""
        return np.ones(len(self.imp), bool) if self.imp_pooled is None else self.imp_pooled

    def stratum(self) -> np.ndarray:
        """Mask of the impostors that the per-pair-of-groups rates count."""
        return np.ones(len(self.imp), bool) if self.imp_stratum is None else self.imp_stratum


# ------------------------------------------------------------------------------------------------- pairs ---
def genuine_pairs(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All pairs (a, b), a < b, of positions with the same identity code, sorted by (a, b)."""
    order = np.argsort(codes, kind="stable")
    sorted_codes = codes[order]
    starts = np.flatnonzero(np.r_[True, sorted_codes[1:] != sorted_codes[:-1]])
    sizes = np.diff(np.r_[starts, len(codes)])
    parts_a, parts_b = [np.empty(0, np.int64)], [np.empty(0, np.int64)]
    for k in np.unique(sizes[sizes >= 2]):
        first = starts[sizes == k][:, None]
        iu, ju = np.triu_indices(int(k), 1)
        parts_a.append(order[(first + iu).ravel()])
        parts_b.append(order[(first + ju).ravel()])
    a, b = np.concatenate(parts_a), np.concatenate(parts_b)
    a, b = np.minimum(a, b), np.maximum(a, b)
    o = np.lexsort((b, a))
    return a[o].astype(np.int64), b[o].astype(np.int64)


def sample_impostor_pairs(codes: np.ndarray, k: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``k`` distinct pairs (a, b), a < b, of positions with different identity codes, uniform without
    replacement, sorted by (a, b). Needs at least k such pairs."""
    n = len(codes)
    if n * (n - 1) // 2 <= 4 * k:  # dense: list every impostor pair, then choose
        keys = np.concatenate([i * n + np.flatnonzero(codes[i + 1:] != codes[i]) + i + 1 for i in range(n - 1)])
    else:  # sparse: draw uniform pairs, keep the distinct impostor ones (exchangeable, so still uniform)
        keys = np.empty(0, np.int64)
        while len(keys) < k:
            m = int(1.3 * (k - len(keys))) + 1000
            i = rng.integers(0, n, m)
            j = rng.integers(0, n - 1, m)
            j += j >= i
            lo, hi = np.minimum(i, j), np.maximum(i, j)
            keep = codes[lo] != codes[hi]
            keys = np.concatenate([keys, lo[keep] * n + hi[keep]])
            keys.sort()
            keys = keys[np.r_[True, keys[1:] != keys[:-1]]]
    keys = keys[np.sort(rng.choice(len(keys), size=k, replace=False))]
    return keys // n, keys % n


def sample_stratum(ra: np.ndarray, rb: np.ndarray, identity: np.ndarray, want: int, total: int,
                    rng: np.random.Generator, within: bool) -> np.ndarray:
    """``want`` distinct keys x * len(rb) + y of impostor pairs (ra[x], rb[y]) (x < y within a group)."""
    na, nb = len(ra), len(rb)

    def valid(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        ok = identity[ra[x]] != identity[rb[y]]
        return ok & (x < y) if within else ok

    if want == total or total <= 4 * want:        # dense: enumerate the stratum
        x, y = np.divmod(np.arange(na * nb, dtype=np.int64), nb)
        keys = (x * nb + y)[valid(x, y)]
        return np.sort(rng.choice(keys, size=want, replace=False)) if want < len(keys) else keys
    keys = np.empty(0, np.int64)
    while len(keys) < want:
        draw = int(1.3 * (want - len(keys))) + 100
        x, y = rng.integers(0, na, draw), rng.integers(0, nb, draw)
        if within:
            x, y = np.minimum(x, y), np.maximum(x, y)
        keep = valid(x, y)
        keys = np.unique(np.r_[keys, x[keep] * nb + y[keep]])
    return np.sort(rng.choice(keys, size=want, replace=False))


# ----------------------------------------------------------------------------------------------- scoring ---
def scaled_rows(block: np.ndarray, exponents: np.ndarray | None = None) -> np.ndarray:
    """``block`` as float32 with each row multiplied by 2^-e, e = the binary exponent of its largest |value| (given
    as ``exponents``, or computed): max |x| lands in [0.5, 1), so squares and sums neither overflow nor underflow
    in float32. A power of two is exact, so x and x scaled by any finite factor give the same normalised rows
    (bit for bit when the factor is a power of two), and rows of ordinary size are normalised exactly as
    without it."""
    b = np.asarray(block, dtype=np.float32)
    if exponents is None:
        exponents = np.frexp(np.abs(b).max(axis=1, initial=0))[1]
    return np.ldexp(b, -np.asarray(exponents)[:, None])


@dataclass(frozen=True)
class RowNorms:
    """Per row of X[rows]: the exponent of :func:`scaled_rows` and the inverse L2 norm of the scaled row."""

    exponent: np.ndarray   # (k,) int32
    inv: np.ndarray        # (k,) float32

    def unit(self, X: np.ndarray, rows: np.ndarray, positions: np.ndarray | slice = slice(None)) -> np.ndarray:
        """The L2-normalised float32 rows X[rows[positions]]."""
        return scaled_rows(X[rows[positions]], self.exponent[positions]) * self.inv[positions, None]


def row_norms(X: np.ndarray, rows: np.ndarray) -> RowNorms:
    """:class:`RowNorms` of X[rows], block by block; InputError when a row is all zeros."""
    exponent = np.empty(len(rows), np.int32)
    norm = np.empty(len(rows), np.float32)
    for s in range(0, len(rows), _NORM_BLOCK):
        block = np.asarray(X[rows[s:s + _NORM_BLOCK]], dtype=np.float32)
        exponent[s:s + _NORM_BLOCK] = np.frexp(np.abs(block).max(axis=1, initial=0))[1]
        block = scaled_rows(block, exponent[s:s + _NORM_BLOCK])
        norm[s:s + _NORM_BLOCK] = np.sqrt(np.einsum("ij,ij->i", block, block))
    if not (norm > 0).all():
        raise InputError(f"{int((norm <= 0).sum())} embedding(s) are all zeros: cosine similarity is undefined")
    return RowNorms(exponent, 1.0 / norm)


def pair_scores(X: np.ndarray, rows: np.ndarray, norms: RowNorms, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of pairs (rows[a], rows[b]) of X, for pairs sorted by a, a < b (``norms`` =
    :func:`row_norms` of X[rows]). Many pairs among few rows: blocked matrix products, keeping the pairs' entries;
    otherwise one matrix-vector product per distinct a (memory traffic ~ pairs x d instead of compute ~ rows^2 x
    d)."""
    out = np.empty(len(a), np.float32)
    if len(a) == 0:
        return out
    if len(rows) ** 2 < _GRAM_PAIRS_RATIO * len(a):
        Xn = norms.unit(X, rows)
        bounds = np.searchsorted(a, np.arange(0, len(rows) + _GRAM_BLOCK, _GRAM_BLOCK))
        for blk, (s, e) in enumerate(zip(bounds[:-1].tolist(), bounds[1:].tolist())):
            if s < e:
                i0 = blk * _GRAM_BLOCK
                G = Xn[i0:i0 + _GRAM_BLOCK] @ Xn[i0:].T
                out[s:e] = G[a[s:e] - i0, b[s:e] - i0]
        return out
    starts = np.flatnonzero(np.r_[True, a[1:] != a[:-1]])
    ends = np.r_[starts[1:], len(a)]
    for s, e in zip(starts.tolist(), ends.tolist()):
        out[s:e] = (scaled_rows(X[rows[b[s:e]]], norms.exponent[b[s:e]])
                    @ scaled_rows(X[rows[a[s:s + 1]]], norms.exponent[a[s:s + 1]])[0])
    out *= norms.inv[a]
    out *= norms.inv[b]
    return out


def _all_pair_scores(X: np.ndarray, rows: np.ndarray, norms: RowNorms, codes: np.ndarray) -> _Scores:
    Xn = norms.unit(X, rows)
    gen, imp = ([], [], []), ([], [], [])
    for i0 in range(0, len(rows), _GRAM_BLOCK):
        i1 = min(i0 + _GRAM_BLOCK, len(rows))
        G = Xn[i0:i1] @ Xn[i0:].T
        ii, jj = np.nonzero(np.arange(i0, i1)[:, None] < np.arange(i0, len(rows))[None, :])
        s = G[ii, jj]
        ii, jj = ii + i0, jj + i0
        same = codes[ii] == codes[jj]
        for out, mask in ((gen, same), (imp, ~same)):
            out[0].append(ii[mask])
            out[1].append(jj[mask])
            out[2].append(s[mask])
    return _Scores(*(np.concatenate(p) for p in gen), *(np.concatenate(p) for p in imp), sampled=False)


def _check_codes(X: np.ndarray, identity_codes: np.ndarray) -> np.ndarray:
    if X.ndim != 2:
        raise InputError(f"embedding matrix must be 2-D, got shape {X.shape}")
    identity_codes = np.asarray(identity_codes)
    if identity_codes.shape != (len(X),):
        raise InputError(f"identity codes must have one entry per embedding row ({len(X)}), "
                         f"got shape {identity_codes.shape}")
    return identity_codes


def score_pairs(X: np.ndarray, identity_codes: np.ndarray, rows: np.ndarray, *, seed: int,
                max_impostor_pairs: int, what: str) -> _Scores:
    """Genuine and impostor scores of the images ``rows`` of X (all impostor pairs, or a seeded sample)."""
    X = np.asarray(X)
    identity_codes = _check_codes(X, identity_codes)
    if isinstance(max_impostor_pairs, bool) or not isinstance(max_impostor_pairs, (int, np.integer)) \
            or max_impostor_pairs < 1:
        raise InputError(f"max_impostor_pairs must be a positive integer, got {max_impostor_pairs!r}")
    rows = check_rows(rows, len(X), what)
    if len(np.unique(rows)) != len(rows):
        raise InputError(f"{what}: a row is listed twice")
    codes = identity_codes[rows]
    gen_a, gen_b = genuine_pairs(codes)
    if len(gen_a) == 0:
        raise InputError(f"{what}: no identity has two images, so there are no genuine pairs to score")
    n_impostor = len(rows) * (len(rows) - 1) // 2 - len(gen_a)
    if n_impostor == 0:
        raise InputError(f"{what}: all images belong to one identity, so there are no impostor pairs to score")
    norms = row_norms(X, rows)
    if n_impostor <= max_impostor_pairs:
        return _all_pair_scores(X, rows, norms, codes)
    imp_a, imp_b = sample_impostor_pairs(codes, int(max_impostor_pairs), np.random.default_rng(seed))
    return _Scores(gen_a, gen_b, pair_scores(X, rows, norms, gen_a, gen_b),
                   imp_a, imp_b, pair_scores(X, rows, norms, imp_a, imp_b), sampled=True)


def stratum_sizes(codes: np.ndarray, group: np.ndarray, n_groups: int) -> np.ndarray:
    """(G, G) upper-triangular count of impostor pairs per pair of groups (a <= b) among positions with identity
    ``codes`` and group codes ``group`` (an identity lies in one group)."""
    sizes = np.bincount(group, minlength=n_groups).astype(np.int64)
    out = np.triu(np.outer(sizes, sizes), 1)
    _, first, per_identity = np.unique(codes, return_index=True, return_counts=True)
    same = np.bincount(group[first], weights=per_identity * (per_identity - 1) // 2, minlength=n_groups)
    out[np.diag_indices(n_groups)] = sizes * (sizes - 1) // 2 - same.astype(np.int64)
    return out


def stratify(sc: _Scores, X: np.ndarray, rows: np.ndarray, codes: np.ndarray, group: np.ndarray, n_groups: int, *,
             target_fmr: float, seed: int) -> _Scores:
    """Top up a uniform impostor sample so that every pair of groups (a <= b) has at least
    n_min = ceil(:data:`STRATUM_FALSE_MATCHES` / target_fmr) sampled pairs (all of its pairs when it has fewer).

    A starved pair of groups gets a fresh uniform sample of that size from its own pairs
    (:func:`sample_stratum`, seeded by ``seed``), which alone estimates its rates; its pairs of the
    uniform sample then only serve the pooled rates. So pooled rates (global threshold, EER over all) use the
    uniform sample, unweighted, and each pair of groups' rates a uniform sample of that pair — no weights."""
    n_min = math.ceil(STRATUM_FALSE_MATCHES / rates.target_fraction(target_fmr))
    total = stratum_sizes(codes, group, n_groups)
    ga, gb = group[sc.imp_a], group[sc.imp_b]
    lo, hi = np.minimum(ga, gb), np.maximum(ga, gb)
    have = np.zeros((n_groups, n_groups), np.int64)
    np.add.at(have, (lo, hi), 1)
    starved = np.triu((have < np.minimum(n_min, total)) & (total > 0))
    if not starved.any():
        return sc
    rng = np.random.default_rng([seed, 1])
    members = [np.flatnonzero(group == g) for g in range(n_groups)]
    extra_a, extra_b = [], []
    for a, b in zip(*np.nonzero(starved)):
        ra, rb = members[a], members[b]
        keys = sample_stratum(ra, rb, codes, int(min(n_min, total[a, b])), int(total[a, b]), rng, a == b)
        x, y = ra[keys // len(rb)], rb[keys % len(rb)]
        extra_a.append(np.minimum(x, y))
        extra_b.append(np.maximum(x, y))
    ea, eb = np.concatenate(extra_a), np.concatenate(extra_b)
    o = np.lexsort((eb, ea))
    ea, eb = ea[o], eb[o]
    norms = row_norms(X, rows)
    n_uniform = len(sc.imp)
    return _Scores(sc.gen_a, sc.gen_b, sc.gen, np.r_[sc.imp_a, ea], np.r_[sc.imp_b, eb],
                   np.r_[sc.imp, pair_scores(X, rows, norms, ea, eb)], sampled=True,
                   imp_pooled=np.r_[np.ones(n_uniform, bool), np.zeros(len(ea), bool)],
                   imp_stratum=np.r_[~starved[lo, hi], np.ones(len(ea), bool)])


# ----------------------------------------------------------------------------------------------- metrics ---
def eer_from_roc(fpr: np.ndarray, fnr: np.ndarray, thresholds: np.ndarray) -> tuple[float, float]:
    """(EER, its threshold): the crossing of FMR and FNMR, interpolated between the two ROC operating points
    around it (operating points in roc_curve's order: decreasing threshold)."""
    d = fpr - fnr  # -1 at the first point (nothing accepted), +1 at the last (everything accepted)
    k = int(np.argmax(d >= 0))
    w = d[k - 1] / (d[k - 1] - d[k])
    eer = fpr[k - 1] + w * (fpr[k] - fpr[k - 1])
    t0, t1 = thresholds[k - 1], thresholds[k]
    return float(eer), float(t1 if not np.isfinite(t0) else t0 + w * (t1 - t0))


def threshold_at_fmr(impostor: np.ndarray, target_fmr: float) -> float:
    """The lowest observed impostor score whose FMR (share of impostor scores >= it) is at most ``target_fmr``
    (next float above the highest impostor score if none): biasgrid's one threshold convention, in exact
    integer arithmetic (see :mod:`tasks.rates`; 3e-4 x 5,000,000 allows 1500 false matches, not 1499)."""
    return rates.threshold_at_fmr(impostor, target_fmr)


def rates_on_grid(genuine: np.ndarray, impostor: np.ndarray,
                  thresholds: np.ndarray = THRESHOLDS) -> tuple[np.ndarray, np.ndarray]:
    """(FMR, FNMR) at each threshold: share of impostor scores >= t, share of genuine scores < t."""
    g, i = np.sort(genuine), np.sort(impostor)
    fmr = 1.0 - np.searchsorted(i, thresholds, side="left") / len(i)
    fnmr = np.searchsorted(g, thresholds, side="left") / len(g)
    return fmr, fnmr


def _histogram(kind: str, scores: np.ndarray) -> pd.DataFrame:
    counts, _ = np.histogram(np.clip(scores, HIST_EDGES[0], HIST_EDGES[-1]), bins=HIST_EDGES)
    return pd.DataFrame({"kind": kind, "bin_left": HIST_EDGES[:-1], "bin_right": HIST_EDGES[1:],
                         "count": counts.astype(np.int64)})


def score_group(X: np.ndarray, identity_codes: np.ndarray, rows: np.ndarray, *, seed: int,
                max_impostor_pairs: int = 5_000_000, n_resamples: int = 0, strata: np.ndarray | None = None,
                confidence: float = rates.CONFIDENCE) -> dict[str, pd.DataFrame]:
    """Verification scores of the images ``rows`` of X (identity_codes: one code per row of X).

    Returns ``{"verification": one row (eer, eer_threshold, fnmr_at_fmr_1e_2, fnmr_at_fmr_1e_3, genuine_mean,
    impostor_mean, n_genuine, n_impostor, impostor_sampled, and with ``n_resamples`` > 0 the identity bootstrap's
    95% percentile interval of the EER and of both FNMRs, seeded by ``seed``, resampling identities within each
    stratum of ``strata`` (one code per row of X, e.g. gender; default one stratum): <metric>_ci_low/_ci_high,
    n_resamples), "verification_curve": (threshold, fmr, fnmr) on :data:`THRESHOLDS`, "verification_hist": (kind,
    bin_left, bin_right, count) on :data:`HIST_EDGES`}``."""
    sc = score_pairs(X, identity_codes, rows, seed=seed, max_impostor_pairs=max_impostor_pairs,
                     what="verification group")
    labels = np.r_[np.ones(len(sc.gen), np.int8), np.zeros(len(sc.imp), np.int8)]
    fpr, tpr, thr = roc_curve(labels, np.r_[sc.gen, sc.imp], drop_intermediate=False)
    fnr = 1.0 - tpr
    eer, eer_threshold = eer_from_roc(fpr, fnr, thr)

    def fnmr_at(target: float) -> float:  # at the convention's threshold (tasks.rates), not the ROC's
        t = threshold_at_fmr(sc.imp, target)
        return float(np.count_nonzero(sc.gen < t) / len(sc.gen))

    summary = pd.DataFrame([{
        "eer": eer, "eer_threshold": eer_threshold,
        **{name: fnmr_at(target) for target, name in SCORE_TARGETS.items()},
        "genuine_mean": float(sc.gen.mean(dtype=np.float64)), "impostor_mean": float(sc.imp.mean(dtype=np.float64)),
        "n_genuine": int(len(sc.gen)), "n_impostor": int(len(sc.imp)), "impostor_sampled": sc.sampled,
    }])
    if n_resamples:
        rows = check_rows(rows, len(X), "verification group")
        summary = summary.assign(**_interval_columns(sc, np.asarray(identity_codes)[rows],
                                                     None if strata is None else np.asarray(strata)[rows],
                                                     int(n_resamples), seed, confidence))
    else:
        summary = summary.assign(n_resamples=0, **{f"{m}_{end}": np.nan for m in ("eer", *SCORE_TARGETS.values())
                                                   for end in ("ci_low", "ci_high")})
    fmr, fnmr = rates_on_grid(sc.gen, sc.imp)
    curve = pd.DataFrame({"threshold": THRESHOLDS, "fmr": fmr, "fnmr": fnmr})
    hist = pd.concat([_histogram("genuine", sc.gen), _histogram("impostor", sc.imp)], ignore_index=True)
    return {"verification": summary, "verification_curve": curve, "verification_hist": hist}


def _interval_columns(sc: _Scores, codes: np.ndarray, strata: np.ndarray | None, n_resamples: int, seed: int,
                      confidence: float) -> dict[str, float]:
    """The identity bootstrap of a scores job's EER and FNMR at FMR 1e-2 and 1e-3: <metric>_ci_low/_ci_high."""
    ident, id_code = np.unique(codes, return_inverse=True)
    id_group = np.zeros(len(ident), np.int64)
    if strata is not None:
        _, stratum = np.unique(strata, return_inverse=True)
        id_group[id_code] = stratum
    names = [str(g) for g in range(int(id_group.max()) + 1)]
    table = bootstrap.bootstrap_verification(
        np.r_[sc.gen, sc.imp], id_code[np.r_[sc.gen_a, sc.imp_a]], id_code[np.r_[sc.gen_b, sc.imp_b]], id_group,
        names, target_fmrs=tuple(SCORE_TARGETS), global_target_fmr=1e-3, n_resamples=n_resamples, seed=seed,
        confidence=confidence)
    out: dict[str, float] = {"n_resamples": n_resamples}
    for row in table[table["group_a"] == "all"].itertuples():
        name = "eer" if row.quantity == "eer" else SCORE_TARGETS[row.target_fmr]
        out[f"{name}_ci_low"], out[f"{name}_ci_high"] = float(row.ci_low), float(row.ci_high)
    return out


def impostor_matrix(X: np.ndarray, identity_codes: np.ndarray, demographic_group: np.ndarray, rows: np.ndarray, *,
                    seed: int, target_fmr: float = 1e-3, max_impostor_pairs: int = 5_000_000,
                    target_fmrs: Sequence[float] = (), n_resamples: int = 0, sampling: str = "stratified",
                    confidence: float = rates.CONFIDENCE) -> dict[str, pd.DataFrame]:
    """Cross-group false matches at ONE global threshold, as in NIST's demographic-effects reports, with counts,
    exact intervals, per-group operating points and the identity bootstrap.

    The threshold gives FMR = ``target_fmr`` over all impostor pairs of ``rows`` (all, or a seeded uniform
    sample of ``max_impostor_pairs``), by the convention of :mod:`tasks.rates`. With ``sampling="stratified"``
    a sample is topped up per pair of groups (:func:`stratify`): pooled numbers (the threshold, the EER and FNMR
    over all) come from the uniform sample, each pair of groups' counts from a uniform sample of its own pairs of
    at least ``STRATUM_FALSE_MATCHES / target_fmr`` pairs. ``demographic_group`` has one
    group name per row of X (e.g. "asian_female"). Returns

    - ``"impostor_matrix"``: group_a, group_b, fmr = false_matches / n_pairs, false_matches, n_pairs, threshold,
      ci_low, ci_high (Clopper-Pearson), display (k/n, "<= 3/n" for k = 0), resolved, reason (every ordered pair
      of groups, a group with itself included; symmetric);
    - ``"demographic_rates"``: group, fmr, fnmr, threshold, n_genuine, n_impostor, false_matches,
      false_non_matches, fmr_ci_low/_high, fnmr_ci_low/_high (CP), resolved, reason (each group's own impostor
      FMR and genuine FNMR at that threshold);
    - when ``target_fmrs`` is given, ``"group_eer"`` and ``"operating_points"``: :func:`tasks.rates.
      group_operating_points` (each group's EER, its own threshold at each target and the global one);
    - when ``n_resamples`` > 0, ``"verification_ci"``: :func:`tasks.bootstrap.bootstrap_verification` seeded by
      ``seed`` (EER, FNMR at each target, per-group and cross-group rates at the global threshold and the
      differential summaries of :func:`tasks.fairness.summaries`, each with its 95% percentile interval).
    """
    if not (isinstance(target_fmr, (int, float)) and 0.0 < target_fmr < 1.0):
        raise InputError(f"target_fmr must be between 0 and 1, got {target_fmr!r}")
    X = np.asarray(X)
    demographic_group = np.asarray(demographic_group)
    if demographic_group.shape != (len(X),):
        raise InputError(f"demographic groups must have one entry per embedding row ({len(X)}), "
                         f"got shape {demographic_group.shape}")
    rows = check_rows(rows, len(X), "impostor matrix")
    labels = demographic_group[rows]
    if not all(isinstance(v, str) and v for v in labels.tolist()):
        raise InputError("impostor matrix: every selected row needs a demographic group name")
    names, group = np.unique(labels.astype(str), return_inverse=True)
    codes = _check_codes(np.asarray(X), identity_codes)[rows]
    spans = pd.Series(group).groupby(codes).nunique()
    if (spans > 1).any():
        raise InputError(f"impostor matrix: identity code {spans.index[spans > 1][0]} has images in more than one "
                         f"demographic group")
    if sampling not in SAMPLING:
        raise InputError(f"impostor sampling must be one of {', '.join(SAMPLING)}, got {sampling!r}")
    sc = score_pairs(X, identity_codes, rows, seed=seed, max_impostor_pairs=max_impostor_pairs,
                     what="impostor matrix")
    G = len(names)
    if sampling == "stratified" and sc.sampled:
        sc = stratify(sc, X, rows, codes, group, G, target_fmr=target_fmr, seed=seed)
    pooled, stratum = sc.pooled(), sc.stratum()
    threshold = threshold_at_fmr(sc.imp[pooled], target_fmr)

    ga, gb = group[sc.imp_a[stratum]], group[sc.imp_b[stratum]]
    key = np.minimum(ga, gb) * G + np.maximum(ga, gb)
    n_pairs = np.bincount(key, minlength=G * G).reshape(G, G)
    false_matches = np.bincount(key, weights=sc.imp[stratum] >= threshold,
                                minlength=G * G).reshape(G, G).astype(np.int64)
    n_pairs = np.triu(n_pairs) + np.triu(n_pairs, 1).T
    false_matches = np.triu(false_matches) + np.triu(false_matches, 1).T
    cells = rates.rate_frame(false_matches.ravel(), n_pairs.ravel(), confidence=confidence)
    resolved = [rates.resolution(n, k, target_fmr) for k, n in zip(false_matches.ravel(), n_pairs.ravel())]
    matrix = pd.DataFrame({"group_a": np.repeat(names, G), "group_b": np.tile(names, G), "fmr": cells["rate"],
                           "false_matches": cells["k"], "n_pairs": cells["n"], "threshold": threshold,
                           "ci_low": cells["ci_low"], "ci_high": cells["ci_high"], "display": cells["display"],
                           "resolved": [r[0] for r in resolved], "reason": [r[1] for r in resolved]})

    gen_group = group[sc.gen_a]
    n_gen = np.bincount(gen_group, minlength=G)
    false_non = np.bincount(gen_group, weights=sc.gen < threshold, minlength=G).astype(np.int64)
    fm = rates.rate_frame(np.diag(false_matches), np.diag(n_pairs), confidence=confidence)
    fn = rates.rate_frame(false_non, n_gen, confidence=confidence)
    own = [rates.resolution(n, k, target_fmr) for k, n in zip(fm["k"], fm["n"])]
    out = {"impostor_matrix": matrix, "demographic_rates": pd.DataFrame({
        "group": names, "fmr": fm["rate"], "fnmr": fn["rate"], "threshold": threshold, "n_genuine": fn["n"],
        "n_impostor": fm["n"], "false_matches": fm["k"], "false_non_matches": fn["k"],
        "fmr_ci_low": fm["ci_low"], "fmr_ci_high": fm["ci_high"], "fnmr_ci_low": fn["ci_low"],
        "fnmr_ci_high": fn["ci_high"], "resolved": [r[0] for r in own], "reason": [r[1] for r in own]})}
    if len(target_fmrs):
        ops = rates.group_operating_points(sc.gen, names[group[sc.gen_a]], sc.imp[stratum], names[ga], names[gb],
                                           target_fmrs=target_fmrs, global_target_fmr=target_fmr,
                                           groups=list(names), confidence=confidence,
                                           pooled_impostor=sc.imp[pooled])
        out["group_eer"], out["operating_points"] = ops["eer"], ops["operating_points"]
    if n_resamples:
        ident, id_code = np.unique(codes, return_inverse=True)      # identities of rows -> 0..n_identities-1
        id_group = np.zeros(len(ident), np.int64)
        id_group[id_code] = group
        out["verification_ci"] = bootstrap.bootstrap_verification(
            np.r_[sc.gen, sc.imp], id_code[np.r_[sc.gen_a, sc.imp_a]], id_code[np.r_[sc.gen_b, sc.imp_b]],
            id_group, list(names), target_fmrs=tuple(target_fmrs) or (target_fmr,), global_target_fmr=target_fmr,
            n_resamples=int(n_resamples), seed=seed, confidence=confidence, summarize=fairness.summaries,
            pooled=np.r_[np.ones(len(sc.gen), bool), pooled], stratum=np.r_[np.ones(len(sc.gen), bool), stratum])
    return out


# ------------------------------------------------------------------------------------------------ the kinds ---
def _plan_scores(cfg: Mapping[str, Any]) -> Iterator[PlannedJob]:
    """One scores job per seed x test group (when verification is enabled)."""
    v, g = cfg["verification"], cfg["grid"]
    if not v["enabled"]:
        return
    for seed, test_group in itertools.product(g["seeds"], g["test_groups"]):
        params = {"test_group": test_group, "max_impostor_pairs": v["max_impostor_pairs"],
                  "bootstrap": v["bootstrap"]}
        yield PlannedJob(seed, params, f"scores test={test_group} seed={seed}")


def run_scores(payload: Mapping[str, Any], data: Mapping[str, np.ndarray]) -> dict[str, pd.DataFrame]:
    """Worker entry of a scores job: the verification summary, curve and histogram rows of one test group."""
    p, seed = payload["params"], payload["seed"]
    out = score_group(data["X"], data["identity_codes"], payload["rows"], seed=seed,
                      max_impostor_pairs=p["max_impostor_pairs"], n_resamples=p.get("bootstrap", 0),
                      strata=data["gender"])
    return {name: df.assign(test_group=p["test_group"], seed=seed) for name, df in out.items()}


def _plan_impostor(cfg: Mapping[str, Any]) -> Iterator[PlannedJob]:
    """One impostor-matrix job per seed (when verification is enabled)."""
    v, g = cfg["verification"], cfg["grid"]
    if not v["enabled"]:
        return
    for seed in g["seeds"]:
        params = {"test_groups": list(g["test_groups"]), "target_fmr": v["target_fmr"],
                  "max_impostor_pairs": v["max_impostor_pairs"], "target_fmrs": list(v["target_fmrs"]),
                  "bootstrap": v["bootstrap"], "sampling": v["sampling"]}
        yield PlannedJob(seed, params, f"impostor matrix seed={seed}")


def run_impostor(payload: Mapping[str, Any], data: Mapping[str, np.ndarray]) -> dict[str, pd.DataFrame]:
    """Worker entry of an impostor-matrix job: the cross-group FMR matrix and each group's rates."""
    p, seed, rows = payload["params"], payload["seed"], payload["rows"]
    X = data["X"]
    demographic = np.empty(len(X), dtype=object)
    demographic[rows] = demographic_names(data["ethnicity"][rows], data["gender"][rows],
                                          tuple(data["ethnicity_names"]))
    out = impostor_matrix(X, data["identity_codes"], demographic, rows, seed=seed, target_fmr=p["target_fmr"],
                          max_impostor_pairs=p["max_impostor_pairs"], target_fmrs=p.get("target_fmrs", ()),
                          n_resamples=p.get("bootstrap", 0), sampling=p.get("sampling", "uniform"))
    return {name: df.assign(seed=seed) for name, df in out.items()}


SCORES = JobKind("scores", plan=_plan_scores, rows=lambda p, split: {"rows": split.verification[p["test_group"]]},
                 run="tasks.verification:run_scores",
                 tables=("verification", "verification_curve", "verification_hist"), order=0,
                 cost=lambda p: 1 + p.get("bootstrap", 0) // 200)
IMPOSTOR = JobKind("impostor", plan=_plan_impostor,
                   rows=lambda p, split: {"rows": np.concatenate([split.verification[g] for g in p["test_groups"]])},
                   run="tasks.verification:run_impostor",
                   tables=("impostor_matrix", "demographic_rates", "group_eer", "operating_points", "verification_ci"),
                   order=1, cost=lambda p: 1 + p.get("bootstrap", 0) // 100)
