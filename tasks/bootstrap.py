"""Identity bootstrap: 95% intervals of verification numbers within one seed.

Comparisons that share an identity are not independent, so the resampling unit is the identity, not the
comparison (Bolle et al.'s "subsets bootstrap"; ISO/IEC 19795-1 cl. 8). One resample r:

- within each demographic group g (stratified: every resample keeps each group's identity count n_g), draw
  n_g of its identities with replacement; m_i = how often identity i was drawn (mean 1);
- every genuine comparison of identity i counts m_i times; every impostor comparison (i, j) counts m_i m_j
  times (the comparisons among the drawn copies); integer weights, so the counts stay integers and the
  threshold convention of :mod:`tasks.rates` applies exactly;
- every statistic is recomputed on the weighted comparisons, the global threshold included.

The interval is the percentile interval: the (1-c)/2 and (1+c)/2 quantiles (numpy's linear interpolation) of the
resampled values where they are defined; ``n_defined`` says in how many resamples that was (a ratio over a zero
rate is undefined). The point estimate is the statistic on the original data (all m_i = 1).

Input is per comparison (score, identity a, identity b), which costs O(comparisons) per resample: ~0.1-0.3 s
per resample for 5M comparisons, so 1000 resamples of the grid's scores job take minutes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

from storage.errors import InputError
from tasks import rates

COLUMNS = ["quantity", "group_a", "group_b", "target_fmr", "metric", "estimate", "k", "n", "ci_low", "ci_high",
           "n_resamples", "n_defined", "note"]


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


class VerificationStatistics:
    """The statistics of one seed's comparisons as a function of identity weights.

    scores, id_a, id_b: (m,) — a comparison is genuine when id_a == id_b; identity codes index
    ``identity_group`` (n_identities,) integer codes into ``group_names``. Statistics (keys of :meth:`keys`):
    EER; FNMR at each of ``target_fmrs`` (own threshold over all impostors); at the ONE global threshold
    (``global_target_fmr`` over all impostors): each group's FMR (impostors within the group) and FNMR, the
    cross-group FMR of every unordered pair of groups, and the differential summaries ``summarize(fmr, fnmr)``
    (a callable returning a DataFrame with columns metric, value — e.g. ``grid.fairness.summaries``)."""

    def __init__(self, scores: np.ndarray, id_a: np.ndarray, id_b: np.ndarray, identity_group: np.ndarray,
                 group_names: Sequence[str], target_fmrs: Sequence[float] = (1e-2, 1e-3),
                 global_target_fmr: float = 1e-3,
                 summarize: Callable[[np.ndarray, np.ndarray], pd.DataFrame] | None = None):
        s = np.asarray(scores, dtype=np.float64).reshape(-1)
        a, b = np.asarray(id_a, dtype=np.int64).reshape(-1), np.asarray(id_b, dtype=np.int64).reshape(-1)
        ig = np.asarray(identity_group, dtype=np.int64).reshape(-1)
        if a.shape != s.shape or b.shape != s.shape:
            raise InputError("scores, id_a and id_b must have the same length")
        if s.size and (min(a.min(), b.min()) < 0 or max(a.max(), b.max()) >= ig.size):
            raise InputError(f"identity codes must index identity_group (0..{ig.size - 1})")
        G = len(group_names)
        if ig.size and (ig.min() < 0 or ig.max() >= G):
            raise InputError(f"identity group codes must index group_names (0..{G - 1})")
        gen = a == b
        self.G, self.names = G, list(group_names)
        self.ga, self.ia, self.ib = a[gen], a[~gen], b[~gen]
        self.gen_group = ig[self.ga]
        pa, pb = ig[self.ia], ig[self.ib]
        self.pair = np.minimum(pa, pb) * G + np.maximum(pa, pb)
        self.curve = rates.ScoreCurve(s[gen], s[~gen])
        self.targets, self.global_target, self.summarize = list(target_fmrs), global_target_fmr, summarize
        self._keys = None

    def weights(self, m: np.ndarray | None) -> tuple[np.ndarray | None, np.ndarray | None]:
        if m is None:
            return None, None
        m = np.asarray(m, dtype=np.int64)
        return m[self.ga], m[self.ia] * m[self.ib]

    def evaluate(self, m: np.ndarray | None = None) -> tuple[list[tuple], np.ndarray, np.ndarray, np.ndarray]:
        """(keys, values, k, n) at identity multiplicities ``m`` (None = the original data). Keys are
        (quantity, group_a, group_b, target_fmr, metric); k/n are the counts behind rates (-1 otherwise)."""
        wg, wi = self.weights(m)
        c = self.curve
        wg1 = np.ones(c.n_gen, np.int64) if wg is None else wg
        wi1 = np.ones(c.n_imp, np.int64) if wi is None else wi
        keys, vals, ks, ns = [], [], [], []

        def put(key, v, k=-1, n=-1):
            keys.append(key)
            vals.append(v)
            ks.append(k)
            ns.append(n)

        if wg1.sum() == 0 or wi1.sum() == 0:
            raise InputError("a resample has no genuine or no impostor comparisons")
        put(("eer", "all", "", np.nan, ""), c.eer(wg, wi)[0])
        for t in self.targets:
            thr = c.threshold_at_fmr(t, wi)
            fm, ni, fnm, ng = c.counts_at(thr, wg, wi)
            put(("fnmr_at_fmr", "all", "", t, ""), fnm / ng, fnm, ng)
        thr = c.threshold_at_fmr(self.global_target, wi)
        G = self.G
        acc_i = c.imp >= thr
        fm_pair = np.bincount(self.pair, weights=wi1 * acc_i, minlength=G * G).reshape(G, G)
        n_pair = np.bincount(self.pair, weights=wi1, minlength=G * G).reshape(G, G)
        fnm_g = np.bincount(self.gen_group, weights=wg1 * (c.gen < thr), minlength=G)
        n_g = np.bincount(self.gen_group, weights=wg1, minlength=G)
        gt = self.global_target
        fmr_v, fnmr_v = np.full(G, np.nan), np.full(G, np.nan)
        for g, name in enumerate(self.names):
            k, n = int(fm_pair[g, g]), int(n_pair[g, g])
            fmr_v[g] = k / n if n else np.nan
            put(("group_fmr", name, "", gt, ""), fmr_v[g], k, n)
            k, n = int(fnm_g[g]), int(n_g[g])
            fnmr_v[g] = k / n if n else np.nan
            put(("group_fnmr", name, "", gt, ""), fnmr_v[g], k, n)
        for g in range(G):
            for h in range(g + 1, G):
                k, n = int(fm_pair[g, h]), int(n_pair[g, h])
                put(("cross_fmr", self.names[g], self.names[h], gt, ""), k / n if n else np.nan, k, n)
        if self.summarize is not None:
            table = self.summarize(fmr_v, fnmr_v)
            for metric, v in zip(table["metric"], table["value"]):
                put(("summary", "", "", gt, str(metric)), float(v))
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
                           ) -> pd.DataFrame:
    """Point estimates and identity-bootstrap percentile intervals of a seed's verification numbers.

    Inputs as :class:`VerificationStatistics`. Returns one row per statistic, columns :data:`COLUMNS`:
    quantity (eer | fnmr_at_fmr | group_fmr | group_fnmr | cross_fmr | summary), group_a, group_b, target_fmr
    (the target of the threshold; NaN for the EER), metric (summary key), estimate, k and n (counts of a rate's
    point estimate; -1 otherwise), ci_low, ci_high, n_resamples, n_defined, note (why an estimate or interval
    is missing or partial)."""
    st = VerificationStatistics(scores, id_a, id_b, identity_group, group_names, target_fmrs, global_target_fmr,
                                summarize)
    keys, est, ks, ns = st.evaluate(None)
    _, reps = st.replicates(identity_multiplicities(identity_group, n_resamples, seed))
    lo, hi, nd = percentile_interval(reps, confidence)
    rows = []
    for j, (q, ga, gb, t, metric) in enumerate(keys):
        note = ""
        if np.isnan(est[j]):
            note = "undefined on the original data"
        if nd[j] == 0:
            note = (note + "; " if note else "") + "undefined in every resample"
        elif nd[j] < n_resamples:
            note = (note + "; " if note else "") + \
                f"undefined in {n_resamples - nd[j]} of {n_resamples} resamples: interval over the defined ones"
        rows.append({"quantity": q, "group_a": ga, "group_b": gb, "target_fmr": t, "metric": metric,
                     "estimate": est[j], "k": int(ks[j]), "n": int(ns[j]), "ci_low": lo[j], "ci_high": hi[j],
                     "n_resamples": int(n_resamples), "n_defined": int(nd[j]), "note": note})
    return pd.DataFrame(rows, columns=COLUMNS)
