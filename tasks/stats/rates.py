"""Error rates from counts, their exact intervals, and THE threshold convention of biasgrid's verification.

Definitions (docs/REPORT.md, section "Verification with error bars", has them with examples):

- A comparison is **accepted** when its score s >= t (t = threshold). FMR(t) = #{impostor s >= t} / n_impostor,
  FNMR(t) = #{genuine s < t} / n_genuine. Every rate is stored with its integer counts.
- **Threshold at target FMR** (one convention, used everywhere): the smallest *observed impostor score* t with
  #{impostor s >= t} <= M, where M = floor(target * n_impostor) is computed exactly with integers (the target is
  read as the decimal it prints as: 3e-4 x 5,000,000 = 1500, not 1499.999...). When no impostor score qualifies
  (M < the count of the highest score), t = nextafter(max impostor score, +inf): no impostor is accepted.
  With weights (bootstrap multiplicities), counts are weighted sums and only scores of positive weight qualify.
- **EER**: operating points at +inf and at every distinct score (genuine or impostor), in decreasing threshold
  order; the EER is where FMR - FNMR changes sign, linearly interpolated between the two points around the
  crossing (the same as scikit-learn's ``roc_curve(drop_intermediate=False)``; :func:`eer_at_crossing`).
- **d' (decidability)**: |mean(genuine) - mean(impostor)| / sqrt((var(genuine) + var(impostor)) / 2), the
  variances with ddof = 0 (Daugman's separation of the two score distributions; :func:`decidability`).
- **Clopper-Pearson** 95% interval of k/n: [B(a/2; k, n-k+1), B(1-a/2; k+1, n-k)] (beta quantiles; 0 when k=0,
  1 when k=n). **Rule of three**: with k = 0 the one-sided 95% upper bound is ~3/n; a zero rate is displayed
  as "<= 3/n", never as a bare 0.
- **Resolution**: an operating point is *unresolved* when n_impostor < 1/target (the target FMR is below the
  smallest non-zero FMR the comparisons can show) or when it has 0 false matches (its FMR is only a bound).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from fractions import Fraction

import numpy as np
import pandas as pd

from storage.errors import InputError

CONFIDENCE = 0.95


# ------------------------------------------------------------------------------------------ counts and CIs ---
def max_accepted(target_fmr: float, n: int | np.integer) -> int:
    """M = floor(target * n) in exact integer arithmetic, the target read as its shortest decimal (repr)."""
    t = target_fraction(target_fmr)
    return int((t.numerator * int(n)) // t.denominator)


def target_fraction(target_fmr: float) -> Fraction:
    if isinstance(target_fmr, bool) or not isinstance(target_fmr, (int, float, np.floating)) \
            or not 0.0 < float(target_fmr) < 1.0:
        raise InputError(f"target FMR must be a number between 0 and 1, got {target_fmr!r}")
    return Fraction(repr(float(target_fmr)))


def clopper_pearson(k: np.ndarray | int, n: np.ndarray | int,
                    confidence: float = CONFIDENCE) -> tuple[np.ndarray, np.ndarray]:
    """Exact (Clopper-Pearson) interval of k/n: lower = Beta^-1(a/2; k, n-k+1) (0 if k = 0), upper =
    Beta^-1(1-a/2; k+1, n-k) (1 if k = n), a = 1 - confidence. NaN where n = 0 (no comparisons). Vectorised."""
    k = np.asarray(k, dtype=float)
    n = np.asarray(n, dtype=float)
    if np.any(k < 0) or np.any(k > n):
        raise InputError("Clopper-Pearson needs 0 <= k <= n")
    from scipy import stats   # here: the driver plans without importing scipy.stats (0.6 s)

    alpha = 1.0 - confidence
    with np.errstate(invalid="ignore", divide="ignore"):
        lo = np.where(k > 0, stats.beta.ppf(alpha / 2, k, n - k + 1), 0.0)
        hi = np.where(k < n, stats.beta.ppf(1 - alpha / 2, k + 1, n - k), 1.0)
    lo = np.where(n > 0, lo, np.nan)
    hi = np.where(n > 0, hi, np.nan)
    return lo, hi


def fmr_key(target_fmr: float) -> str:
    """Column-name form of a target FMR, as in the verification table: 1e-3 -> '1e_3', 3e-4 -> '3e_4'."""
    mant, exp = f"{float(target_fmr):e}".split("e")
    mant = mant.rstrip("0").rstrip(".").replace(".", "p")
    return f"{mant}e_{abs(int(exp))}" if int(exp) < 0 else f"{mant}e{int(exp)}"


def rule_of_three(n: np.ndarray | int) -> np.ndarray:
    """3/n: the approximate one-sided 95% upper bound of a rate with 0 events in n trials (NaN if n = 0)."""
    n = np.asarray(n, dtype=float)
    with np.errstate(divide="ignore"):
        return np.where(n > 0, 3.0 / np.maximum(n, 1), np.nan)


def format_rate(k: int, n: int, digits: int = 3) -> str:
    """'0.0123 (12/975)', or for k = 0 the bound '<= 3.1e-03 (0/975)'; 'n/a (0 comparisons)' if n = 0."""
    if n == 0:
        return "n/a (0 comparisons)"
    if k == 0:
        return f"<= {3.0 / n:.{digits - 1}e} (0/{n})"
    return f"{k / n:.{digits}g} ({k}/{n})"


def rate_frame(k: Sequence[int] | np.ndarray, n: Sequence[int] | np.ndarray, prefix: str = "",
               confidence: float = CONFIDENCE) -> pd.DataFrame:
    """Columns {prefix}k, {prefix}n, {prefix}rate (k/n), {prefix}ci_low, {prefix}ci_high (Clopper-Pearson),
    {prefix}upper_3n (3/n where k = 0, else NaN), {prefix}display (see :func:`format_rate`).
    rate is NaN only where n = 0."""
    k = np.asarray(k, dtype=np.int64).reshape(-1)
    n = np.asarray(n, dtype=np.int64).reshape(-1)
    lo, hi = clopper_pearson(k, n, confidence)
    with np.errstate(invalid="ignore", divide="ignore"):
        rate = np.where(n > 0, k / np.maximum(n, 1), np.nan)
    return pd.DataFrame({f"{prefix}k": k, f"{prefix}n": n, f"{prefix}rate": rate, f"{prefix}ci_low": lo,
                         f"{prefix}ci_high": hi, f"{prefix}upper_3n": np.where(k == 0, rule_of_three(n), np.nan),
                         f"{prefix}display": [format_rate(int(a), int(b)) for a, b in zip(k, n)]})


def resolution(n_impostor: int, false_matches: int, target_fmr: float) -> tuple[bool, str]:
    """(resolved, reason): unresolved when n_impostor < 1/target (exactly: n * target < 1) or when there are
    0 false matches at the operating point's threshold (its FMR is then only an upper bound)."""
    reasons = []
    if target_fraction(target_fmr) * int(n_impostor) < 1:
        reasons.append(f"n_impostor={int(n_impostor)} < 1/FMR={1 / float(target_fmr):g}")
    if int(false_matches) == 0:
        reasons.append("0 false matches at the threshold: FMR is only an upper bound")
    return (not reasons), "; ".join(reasons)


