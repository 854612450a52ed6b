"""Identity bootstrap: 95% intervals of verification numbers within one seed.

Comparisons that share an identity are not independent, so the resampling unit is the identity, not the
comparison (Bolle et al.'s "subsets bootstrap"; ISO/IEC 19795-1 cl. 8). One resample r:

- within each demographic group g (stratified: every resample keeps each group's identity count n_g), draw
  n_g of its identities with replacement; m_i = how often identity i was drawn (mean 1);
- every genuine comparison of identity i counts m_i times; every impostor comparison (i, j) counts m_i m_j
  times (the comparisons among the drawn copies); integer weights, so the counts stay integers and the
  threshold convention of :mod:`tasks.stats.rates` applies exactly;
- every statistic is recomputed on the weighted comparisons, the global threshold included.

The interval is the percentile interval: the (1-c)/2 and (1+c)/2 quantiles (numpy's linear interpolation) of the
resampled values where they are defined; ``n_defined`` says in how many resamples that was (a ratio over a zero
rate is undefined). The point estimate is the statistic on the original data (all m_i = 1).

Input is per comparison (score, identity a, identity b). :class:`BatchedVerificationStatistics` (used by
:func:`bootstrap_verification`) evaluates blocks of resamples at once — matrix products for the totals, one
gather of a sorted prefix per block — with the values of the one-resample-at-a-time
:class:`VerificationStatistics` (docs/PERFORMANCE.md, section "Identity bootstrap", for the measured times).

Over 400 lines, on purpose: both forms of the statistics (one resample at a time, and batched) share the rates at
the global threshold and the EER crossing, and are tested against each other; kept in one module so that they
keep one definition.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from storage.errors import InputError
from tasks.stats import rates

Summarize = Callable[[np.ndarray, np.ndarray], "pd.DataFrame | Mapping[str, float]"]   # per-group rates -> summaries
COLUMNS = ["quantity", "group_a", "group_b", "target_fmr", "metric", "estimate", "k", "n", "ci_low", "ci_high",
           "n_resamples", "n_defined", "cp_low", "cp_high", "display", "note"]


def identity_multiplicities(identity_group: np.ndarray, n_resamples: int = 1000, seed: int = 0,
                            rows: range | None = None) -> np.ndarray:
    """(n_resamples, n_identities) int32 draw counts m_i, stratified by ``identity_group``: for resample r and
    each group g in increasing code order, ``rng.integers(0, n_g, n_g)`` picks members (in increasing identity
    code order) with replacement, rng = numpy.random.default_rng(seed). ``rows`` (a range within
    0..n_resamples): only those resamples' rows, the same as in the whole matrix (the draws before them are made
    and dropped), so that any split of the resamples into blocks gives the same multiplicities."""
    g = np.asarray(identity_group)
    if g.ndim != 1 or g.size == 0:
        raise InputError("identity groups must be a non-empty 1-D array (one group code per identity)")
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, (int, np.integer)) or n_resamples < 1:
        raise InputError(f"n_resamples must be a positive integer, got {n_resamples!r}")
    rows = range(n_resamples) if rows is None else rows
    if rows.step != 1 or not 0 <= rows.start <= rows.stop <= n_resamples:
        raise InputError(f"rows must be a contiguous range within 0..{n_resamples}, got {rows!r}")
    rng = np.random.default_rng(seed)
    members = [np.flatnonzero(g == v) for v in np.unique(g)]
    out = np.zeros((len(rows), g.size), np.int32)
    for r in range(rows.stop):
        for mem in members:
            drawn = mem[rng.integers(0, mem.size, mem.size)]
            if r >= rows.start:
                out[r - rows.start] += np.bincount(drawn, minlength=g.size).astype(np.int32)
    return out


def _comparisons(scores, id_a, id_b, identity_group, group_names, target_fmrs, global_target_fmr, pooled,
                 stratum) -> tuple[np.ndarray, ...]:
    """The statistics classes' validated inputs: (scores, id_a, id_b, identity_group, genuine, pooled, stratum)."""
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    a, b = np.asarray(id_a, dtype=np.int64).reshape(-1), np.asarray(id_b, dtype=np.int64).reshape(-1)
    ig = np.asarray(identity_group, dtype=np.int64).reshape(-1)
    if a.shape != s.shape or b.shape != s.shape:
        raise InputError("scores, id_a and id_b must have the same length")
    if not np.isfinite(s).all():
        raise InputError("scores must be finite numbers")
    if s.size and (min(a.min(), b.min()) < 0 or max(a.max(), b.max()) >= ig.size):
        raise InputError(f"identity codes must index identity_group (0..{ig.size - 1})")
    G = len(group_names)
    if ig.size and (ig.min() < 0 or ig.max() >= G):
        raise InputError(f"identity group codes must index group_names (0..{G - 1})")
    gen = a == b
    pooled = np.ones(s.size, bool) if pooled is None else np.asarray(pooled, bool).reshape(-1)
    stratum = np.ones(s.size, bool) if stratum is None else np.asarray(stratum, bool).reshape(-1)
    if pooled.shape != s.shape or stratum.shape != s.shape:
        raise InputError("pooled and stratum masks need one entry per comparison")
    if not gen.any() or gen.all() or not (pooled & ~gen).any():
        raise InputError("the bootstrap needs genuine and (pooled) impostor comparisons")
    for t in (*target_fmrs, global_target_fmr):
        rates.max_accepted(t, 1)                                     # validates the targets
    return s, a, b, ig, gen, pooled, stratum


