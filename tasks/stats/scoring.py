"""Verification scoring on arrays: genuine and impostor pairs of a set of rows, their cosine similarities, and
rates on a fixed threshold grid (used by the scores and impostor-matrix kinds, ``tasks.kinds.scores`` / ``impostor``).

- Genuine pairs: every pair of two images of the same identity. Impostor pairs: pairs of images of different
  identities, all of them when there are at most ``max_impostor_pairs``, otherwise a uniform sample without
  replacement of exactly that many, drawn from ``seed`` (``impostor_sampled`` says which); the impostor-matrix
  job tops a sample up per pair of demographic groups (:func:`stratify`, ``[verification] sampling``).
- All pairs are scored with blocked matrix products (``_GRAM_BLOCK`` rows at a time). Sampled pairs (sorted by
  their first image) too when they are many for the group's size (the normalised rows are then copied, at most
  ~14K x d); otherwise with one matrix-vector product per image, from the rows scaled once (a float32 copy of
  at most ``_SCALED_COPY_BYTES``; beyond it each product scales its own rows, so X is not copied and can be a
  memory map). Memory is bounded by the pair count plus one block of products (or that copy).
  Rows are first scaled by a power of two (:func:`scaled_rows`), so embeddings of any finite float32 size
  (x 1e20, x 1e-42) give the same cosines as at ordinary size, never an overflow to 0 or an underflow.
- EER: where FMR and FNMR cross on the ROC curve (every operating point: scikit-learn's ``roc_curve``, as
  :func:`tasks.stats.rates.sorted_roc` computes it from sorted scores), linearly
  interpolated between the two operating points around the crossing (:func:`tasks.stats.rates.eer_at_crossing`).
  FNMR at FMR = x: the FNMR at the threshold of :func:`tasks.stats.rates.threshold_at_fmr` (the lowest observed
  impostor score with FMR <= x, integer arithmetic). A pair is accepted when its score >= threshold.
- A score transform (:data:`ScoreTransform`, a fitted score mitigation, ``tasks.kinds.mitigated_verification``)
  replaces every score of a set of scored pairs (:func:`transformed`); its scores may leave [-1, 1] (or be
  probabilities), so every number on them takes its thresholds from the data, none from a fixed grid.
- FMR/FNMR curves on a fixed grid of :data:`THRESHOLDS` and histograms on fixed :data:`HIST_EDGES`, the same for
  every job, so curves can be averaged over seeds and densities drawn without the raw scores.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from storage.errors import InputError
from tasks.runtime import check_rows
from tasks.stats import rates

THRESHOLDS = np.linspace(-1.0, 1.0, 1001)   # FMR/FNMR curve grid, the same for every job
_GRAM_BLOCK = 1024                          # rows per block when scoring all pairs
_NORM_BLOCK = 8192                          # rows per block when computing norms
_GRAM_PAIRS_RATIO = 40                      # score sampled pairs by matrix products when rows^2 < this x pairs
_SCALED_COPY_BYTES = 128 << 20              # otherwise: the rows scaled once into a copy of at most this size
STRATUM_FALSE_MATCHES = 10                  # stratified sampling: >= this / target FMR pairs per pair of groups
# transform(rows, a, b, scores) -> new scores of the pairs (rows[a[i]], rows[b[i]]) of X scored ``scores``
ScoreTransform = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], np.ndarray]


@dataclass
class Scores:
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
    norms: RowNorms | None = None           # the rows' norms (:func:`row_norms`), kept for scoring more pairs

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
    if len(rows) * X.shape[1] * 4 <= _SCALED_COPY_BYTES:   # scale every row once, not once per pair (same values)
        S = scaled_rows(X[rows], norms.exponent)
        for s, e in zip(starts.tolist(), ends.tolist()):
            out[s:e] = S[b[s:e]] @ S[a[s]]
    else:
        for s, e in zip(starts.tolist(), ends.tolist()):
            out[s:e] = (scaled_rows(X[rows[b[s:e]]], norms.exponent[b[s:e]])
                        @ scaled_rows(X[rows[a[s:s + 1]]], norms.exponent[a[s:s + 1]])[0])
    out *= norms.inv[a]
    out *= norms.inv[b]
    return out


def _all_pair_scores(X: np.ndarray, rows: np.ndarray, norms: RowNorms, codes: np.ndarray) -> Scores:
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
    return Scores(*(np.concatenate(p) for p in gen), *(np.concatenate(p) for p in imp), sampled=False)


def check_codes(X: np.ndarray, identity_codes: np.ndarray) -> np.ndarray:
    if X.ndim != 2:
        raise InputError(f"embedding matrix must be 2-D, got shape {X.shape}")
    identity_codes = np.asarray(identity_codes)
    if identity_codes.shape != (len(X),):
        raise InputError(f"identity codes must have one entry per embedding row ({len(X)}), "
                         f"got shape {identity_codes.shape}")
    return identity_codes


def score_pairs(X: np.ndarray, identity_codes: np.ndarray, rows: np.ndarray, *, seed: int,
                max_impostor_pairs: int, what: str) -> Scores:
    """Genuine and impostor scores of the images ``rows`` of X (all impostor pairs, or a seeded sample)."""
    X = np.asarray(X)
    identity_codes = check_codes(X, identity_codes)
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
    return Scores(gen_a, gen_b, pair_scores(X, rows, norms, gen_a, gen_b),
                   imp_a, imp_b, pair_scores(X, rows, norms, imp_a, imp_b), sampled=True, norms=norms)


def stratum_sizes(codes: np.ndarray, group: np.ndarray, n_groups: int) -> np.ndarray:
    """(G, G) upper-triangular count of impostor pairs per pair of groups (a <= b) among positions with identity
    ``codes`` and group codes ``group`` (an identity lies in one group)."""
    sizes = np.bincount(group, minlength=n_groups).astype(np.int64)
    out = np.triu(np.outer(sizes, sizes), 1)
    _, first, per_identity = np.unique(codes, return_index=True, return_counts=True)
    same = np.bincount(group[first], weights=per_identity * (per_identity - 1) // 2, minlength=n_groups)
    out[np.diag_indices(n_groups)] = sizes * (sizes - 1) // 2 - same.astype(np.int64)
    return out


def stratify(sc: Scores, X: np.ndarray, rows: np.ndarray, codes: np.ndarray, group: np.ndarray, n_groups: int, *,
             target_fmr: float, seed: int) -> Scores:
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
    norms = row_norms(X, rows) if sc.norms is None else sc.norms
    n_uniform = len(sc.imp)
    return Scores(sc.gen_a, sc.gen_b, sc.gen, np.r_[sc.imp_a, ea], np.r_[sc.imp_b, eb],
                   np.r_[sc.imp, pair_scores(X, rows, norms, ea, eb)], sampled=True,
                   imp_pooled=np.r_[np.ones(n_uniform, bool), np.zeros(len(ea), bool)],
                   imp_stratum=np.r_[~starved[lo, hi], np.ones(len(ea), bool)], norms=norms)


def transformed(sc: Scores, rows: np.ndarray, transform: ScoreTransform | None) -> Scores:
    """``sc`` (pairs of positions in ``rows``) with every score replaced by ``transform`` (genuine and impostor
    pairs in one call), as float64; ``sc`` itself when ``transform`` is None. InputError when the transform does
    not give one finite score per pair."""
    if transform is None:
        return sc
    n = len(sc.gen)
    new = np.asarray(transform(np.asarray(rows), np.r_[sc.gen_a, sc.imp_a], np.r_[sc.gen_b, sc.imp_b],
                               np.r_[sc.gen, sc.imp].astype(np.float64)), dtype=np.float64)
    if new.shape != (n + len(sc.imp),):
        raise InputError(f"score transform returned shape {new.shape} for {n + len(sc.imp)} pairs")
    if not np.isfinite(new).all():
        raise InputError(f"score transform returned {int((~np.isfinite(new)).sum())} non-finite score(s)")
    return replace(sc, gen=new[:n], imp=new[n:])


# ----------------------------------------------------------------------------------------------- metrics ---
def rates_on_grid(genuine: np.ndarray, impostor: np.ndarray,
                  thresholds: np.ndarray = THRESHOLDS) -> tuple[np.ndarray, np.ndarray]:
    """(FMR, FNMR) at each threshold: share of impostor scores >= t, share of genuine scores < t."""
    g, i = np.sort(genuine), np.sort(impostor)
    fmr = 1.0 - np.searchsorted(i, thresholds, side="left") / len(i)
    fnmr = np.searchsorted(g, thresholds, side="left") / len(g)
    return fmr, fnmr