# --------------------------------------------------------------------------------------- sorted score sets ---
class ScoreCurve:
    """Genuine and impostor scores sorted once, so that (weighted) operating points are O(n) per evaluation.

    ``weights_*`` in the methods are non-negative integer multiplicities per input score (in input order), e.g.
    identity-bootstrap multiplicities; None = 1 each.
    """

    def __init__(self, genuine: np.ndarray, impostor: np.ndarray):
        g = np.asarray(genuine, dtype=np.float64).reshape(-1)
        i = np.asarray(impostor, dtype=np.float64).reshape(-1)
        if g.size == 0 or i.size == 0:
            raise InputError(f"needs genuine and impostor scores, got {g.size} genuine and {i.size} impostor")
        if not (np.isfinite(g).all() and np.isfinite(i).all()):
            raise InputError("scores must be finite numbers")
        self.n_gen, self.n_imp = g.size, i.size
        # impostors ascending (threshold search), all scores descending (curve)
        self.imp_order = np.argsort(i, kind="stable")
        self.imp_sorted = i[self.imp_order]
        self.imp_starts = np.flatnonzero(np.r_[True, self.imp_sorted[1:] != self.imp_sorted[:-1]])
        allv = np.r_[g, i]
        self.all_order = np.argsort(-allv, kind="stable")
        self.all_sorted = allv[self.all_order]
        self.all_is_gen = self.all_order < g.size
        self.all_ends = np.flatnonzero(np.r_[self.all_sorted[1:] != self.all_sorted[:-1], True])
        self.gen = g
        self.imp = i

    def _w(self, w: np.ndarray | None, n: int) -> np.ndarray:
        if w is None:
            return np.ones(n, np.int64)
        w = np.asarray(w, dtype=np.int64)
        if w.shape != (n,) or (w < 0).any():
            raise InputError(f"weights must be {n} non-negative integers")
        return w

    def threshold_at_fmr(self, target_fmr: float, w_imp: np.ndarray | None = None) -> float:
        """The convention's threshold (module docstring) for the (weighted) impostor scores."""
        w = self._w(w_imp, self.n_imp)[self.imp_order]
        per_value = np.add.reduceat(w, self.imp_starts)
        values = self.imp_sorted[self.imp_starts]
        accepted = np.cumsum(per_value[::-1])[::-1]           # impostors >= value
        m = max_accepted(target_fmr, int(per_value.sum()))
        ok = np.flatnonzero((accepted <= m) & (per_value > 0))
        if len(ok):
            return float(values[ok[0]])
        present = values[per_value > 0]
        if not len(present):
            raise InputError("no impostor comparison has positive weight")
        return float(np.nextafter(present[-1], np.inf))

    def counts_at(self, t: float, w_gen: np.ndarray | None = None,
                  w_imp: np.ndarray | None = None) -> tuple[int, int, int, int]:
        """(false matches = impostors >= t, n_impostor, false non-matches = genuine < t, n_genuine), weighted."""
        wg, wi = self._w(w_gen, self.n_gen), self._w(w_imp, self.n_imp)
        return (int(wi[self.imp >= t].sum()), int(wi.sum()), int(wg[self.gen < t].sum()), int(wg.sum()))

    def curve(self, w_gen: np.ndarray | None = None,
              w_imp: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, int]:
        """Operating points in decreasing threshold order: (thresholds = [+inf, distinct scores...],
        false-match counts, false-non-match counts, n_impostor, n_genuine) — integer counts."""
        w = np.r_[self._w(w_gen, self.n_gen), self._w(w_imp, self.n_imp)][self.all_order]
        acc_gen = np.cumsum(np.where(self.all_is_gen, w, 0))
        acc_imp = np.cumsum(np.where(self.all_is_gen, 0, w))
        n_gen, n_imp = int(acc_gen[-1]), int(acc_imp[-1])
        thr = np.r_[np.inf, self.all_sorted[self.all_ends]]
        fm = np.r_[0, acc_imp[self.all_ends]]
        fnm = n_gen - np.r_[0, acc_gen[self.all_ends]]
        return thr, fm, fnm, n_imp, n_gen

    def eer(self, w_gen: np.ndarray | None = None, w_imp: np.ndarray | None = None) -> tuple[float, float]:
        """(EER, its interpolated threshold), see :func:`eer_from_counts`."""
        thr, fm, fnm, n_imp, n_gen = self.curve(w_gen, w_imp)
        return eer_from_counts(thr, fm, n_imp, fnm, n_gen)


