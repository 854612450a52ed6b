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

Input is per comparison (score, identity a, identity b); a resample costs a few passes over the comparisons
(see docs/PERFORMANCE.md, section "Exact all-pairs verification counts", for the measured time per resample).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

from storage.errors import InputError
from tasks.stats import rates

COLUMNS = ["quantity", "group_a", "group_b", "target_fmr", "metric", "estimate", "k", "n", "ci_low", "ci_high",
           "n_resamples", "n_defined", "cp_low", "cp_high", "display", "note"]


def identity_multiplicities(identity_group: np.ndarray, n_resamples: int = 1000, seed: int = 0) -> np.ndarray:
    """(n_resamples, n_identities) int32 draw counts m_i, stratified by ``identity_group``: for resample r and
    each group g in increasing code order, ``rng.integers(0, n_g, n_g)`` picks members (in increasing identity
    code order) with replacement, rng = numpy.random.default_rng(seed)."""
    g = np.asarray(identity_group)
    if g.ndim != 1 or g.size == 0:
        raise InputError("identity groups must be a non-empty 1-D array (one group code per identity)")
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, (int, np.integer)) or n_resamples < 1:
        raise InputError(f"n_resamples must be a positive integer, got {n_resamples!r}")
    rng = np.random.default_rng(seed)
    members = [np.flatnonzero(g == v) for v in np.unique(g)]
    out = np.zeros((n_resamples, g.size), np.int32)
    for r in range(n_resamples):
        for mem in members:
            out[r] += np.bincount(mem[rng.integers(0, mem.size, mem.size)], minlength=g.size).astype(np.int32)
    return out


class _Deeper(Exception):
    """A resample needs sorted comparisons beyond the evaluated prefix."""


class VerificationStatistics:
    """The statistics of one seed's comparisons as a function of identity weights.

    scores, id_a, id_b: (m,) — a comparison is genuine when id_a == id_b; identity codes index
    ``identity_group`` (n_identities,) integer codes into ``group_names``. Statistics (keys of :meth:`evaluate`):
    EER; FNMR at each of ``target_fmrs`` (own threshold over all impostors); at the ONE global threshold
    (``global_target_fmr`` over all impostors): each group's FMR (impostors within the group) and FNMR, the
    cross-group FMR of every unordered pair of groups, and the differential summaries ``summarize(fmr, fnmr)``
    (a callable returning a DataFrame with columns metric, value — e.g. ``grid.report.fairness.summaries``).

    The comparisons are sorted once by decreasing score. A resample's totals per pair of groups come from the
    distinct identity pairs (weights m_a m_b x their comparison count), and everything else — the thresholds, the
    EER and the false matches and non-matches at the global threshold — from cumulative sums over a *prefix* of
    the sorted comparisons: the highest scores, about four times as deep as the original data's deepest
    threshold or EER crossing. A resample that needs deeper comparisons (its threshold or crossing lies beyond
    the prefix) is evaluated on all of them, so every value is exact either way; only the time differs."""

    def __init__(self, scores: np.ndarray, id_a: np.ndarray, id_b: np.ndarray, identity_group: np.ndarray,
                 group_names: Sequence[str], target_fmrs: Sequence[float] = (1e-2, 1e-3),
                 global_target_fmr: float = 1e-3,
                 summarize: Callable[[np.ndarray, np.ndarray], pd.DataFrame] | None = None,
                 pooled: np.ndarray | None = None, stratum: np.ndarray | None = None):
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
        self.G, self.names, self.n_id, self.n = G, list(group_names), ig.size, s.size
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
        self.targets, self.global_target, self.summarize = list(target_fmrs), global_target_fmr, summarize
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

        lo, hi = -1, len(ends) - 1                                      # d(lo) < 0 <= d(hi)
        if d(hi) < 0:
            raise _Deeper
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if d(mid) >= 0:
                hi = mid
            else:
                lo = mid
        d0, d1 = d(lo), d(hi)
        f0 = 0.0 if lo < 0 else ci[ends[lo]] / n_imp
        f1 = ci[ends[hi]] / n_imp
        w = d0 / (d0 - d1)
        return float(f0 + w * (f1 - f0)), int(ends[hi])

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
        fmr_v, fnmr_v = np.full(G, np.nan), np.full(G, np.nan)
        for g, name in enumerate(self.names):
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
                put(("cross_fmr", self.names[g], self.names[h], gt, ""), k / n if n else np.nan, k, n)
        if self.summarize is not None:
            table = self.summarize(fmr_v, fnmr_v)
            for metric, v in zip(table["metric"], table["value"]):
                put(("summary", "", "", gt, str(metric)), float(v))
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
                           summarize: Callable[[np.ndarray, np.ndarray], pd.DataFrame] | None = None,
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
    st = VerificationStatistics(scores, id_a, id_b, identity_group, group_names, target_fmrs, global_target_fmr,
                                summarize, pooled, stratum)
    return run(st, identity_group, n_resamples, seed, confidence)


def run(statistics, identity_group: np.ndarray, n_resamples: int = 1000, seed: int = 0,
        confidence: float = 0.95) -> pd.DataFrame:
    """Point estimates (``statistics.evaluate(None)``), replicates over identity multiplicities and percentile
    intervals, as rows with columns :data:`COLUMNS`. ``statistics`` is any object with ``evaluate(m)`` returning
    (keys, values, k, n) like :meth:`VerificationStatistics.evaluate`."""
    keys, est, ks, ns = statistics.evaluate(None)
    reps = []
    for m in identity_multiplicities(identity_group, n_resamples, seed):
        k, v, _, _ = statistics.evaluate(m)
        if k != keys:
            raise InputError("statistic keys changed between resamples")
        reps.append(v)
    lo, hi, nd = percentile_interval(np.vstack(reps), confidence)
    rows = []
    for j, (q, ga, gb, t, metric) in enumerate(keys):
        note = ""
        if np.isnan(est[j]):
            note = getattr(statistics, "undefined_note", "") or "undefined on the original data"
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
