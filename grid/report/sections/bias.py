"""The bias summaries of the accuracy matrices: spread across test groups per training group, the best training
group per test group; the section shows them with the paired differences and the equalized-odds difference."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from grid.report import fairness
from grid.report.blocks import Block, Table, ci_text, explained, num, p_text, pm, yes
from grid.report.results import Results, verification_only
from grid.report.sections import Section, Summaries
from grid.report.sections.equalized_odds import equalized_odds, equalized_odds_table
from grid.report.sections.matrices import accuracy_stats, seed_rows
from grid.report.sections.paired import paired_differences, paired_table, paired_test
from storage.vocab import ALL


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
    acc = seed_rows(res, metric)
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
    acc = seed_rows(res, metric)
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


def bias_blocks(res: Results, s: Summaries) -> list[Block]:
    """The bias summaries: spread per training group, best training group, paired differences, equalized odds."""
    if verification_only(res):   # no classifier: the matrices section says so
        return []
    blocks: list[Block] = [("h2", "Bias summaries (accuracy)")]
    blocks += explained("Spread across test groups, per training group",
                        "From the mean matrix: range = max − min of the test groups' accuracies, std across "
                        "groups (population std), skewed error ratio (SER) = highest error / lowest error with "
                        "error = 1 − accuracy. The range's ± is the standard deviation over seeds of the range "
                        "computed per seed; the SER per seed, unstable when an error is near 0, is given as its "
                        "lowest and highest value over seeds.",
                        s["row_spread"], "No accuracy results: nothing to summarise.", _spread_table)
    blocks += explained("Best training group for each test group",
                        "The training group with the highest mean accuracy on each test group, its margin over "
                        "the runner-up (mean paired difference over seeds, 95% t confidence interval) and the "
                        "paired t-test p-value of best vs runner-up.",
                        s["best_train_group"], "No accuracy results: nothing to compare.", _best_table)
    blocks += explained("Off-diagonal cells against same-group training (paired by seed)",
                        "For each test group T and each other training group G (including all), the per-seed "
                        "difference accuracy(G → T) − accuracy(T → T), paired by seed (same split). Mean "
                        "difference with its 95% t confidence interval; two p-values, each Holm-adjusted over the "
                        "model's comparisons: p (t) from the plain paired t-test and p (NB) from the Nadeau–Bengio "
                        "corrected resampled t-test, whose variance (1/J + n_test/n_train)·s² accounts for the "
                        "training sets the seeds share (the plain test's is too small). Negative = worse than "
                        "training on the test group itself. Significant = Holm-adjusted plain p < 0.05.",
                        s["paired_differences"],
                        "No comparison: the grid has no cell trained and tested on the same group, "
                               "or no accuracy results.", paired_table)
    blocks += explained("Equalized-odds difference across test groups",
                        "Per trained model, from its stored predictions (predictions table): max(TPR spread, FPR "
                        "spread) across the test groups, female = positive (Fairlearn's equalized_odds_difference); "
                        "0 = the same error profile in every group. Mean ± std over seeds, and each seed's value.",
                        s["equalized_odds"],
                        "No predictions are stored (results written before the predictions table).",
                        equalized_odds_table)
    return blocks


def _spread_table(spread: pd.DataFrame) -> Table:
    """The display table of :func:`row_spread`."""
    frame = pd.DataFrame({
        "model": spread["model"], "trained on": spread["train_group"],
        "best test group": [f"{g} ({num(v)})" for g, v in zip(spread["best_test_group"], spread["best"])],
        "worst test group": [f"{g} ({num(v)})" for g, v in zip(spread["worst_test_group"], spread["worst"])],
        "range": [pm(m, s_) for m, s_ in zip(spread["range"], spread["range_sd"])],
        "std across groups": [num(v) for v in spread["std_groups"]],
        "SER": [num(v, 2) for v in spread["skewed_error_ratio"]],
        "SER per seed [min, max]": [f"[{num(lo, 2)}, {num(hi, 2)}]" if not pd.isna(lo) else "—"
                                    for lo, hi in zip(spread["ser_seed_min"], spread["ser_seed_max"])],
        "seeds": spread["n_seeds"].astype(str), "note": spread["note"].fillna(""),
    })
    return Table(frame, "Spread across test groups")


def _best_table(best: pd.DataFrame) -> Table:
    """The display table of :func:`best_train_group`."""
    frame = pd.DataFrame({
        "model": best["model"], "tested on": best["test_group"],
        "best trained on": [f"{g} ({num(v)})" for g, v in zip(best["best_train_group"], best["best_mean"])],
        "runner-up": [f"{g} ({num(v)})" if isinstance(g, str) else "—"
                      for g, v in zip(best["runner_up"], best["runner_up_mean"])],
        "margin [95% CI]": [ci_text(m, lo, hi) for m, lo, hi in zip(best["margin"], best["ci_low"], best["ci_high"])],
        "p": [p_text(p) for p in best["p_value"]], "pairs": best["n_pairs"].astype(str),
        "same group best": [yes(v) for v in best["same_group_is_best"]],
        "all best": [yes(v) for v in best["all_is_best"]], "note": best["note"].fillna(""),
    })
    return Table(frame, "Best training group per test group")


def _summaries(res: Results) -> Summaries:
    return {"row_spread": row_spread(res), "best_train_group": best_train_group(res),
            "paired_differences": paired_differences(res), "equalized_odds": equalized_odds(res)}


SECTION = Section("bias", bias_blocks, _summaries)