def eer_from_counts(thresholds: np.ndarray, fm: np.ndarray, n_imp: int, fnm: np.ndarray,
                    n_gen: int) -> tuple[float, float]:
    """:func:`eer_at_crossing` of the rates fm / n_imp and fnm / n_gen; InputError if a side has no
    comparisons."""
    if n_imp <= 0 or n_gen <= 0:
        raise InputError(f"EER needs genuine and impostor comparisons (got {n_gen} genuine, {n_imp} impostor)")
    return eer_at_crossing(thresholds, np.asarray(fm, dtype=float) / n_imp, np.asarray(fnm, dtype=float) / n_gen)


def eer_at_crossing(thresholds: np.ndarray, fmr: np.ndarray, fnmr: np.ndarray) -> tuple[float, float]:
    """(EER, its threshold), the one EER of biasgrid, from operating points in decreasing threshold order (first
    point: nothing accepted, FMR 0, FNMR 1; last: everything accepted; e.g. scikit-learn's ``roc_curve``).
    d = FMR - FNMR goes from -1 to +1; k = first point with d >= 0; the EER is FMR interpolated linearly between
    points k-1 and k at d = 0, its threshold likewise (the threshold of point k when point k-1 is +inf)."""
    d = fmr - fnmr
    k = int(np.argmax(d >= 0))
    if k == 0:   # d >= 0 at the first point only if fnmr there is 0 (cannot happen with a +inf first point)
        return float(fmr[0]), float(thresholds[0])
    w = d[k - 1] / (d[k - 1] - d[k])
    eer = fmr[k - 1] + w * (fmr[k] - fmr[k - 1])
    t0, t1 = float(thresholds[k - 1]), float(thresholds[k])
    return float(eer), float(t1 if not np.isfinite(t0) else t0 + w * (t1 - t0))


