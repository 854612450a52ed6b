"""Group aggregators: how unevenly a system serves groups, from one value per group. The single home of each.

For a classifier, from each test group's accuracy: the range (max - min), the population standard deviation
across groups, and the skewed error ratio SER = max error / min error (error = 1 - accuracy).

For a verification system, from each demographic group's false match rate (FMR) and false non-match rate (FNMR)
at the same threshold:

- Max/Min and Max/GeoMean of the FMRs and of the FNMRs (NIST FRVT's summaries of demographic differentials),
- the Fairness Discrepancy Rate  FDR = 1 - (a * max|FMR_i - FMR_j| + (1 - a) * max|FNMR_i - FNMR_j|),
- GARBE = a * Gini(FMR) + (1 - a) * Gini(FNMR),  Gini(x) = n/(n-1) * sum_i sum_j |x_i - x_j| / (2 n^2 mean(x)),
- WERM (Linghu et al., IJCB 2024) = (max FMR / GeoMean(FMR + eps))^alpha * (max FNMR / GeoMean(FNMR + eps))^beta,
  alpha = beta = 0.5, eps = 1e-5 (the authors' ``compute_werm_geo``),

with a = 0.5. A value that is mathematically undefined (a zero rate in a ratio, a zero mean in a Gini
coefficient, fewer than two groups) is NaN together with a note saying why: never inf and never 0.
The formulas and their meaning are in docs/REPORT.md.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

DEFAULT_A = 0.5

# metric key -> human-readable label (the order is the order of the report's table)
METRICS: dict[str, str] = {
    "fmr_max_min": "FMR Max/Min",
    "fmr_max_geomean": "FMR Max/GeoMean",
    "fnmr_max_min": "FNMR Max/Min",
    "fnmr_max_geomean": "FNMR Max/GeoMean",
    "fdr": "FDR (a=0.5)",
    "garbe": "GARBE (a=0.5)",
    "werm": "WERM (exponents 0.5, eps 1e-5)",
}
WERM_ALPHA = WERM_BETA = 0.5   # WERM's exponents of the FMR and the FNMR ratio (Linghu et al., IJCB 2024)
WERM_EPSILON = 1e-5            # added to every rate inside WERM's geometric means (so a zero rate is allowed)


def _vector(x: Sequence[float] | np.ndarray) -> np.ndarray:
    return np.asarray(x, dtype=float).reshape(-1)


def _check_rates(x: np.ndarray, name: str) -> str | None:
    """A note when ``x`` cannot give a defined summary (too few groups, missing or invalid rates), else None."""
    if x.size < 2:
        return f"needs at least 2 groups' {name}, got {x.size}"
    if np.isnan(x).any():
        return f"a group's {name} is missing"
    if (x < 0).any() or (x > 1).any():
        return f"{name} outside [0, 1]"
    return None


def value_range(x: Sequence[float] | np.ndarray, name: str = "rate") -> tuple[float, str]:
    """max(x) - min(x) and a note; (NaN, note) with fewer than two groups or missing values."""
    v = _vector(x)
    note = _check_rates(v, name)
    return (float("nan"), note) if note else (float(v.max() - v.min()), "")


def group_std(x: Sequence[float] | np.ndarray, name: str = "rate") -> tuple[float, str]:
    """Population standard deviation (ddof=0) across the groups, and a note; NaN with a note when undefined."""
    v = _vector(x)
    note = _check_rates(v, name)
    return (float("nan"), note) if note else (float(v.std(ddof=0)), "")


def skewed_error_ratio(accuracy: Sequence[float] | np.ndarray) -> tuple[float, str]:
    """SER = max(error) / min(error), error = 1 - accuracy per group; (NaN, note) when the lowest error is 0."""
    return max_min_ratio(1.0 - _vector(accuracy), "error")


def max_min_ratio(x: Sequence[float] | np.ndarray, name: str = "rate") -> tuple[float, str]:
    """max(x) / min(x) and a note; (NaN, note) when the lowest rate is 0 (the ratio is undefined)."""
    v = _vector(x)
    note = _check_rates(v, name)
    if note:
        return float("nan"), note
    if v.min() == 0:
        return float("nan"), f"undefined: lowest {name} is 0"
    return float(v.max() / v.min()), ""


def max_geomean_ratio(x: Sequence[float] | np.ndarray, name: str = "rate") -> tuple[float, str]:
    """max(x) / geometric mean(x) and a note; (NaN, note) when a rate is 0 (the geometric mean is 0)."""
    v = _vector(x)
    note = _check_rates(v, name)
    if note:
        return float("nan"), note
    if (v == 0).any():
        return float("nan"), f"undefined: a {name} is 0, so the geometric mean is 0"
    return float(v.max() / np.exp(np.log(v).mean())), ""


def gini(x: Sequence[float] | np.ndarray, name: str = "rate") -> tuple[float, str]:
    """Gini(x) = n/(n-1) * sum_i sum_j |x_i - x_j| / (2 n^2 mean(x)), in [0, 1]; NaN with a note if mean(x) = 0."""
    v = _vector(x)
    note = _check_rates(v, name)
    if note:
        return float("nan"), note
    n = v.size
    mean = v.mean()
    if mean == 0:
        return float("nan"), f"undefined: every {name} is 0"
    total = np.abs(v[:, None] - v[None, :]).sum()
    return float(n / (n - 1) * total / (2 * n * n * mean)), ""


def fdr(fmr: Sequence[float] | np.ndarray, fnmr: Sequence[float] | np.ndarray,
        a: float = DEFAULT_A) -> tuple[float, str]:
    """Fairness Discrepancy Rate 1 - (a max|FMR_i - FMR_j| + (1 - a) max|FNMR_i - FNMR_j|); 1 = no discrepancy."""
    (f, n1), (g, n2) = value_range(fmr, "FMR"), value_range(fnmr, "FNMR")
    if n1 or n2:
        return float("nan"), n1 or n2
    return float(1.0 - (a * f + (1.0 - a) * g)), ""


def garbe(fmr: Sequence[float] | np.ndarray, fnmr: Sequence[float] | np.ndarray,
          a: float = DEFAULT_A) -> tuple[float, str]:
    """GARBE = a Gini(FMR) + (1 - a) Gini(FNMR); 0 = no differential. NaN with a note if a Gini is undefined."""
    g1, n1 = gini(fmr, "FMR")
    g2, n2 = gini(fnmr, "FNMR")
    if n1 or n2:
        return float("nan"), "; ".join(n for n in (n1, n2) if n)
    return float(a * g1 + (1.0 - a) * g2), ""


def werm(fmr: Sequence[float] | np.ndarray, fnmr: Sequence[float] | np.ndarray, alpha: float = WERM_ALPHA,
         beta: float = WERM_BETA, epsilon: float = WERM_EPSILON) -> tuple[float, str]:
    """WERM = (max FMR / GeoMean(FMR + eps))^alpha * (max FNMR / GeoMean(FNMR + eps))^beta, as Linghu et al.
    (IJCB 2024) compute it; 1 = equal rates. NaN with a note when every FMR or every FNMR is 0 (the product is
    then 0, which would read as better than equal)."""
    terms = []
    for x, name, power in ((_vector(fmr), "FMR", alpha), (_vector(fnmr), "FNMR", beta)):
        note = _check_rates(x, name)
        if note:
            return float("nan"), note
        if x.max() == 0:
            return float("nan"), f"undefined: every {name} is 0"
        terms.append((x.max() / np.exp(np.log(x + epsilon).mean())) ** power)
    return float(terms[0] * terms[1]), ""


def _summary_notes(fmr: Sequence[float] | np.ndarray, fnmr: Sequence[float] | np.ndarray,
                   a: float = DEFAULT_A) -> dict[str, tuple[float, str]]:
    """metric -> (value, note) of every summary, in :data:`METRICS` order."""
    return {
        "fmr_max_min": max_min_ratio(fmr, "FMR"),
        "fmr_max_geomean": max_geomean_ratio(fmr, "FMR"),
        "fnmr_max_min": max_min_ratio(fnmr, "FNMR"),
        "fnmr_max_geomean": max_geomean_ratio(fnmr, "FNMR"),
        "fdr": fdr(fmr, fnmr, a),
        "garbe": garbe(fmr, fnmr, a),
        "werm": werm(fmr, fnmr),
    }


def summary_values(fmr: Sequence[float] | np.ndarray, fnmr: Sequence[float] | np.ndarray,
                   a: float = DEFAULT_A) -> dict[str, float]:
    """metric -> value (NaN if undefined) of every summary: the values of :func:`summaries` without building a
    table (what the identity bootstrap evaluates once per resample)."""
    return {key: value for key, (value, _) in _summary_notes(fmr, fnmr, a).items()}


def summaries(fmr: Sequence[float] | np.ndarray, fnmr: Sequence[float] | np.ndarray,
              a: float = DEFAULT_A) -> pd.DataFrame:
    """Every summary for one set of groups: columns metric, label, value (NaN if undefined), defined, note."""
    rows = []
    for key, (value, note) in _summary_notes(fmr, fnmr, a).items():
        label = METRICS[key].replace("a=0.5", f"a={a:g}")
        rows.append({"metric": key, "label": label, "value": value, "defined": not np.isnan(value), "note": note})
    return pd.DataFrame(rows, columns=["metric", "label", "value", "defined", "note"])


def by_seed(rates: pd.DataFrame, a: float = DEFAULT_A, groups: Sequence[str] | None = None) -> pd.DataFrame:
    """The summaries per seed from a ``demographic_rates`` table (columns seed, group, fmr, fnmr).

    ``groups`` fixes which groups take part (and their order); by default every group in the table. A seed that
    lacks one of the groups gives undefined values with a note naming the missing groups.
    Returns columns seed, metric, label, value, defined, note.
    """
    columns = ["seed", "metric", "label", "value", "defined", "note"]
    if rates.empty:
        return pd.DataFrame(columns=columns)
    wanted = list(groups) if groups is not None else sorted(rates["group"].unique())
    frames = []
    for seed, part in rates.groupby("seed", sort=True):
        part = part.drop_duplicates("group", keep="last").set_index("group")
        absent = [g for g in wanted if g not in part.index]
        if absent:
            frame = summaries([], [], a)
            frame["value"], frame["defined"] = float("nan"), False
            frame["note"] = f"no rates for {', '.join(absent)}"
        else:
            frame = summaries(part.loc[wanted, "fmr"].to_numpy(float), part.loc[wanted, "fnmr"].to_numpy(float), a)
        frame.insert(0, "seed", seed)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)[columns]


def summarize(per_seed: pd.DataFrame) -> pd.DataFrame:
    """Mean ± std (ddof=1) over the seeds where a summary is defined.

    Returns columns metric, label, mean, std, n_seeds (defined), n_undefined, note (why some seeds are undefined,
    with the seeds). mean is NaN when no seed is defined; std is NaN with fewer than 2 defined seeds.
    """
    columns = ["metric", "label", "mean", "std", "n_seeds", "n_undefined", "note"]
    if per_seed.empty:
        return pd.DataFrame(columns=columns)
    rows = []
    for key in [m for m in METRICS if m in set(per_seed["metric"])]:
        part = per_seed[per_seed["metric"] == key]
        ok = part[part["defined"]]
        bad = part[~part["defined"]]
        notes = []
        for note, seeds in bad.groupby("note", sort=False)["seed"]:
            notes.append(f"undefined in seed{'s' if len(seeds) > 1 else ''} "
                         f"{', '.join(str(s) for s in seeds)}: {note.removeprefix('undefined: ')}")
        rows.append({
            "metric": key, "label": part["label"].iloc[0],
            "mean": float(ok["value"].mean()) if len(ok) else float("nan"),
            "std": float(ok["value"].std(ddof=1)) if len(ok) > 1 else float("nan"),
            "n_seeds": int(len(ok)), "n_undefined": int(len(bad)), "note": "; ".join(notes),
        })
    return pd.DataFrame(rows, columns=columns)