def _put_rates(put: Callable, names: Sequence[str], gt: float, acc: np.ndarray, total: np.ndarray,
               summarize: Summarize | None) -> None:
    """``put`` the rates at the global threshold ``gt``: each group's FMR and FNMR, the cross-group FMRs, the
    summaries; ``acc``/``total``: accepted / all weighted comparisons per code (pair of groups g*G + h, then
    G*G + g: genuine of group g)."""
    G = len(names)
    fmr_v, fnmr_v = np.full(G, np.nan), np.full(G, np.nan)
    for g, name in enumerate(names):
        k, n = int(acc[g * G + g]), int(total[g * G + g])
        fmr_v[g] = k / n if n else np.nan
        put(("group_fmr", name, "", gt, ""), fmr_v[g], k, n)
        n = int(total[G * G + g])
        k = n - int(acc[G * G + g])
        fnmr_v[g] = k / n if n else np.nan
        put(("group_fnmr", name, "", gt, ""), fnmr_v[g], k, n)
    for g in range(G):
        for h in range(g + 1, G):
            k, n = int(acc[g * G + h]), int(total[g * G + h])
            put(("cross_fmr", names[g], names[h], gt, ""), k / n if n else np.nan, k, n)
    if summarize is not None:
        table = summarize(fmr_v, fnmr_v)
        pairs = table.items() if isinstance(table, Mapping) else zip(table["metric"], table["value"])
        for metric, v in pairs:
            put(("summary", "", "", gt, str(metric)), float(v))


def _crossing(d: Callable[[int], float], fmr: Callable[[int], float], lo: int, hi: int) -> tuple[float, int]:
    """(EER, run hi): bisect runs between ``lo`` and ``hi`` for the first with d = FMR - FNMR >= 0 (d(lo) < 0;
    _Deeper when d(hi) < 0), then interpolate the FMR (``fmr(run)``; 0 before the first run) linearly in d."""
    if d(hi) < 0:
        raise _Deeper
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if d(mid) >= 0:
            hi = mid
        else:
            lo = mid
    d0, d1 = d(lo), d(hi)
    f0 = 0.0 if lo < 0 else fmr(lo)
    f1 = fmr(hi)
    w = d0 / (d0 - d1)
    return float(f0 + w * (f1 - f0)), hi


class _Deeper(Exception):
    """A resample needs sorted comparisons beyond the evaluated prefix."""


class _Statistics:
    """What both forms of the identity-bootstrap statistics share: their inputs (checked once, by
    :func:`_comparisons`) and settings; each form prepares its own tables in ``_prepare``."""

    def __init__(self, scores: np.ndarray, id_a: np.ndarray, id_b: np.ndarray, identity_group: np.ndarray,
                 group_names: Sequence[str], target_fmrs: Sequence[float] = (1e-2, 1e-3),
                 global_target_fmr: float = 1e-3,
                 summarize: Summarize | None = None,
                 pooled: np.ndarray | None = None, stratum: np.ndarray | None = None):
        s, a, b, ig, gen, pooled, stratum = _comparisons(scores, id_a, id_b, identity_group, group_names,
                                                        target_fmrs, global_target_fmr, pooled, stratum)
        self.G, self.names, self.n_id, self.n = len(group_names), list(group_names), ig.size, s.size
        self.targets, self.global_target, self.summarize = list(target_fmrs), global_target_fmr, summarize
        self._prepare(s, a, b, ig, gen, pooled, stratum)

    def _prepare(self, s: np.ndarray, a: np.ndarray, b: np.ndarray, ig: np.ndarray, gen: np.ndarray,
                 pooled: np.ndarray, stratum: np.ndarray) -> None:
        raise NotImplementedError