def decidability(genuine: np.ndarray, impostor: np.ndarray, w_gen: np.ndarray | None = None,
                 w_imp: np.ndarray | None = None) -> float:
    """d' = |mean(genuine) - mean(impostor)| / sqrt((var(genuine) + var(impostor)) / 2), population variances
    (ddof = 0), optionally weighted (``w_*``: counts per score, e.g. a histogram's per bin centre); NaN when a side
    has no score or both variances are 0."""
    moments = []
    for x, w in ((genuine, w_gen), (impostor, w_imp)):
        x = np.asarray(x, dtype=np.float64).reshape(-1)
        w = np.ones_like(x) if w is None else np.asarray(w, dtype=np.float64).reshape(-1)
        if w.sum() <= 0:
            return float("nan")
        mean = np.average(x, weights=w)
        moments.append((mean, np.average((x - mean) ** 2, weights=w)))
    (mg, vg), (mi, vi) = moments
    spread = np.sqrt((vg + vi) / 2.0)
    return float(abs(mg - mi) / spread) if spread > 0 else float("nan")


def threshold_at_fmr(impostor: np.ndarray, target_fmr: float) -> float:
    """The convention's threshold at ``target_fmr`` (module docstring), integer arithmetic."""
    return sorted_threshold_at_fmr(np.sort(np.asarray(impostor, dtype=np.float64).reshape(-1)), target_fmr)


def _run_starts(s: np.ndarray) -> np.ndarray:
    """First position of each run of equal values of the ascending ``s`` (NaNs one run, as ``np.unique``)."""
    if s.size and np.isnan(s[-1]):
        return np.unique(s, return_index=True)[1]
    return np.flatnonzero(np.r_[True, s[1:] != s[:-1]])


def sorted_threshold_at_fmr(s: np.ndarray, target_fmr: float) -> float:
    """:func:`threshold_at_fmr` of impostor scores already sorted ascending (float64), without sorting them."""
    if s.size == 0:
        raise InputError("threshold at FMR needs impostor scores, got none")
    first = _run_starts(s)
    accepted = s.size - first
    ok = np.flatnonzero(accepted <= max_accepted(target_fmr, s.size))
    return float(s[first[ok[0]]]) if len(ok) else float(np.nextafter(s[-1], np.inf))


