"""Classifier-side statistics: paired tests over seeds, per-cell rates from per-image predictions, equalized odds.

- :func:`paired_t_test` — the plain paired t-test of grid.report.stats.paired_test, but a difference that is
  constant up to rounding (sd <= rtol x the magnitude of the means) is undefined like an exactly constant one.
- :func:`corrected_resampled_t_test` — Nadeau & Bengio (2003): with J resampled train/test splits,
  t = mean(d) / sqrt((1/J + n_test/n_train) var(d)), J - 1 degrees of freedom (var with ddof = 1). The plain
  paired t-test (the 1/J term alone) ignores that the splits overlap and is too liberal.
- :func:`classification_rates` — per group counts and TPR, FPR, TNR, FNR, accuracy, balanced accuracy
  (TPR + TNR) / 2. Positive class = label 1 (female: TPR = women classified as women, FPR = men classified as
  women).
- :func:`equalized_odds_difference` — Fairlearn's: max(max_g TPR_g - min_g TPR_g, max_g FPR_g - min_g FPR_g).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from storage.errors import InputError

RTOL = 1e-9


def _pair(a: Any, b: Any) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(a, pd.Series) and isinstance(b, pd.Series):
        both = pd.concat([a.rename("a"), b.rename("b")], axis=1, join="inner").dropna()
        return both["a"].to_numpy(float), both["b"].to_numpy(float)
    x, y = np.asarray(a, float).reshape(-1), np.asarray(b, float).reshape(-1)
    if x.shape != y.shape:
        raise InputError(f"paired samples need the same length, got {x.size} and {y.size}")
    keep = ~(np.isnan(x) | np.isnan(y))
    return x[keep], y[keep]


def _constant(d: np.ndarray, x: np.ndarray, y: np.ndarray, rtol: float) -> bool:
    """True when the differences are identical up to rounding: sd <= rtol * max(|mean x|, |mean y|, |mean d|)."""
    scale = max(abs(float(x.mean())), abs(float(y.mean())), abs(float(d.mean())))
    return float(d.std(ddof=1)) <= rtol * scale


def paired_t_test(a: Any, b: Any, confidence: float = 0.95, rtol: float = RTOL) -> dict[str, Any]:
    """Paired t-test of a - b (Series are aligned on their index, NaN pairs dropped).

    d = a - b, n pairs, mean d, s_d (ddof=1); CI = mean ± t_{(1+c)/2, n-1} s_d / sqrt(n); t = mean / (s_d/sqrt(n)),
    two-sided p from t_{n-1}. Returns n_pairs, mean_diff, sd_diff, ci_low, ci_high, t, p_value, note — NaN with
    a note when n < 2 or when d is constant: s_d <= rtol * max(|mean a|, |mean b|, |mean d|) (so 1e-17 of
    rounding noise on identical differences is constant, not an infinite t)."""
    x, y = _pair(a, b)
    d = x - y
    n = int(d.size)
    out: dict[str, Any] = {"n_pairs": n, "mean_diff": float(d.mean()) if n else np.nan, "sd_diff": np.nan,
                           "ci_low": np.nan, "ci_high": np.nan, "t": np.nan, "p_value": np.nan, "note": ""}
    if n < 2:
        out["note"] = f"undefined: {n} paired seed{'s' if n != 1 else ''} (needs at least 2)"
        return out
    sd = float(d.std(ddof=1))
    out["sd_diff"] = sd
    if _constant(d, x, y, rtol):
        out["ci_low"] = out["ci_high"] = out["mean_diff"]
        out["note"] = "undefined test: the difference is identical in every seed (up to rounding)"
        return out
    se = sd / np.sqrt(n)
    from scipy import stats   # here: the driver plans without importing scipy.stats (0.6 s)

    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * se
    t = out["mean_diff"] / se
    out.update(ci_low=out["mean_diff"] - half, ci_high=out["mean_diff"] + half, t=float(t),
               p_value=float(2 * stats.t.sf(abs(t), n - 1)))
    return out


def corrected_resampled_t_test(a: Any, b: Any, n_train: int, n_test: int, confidence: float = 0.95,
                               rtol: float = RTOL) -> dict[str, Any]:
    """Nadeau-Bengio corrected resampled t-test of a - b over J resampled splits (seeds).

    t = mean(d) / sqrt((1/J + n_test/n_train) var(d)), df = J - 1, two-sided p; CI = mean ± t_{(1+c)/2, J-1}
    sqrt((1/J + n_test/n_train) var(d)). Returns the keys of :func:`paired_t_test` (t, p_value, ci corrected)
    plus df, correction (= 1 + J n_test/n_train, the variance inflation over the plain test), t_plain, p_plain."""
    if not (isinstance(n_train, (int, np.integer)) and isinstance(n_test, (int, np.integer))
            and n_train > 0 and n_test > 0) or isinstance(n_train, bool) or isinstance(n_test, bool):
        raise InputError(f"n_train and n_test must be positive integers, got {n_train!r}, {n_test!r}")
    plain = paired_t_test(a, b, confidence, rtol)
    out = dict(plain)
    J = plain["n_pairs"]
    out.update(df=J - 1 if J >= 2 else np.nan, correction=1 + J * n_test / n_train if J else np.nan,
               t_plain=plain["t"], p_plain=plain["p_value"])
    if np.isnan(plain["t"]):
        return out
    var = plain["sd_diff"] ** 2
    se = float(np.sqrt((1.0 / J + n_test / n_train) * var))
    t = plain["mean_diff"] / se
    from scipy import stats

    half = float(stats.t.ppf(0.5 + confidence / 2, J - 1)) * se
    out.update(t=float(t), p_value=float(2 * stats.t.sf(abs(t), J - 1)), ci_low=plain["mean_diff"] - half,
               ci_high=plain["mean_diff"] + half)
    return out


RATE_COLUMNS = ["group", "n", "n_pos", "n_neg", "tp", "fn", "tn", "fp", "accuracy", "tpr", "fpr", "tnr", "fnr",
                "balanced_accuracy", "note"]


def _labels(y: Any, name: str) -> np.ndarray:
    v = np.asarray(y).reshape(-1)
    if v.size and not np.isin(v, [0, 1]).all():
        raise InputError(f"{name} must be labels 0 (male) or 1 (female)")
    return v.astype(np.int8)


def classification_rates(y_true: Any, y_pred: Any, group: Any | None = None,
                         groups: Sequence[str] | None = None) -> pd.DataFrame:
    """Counts and rates per group (and "all" first): tp, fn, tn, fp; accuracy = (tp+tn)/n, TPR = tp/(tp+fn),
    FPR = fp/(fp+tn), TNR = 1 - FPR, FNR = 1 - TPR, balanced accuracy = (TPR + TNR)/2. Columns
    :data:`RATE_COLUMNS`. A rate over an absent class is NaN, with a note."""
    yt, yp = _labels(y_true, "y_true"), _labels(y_pred, "y_pred")
    if yt.shape != yp.shape:
        raise InputError("y_true and y_pred need the same length")
    g = np.full(yt.size, "all", dtype=object) if group is None else np.asarray(group).astype(str)
    if g.shape != yt.shape:
        raise InputError("group needs one entry per prediction")
    names = list(groups) if groups is not None else sorted(set(g.tolist()))
    rows = []
    for name in ["all", *[x for x in names if x != "all"]]:
        sel = np.ones(yt.size, bool) if name == "all" else g == name
        t, p = yt[sel], yp[sel]
        tp, fn = int(((t == 1) & (p == 1)).sum()), int(((t == 1) & (p == 0)).sum())
        tn, fp = int(((t == 0) & (p == 0)).sum()), int(((t == 0) & (p == 1)).sum())
        npos, nneg = tp + fn, tn + fp
        tpr = tp / npos if npos else np.nan
        fpr = fp / nneg if nneg else np.nan
        notes = [m for m, c in (("no positives (label 1): TPR, FNR undefined", npos),
                                ("no negatives (label 0): FPR, TNR undefined", nneg)) if not c]
        rows.append({"group": name, "n": int(sel.sum()), "n_pos": npos, "n_neg": nneg, "tp": tp, "fn": fn,
                     "tn": tn, "fp": fp, "accuracy": (tp + tn) / sel.sum() if sel.any() else np.nan,
                     "tpr": tpr, "fpr": fpr, "tnr": 1 - fpr, "fnr": 1 - tpr,
                     "balanced_accuracy": (tpr + 1 - fpr) / 2, "note": "; ".join(notes)})
    return pd.DataFrame(rows, columns=RATE_COLUMNS)


def balanced_accuracy(y_true: Any, y_pred: Any) -> float:
    """(TPR + TNR) / 2 of one cell's predictions; InputError when a class is absent (undefined)."""
    row = classification_rates(y_true, y_pred).iloc[0]
    if row["note"]:
        raise InputError(f"balanced accuracy undefined: {row['note']}")
    return float(row["balanced_accuracy"])