class VerificationStatistics(_Statistics):
    """The statistics of one seed's comparisons as a function of identity weights.

    scores, id_a, id_b: (m,) — a comparison is genuine when id_a == id_b; identity codes index
    ``identity_group`` (n_identities,) integer codes into ``group_names``. Statistics (keys of :meth:`evaluate`):
    EER; FNMR at each of ``target_fmrs`` (own threshold over all impostors); at the ONE global threshold
    (``global_target_fmr`` over all impostors): each group's FMR (impostors within the group) and FNMR, the
    cross-group FMR of every unordered pair of groups, and the differential summaries ``summarize(fmr, fnmr)``
    (a callable returning a DataFrame with columns metric, value — e.g. :func:`tasks.stats.fairness.summaries` —
    or a mapping metric -> value, e.g. :func:`tasks.stats.fairness.summary_values`, the same values faster).

    The comparisons are sorted once by decreasing score. A resample's totals per pair of groups come from the
    distinct identity pairs (weights m_a m_b x their comparison count), and everything else — the thresholds, the
    EER and the false matches and non-matches at the global threshold — from cumulative sums over a *prefix* of
    the sorted comparisons: the highest scores, about four times as deep as the original data's deepest
    threshold or EER crossing. A resample that needs deeper comparisons (its threshold or crossing lies beyond
    the prefix) is evaluated on all of them, so every value is exact either way; only the time differs."""

    def _prepare(self, s: np.ndarray, a: np.ndarray, b: np.ndarray, ig: np.ndarray, gen: np.ndarray,
                 pooled: np.ndarray, stratum: np.ndarray) -> None:
        G = self.G
        order = np.argsort(-s, kind="stable")
        self.val = s[order]
        self.A = a[order]
        self.B = np.where(gen, ig.size, b)[order]                        # genuine: weight m_a x 1 (sentinel)
        self.is_gen = gen[order]
        self.is_pooled = (pooled & ~gen)[order]                          # impostors of the pooled numbers
        ga, gb = ig[a], ig[b]
        code = np.where(gen, G * G + ga, np.minimum(ga, gb) * G + np.maximum(ga, gb))
        code[~(gen | stratum)] = G * G + G                               # not counted per pair of groups
        self.code = code[order]                                          # pair of groups, or G*G + own group
        first = np.r_[True, self.val[1:] != self.val[:-1]]
        self.run_id = np.cumsum(first) - 1
        self.run_start = np.flatnonzero(first)
        self.run_end = np.r_[self.run_start[1:] - 1, s.size - 1]
        key = self.A * (ig.size + 1) + self.B
        _, at, count = np.unique((key * (G * G + G + 1) + self.code) * 2 + self.is_pooled, return_index=True,
                                 return_counts=True)
        self.pair_a, self.pair_b, self.pair_code, self.pair_count = self.A[at], self.B[at], self.code[at], count
        self.pair_pooled = self.is_pooled[at]
        self.prefix = self.n
        self.prefix = self._prefix_length()

    def _prefix_length(self) -> int:
        """The prefix: sorted comparisons up to 4x (+1000) the impostor count at the original data's deepest
        needed position, extended to the end of its run of tied scores."""
        deepest = [0]
        self._evaluate(None, self.n, deepest)
        ci = np.cumsum(self.is_pooled)
        want = 4 * int(ci[deepest[0]]) + 1000
        length = int(np.searchsorted(ci, want, side="left")) + 1
        if length >= self.n:
            return self.n
        return int(self.run_end[self.run_id[length - 1]]) + 1

    def _totals(self, mm: np.ndarray | None) -> tuple[np.ndarray, int]:
        """(weighted comparisons per code: pair of groups, G*G + g: genuine of group g, then one code of those
        counted for neither; weighted pooled impostors)."""
        w = self.pair_count if mm is None else self.pair_count * mm[self.pair_a] * mm[self.pair_b]
        per_code = np.bincount(self.pair_code, weights=w, minlength=self.G * self.G + self.G + 1)
        return per_code.round().astype(np.int64), int(round(float(w[self.pair_pooled].sum())))

    def _threshold(self, ci: np.ndarray, target: float, n_imp: int) -> tuple[float, int]:
        """(threshold, P): the convention's threshold and the last sorted position accepted (-1: none), from the
        impostor cumulative weights ``ci`` of a prefix (_Deeper when the answer may lie beyond it)."""
        partial = ci.size < self.n
        m = rates.max_accepted(target, n_imp)
        p = int(np.searchsorted(ci, m, side="right")) - 1
        if partial and p == ci.size - 1:
            raise _Deeper
        for _ in range(2):
            if p < 0 or ci[p] == 0:
                break
            q = int(np.searchsorted(ci, ci[p], side="left"))               # a positive-weight impostor
            r = self.run_id[q]
            if self.run_end[r] >= ci.size:                               # a run of ties crosses the prefix's end
                raise _Deeper
            if ci[self.run_end[r]] <= m:
                return float(self.val[q]), int(self.run_end[r])
            p = int(self.run_start[r]) - 1
        q = int(np.searchsorted(ci, 1, side="left"))                     # the highest impostor present
        if q >= ci.size:
            raise _Deeper
        return float(np.nextafter(self.val[q], np.inf)), int(self.run_start[self.run_id[q]]) - 1

    def _eer(self, ci: np.ndarray, cg: np.ndarray, n_imp: int, n_gen: int) -> tuple[float, int]:
        """(EER, last sorted position it reads)."""
        ends = self.run_end[:int(np.searchsorted(self.run_end, ci.size - 1, side="right"))]  # runs inside

        def d(r: int) -> float:                                          # FMR - FNMR at run r (r = -1: +inf)
            if r < 0:
                return -1.0
            e = ends[r]
            return ci[e] / n_imp - (n_gen - cg[e]) / n_gen

        eer, hi = _crossing(d, lambda r: ci[ends[r]] / n_imp, -1, len(ends) - 1)
        return eer, int(ends[hi])

    def evaluate(self, m: np.ndarray | None = None) -> tuple[list[tuple], np.ndarray, np.ndarray, np.ndarray]:
        """(keys, values, k, n) at identity multiplicities ``m`` (None = the original data). Keys are
        (quantity, group_a, group_b, target_fmr, metric); k/n are the counts behind rates (-1 otherwise)."""
        try:
            return self._evaluate(m, self.prefix)
        except _Deeper:
            return self._evaluate(m, self.n)

    def _evaluate(self, m: np.ndarray | None, length: int, deepest: list[int] | None = None,
                  ) -> tuple[list[tuple], np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`evaluate` from the first ``length`` sorted comparisons (_Deeper when they do not suffice);
        ``deepest[0]`` receives the deepest sorted position read."""
        if m is None:
            mm = None
            w = np.ones(length, np.int64)
        else:
            mm = np.r_[np.asarray(m, dtype=np.int64).reshape(-1), 1]
            if mm.size != self.n_id + 1:
                raise InputError(f"multiplicities need one entry per identity ({self.n_id})")
            w = mm[self.A[:length]] * mm[self.B[:length]]
        ci = np.cumsum(np.where(self.is_pooled[:length], w, 0))
        cg = np.cumsum(np.where(self.is_gen[:length], w, 0))
        G, gt = self.G, self.global_target
        total, n_imp = self._totals(mm)
        n_gen = int(total[G * G:G * G + G].sum())
        if n_imp == 0 or n_gen == 0:
            raise InputError("a resample has no genuine or no impostor comparisons")
        keys, vals, ks, ns = [], [], [], []
        reads = []

        def put(key, v, k=-1, n=-1):
            keys.append(key)
            vals.append(v)
            ks.append(k)
            ns.append(n)

        eer, e = self._eer(ci, cg, n_imp, n_gen)
        reads.append(e)
        put(("eer", "all", "", np.nan, ""), eer)
        for t in self.targets:
            _, p = self._threshold(ci, t, n_imp)
            reads.append(p)
            fnm = n_gen - (int(cg[p]) if p >= 0 else 0)
            put(("fnmr_at_fmr", "all", "", t, ""), fnm / n_gen, fnm, n_gen)
        _, p = self._threshold(ci, gt, n_imp)
        reads.append(p)
        acc = np.bincount(self.code[:p + 1], weights=w[:p + 1], minlength=G * G + G + 1)
        _put_rates(put, self.names, gt, acc, total, self.summarize)
        if deepest is not None:
            deepest[0] = max(reads)
        return keys, np.asarray(vals, float), np.asarray(ks, np.int64), np.asarray(ns, np.int64)

    def replicates(self, multiplicities: np.ndarray) -> tuple[list[tuple], np.ndarray]:
        """(keys, (R, K) values), one row per resample (rows of ``multiplicities``)."""
        out = []
        keys = None
        for m in multiplicities:
            k, v, _, _ = self.evaluate(m)
            if keys is None:
                keys = k
            elif k != keys:
                raise InputError("statistic keys changed between resamples")
            out.append(v)
        return keys, np.vstack(out)


class _Prefix:
    """The first comparisons in decreasing score order (stable; every run of tied scores whole), split into the
    two streams a resample sums: pooled impostors (weights m_a m_b) and genuine comparisons (weights m_a)."""

    def __init__(self, order: np.ndarray, st: BatchedVerificationStatistics):
        self.order, self.L, self.partial = order, order.size, order.size < st.n
        self.val = st.s[order]
        is_g, G = st.gen[order], st.G
        self.A, b = st.a[order], st.b[order]
        self.B = np.where(is_g, st.n_id, b)                              # genuine: weight m_a x 1 (sentinel)
        ga, gb = st.ig[self.A], st.ig[b]
        self.code = np.where(is_g, G * G + ga, np.minimum(ga, gb) * G + np.maximum(ga, gb))
        self.code[~(is_g | st.stratum[order])] = G * G + G               # not counted per pair of groups
        first = np.r_[True, self.val[1:] != self.val[:-1]]
        self.run_id = np.cumsum(first) - 1
        self.run_start = np.flatnonzero(first)
        self.run_end = np.r_[self.run_start[1:] - 1, self.L - 1]
        is_p = st.pooled[order] & ~is_g
        self.p_pos, self.p_le = np.flatnonzero(is_p), np.cumsum(is_p)    # pooled impostors: where, how many <= p
        self.g_le = np.cumsum(is_g)
        self.pA, self.pB, self.gA = self.A[self.p_pos], self.B[self.p_pos], self.A[is_g]
        K = _Running.CHUNK                                               # each chunk's last pooled impostor
        self.chunk_pos = self.p_pos[np.minimum(np.arange(1, -(-self.p_pos.size // K) + 1) * K, self.p_pos.size) - 1]


class _Running:
    """One resample's running sums along a stream, read at a few places: totals per chunk of ``CHUNK`` entries
    up front (``chunk_cum``: cumulative at each chunk's end), a chunk's own entries summed when read."""

    CHUNK = 256

    def __init__(self, w: np.ndarray, chunk_cum: np.ndarray):
        self.w, self.cum = w, chunk_cum

    def at(self, k: int) -> int:
        """Sum of entries 0..k (0 for k < 0)."""
        if k < 0:
            return 0
        j = k // self.CHUNK
        base = int(self.cum[j - 1]) if j else 0
        return base + int(self.w[j * self.CHUNK:k + 1].sum())

    def first_above(self, v: int, strict: bool) -> int:
        """The first entry k whose running sum is > v (``strict``) or >= v; the stream's length if none."""
        side = "right" if strict else "left"
        j = int(np.searchsorted(self.cum, v, side=side))
        if j >= self.cum.size:
            return self.w.size
        run = np.cumsum(self.w[j * self.CHUNK:(j + 1) * self.CHUNK], dtype=np.int64)
        run += int(self.cum[j - 1]) if j else 0
        return j * self.CHUNK + int(np.searchsorted(run, v, side=side))


def _chunk_totals(W: np.ndarray) -> np.ndarray:
    """(entries, R) weights -> (chunks, R) cumulative sums at each chunk's end (``_Running.CHUNK`` entries)."""
    K = _Running.CHUNK
    full = W.shape[0] // K * K
    sums = W[:full].reshape(-1, K, W.shape[1]).sum(axis=1, dtype=np.int64)
    if full < W.shape[0]:
        sums = np.vstack([sums, W[full:].sum(axis=0, dtype=np.int64)])
    return np.cumsum(sums, axis=0)


class BatchedVerificationStatistics(_Statistics):
    """:class:`VerificationStatistics` (same inputs, keys and values), many resamples at a time.

    Per block of resamples (rows of the multiplicities, at most ``block_bytes`` of working memory): the totals
    per pair of groups are matrix products — the block's multiplicities times the identity-by-identity count
    matrices of the (stratum, pooled) impostor comparisons and times the per-identity genuine counts per group
    (dense up to ``dense_identities`` identities, scipy sparse above; float32 where every product stays below
    2^24, float64 otherwise: exact integers either way). The sorted comparisons are read only as a prefix (about 1.5 times as deep as the original data's
    deepest threshold or EER crossing, found by partial sorting): the block's weights of its pooled impostors
    and genuine comparisons are gathered at once and summed per chunk of 256; each resample then finds its
    thresholds and EER crossing from the chunk sums and reads one chunk's entries per step. A resample that
    needs more (a crossing beyond the prefix) is evaluated on a prefix ``deeper`` times as deep, and so on up to
    every comparison in order, so every value equals :class:`VerificationStatistics`' (tested to 1e-12)."""

    block_bytes = 128 << 20
    dense_identities = 2048
    float32_below = 2 ** 24
    depth = 1.5
    deeper = 2

    def _prepare(self, s: np.ndarray, a: np.ndarray, b: np.ndarray, ig: np.ndarray, gen: np.ndarray,
                 pooled: np.ndarray, stratum: np.ndarray) -> None:
        G, target_fmrs, global_target_fmr = self.G, self.targets, self.global_target
        self.ig = ig
        self.fractions = {t: rates.target_fraction(t).as_integer_ratio() for t in (*target_fmrs, global_target_fmr)}
        self.s, self.a, self.b, self.gen, self.pooled, self.stratum = s, a, b, gen, pooled, stratum
        # totals: identities reordered by group; comparisons per (identity, identity) in blocks of groups
        self.perm = np.argsort(ig, kind="stable")
        bounds = np.searchsorted(ig[self.perm], np.arange(G + 1))
        self.slices = [slice(int(bounds[g]), int(bounds[g + 1])) for g in range(G)]
        self.biggest = max(sl.stop - sl.start for sl in self.slices)       # bounds a resample's multiplicities
        key = a * ig.size + b
        both = stratum | gen
        counts = self._counts(key, both)                                 # genuine on the diagonal
        self.gen_counts = np.zeros((ig.size, G))
        self.gen_counts[np.arange(ig.size), ig] = counts.diagonal()
        self.gen_counts = self.gen_counts[self.perm]
        self.stratum_blocks = self._blocks(counts)
        self.pooled_blocks = self.stratum_blocks if np.array_equal(pooled | gen, both) else \
            self._blocks(self._counts(key, pooled | gen))
        self._full: _Prefix | None = None
        self.prefix = self._choose_prefix()

    def _counts(self, key: np.ndarray, mask: np.ndarray):
        """Comparisons (``mask``) per (identity a, identity b), key = a * n_id + b: dense, or scipy sparse from
        ``dense_identities`` identities on."""
        n = self.n_id
        if n <= self.dense_identities:
            return np.bincount(key, weights=mask, minlength=n * n).reshape(n, n)
        from scipy import sparse
        return sparse.csr_array((np.ones(int(mask.sum())), (key[mask] // n, key[mask] % n)), shape=(n, n))

    def _blocks(self, counts) -> list[tuple[int, int, object]]:
        """(g, h, counts of impostors between groups g <= h, both orders summed), identities in group order; float32
        where every product with multiplicities (at most the largest group's size) stays below 2^24 (exact)."""
        counts = counts[self.perm][:, self.perm]
        if isinstance(counts, np.ndarray):
            np.fill_diagonal(counts, 0)
        else:
            counts.setdiag(0)
            counts.eliminate_zeros()
        biggest = self.biggest
        out = []
        for g, sg in enumerate(self.slices):
            for h in range(g, self.G):
                sh = self.slices[h]
                if sg.start == sg.stop or sh.start == sh.stop:
                    continue
                block = counts[sg, sh] + (counts[sh, sg].T if h > g else 0)
                col = block.sum(axis=0).max(initial=0)
                if biggest * col < self.float32_below:
                    block = block.astype(np.float32)
                out.append((g, h, np.ascontiguousarray(block) if isinstance(block, np.ndarray) else block))
        return out

    def _level(self, count: int) -> _Prefix:
        """The first >= ``count`` sorted comparisons (all of them from ``n`` on), ties kept whole."""
        if count >= self.n:
            if self._full is None:
                self._full = _Prefix(np.argsort(-self.s, kind="stable"), self)
            return self._full
        v = np.partition(self.s, self.n - count)[self.n - count]
        sel = np.flatnonzero(self.s >= v)
        return _Prefix(sel[np.argsort(-self.s[sel], kind="stable")], self)

    def _choose_prefix(self) -> _Prefix:
        """Sorted comparisons up to ``depth`` x (+1000) the pooled impostors at the original data's deepest
        needed position, extended to the end of its run of tied scores."""
        count = max(1 << 14, self.n // 16)
        while True:
            level = self._level(count)
            reads = [0]
            if self._block(np.ones((1, self.n_id), np.int32), level, reads)[0] is not None:
                break
            count *= 4
        want = int(self.depth * int(level.p_le[reads[0]])) + 1000
        while level.partial and level.p_le[-1] < want:
            count *= 2
            level = self._level(count)
        k = int(np.searchsorted(level.p_le, want, side="left"))
        if k >= level.L:
            return level
        return _Prefix(level.order[:int(level.run_end[level.run_id[k]]) + 1], self)

    def _totals(self, M: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Block (R, n_id) multiplicities -> ((R, G*G + G) weighted comparisons per code: pair of groups,
        G*G + g: genuine of group g; (R,) weighted pooled impostors), as integers: sum m_a m_b over the pairs."""
        G = self.G
        Mp = np.ascontiguousarray(M[:, self.perm], dtype=np.float64)     # C order: BLAS
        Mp32 = Mp.astype(np.float32) if M.max(initial=0) <= self.biggest else Mp    # float64: other weights

        def pairs(blocks):
            for g, h, block in blocks:
                left = Mp32 if block.dtype == np.float32 else Mp
                Y = np.asarray(left[:, self.slices[g]] @ block)
                yield g * G + h, np.einsum("ij,ij->i", Y, Mp[:, self.slices[h]], dtype=np.float64)

        out = np.zeros((M.shape[0], G * G + G))
        for code, v in pairs(self.stratum_blocks):
            out[:, code] = v
        out[:, G * G:] = Mp @ self.gen_counts
        if self.pooled_blocks is self.stratum_blocks:
            n_imp = out[:, :G * G].sum(axis=1)
        else:
            n_imp = sum(v for _, v in pairs(self.pooled_blocks))
        return out.round().astype(np.int64), n_imp.round().astype(np.int64)

    def _block(self, M: np.ndarray, level: _Prefix, reads: list[int] | None = None) -> list[tuple]:
        """(keys, values, k, n) of each row of ``M`` (R, n_id) from ``level``; None for a row that needs more
        (``reads[0]``: the deepest sorted position read, for one row)."""
        big = int(M.max(initial=1))
        dt = np.int8 if big <= 11 else np.int16 if big <= 181 else np.int32 if big <= 46340 else np.int64
        MT = np.ascontiguousarray(np.vstack([M.T, np.ones((1, M.shape[0]), M.dtype)]), dtype=dt)
        Wp = MT[level.pA]
        Wp *= MT[level.pB]
        Wg = MT[level.gA]
        cp, cg = _chunk_totals(Wp), _chunk_totals(Wg)
        total, n_imp = self._totals(M)
        out = []
        for r in range(M.shape[0]):
            mm = np.r_[M[r].astype(np.int64), 1]
            try:
                out.append(self._one(mm, level, _Running(Wp[:, r], cp[:, r]), _Running(Wg[:, r], cg[:, r]),
                                     total[r], int(n_imp[r]), reads))
            except _Deeper:
                if not level.partial:
                    raise
                out.append(None)
        return out

    def _one(self, mm, level: _Prefix, ip: _Running, gr: _Running, total: np.ndarray, n_imp: int,
             reads: list[int] | None):
        """One resample's (keys, values, k, n); the statistics of :meth:`VerificationStatistics._evaluate`."""
        L = level.L

        def ci(p: int) -> int:                                           # weighted pooled impostors at <= p
            return ip.at(int(level.p_le[p]) - 1) if p >= 0 else 0

        def cg(p: int) -> int:
            return gr.at(int(level.g_le[p]) - 1) if p >= 0 else 0

        def first(v: int, strict: bool) -> int:                          # first position with ci > v (>= v)
            k = ip.first_above(v, strict)
            return L if k >= level.p_pos.size else int(level.p_pos[k])

        def threshold(target: float) -> int:                             # as VerificationStatistics._threshold
            num, den = self.fractions[target]
            m = num * n_imp // den                                       # rates.max_accepted
            p = first(m, True) - 1
            if level.partial and p == L - 1:
                raise _Deeper
            for _ in range(2):
                c = ci(p)
                if p < 0 or c == 0:
                    break
                q = first(c, False)
                r = level.run_id[q]
                if ci(int(level.run_end[r])) <= m:
                    return int(level.run_end[r])
                p = int(level.run_start[r]) - 1
            q = first(1, False)
            if q >= L:
                raise _Deeper
            return int(level.run_start[level.run_id[q]]) - 1

        G, gt = self.G, self.global_target
        n_gen = int(total[G * G:].sum())
        if n_imp == 0 or n_gen == 0:
            raise InputError("a resample has no genuine or no impostor comparisons")
        ends = level.run_end

        def d(r: int) -> float:                                          # FMR - FNMR at run r (r = -1: +inf)
            if r < 0:
                return -1.0
            e = int(ends[r])
            return ci(e) / n_imp - (n_gen - cg(e)) / n_gen

        # bracket the crossing between two chunk ends of the pooled stream (ci known there), then bisect runs
        lo, hi, pos = -1, len(ends) - 1, level.chunk_pos
        j_lo, j_hi = -1, pos.size                                        # first chunk end with FMR - FNMR >= 0
        while j_hi - j_lo > 1:
            j = (j_lo + j_hi) // 2
            if int(ip.cum[j]) / n_imp - (n_gen - cg(int(pos[j]))) / n_gen >= 0:
                j_hi = j
            else:
                j_lo = j
        if j_lo >= 0:
            lo = int(level.run_id[pos[j_lo]]) - 1
        if j_hi < pos.size:
            hi = int(level.run_id[pos[j_hi]])
        eer, hi = _crossing(d, lambda r: ci(int(ends[r])) / n_imp, lo, hi)
        keys, vals, ks, ns = [("eer", "all", "", np.nan, "")], [eer], [-1], [-1]
        deepest = int(ends[hi])

        def put(key, v, k=-1, n=-1):
            keys.append(key)
            vals.append(v)
            ks.append(k)
            ns.append(n)

        for t in self.targets:
            p = threshold(t)
            deepest = max(deepest, p)
            fnm = n_gen - cg(p)
            put(("fnmr_at_fmr", "all", "", t, ""), fnm / n_gen, fnm, n_gen)
        p = threshold(gt)
        deepest = max(deepest, p)
        acc = np.bincount(level.code[:p + 1], weights=mm[level.A[:p + 1]] * mm[level.B[:p + 1]],
                          minlength=G * G + G + 1)
        _put_rates(put, self.names, gt, acc, total, self.summarize)
        if reads is not None:
            reads[0] = deepest
        return keys, np.asarray(vals, float), np.asarray(ks, np.int64), np.asarray(ns, np.int64)

    def _rows_per_block(self, level: _Prefix) -> int:
        per_row = 3 * 2 * (level.pA.size + level.gA.size) + 8 * 4 * self.n_id     # int16 weights, float totals
        return int(max(1, min(256, self.block_bytes // per_row)))

    def evaluate(self, m: np.ndarray | None = None) -> tuple[list[tuple], np.ndarray, np.ndarray, np.ndarray]:
        """(keys, values, k, n) at identity multiplicities ``m`` (None = the original data), as
        :meth:`VerificationStatistics.evaluate`."""
        m = np.ones(self.n_id, np.int64) if m is None else np.asarray(m, np.int64).reshape(-1)
        if m.size != self.n_id:
            raise InputError(f"multiplicities need one entry per identity ({self.n_id})")
        return self._rows(m[None, :])[0]

    def _rows(self, M: np.ndarray) -> list[tuple]:
        """:meth:`_block` over blocks of rows, first from the prefix, rows that need more from prefixes
        ``deeper`` times as deep, up to every comparison."""
        out: list = [None] * len(M)
        level = self.prefix
        while True:
            todo = [r for r in range(len(M)) if out[r] is None]
            if not todo:
                break
            step = self._rows_per_block(level)
            for i in range(0, len(todo), step):
                idx = todo[i:i + step]
                for r, v in zip(idx, self._block(M[idx], level)):
                    out[r] = v
            if not level.partial:
                break
            level = self._level(self.deeper * level.L)
        return out

    def replicates(self, multiplicities: np.ndarray) -> tuple[list[tuple], np.ndarray]:
        """(keys, (R, K) values), one row per resample (rows of ``multiplicities``)."""
        M = np.asarray(multiplicities)
        if M.ndim != 2 or M.shape[1] != self.n_id:
            raise InputError(f"multiplicities need one entry per identity ({self.n_id})")
        rows = self._rows(M)
        keys = rows[0][0]
        if any(k != keys for k, *_ in rows):
            raise InputError("statistic keys changed between resamples")
        return keys, np.vstack([v for _, v, _, _ in rows])


def percentile_interval(values: np.ndarray, confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per column of (R, K) ``values``: (low, high, n_defined) — the (1-c)/2 and (1+c)/2 quantiles (linear
    interpolation) over the non-NaN resamples; NaN where none is defined."""
    v = np.asarray(values, float)
    ok = ~np.isnan(v)
    lo, hi = np.full(v.shape[1], np.nan), np.full(v.shape[1], np.nan)
    q = [(1 - confidence) / 2, (1 + confidence) / 2]
    for j in range(v.shape[1]):
        if ok[:, j].any():
            lo[j], hi[j] = np.quantile(v[ok[:, j], j], q)
    return lo, hi, ok.sum(axis=0)


def bootstrap_verification(scores: np.ndarray, id_a: np.ndarray, id_b: np.ndarray, identity_group: np.ndarray,
                           group_names: Sequence[str], *, target_fmrs: Sequence[float] = (1e-2, 1e-3),
                           global_target_fmr: float = 1e-3, n_resamples: int = 1000, seed: int = 0,
                           confidence: float = 0.95,
                           summarize: Summarize | None = None,
                           pooled: np.ndarray | None = None, stratum: np.ndarray | None = None,
                           ) -> pd.DataFrame:
    """Point estimates and identity-bootstrap percentile intervals of a seed's verification numbers.

    Inputs as :class:`VerificationStatistics`. Returns one row per statistic, columns :data:`COLUMNS`:
    quantity (eer | fnmr_at_fmr | group_fmr | group_fnmr | cross_fmr | summary), group_a, group_b, target_fmr
    (the target of the threshold; NaN for the EER), metric (summary key), estimate, k and n (counts of a rate's
    point estimate; -1 otherwise), ci_low, ci_high (bootstrap), n_resamples, n_defined, cp_low, cp_high
    (Clopper-Pearson of k/n, rates only), display (k/n, or "<= 3/n" for k = 0), note (why an estimate or
    interval is missing or partial). ``pooled``/``stratum`` (default: every comparison): the impostors that
    pooled numbers count and those that per-pair-of-groups numbers count (a stratified sample)."""
    st = BatchedVerificationStatistics(scores, id_a, id_b, identity_group, group_names, target_fmrs,
                                       global_target_fmr, summarize, pooled, stratum)
    return run(st, identity_group, n_resamples, seed, confidence)


def replicate_values(statistics, identity_group: np.ndarray, n_resamples: int = 1000, seed: int = 0,
                     rows: range | None = None) -> tuple[list[tuple], np.ndarray]:
    """(keys, (len(rows), K) values): ``statistics`` at the multiplicities of resamples ``rows`` (default all
    ``n_resamples``; :func:`identity_multiplicities`), batched where it has ``replicates``, one at a time
    otherwise. Any split of 0..n_resamples into ``rows`` blocks gives the rows of the whole."""
    mult = identity_multiplicities(identity_group, n_resamples, seed, rows)
    if hasattr(statistics, "replicates"):
        return statistics.replicates(mult)
    keys, reps = None, []
    for m in mult:
        k, v, _, _ = statistics.evaluate(m)
        if keys is not None and k != keys:
            raise InputError("statistic keys changed between resamples")
        keys = k
        reps.append(v)
    return keys, np.vstack(reps)


def intervals(keys: Sequence[tuple], est: np.ndarray, ks: np.ndarray, ns: np.ndarray, reps: np.ndarray,
              confidence: float = 0.95, undefined_note: str = "") -> pd.DataFrame:
    """Rows with columns :data:`COLUMNS` from the point estimates (``est``, counts ``ks``/``ns``, -1 for
    non-rates) and the (R, K) replicates ``reps`` of the statistics ``keys``: percentile intervals over the
    defined resamples, Clopper-Pearson intervals of the rates, and a note where a value is undefined
    (``undefined_note`` on the original data)."""
    n_resamples = len(reps)
    lo, hi, nd = percentile_interval(reps, confidence)
    rows = []
    for j, (q, ga, gb, t, metric) in enumerate(keys):
        note = ""
        if np.isnan(est[j]):
            note = undefined_note or "undefined on the original data"
        if nd[j] == 0:
            note = (note + "; " if note else "") + "undefined in every resample"
        elif nd[j] < n_resamples:
            note = (note + "; " if note else "") + \
                f"undefined in {n_resamples - nd[j]} of {n_resamples} resamples: interval over the defined ones"
        rows.append({"quantity": q, "group_a": ga, "group_b": gb, "target_fmr": t, "metric": metric,
                     "estimate": est[j], "k": int(ks[j]), "n": int(ns[j]), "ci_low": lo[j], "ci_high": hi[j],
                     "n_resamples": int(n_resamples), "n_defined": int(nd[j]), "note": note})
    out = pd.DataFrame(rows)
    is_rate = (out["k"] >= 0) & (out["n"] >= 0)
    cp = rates.rate_frame(out.loc[is_rate, "k"], out.loc[is_rate, "n"], confidence=confidence)
    out["cp_low"], out["cp_high"], out["display"] = np.nan, np.nan, ""
    out.loc[is_rate, "cp_low"] = cp["ci_low"].to_numpy()
    out.loc[is_rate, "cp_high"] = cp["ci_high"].to_numpy()
    out.loc[is_rate, "display"] = cp["display"].to_numpy()
    return out[COLUMNS]


def run(statistics, identity_group: np.ndarray, n_resamples: int = 1000, seed: int = 0,
        confidence: float = 0.95) -> pd.DataFrame:
    """Point estimates (``statistics.evaluate(None)``), replicates over identity multiplicities
    (:func:`replicate_values`) and percentile intervals (:func:`intervals`), as rows with columns :data:`COLUMNS`.
    ``statistics`` is any object with ``evaluate(m)`` returning (keys, values, k, n) like
    :meth:`VerificationStatistics.evaluate` (and optionally ``replicates(multiplicities)`` -> (keys, values))."""
    keys, est, ks, ns = statistics.evaluate(None)
    k, reps = replicate_values(statistics, identity_group, n_resamples, seed)
    if k != keys:
        raise InputError("statistic keys changed between resamples")
    return intervals(keys, est, ks, ns, reps, confidence, getattr(statistics, "undefined_note", ""))
