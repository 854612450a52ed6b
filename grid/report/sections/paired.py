"""Paired tests of accuracy cells: the plain and the Nadeau-Bengio corrected paired t-test, Holm's adjustment, each
off-diagonal cell against the same-group cell."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from grid.report.blocks import Table, ci_text, p_text, yes
from grid.report.results import Results
from grid.report.sections.matrices import seed_rows
from tasks.stats import classifier_stats


def paired_test(x: pd.Series, y: pd.Series, confidence: float = 0.95, n_train: float | None = None,
                n_test: float | None = None) -> dict[str, Any]:
    """Paired comparison of x - y over the labels (seeds) both have: the plain paired t-test and, when
    ``n_train`` and ``n_test`` are known, the Nadeau-Bengio corrected resampled t-test.

    Plain (tasks.stats.classifier_stats.paired_t_test): n_pairs, mean_diff, sd_diff (ddof=1), ci_low, ci_high (t CI of
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
    acc = seed_rows(res, metric)
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


def paired_table(diff: pd.DataFrame) -> Table:
    """The display table of :func:`paired_differences`."""
    frame = pd.DataFrame({
        "model": diff["model"], "tested on": diff["test_group"], "trained on": diff["train_group"],
        "vs": diff["reference"],
        "difference [95% CI]": [ci_text(m, lo, hi) for m, lo, hi in
                                zip(diff["mean_diff"], diff["ci_low"], diff["ci_high"])],
        "p (t)": [p_text(p) for p in diff["p_value"]], "p (t, Holm)": [p_text(p) for p in diff["p_holm"]],
        "p (NB)": [p_text(p) for p in diff["p_corrected"]],
        "p (NB, Holm)": [p_text(p) for p in diff["p_holm_corrected"]],
        "pairs": diff["n_pairs"].astype(str),
        "significant": [yes(sig) if not pd.isna(p) else "—" for sig, p in zip(diff["significant"],
                                                                              diff["p_holm"])],
        "note": diff["note"].fillna(""),
    })
    return Table(frame, "Paired differences to the same-group cell")