def equalized_odds_difference(y_true: Any, y_pred: Any, group: Any) -> dict[str, Any]:
    """Fairlearn's equalized-odds difference across groups: max(TPR spread, FPR spread), spread = max - min over
    groups. Returns value, tpr_difference, fpr_difference, worst ("tpr" or "fpr"), note; NaN + note when a
    group lacks a class or there are fewer than 2 groups."""
    r = classification_rates(y_true, y_pred, group)
    r = r[r["group"] != "all"]
    out: dict[str, Any] = {"value": np.nan, "tpr_difference": np.nan, "fpr_difference": np.nan, "worst": "",
                           "note": ""}
    if len(r) < 2:
        out["note"] = f"undefined: needs at least 2 groups, got {len(r)}"
        return out
    bad = r[r["note"] != ""]
    if len(bad):
        out["note"] = "undefined: " + "; ".join(f"{g}: {n}" for g, n in zip(bad["group"], bad["note"]))
        return out
    tpr_d = float(r["tpr"].max() - r["tpr"].min())
    fpr_d = float(r["fpr"].max() - r["fpr"].min())
    out.update(value=max(tpr_d, fpr_d), tpr_difference=tpr_d, fpr_difference=fpr_d,
               worst="tpr" if tpr_d >= fpr_d else "fpr")
    return out