def _sorted_counts(genuine: np.ndarray, impostor: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(every distinct score, decreasing; impostors >= each; genuine >= each) of scores sorted ascending (float64,
    both sides non-empty), by binary search."""
    if not (genuine.size and impostor.size):
        raise InputError(f"needs genuine and impostor scores, got {genuine.size} genuine and {impostor.size} "
                         f"impostor")
    if not (np.isfinite(genuine[[0, -1]]).all() and np.isfinite(impostor[[0, -1]]).all()):
        raise InputError("scores must be finite numbers")
    values = np.unique(np.r_[genuine, impostor])[::-1]
    return (values, impostor.size - np.searchsorted(impostor, values, side="left"),
            genuine.size - np.searchsorted(genuine, values, side="left"))


def sorted_eer(genuine: np.ndarray, impostor: np.ndarray) -> tuple[float, float]:
    """``ScoreCurve(genuine, impostor).eer()`` of scores already sorted ascending (float64): the same operating
    points, counted by binary search instead of two stable argsorts."""
    values, fm, tp = _sorted_counts(genuine, impostor)
    return eer_from_counts(np.r_[np.inf, values], np.r_[0, fm], impostor.size, genuine.size - np.r_[0, tp],
                           genuine.size)


def sorted_roc(genuine: np.ndarray, impostor: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds) of scikit-learn's ``roc_curve(labels, scores, drop_intermediate=False)`` (genuine =
    positive) from scores already sorted ascending (float64): the same arrays, counted by binary search instead
    of a stable argsort of every score."""
    values, fm, tp = _sorted_counts(genuine, impostor)
    return np.r_[0, fm] / impostor.size, np.r_[0, tp] / genuine.size, np.r_[np.inf, values]


# ------------------------------------------------------------------------------------- operating points ---
def operating_point(genuine: np.ndarray, impostor: np.ndarray, target_fmr: float,
                    threshold: float | None = None) -> dict:
    """Rates at one threshold (``threshold``, or the convention's threshold at ``target_fmr``): threshold,
    false_matches, n_impostor, fmr, false_non_matches, n_genuine, fnmr, resolved, reason."""
    g = np.asarray(genuine, dtype=np.float64)
    i = np.asarray(impostor, dtype=np.float64)
    t = threshold_at_fmr(i, target_fmr) if threshold is None else float(threshold)
    fm, fnm = int((i >= t).sum()), int((g < t).sum())
    ok, why = resolution(i.size, fm, target_fmr)
    return {"threshold": t, "false_matches": fm, "n_impostor": int(i.size),
            "fmr": fm / i.size if i.size else np.nan, "false_non_matches": fnm, "n_genuine": int(g.size),
            "fnmr": fnm / g.size if g.size else np.nan, "resolved": ok, "reason": why}


def label_codes(labels: Any, groups: Sequence[str]) -> np.ndarray:
    """Each label's index in ``groups`` (-1: not among them). Integer ``labels`` are such indices already (callers
    holding group codes pass them: comparing millions of strings per group is what this spares)."""
    labels = np.asarray(labels)
    if labels.dtype.kind in "iu":
        return labels
    labels = labels.astype(str)
    codes = np.full(labels.shape, -1, dtype=np.int64)
    for k, name in enumerate(groups):
        codes[labels == str(name)] = k
    return codes


OP_COLUMNS = ["group", "target_fmr", "threshold_kind", "threshold", "false_matches", "n_impostor", "fmr",
              "fmr_ci_low", "fmr_ci_high", "fmr_display", "false_non_matches", "n_genuine", "fnmr", "fnmr_ci_low",
              "fnmr_ci_high", "fnmr_display", "resolved", "reason"]
EER_COLUMNS = ["group", "eer", "eer_threshold", "n_genuine", "n_impostor", "d_prime"]


def group_operating_points(genuine: np.ndarray, genuine_group: np.ndarray, impostor: np.ndarray,
                           impostor_group_a: np.ndarray, impostor_group_b: np.ndarray,
                           target_fmrs: Sequence[float] = (1e-2, 1e-3, 1e-4),
                           global_target_fmr: float = 1e-3,
                           groups: Sequence[str] | None = None,
                           confidence: float = CONFIDENCE,
                           pooled_impostor: np.ndarray | None = None,
                           thresholds: Mapping[tuple[str, float], float] | None = None,
                           global_threshold: float | None = None) -> dict[str, pd.DataFrame]:
    """Per demographic group: its EER, its OWN threshold at each target FMR and the rates there, beside the
    rates at the ONE global threshold (the convention's threshold at ``global_target_fmr`` over every impostor
    comparison, cross-group ones included). A group's impostors are the comparisons with both sides in it
    (as in ``demographic_rates``); its genuine comparisons are its identities' own.

    Inputs: scores (m,) with a group label per genuine score and two per impostor score (names, or integer codes
    into ``groups``).
    ``pooled_impostor`` (default: ``impostor``): the impostor scores of group "all" and of the global threshold
    (a stratified sample's uniform part, when the per-group impostors were topped up). ``thresholds`` ((group,
    target) -> threshold, group "all" included) and ``global_threshold``: thresholds chosen elsewhere (on a
    development set), applied here instead of the convention's on these scores.
    Returns {"eer": columns :data:`EER_COLUMNS` (group "all" = every comparison; d_prime:
    :func:`decidability`), "operating_points":
    columns :data:`OP_COLUMNS`, one row per (group incl. "all", target, threshold_kind in {"own", "global"})
    — for "global" target_fmr is ``global_target_fmr``. Rates carry counts, Clopper-Pearson CIs, a display
    string with the rule-of-three bound for zero counts, and the resolution flag + reason}."""
    g = np.asarray(genuine, dtype=np.float64)
    i = np.asarray(impostor, dtype=np.float64)
    if np.shape(genuine_group) != g.shape or np.shape(impostor_group_a) != i.shape \
            or np.shape(impostor_group_b) != i.shape:
        raise InputError("every score needs its group label(s)")
    if groups is None:
        groups = sorted(set(np.asarray(genuine_group).astype(str)) | set(np.asarray(impostor_group_a).astype(str))
                        | set(np.asarray(impostor_group_b).astype(str)))
    names = list(groups)
    gg, ia, ib = (label_codes(x, names) for x in (genuine_group, impostor_group_a, impostor_group_b))
    pooled = i if pooled_impostor is None else np.asarray(pooled_impostor, dtype=np.float64)
    pooled_sorted = np.sort(pooled)                     # each group's scores sorted once, for all its numbers
    if global_threshold is not None:
        t_global = float(global_threshold)
    else:
        t_global = sorted_threshold_at_fmr(pooled_sorted, global_target_fmr)
    eer_rows, rows = [], []
    for name in ["all", *names]:
        if name == "all":
            gs, is_, is_sorted = g, pooled, pooled_sorted
        else:
            k = names.index(name)
            gs, is_ = g[gg == k], i[(ia == k) & (ib == k)]
            is_sorted = np.sort(is_)
        row = {"group": name, "n_genuine": int(gs.size), "n_impostor": int(is_.size),
               "d_prime": decidability(gs, is_)}
        if gs.size and is_.size:
            row["eer"], row["eer_threshold"] = sorted_eer(np.sort(gs), is_sorted)
        else:
            row["eer"] = row["eer_threshold"] = np.nan
        eer_rows.append(row)
        points = [(t, "own", None if thresholds is None else thresholds[name, float(t)]) for t in target_fmrs] + \
            [(global_target_fmr, "global", t_global)]
        for target, kind, thr in points:
            if is_.size == 0 and thr is None:
                op = {"threshold": np.nan, "false_matches": 0, "n_impostor": 0, "fmr": np.nan,
                      "false_non_matches": 0, "n_genuine": int(gs.size), "fnmr": np.nan, "resolved": False,
                      "reason": "no impostor comparisons in this group"}
            else:
                op = operating_point(gs, is_, target, sorted_threshold_at_fmr(is_sorted, target) if thr is None
                                     else thr)
            rows.append({"group": name, "target_fmr": float(target), "threshold_kind": kind, **op})
    ops = pd.DataFrame(rows)
    fm = rate_frame(ops["false_matches"], ops["n_impostor"], "", confidence)
    fn = rate_frame(ops["false_non_matches"], ops["n_genuine"], "", confidence)
    ops["fmr_ci_low"], ops["fmr_ci_high"], ops["fmr_display"] = fm["ci_low"], fm["ci_high"], fm["display"]
    ops["fnmr_ci_low"], ops["fnmr_ci_high"], ops["fnmr_display"] = fn["ci_low"], fn["ci_high"], fn["display"]
    return {"eer": pd.DataFrame(eer_rows)[EER_COLUMNS], "operating_points": ops[OP_COLUMNS]}


# ------------------------------------------------------------------------------ ratios with zero counts ---
RATIO_METRICS = ("fmr_max_min", "fmr_max_geomean", "fnmr_max_min", "fnmr_max_geomean")


def bounded_summaries(false_matches: np.ndarray, n_impostor: np.ndarray, false_non_matches: np.ndarray,
                      n_genuine: np.ndarray, summarize, ratio_metrics: Sequence[str] = RATIO_METRICS,
                      ) -> pd.DataFrame:
    """Differential summaries from per-group counts, with ratios that would divide by a zero rate given as
    lower bounds instead of NaN.

    ``summarize(fmr, fnmr) -> DataFrame`` with columns metric, value, defined, note (e.g.
    ``grid.report.fairness.summaries``; tasks/ does not import grid). Point values come from the observed rates.
    For a ratio metric (``ratio_metrics``) undefined because a rate is 0, each zero rate is replaced by its
    rule-of-three bound 3/n and the ratio recomputed: since the true zero-count rate is below 3/n (95%), the
    ratio is >= that value, reported with bound ">=". If a replaced bound exceeds the highest observed rate the
    bound is uninformative: NaN with that reason. Returns summarize's columns plus ``bound`` ("" or ">=")."""
    fm, ni = np.asarray(false_matches, np.int64), np.asarray(n_impostor, np.int64)
    fn, ng = np.asarray(false_non_matches, np.int64), np.asarray(n_genuine, np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        fmr = np.where(ni > 0, fm / np.maximum(ni, 1), np.nan)
        fnmr = np.where(ng > 0, fn / np.maximum(ng, 1), np.nan)
    out = summarize(fmr, fnmr).copy()
    out["bound"] = ""
    sub = {}
    for kind, k, n, r in (("fmr", fm, ni, fmr), ("fnmr", fn, ng, fnmr)):
        zero = (k == 0) & (n > 0)
        if zero.any() and not np.isnan(r).any():
            rs = np.where(zero, rule_of_three(n), r)
            ok = r.max() > 0 and rs[zero].max() <= r.max()
            sub[kind] = (rs, ok, float(rs[zero].max()), float(r.max()))
    if not sub:
        return out
    alt = summarize(sub.get("fmr", (fmr,))[0], sub.get("fnmr", (fnmr,))[0]).set_index("metric")
    for idx, row in out.iterrows():
        key = row["metric"]
        kind = key.split("_")[0]
        if key not in ratio_metrics or row["defined"] or kind not in sub:
            continue
        _, ok, ub, top = sub[kind]
        if not ok:
            out.loc[idx, "note"] = (f"{row['note']}; no bound: a zero-count group's 3/n = {ub:.3g} is not below "
                                    f"the highest observed {kind.upper()} ({top:.3g})")
            continue
        out.loc[idx, ["value", "defined", "bound"]] = [float(alt.loc[key, "value"]), True, ">="]
        out.loc[idx, "note"] = (f"lower bound: a zero {kind.upper()} replaced by its rule-of-three bound 3/n "
                                f"(point value undefined)")
    return out
