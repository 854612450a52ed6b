"""Statistics of loaded results: the matrices and summaries of the report (the notebook API).

    >>> from grid.report import load_results, stats
    >>> res = load_results("results")
    >>> stats.accuracy_matrix(res, "mlp")                     # train group x test group, mean over seeds
    >>> stats.matrix_text(res, "mlp")                         # the same as "0.951 ± 0.004" strings
    >>> stats.paired_differences(res)                         # off-diagonal cell - same-group cell, CI and p

Every function takes loaded :class:`~grid.report.results.Results` (never a path). Rows and columns follow the
config's order (train groups as configured with ``all`` last, test groups as configured). Only rows of planned
jobs that the ledger marks done are used. Standard deviations over seeds use ddof=1. Formulas: docs/REPORT.md.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from grid.report import fairness
from grid.report.results import Results
from tasks import allpairs, allpairs_kind, classifier_stats, rates as trates
from tasks import bootstrap as tbootstrap
from storage.errors import InputError
from storage.results import job_state
from storage.vocab import ALL, demographic_order

METRICS: tuple[str, ...] = ("accuracy", "accuracy_male", "accuracy_female", "balanced_accuracy")
VERIFICATION_METRICS: tuple[str, ...] = ("eer", "fnmr_at_fmr_1e_3", "fnmr_at_fmr_1e_2")
MARK = "†"


def demographic_groups(res: Results) -> list[str]:
    """The demographic groups ("asian_male", ...) present in the verification tables, in ethnicity x gender order."""
    found = set(res.tables["demographic_rates"]["group"].dropna())
    imp = res.tables["impostor_matrix"]
    found |= set(imp["group_a"].dropna()) | set(imp["group_b"].dropna())
    return demographic_order(found, res.test_groups)


# ---------------------------------------------------------------------------------------------------- matrices
def accuracy_stats(res: Results, metric: str = "accuracy") -> pd.DataFrame:
    """Mean, std (ddof=1) and n over seeds of ``metric`` for every model x train group x test group cell.

    Columns: model, train_group, test_group, mean, std, n, n_expected, incomplete. Planned cells without any data
    have n = 0 and NaN mean; ``incomplete`` marks cells with fewer seeds than planned (or than the fullest cell).
    """
    if metric not in METRICS:
        raise InputError(f"unknown accuracy metric {metric!r}; expected one of {', '.join(METRICS)}")
    acc = res.tables["accuracy"]
    keys = ["model", "train_group", "test_group"]
    acc = acc.dropna(subset=[metric]).drop_duplicates([*keys, "seed"], keep="last")
    grouped = acc.groupby(keys, sort=False)[metric].agg(mean="mean", std=lambda s: s.std(ddof=1), n="count")
    grid = pd.MultiIndex.from_product([res.models, res.train_groups, res.test_groups], names=keys)
    extra = grouped.index.difference(grid)
    index = grid.append(extra) if len(extra) else grid
    out = grouped.reindex(index).reset_index()
    out["n"] = out["n"].fillna(0).astype(int)
    planned = len(res.seeds) if res.seeds else 0
    n_expected = max(planned, int(out["n"].max()) if len(out) else 0)
    out["n_expected"] = n_expected
    out["incomplete"] = out["n"] < n_expected
    out.loc[out["n"] < 2, "std"] = np.nan
    return out[[*keys, "mean", "std", "n", "n_expected", "incomplete"]]


def accuracy_matrix(res: Results, model: str, metric: str = "accuracy",
                    value: str = "mean") -> pd.DataFrame:
    """Train group (rows) x test group (columns) matrix of one model: value "mean", "std" or "n"."""
    if value not in ("mean", "std", "n"):
        raise InputError(f"unknown matrix value {value!r}; expected mean, std or n")
    st = accuracy_stats(res, metric)
    st = st[st["model"] == model]
    mat = st.pivot(index="train_group", columns="test_group", values=value)
    rows = [g for g in res.train_groups if g in mat.index] + [g for g in mat.index if g not in res.train_groups]
    cols = [g for g in res.test_groups if g in mat.columns] + [g for g in mat.columns if g not in res.test_groups]
    mat = mat.reindex(index=rows, columns=cols)
    mat.index.name, mat.columns.name = "train_group", "test_group"
    return mat


def format_cell(mean: float, std: float, n: int, incomplete: bool = False, digits: int = 3) -> str:
    """"0.951 ± 0.004" ("0.951 (n=1)" for one seed, "—" for none), with † appended when ``incomplete``."""
    if n == 0 or pd.isna(mean):
        return "—"
    text = f"{mean:.{digits}f} ± {std:.{digits}f}" if n > 1 and not pd.isna(std) else f"{mean:.{digits}f} (n=1)"
    return text + (MARK if incomplete else "")


def matrix_text(res: Results, model: str, metric: str = "accuracy",
                digits: int = 3) -> pd.DataFrame:
    """The matrix of one model as "mean ± std" strings, cells with fewer seeds marked with †."""
    st = accuracy_stats(res, metric)
    st = st[st["model"] == model].copy()
    st["text"] = [format_cell(m, s, n, i, digits) for m, s, n, i in
                  zip(st["mean"], st["std"], st["n"], st["incomplete"])]
    mat = st.pivot(index="train_group", columns="test_group", values="text")
    mat = mat.reindex(index=[g for g in res.train_groups if g in mat.index] +
                      [g for g in mat.index if g not in res.train_groups],
                      columns=[g for g in res.test_groups if g in mat.columns] +
                      [g for g in mat.columns if g not in res.test_groups])
    mat.index.name, mat.columns.name = "train_group", "test_group"
    return mat.fillna("—")


def incomplete_cells(res: Results, metric: str = "accuracy",
                     model: str | None = None) -> list[str]:
    """Footnote lines for cells with fewer seeds than planned, one per model, train group and seed count:
    "mlp train=asian (every test group): 4 of 5 seeds" or "mlp train=asian test=black: 3 of 5 seeds"."""
    st = accuracy_stats(res, metric)
    if model is not None:
        st = st[st["model"] == model]
    lines = []
    for (m, train), row in st.groupby(["model", "train_group"], sort=False):
        bad = row[row["incomplete"]]
        for n, part in bad.groupby("n", sort=True):
            expected = int(part["n_expected"].iloc[0])
            where = "(every test group)" if len(part) == len(row) else "test=" + ", ".join(part["test_group"])
            count = f"no results (0 of {expected} seeds)" if n == 0 else f"{n} of {expected} seeds"
            lines.append(f"{m} train={train} {where}: {count}")
    return lines


def _per_seed(res: Results, metric: str) -> pd.DataFrame:
    acc = res.tables["accuracy"].dropna(subset=[metric])
    return acc.drop_duplicates(["model", "train_group", "test_group", "seed"], keep="last")


# ------------------------------------------------------------------------------------------------ paired tests
def paired_test(x: pd.Series, y: pd.Series, confidence: float = 0.95, n_train: float | None = None,
                n_test: float | None = None) -> dict[str, Any]:
    """Paired comparison of x - y over the labels (seeds) both have: the plain paired t-test and, when
    ``n_train`` and ``n_test`` are known, the Nadeau-Bengio corrected resampled t-test.

    Plain (tasks.classifier_stats.paired_t_test): n_pairs, mean_diff, sd_diff (ddof=1), ci_low, ci_high (t CI of
    the mean difference), t, p_value (two-sided). Corrected (classifier_stats.corrected_resampled_t_test: the
    variance s_d²/J becomes (1/J + n_test/n_train) s_d², since the seeds' training sets overlap): t_corrected,
    p_corrected, ci_low_corrected, ci_high_corrected, correction (= 1 + J n_test/n_train). Undefined values
    (fewer than 2 pairs, differences identical up to rounding, unknown n_train) are NaN with a note.
    """
    plain = classifier_stats.paired_t_test(x, y, confidence)
    out = {**plain, "t_corrected": np.nan, "p_corrected": np.nan, "ci_low_corrected": np.nan,
           "ci_high_corrected": np.nan, "correction": np.nan}
    ok = n_train is not None and n_test is not None and np.isfinite(n_train) and np.isfinite(n_test) \
        and n_train > 0 and n_test > 0
    if not ok:
        if plain["n_pairs"] >= 2:
            out["note"] = "; ".join(filter(None, [plain["note"], "corrected test undefined: unknown training/test "
                                                                   "sizes (results stored before n_train)"]))
        return out
    nb = classifier_stats.corrected_resampled_t_test(x, y, int(n_train), int(n_test), confidence)
    out.update(t_corrected=nb["t"], p_corrected=nb["p_value"], ci_low_corrected=nb["ci_low"],
               ci_high_corrected=nb["ci_high"], correction=nb["correction"])
    return out


def _mean_of(frame: pd.DataFrame, column: str, how: Any) -> float:
    """``how`` (min, np.mean) of a column's stored values; NaN when the column is absent or empty."""
    if column not in frame or frame[column].dropna().empty:
        return float("nan")
    return float(how(frame[column].dropna().to_numpy(float)))


def holm(p_values: pd.Series) -> pd.Series:
    """Holm-Bonferroni adjusted p-values (NaN stays NaN and does not count as a test)."""
    p = p_values.astype(float)
    valid = p.dropna().sort_values()
    m = len(valid)
    adjusted = pd.Series(np.nan, index=p.index)
    running = 0.0
    for rank, (idx, value) in enumerate(valid.items()):
        running = max(running, min(1.0, (m - rank) * value))
        adjusted[idx] = running
    return adjusted


def paired_differences(res: Results, metric: str = "accuracy",
                       confidence: float = 0.95, alpha: float = 0.05) -> pd.DataFrame:
    """Each off-diagonal cell against the same-group (diagonal) cell of its column, paired by seed.

    For a test group T and a train group G != T (including ``all`` and unions), the difference is
    metric(G -> T) - metric(T -> T) per seed. Columns: model, test_group, train_group, reference, n_pairs,
    mean_cell, mean_reference, mean_diff, sd_diff, ci_low, ci_high, t, p_value, p_holm (Holm-adjusted over the
    comparisons of the model), significant (p_holm < alpha), and the Nadeau-Bengio corrected test beside it:
    t_corrected, p_corrected, p_holm_corrected, ci_low_corrected, ci_high_corrected, correction (n_train = the
    smaller training set of the two cells, n_test = the cell's test images, from the accuracy table), note.
    Columns whose test group is not a train group have no diagonal cell and are left out.
    """
    acc = _per_seed(res, metric)
    rows = []
    for model in res.models:
        sub = acc[acc["model"] == model]
        block = []
        for test in res.test_groups:
            if test not in res.train_groups:
                continue
            col = sub[sub["test_group"] == test]
            ref = col[col["train_group"] == test].set_index("seed")[metric]
            for train in res.train_groups:
                if train == test:
                    continue
                cell_rows = col[col["train_group"] == train]
                cell = cell_rows.set_index("seed")[metric]
                n_train = _mean_of(pd.concat([cell_rows, col[col["train_group"] == test]]), "n_train", min)
                result = paired_test(cell, ref, confidence, n_train, _mean_of(cell_rows, "n_test", np.mean))
                block.append({"model": model, "test_group": test, "train_group": train, "reference": test,
                              "mean_cell": float(cell.mean()) if len(cell) else np.nan,
                              "mean_reference": float(ref.mean()) if len(ref) else np.nan, **result})
        frame = pd.DataFrame(block)
        if not frame.empty:
            frame["p_holm"] = holm(frame["p_value"])
            frame["p_holm_corrected"] = holm(frame["p_corrected"])
            rows.append(frame)
    columns = ["model", "test_group", "train_group", "reference", "n_pairs", "mean_cell", "mean_reference",
               "mean_diff", "sd_diff", "ci_low", "ci_high", "t", "p_value", "p_holm", "significant", "t_corrected",
               "p_corrected", "p_holm_corrected", "ci_low_corrected", "ci_high_corrected", "correction", "note"]
    if not rows:
        return pd.DataFrame(columns=columns)
    out = pd.concat(rows, ignore_index=True)
    out["significant"] = out["p_holm"] < alpha
    return out[columns]


# --------------------------------------------------------------------------------------------- bias summaries
def _spread(values: pd.Series) -> dict[str, Any]:
    """Range, population std and skewed error ratio (grid.report.fairness) of one row of accuracies (indexed by
    test group)."""
    v = values.dropna()
    if len(v) < 2:
        return {"range": np.nan, "std_groups": np.nan, "skewed_error_ratio": np.nan,
                "note": f"needs at least 2 test groups with data, got {len(v)}"}
    ser, note = fairness.skewed_error_ratio(v)
    if note:
        note = f"skewed error ratio undefined: error is 0 on {(1.0 - v).idxmin()}"
    return {"range": fairness.value_range(v, "accuracy")[0], "std_groups": fairness.group_std(v, "accuracy")[0],
            "skewed_error_ratio": ser, "note": note}


def _ser_note(sers: pd.Series, wide: pd.DataFrame) -> str:
    undefined = [int(seed) for seed, v in zip(wide.index, sers) if pd.isna(v)]
    if not undefined:
        return ""
    return f"per-seed SER undefined (error 0) in seed{'s' if len(undefined) > 1 else ''} " + \
        ", ".join(map(str, undefined))


def row_spread(res: Results, metric: str = "accuracy") -> pd.DataFrame:
    """Per model and train group, how unevenly it serves the test groups.

    From the mean matrix: best and worst test group, range = max - min, std_groups (population std, ddof=0,
    across the test groups), skewed_error_ratio = highest error / lowest error (error = 1 - accuracy; NaN with a
    note when the lowest error is 0). range_sd: the standard deviation over seeds of the same
    statistic computed per seed (seeds with every test group), n_seeds of them. The per-seed skewed error ratio
    is unstable when an error is near 0, so its spread is given as ser_seed_min and ser_seed_max.
    """
    st = accuracy_stats(res, metric)
    acc = _per_seed(res, metric)
    rows = []
    for model in res.models:
        for train in res.train_groups:
            cell = st[(st["model"] == model) & (st["train_group"] == train)].set_index("test_group")["mean"]
            cell = cell.reindex([g for g in res.test_groups if g in cell.index])
            if cell.dropna().empty:
                continue
            point = _spread(cell)
            sub = acc[(acc["model"] == model) & (acc["train_group"] == train)]
            wide = sub.pivot(index="seed", columns="test_group", values=metric).reindex(columns=cell.index)
            wide = wide.dropna()
            per_seed = [_spread(r) for _, r in wide.iterrows()] if wide.shape[1] >= 2 else []
            ranges = pd.Series([p["range"] for p in per_seed], dtype=float)
            sers = pd.Series([p["skewed_error_ratio"] for p in per_seed], dtype=float)
            v = cell.dropna()
            rows.append({
                "model": model, "train_group": train,
                "best_test_group": v.idxmax(), "best": float(v.max()),
                "worst_test_group": v.idxmin(), "worst": float(v.min()),
                "range": point["range"], "range_sd": float(ranges.std(ddof=1)) if len(ranges) > 1 else np.nan,
                "std_groups": point["std_groups"], "skewed_error_ratio": point["skewed_error_ratio"],
                "ser_seed_min": float(sers.min()) if sers.notna().any() else np.nan,
                "ser_seed_max": float(sers.max()) if sers.notna().any() else np.nan,
                "n_seeds": len(per_seed), "note": "; ".join(n for n in (point["note"], _ser_note(sers, wide)) if n),
            })
    columns = ["model", "train_group", "best_test_group", "best", "worst_test_group", "worst", "range", "range_sd",
               "std_groups", "skewed_error_ratio", "ser_seed_min", "ser_seed_max", "n_seeds", "note"]
    return pd.DataFrame(rows, columns=columns)


def best_train_group(res: Results, metric: str = "accuracy",
                     confidence: float = 0.95) -> pd.DataFrame:
    """Per model and test group, the train group with the highest mean, and whether it beats the runner-up.

    Columns: model, test_group, best_train_group, best_mean, runner_up, runner_up_mean, margin (best - runner-up,
    mean of the paired differences), ci_low, ci_high, p_value (paired t-test best vs runner-up), n_pairs,
    same_group_is_best (None when the test group is not a train group), all_is_best, note.
    """
    st = accuracy_stats(res, metric)
    acc = _per_seed(res, metric)
    rows = []
    for model in res.models:
        for test in res.test_groups:
            col = st[(st["model"] == model) & (st["test_group"] == test)].dropna(subset=["mean"])
            if col.empty:
                continue
            col = col.sort_values("mean", ascending=False, kind="stable")
            best = col.iloc[0]
            row: dict[str, Any] = {"model": model, "test_group": test, "best_train_group": best["train_group"],
                                   "best_mean": float(best["mean"]), "runner_up": None, "runner_up_mean": np.nan,
                                   "margin": np.nan, "ci_low": np.nan, "ci_high": np.nan, "p_value": np.nan,
                                   "n_pairs": 0,
                                   "same_group_is_best": (best["train_group"] == test)
                                   if test in res.train_groups else None,
                                   "all_is_best": (best["train_group"] == ALL) if ALL in res.train_groups else None,
                                   "note": ""}
            if len(col) > 1:
                second = col.iloc[1]
                sub = acc[(acc["model"] == model) & (acc["test_group"] == test)]
                a = sub[sub["train_group"] == best["train_group"]].set_index("seed")[metric]
                b = sub[sub["train_group"] == second["train_group"]].set_index("seed")[metric]
                test_result = paired_test(a, b, confidence)
                row.update(runner_up=second["train_group"], runner_up_mean=float(second["mean"]),
                           margin=test_result["mean_diff"], ci_low=test_result["ci_low"],
                           ci_high=test_result["ci_high"], p_value=test_result["p_value"],
                           n_pairs=test_result["n_pairs"], note=test_result["note"])
            else:
                row["note"] = "only one train group has data"
            rows.append(row)
    columns = ["model", "test_group", "best_train_group", "best_mean", "runner_up", "runner_up_mean", "margin",
               "ci_low", "ci_high", "p_value", "n_pairs", "same_group_is_best", "all_is_best", "note"]
    return pd.DataFrame(rows, columns=columns)


# ----------------------------------------------------------------------------------------------- verification
def verification_summary(res: Results) -> pd.DataFrame:
    """Per test group: EER, FNMR at FMR=1e-3 and at 1e-2 as mean and std (ddof=1) over seeds.

    Columns: test_group, n_seeds, eer_mean, eer_std, eer_threshold_mean, fnmr_at_fmr_1e_3_mean/_std,
    fnmr_at_fmr_1e_2_mean/_std, genuine_mean, impostor_mean (mean scores), n_genuine, n_impostor (mean per
    seed), impostor_sampled (in any seed); and the lowest seed's value with its identity-bootstrap 95% interval
    (``ci_seed``; NaN when that seed was not bootstrapped): <metric>_seed, <metric>_ci_low, <metric>_ci_high.
    """
    ver = res.tables["verification"].drop_duplicates(["test_group", "seed"], keep="last")
    columns = ["test_group", "n_seeds"] + [f"{m}_{s}" for m in VERIFICATION_METRICS for s in ("mean", "std")] + \
        ["eer_threshold_mean", "genuine_mean", "impostor_mean", "n_genuine", "n_impostor", "impostor_sampled",
         "ci_seed"] + [f"{m}_{s}" for m in VERIFICATION_METRICS for s in ("seed", "ci_low", "ci_high")]
    if ver.empty:
        return pd.DataFrame(columns=columns)
    rows = []
    groups = [g for g in res.test_groups if g in set(ver["test_group"])]
    for group in groups:
        part = ver[ver["test_group"] == group]
        row: dict[str, Any] = {"test_group": group, "n_seeds": int(len(part))}
        for m in VERIFICATION_METRICS:
            row[f"{m}_mean"] = float(part[m].mean())
            row[f"{m}_std"] = float(part[m].std(ddof=1)) if len(part) > 1 else np.nan
        row.update(eer_threshold_mean=float(part["eer_threshold"].mean()),
                   genuine_mean=float(part["genuine_mean"].mean()), impostor_mean=float(part["impostor_mean"].mean()),
                   n_genuine=float(part["n_genuine"].mean()), n_impostor=float(part["n_impostor"].mean()),
                   impostor_sampled=bool(part["impostor_sampled"].fillna(False).astype(bool).any()))
        first = part.loc[part["seed"].idxmin()]
        row["ci_seed"] = int(first["seed"])
        for m in VERIFICATION_METRICS:
            row.update({f"{m}_seed": float(first[m]), f"{m}_ci_low": float(first[f"{m}_ci_low"]),
                        f"{m}_ci_high": float(first[f"{m}_ci_high"])})
        rows.append(row)
    return pd.DataFrame(rows, columns=columns)


def impostor_fmr_matrix(res: Results, value: str = "mean") -> pd.DataFrame:
    """Cross-group impostor FMR at the global threshold (FMR = 1e-3 overall): group_a (rows) x group_b.

    ``value``: "mean" or "std" (ddof=1) over seeds, or "n" (seeds). Empty when nothing is stored.
    """
    if value not in ("mean", "std", "n"):
        raise InputError(f"unknown matrix value {value!r}; expected mean, std or n")
    imp = res.tables["impostor_matrix"].drop_duplicates(["seed", "group_a", "group_b"], keep="last")
    if imp.empty:
        return pd.DataFrame()
    agg = {"mean": "mean", "std": lambda s: s.std(ddof=1), "n": "count"}[value]
    mat = imp.groupby(["group_a", "group_b"])["fmr"].agg(agg).unstack("group_b")
    order = demographic_groups(res)
    mat = mat.reindex(index=[g for g in order if g in mat.index], columns=[g for g in order if g in mat.columns])
    mat.index.name, mat.columns.name = "group_a", "group_b"
    return mat


def demographic_rates_summary(res: Results) -> pd.DataFrame:
    """Each demographic group's FMR and FNMR at the global threshold: mean and std (ddof=1) over seeds.

    Columns: group, n_seeds, fmr_mean, fmr_std, fnmr_mean, fnmr_std, threshold_mean.
    """
    rates = res.tables["demographic_rates"].drop_duplicates(["seed", "group"], keep="last")
    columns = ["group", "n_seeds", "fmr_mean", "fmr_std", "fnmr_mean", "fnmr_std", "threshold_mean"]
    if rates.empty:
        return pd.DataFrame(columns=columns)
    out = rates.groupby("group").agg(n_seeds=("seed", "count"), fmr_mean=("fmr", "mean"),
                                     fmr_std=("fmr", lambda s: s.std(ddof=1)), fnmr_mean=("fnmr", "mean"),
                                     fnmr_std=("fnmr", lambda s: s.std(ddof=1)),
                                     threshold_mean=("threshold", "mean"))
    out = out.reindex([g for g in demographic_groups(res) if g in out.index]).reset_index()
    return out[columns]


def fairness_by_seed(res: Results, a: float = fairness.DEFAULT_A) -> pd.DataFrame:
    """The demographic-differential summaries (Max/Min, Max/GeoMean, FDR, GARBE) per seed; see grid.fairness."""
    rates = res.tables["demographic_rates"].drop_duplicates(["seed", "group"], keep="last")
    groups = [g for g in demographic_groups(res) if g in set(rates["group"])] if not rates.empty else None
    return fairness.by_seed(rates, a, groups)


def fairness_summary(res: Results, a: float = fairness.DEFAULT_A) -> pd.DataFrame:
    """Mean ± std over seeds of each summary; columns metric, label, mean, std, n_seeds, n_undefined, note."""
    return fairness.summarize(fairness_by_seed(res, a))


# ------------------------------------------------------------------------------ issue 12: intervals and counts
def _first_seed(frame: pd.DataFrame) -> int | None:
    """The lowest seed stored in ``frame`` (the seed whose intervals the report shows), None when empty."""
    return int(frame["seed"].min()) if not frame.empty else None


def interval_text(estimate: float, low: float, high: float, digits: int = 3) -> str:
    """'0.0123 [0.0101, 0.0149]'; 'n/a' for an undefined estimate without an interval."""
    if np.isnan(estimate) and np.isnan(low):
        return "n/a"
    est = "n/a" if np.isnan(estimate) else f"{estimate:.{digits}g}"
    return est if np.isnan(low) else f"{est} [{low:.{digits}g}, {high:.{digits}g}]"


def verification_intervals(res: Results, seed: int | None = None) -> pd.DataFrame:
    """One seed's (default: the lowest) identity-bootstrap table: every verification number with its 95%
    percentile interval (ci_low, ci_high), counts k/n and Clopper-Pearson interval (cp_low, cp_high) for rates,
    and ``shown``: the estimate with its bootstrap interval (rates: "k/n" or the rule-of-three bound "<= 3/n" for
    k = 0, then the interval). Columns: the table's, plus shown. Empty when no bootstrap was stored."""
    ci = res.tables["verification_ci"].drop_duplicates(
        ["seed", "quantity", "group_a", "group_b", "target_fmr", "metric"], keep="last")
    seed = _first_seed(ci) if seed is None else seed
    part = ci[ci["seed"] == seed].reset_index(drop=True)
    return part.assign(shown=shown_intervals(part))


def shown_intervals(rows: pd.DataFrame) -> list[str]:
    """Each bootstrap row's (columns ``tasks.bootstrap.COLUMNS``) estimate with its bootstrap interval, as
    :func:`interval_text` ("<= 3/n" bound then the interval for a zero count; thresholds with 5 digits)."""
    shown = []
    for r in rows.itertuples():
        text = interval_text(r.estimate, r.ci_low, r.ci_high, 5 if r.quantity == "threshold" else 3)
        if r.k == 0 and r.n > 0:
            text = f"{r.display} [{r.ci_low:.3g}, {r.ci_high:.3g}]"
        shown.append(text)
    return shown


def impostor_interval_matrix(res: Results, seed: int | None = None) -> pd.DataFrame:
    """One seed's cross-group impostor FMR at the global threshold as text: "k/n-based FMR [CP 95%]" ("<= 3/n
    (0/n)" for no false match) and "(unresolved)" when the pair's comparisons cannot resolve the target FMR.
    group_a (rows) x group_b. Empty when nothing is stored."""
    imp = res.tables["impostor_matrix"].drop_duplicates(["seed", "group_a", "group_b"], keep="last")
    seed = _first_seed(imp) if seed is None else seed
    part = imp[imp["seed"] == seed]
    if part.empty or part["false_matches"].isna().any():     # nothing, or stored before the counts existed
        return pd.DataFrame()
    text = [f"{d} [{lo:.2g}, {hi:.2g}]" + ("" if ok else " (unresolved)")
            for d, lo, hi, ok in zip(part["display"], part["ci_low"], part["ci_high"], part["resolved"])]
    mat = part.assign(text=text).set_index(["group_a", "group_b"])["text"].unstack("group_b")
    order = demographic_groups(res)
    mat = mat.reindex(index=[g for g in order if g in mat.index], columns=[g for g in order if g in mat.columns])
    mat.index.name, mat.columns.name = "group_a", "group_b"
    return mat


def operating_points_summary(res: Results) -> pd.DataFrame:
    """Per group, target FMR and threshold kind (own / global): mean over seeds of the threshold, FMR and FNMR,
    the std (ddof=1) of the FNMR, the counts summed over seeds, the lowest seed's FNMR with its Clopper-Pearson
    interval, and whether every seed resolved the point (else the reasons). Columns: group, target_fmr,
    threshold_kind, n_seeds, threshold_mean, fmr_mean, fnmr_mean, fnmr_std, false_matches, n_impostor,
    false_non_matches, n_genuine, fnmr_seed (text), resolved, reason."""
    ops = res.tables["operating_points"].drop_duplicates(["seed", "group", "target_fmr", "threshold_kind"],
                                                         keep="last")
    columns = ["group", "target_fmr", "threshold_kind", "n_seeds", "threshold_mean", "fmr_mean", "fnmr_mean",
               "fnmr_std", "false_matches", "n_impostor", "false_non_matches", "n_genuine", "fnmr_seed", "resolved",
               "reason"]
    if ops.empty:
        return pd.DataFrame(columns=columns)
    first = _first_seed(ops)
    rows = []
    for (group, target, kind), part in ops.groupby(["group", "target_fmr", "threshold_kind"], sort=False):
        one = part[part["seed"] == first]
        rows.append({"group": group, "target_fmr": target, "threshold_kind": kind, "n_seeds": len(part),
                     "threshold_mean": part["threshold"].mean(), "fmr_mean": part["fmr"].mean(),
                     "fnmr_mean": part["fnmr"].mean(),
                     "fnmr_std": part["fnmr"].std(ddof=1) if len(part) > 1 else np.nan,
                     **{c: int(part[c].sum()) for c in ("false_matches", "n_impostor", "false_non_matches",
                                                         "n_genuine")},
                     "fnmr_seed": "" if one.empty else interval_text(one["fnmr"].iloc[0], one["fnmr_ci_low"].iloc[0],
                                                                     one["fnmr_ci_high"].iloc[0]),
                     "resolved": bool(part["resolved"].all()),
                     "reason": "; ".join(sorted(set(r for r in part["reason"] if r)))})
    out = pd.DataFrame(rows, columns=columns)
    order = {g: i for i, g in enumerate(["all", *demographic_groups(res)])}
    out["_o"] = out["group"].map(order).fillna(len(order))
    return out.sort_values(["_o", "threshold_kind", "target_fmr"], ascending=[True, False, False],
                           kind="stable").drop(columns="_o").reset_index(drop=True)


def group_eer_summary(res: Results) -> pd.DataFrame:
    """Each demographic group's own EER (and "all"): mean and std (ddof=1) over seeds. Columns: group, n_seeds,
    eer_mean, eer_std, eer_threshold_mean."""
    eer = res.tables["group_eer"].drop_duplicates(["seed", "group"], keep="last")
    columns = ["group", "n_seeds", "eer_mean", "eer_std", "eer_threshold_mean"]
    if eer.empty:
        return pd.DataFrame(columns=columns)
    out = eer.groupby("group").agg(n_seeds=("seed", "count"), eer_mean=("eer", "mean"),
                                   eer_std=("eer", lambda v: v.std(ddof=1)),
                                   eer_threshold_mean=("eer_threshold", "mean"))
    out = out.reindex([g for g in ["all", *demographic_groups(res)] if g in out.index]).reset_index()
    return out[columns]


def bounded_fairness_by_seed(res: Results) -> pd.DataFrame:
    """The differential summaries per seed from the stored counts (tasks.rates.bounded_summaries): a ratio over a
    zero rate becomes the lower bound ">=" obtained with that rate's rule-of-three bound 3/n instead of NaN.
    Columns: seed, metric, value, bound ("" or ">="), note."""
    dr = res.tables["demographic_rates"].drop_duplicates(["seed", "group"], keep="last")
    columns = ["seed", "metric", "value", "bound", "note"]
    if dr.empty or dr["false_matches"].isna().any():
        return pd.DataFrame(columns=columns)
    frames = []
    for seed, part in dr.groupby("seed"):
        out = trates.bounded_summaries(part["false_matches"], part["n_impostor"], part["false_non_matches"],
                                       part["n_genuine"], fairness.summaries)
        frames.append(out.assign(seed=int(seed)))
    return pd.concat(frames, ignore_index=True)[columns]


def allpairs_summary(res: Results) -> dict[str, Any]:
    """The exact all-pairs tables: the stored shard counts of the ``allpairs`` jobs summed (integer sums), then
    tasks.allpairs.hist_group_tables at ``[verification] target_fmrs`` and the global ``target_fmr``.

    Returns {"eer", "operating_points", "impostor_matrix"} (DataFrames, empty when nothing is stored or a shard is
    missing) and "note" (which shards are missing; bin width)."""
    rows = res.tables["allpairs_counts"]
    empty = {"eer": pd.DataFrame(), "operating_points": pd.DataFrame(), "impostor_matrix": pd.DataFrame(),
             "note": ""}
    missing = _allpairs_missing(res)
    if missing is None:
        return empty
    if missing:
        return {**empty, "note": missing + "; no exact tables"}
    n_shards = int(rows["n_shards"].max())
    v = res.config.get("verification") or {}
    counts, names = allpairs_kind.counts_from_rows(rows)
    out = allpairs.hist_group_tables(counts, names, v.get("target_fmrs", [1e-2, 1e-3, 1e-4]),
                                     v.get("target_fmr", 1e-3))
    return {**out, "note": f"{n_shards} shards; {counts.n_genuine:,} genuine and {counts.n_impostor:,} impostor "
                           f"comparisons; thresholds on bin edges of width 2^-{counts.bits}"}


def _allpairs_missing(res: Results) -> str | None:
    """None when no allpairs job is planned or stored, "" when every one is done with counts stored, else which
    shards are not done."""
    rows = res.tables["allpairs_counts"]
    status = job_status(res)
    jobs = status[status["kind"] == "allpairs"]
    if jobs.empty and rows.empty:
        return None
    if (jobs["status"] != "done").any() or rows.empty:   # a shard with no pairs of its own stores no rows
        bad = jobs.loc[jobs["status"] != "done", "description"].tolist()
        return "all-pairs counts incomplete (" + (", ".join(bad) or "no counts stored") + " not done)"
    return ""


ALLPAIRS_INTERVAL_COLUMNS = [*tbootstrap.COLUMNS, "bits", "lo_bin", "lo_score", "tail_records", "exact",
                             "exact_k", "exact_n"]


def allpairs_intervals(res: Results, exact: dict[str, Any] | None = None) -> pd.DataFrame:
    """Identity-bootstrap intervals at full scale: the shards' stored tails summed
    (``tasks.allpairs_kind.tail_from_rows``), then ``tasks.allpairs.tail_bootstrap`` with ``[verification]
    bootstrap`` resamples, seed = the grid's first seed (the allpairs jobs' seed), confidence 0.95, the global
    ``target_fmr`` and ``summarize`` = the group aggregators (tasks/fairness.py).

    Rows: the global threshold, each group's FMR and FNMR at it, every cross-group FMR, the summaries. Columns
    ``tasks.bootstrap.COLUMNS`` (estimates and intervals at the tail's bins, 2^-bits), plus bits, lo_bin,
    lo_score (the tail's lower edge), tail_records, and the same quantity from the exact counts (bins of 2^-14,
    ``exact`` = :func:`allpairs_summary`, computed when not given): exact, exact_k, exact_n (-1 for non-rates).
    Empty when nothing is stored, a shard is missing, or ``bootstrap`` = 0 (:func:`allpairs_intervals_note`
    says why). Cost: O(tail records + identities) per resample."""
    v = res.config.get("verification") or {}
    n_resamples = int(v.get("bootstrap", 0) or 0)
    ids = res.tables["allpairs_identities"]
    if _allpairs_missing(res) != "" or n_resamples == 0 or ids.empty:
        return pd.DataFrame(columns=ALLPAIRS_INTERVAL_COLUMNS)
    tail, identity_group, images, names, note = allpairs_kind.tail_from_rows(res.tables["allpairs_tail"], ids)
    status = job_status(res)
    seeds = status.loc[status["kind"] == "allpairs", "seed"].dropna()
    seed = int(seeds.iloc[0]) if len(seeds) else (res.seeds[0] if res.seeds else 0)
    target = float(v.get("target_fmr", 1e-3))
    out = allpairs.tail_bootstrap(tail, identity_group, images, names, global_target_fmr=target,
                                  n_resamples=n_resamples, seed=seed, confidence=0.95,
                                  summarize=fairness.summaries)
    if note:
        out["note"] = [f"{n}; {note}" if n else note for n in out["note"]]
    out = out.assign(bits=tail.bits, lo_bin=tail.lo_bin, lo_score=float(allpairs.bin_edges(tail.bits)[tail.lo_bin]),
                     tail_records=tail.n_records)
    exact = allpairs_summary(res) if exact is None else exact
    values = _exact_values(exact, names)
    found = [values.get((q, a, b, m), (np.nan, -1, -1)) for q, a, b, m in
             zip(out["quantity"], out["group_a"], out["group_b"], out["metric"])]
    out["exact"], out["exact_k"], out["exact_n"] = ([f[i] for f in found] for i in range(3))
    return out[ALLPAIRS_INTERVAL_COLUMNS]


def _exact_values(exact: dict[str, Any], names: list[str]) -> dict[tuple, tuple[float, int, int]]:
    """(quantity, group_a, group_b, metric) -> (value, k, n) from the exact all-pairs tables, for the rows of
    :func:`allpairs_intervals`."""
    ops, matrix = exact["operating_points"], exact["impostor_matrix"]
    if ops.empty:
        return {}
    glob = ops[ops["threshold_kind"] == "global"].set_index("group")
    out: dict[tuple, tuple[float, int, int]] = {("threshold", "all", "", ""): (float(glob.loc["all", "threshold"]),
                                                                              -1, -1)}
    for g in names:
        r = glob.loc[g]
        out[("group_fmr", g, "", "")] = (r["fmr"], int(r["false_matches"]), int(r["n_impostor"]))
        out[("group_fnmr", g, "", "")] = (r["fnmr"], int(r["false_non_matches"]), int(r["n_genuine"]))
    for r in matrix.itertuples():
        out[("cross_fmr", r.group_a, r.group_b, "")] = (r.fmr, int(r.false_matches), int(r.n_pairs))
    table = fairness.summaries(glob.loc[names, "fmr"].to_numpy(float), glob.loc[names, "fnmr"].to_numpy(float))
    for metric, value in zip(table["metric"], table["value"]):
        out[("summary", "", "", str(metric))] = (float(value), -1, -1)
    return out


def allpairs_intervals_note(res: Results) -> str:
    """Why :func:`allpairs_intervals` is empty although the all-pairs counts are complete ("" otherwise)."""
    if _allpairs_missing(res) != "":
        return ""
    if int((res.config.get("verification") or {}).get("bootstrap", 0) or 0) == 0:
        return "No identity-bootstrap intervals over all pairs: [verification] bootstrap = 0 (no tail recorded)."
    if res.tables["allpairs_identities"].empty:
        return ("No identity-bootstrap intervals over all pairs: the allpairs jobs stored no tail counts (table "
                "allpairs_identities is empty).")
    return ""


def pair_protocol(res: Results) -> dict[str, pd.DataFrame]:
    """The stored pair-protocol tables ([verification] pairs), as written by the pairs job: "groups" (10-fold
    accuracy mean/std/se, EER per group), "operating_points" (FNMR at each target FMR with the resolution flag),
    "across" (std of the groups' accuracies, skewed error ratio)."""
    return {"groups": res.tables["pair_groups"], "operating_points": res.tables["pair_operating_points"],
            "across": res.tables["pair_across"]}


def equalized_odds(res: Results) -> pd.DataFrame:
    """Per model and train group: the equalized-odds difference across test groups (Fairlearn's sense,
    tasks.classifier_stats.equalized_odds_difference: max of the TPR and FPR spreads, female positive) of each
    seed's stored predictions, and its mean and std (ddof=1) over seeds. Columns: model, train_group, n_seeds,
    value_mean, value_std, tpr_difference_mean, fpr_difference_mean, per_seed ("seed: value" list), note."""
    pred = res.tables["predictions"]
    columns = ["model", "train_group", "n_seeds", "value_mean", "value_std", "tpr_difference_mean",
               "fpr_difference_mean", "per_seed", "note"]
    if pred.empty:
        return pd.DataFrame(columns=columns)
    rows = []
    for model in res.models:
        for train in res.train_groups:
            cell = pred[(pred["model"] == model) & (pred["train_group"] == train)]
            if cell.empty:
                continue
            per = {int(seed): classifier_stats.equalized_odds_difference(p["y_true"], p["y_pred"], p["test_group"])
                   for seed, p in cell.groupby("seed")}
            values = pd.Series({s: v["value"] for s, v in per.items()}, dtype=float)
            notes = sorted({f"seed {s}: {v['note']}" for s, v in per.items() if v["note"]})
            rows.append({"model": model, "train_group": train, "n_seeds": int(values.notna().sum()),
                         "value_mean": values.mean(), "value_std": values.std(ddof=1) if values.count() > 1 else np.nan,
                         "tpr_difference_mean": np.nanmean([v["tpr_difference"] for v in per.values()]),
                         "fpr_difference_mean": np.nanmean([v["fpr_difference"] for v in per.values()]),
                         "per_seed": ", ".join(f"{s}: {v:.3f}" for s, v in values.items()),
                         "note": "; ".join(notes)})
    return pd.DataFrame(rows, columns=columns)


# --------------------------------------------------------------------------------------------------- job status
def job_status(res: Results) -> pd.DataFrame:
    """Every planned job with its status "done", "failed" or "missing" (no ledger record), and the error.

    Columns: job_id, kind, description, model, train_group, test_group, seed, subset, status, error. Without a plan
    in run.json, the ledger's jobs are listed (status from the ledger).
    """
    failures = res.tables["failures"]
    errors = dict(zip(failures["job_id"], failures["error"])) if not failures.empty else {}
    columns = ["job_id", "kind", "description", "model", "train_group", "test_group", "seed", "subset", "status",
               "error"]
    rows = []
    seen = set()
    for job in res.jobs:
        if not isinstance(job, dict):
            continue
        jid = job.get("job_id")
        seen.add(jid)
        record = res.ledger.get(jid)
        status = job_state(record, res.damaged.get(jid))
        rows.append({**{c: job.get(c) for c in columns}, "status": status,
                     "error": _status_error(status, errors.get(jid) or (record or {}).get("error"),
                                            res.damaged.get(jid))})
    for jid, record in res.ledger.items():
        if seen or jid in seen:       # with a plan, ledger records of other (earlier) plans are not this run's
            continue
        status = job_state(record, res.damaged.get(jid))
        rows.append({**{c: record.get(c) for c in columns}, "job_id": jid, "status": status,
                     "error": _status_error(status, errors.get(jid) or record.get("error"), res.damaged.get(jid))})
    out = pd.DataFrame(rows, columns=columns)
    out["description"] = [d if isinstance(d, str) and d else f"{k or 'job'} {j}"
                          for d, k, j in zip(out["description"], out["kind"], out["job_id"])]
    return out


def _status_error(status: str, error: str | None, damage: str | None) -> str:
    """What the status table says about a job: a failed job's error, what is wrong with a damaged one."""
    return {"failed": error or "", "damaged": damage or ""}.get(status, "")


def missing_cells(res: Results) -> pd.DataFrame:
    """Per model and train group, the seeds whose cell job failed or never finished.

    Columns: model, train_group, failed_seeds, missing_seeds (lists of ints).
    """
    status = job_status(res)
    cells = status[(status["kind"] == "cell") & (status["status"] != "done")]
    rows = []
    for (model, train), part in cells.groupby(["model", "train_group"], sort=False):
        rows.append({"model": model, "train_group": train,
                     "failed_seeds": sorted(int(s) for s in part.loc[part["status"] == "failed", "seed"]),
                     "missing_seeds": sorted(int(s) for s in part.loc[part["status"] == "missing", "seed"])})
    return pd.DataFrame(rows, columns=["model", "train_group", "failed_seeds", "missing_seeds"])


def all_summaries(res: Results) -> dict[str, pd.DataFrame]:
    """Every summary table of the report by name (long-form accuracy stats per metric, bias, verification)."""
    out: dict[str, pd.DataFrame] = {}
    for metric in METRICS:
        out[metric] = accuracy_stats(res, metric)
    out["row_spread"] = row_spread(res)
    out["best_train_group"] = best_train_group(res)
    out["paired_differences"] = paired_differences(res)
    out["verification"] = verification_summary(res)
    out["demographic_rates"] = demographic_rates_summary(res)
    out["fairness"] = fairness_summary(res)
    out["fairness_by_seed"] = fairness_by_seed(res)
    imp = impostor_fmr_matrix(res)
    out["impostor_fmr"] = imp.reset_index() if not imp.empty else pd.DataFrame(columns=["group_a"])
    out["group_eer"] = group_eer_summary(res)
    out["operating_points"] = operating_points_summary(res)
    out["verification_intervals"] = res.tables["verification_ci"]
    out["fairness_bounded_by_seed"] = bounded_fairness_by_seed(res)
    out["equalized_odds"] = equalized_odds(res)
    for name, frame in pair_protocol(res).items():
        out[f"pairs_{name}"] = frame
    exact = allpairs_summary(res)
    for name in ("eer", "operating_points", "impostor_matrix"):
        out[f"allpairs_{name}"] = exact[name]
    out["allpairs_intervals"] = allpairs_intervals(res, exact)
    out["jobs"] = job_status(res)
    return out
