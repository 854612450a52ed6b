"""The equalized-odds difference of each trained model across test groups, from its stored predictions."""

from __future__ import annotations

import numpy as np
import pandas as pd

from grid.report.blocks import Table, num, pm
from grid.report.results import Results
from tasks.stats import classifier_stats


def equalized_odds(res: Results) -> pd.DataFrame:
    """Per model and train group: the equalized-odds difference across test groups (Fairlearn's sense,
    tasks.stats.classifier_stats.equalized_odds_difference: max of the TPR and FPR spreads, female positive) of each
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
            # pandas' mean skips NaN as nanmean does, without its "Mean of empty slice" warning when every seed's
            # difference is undefined (one test group)
            tpr, fpr = (pd.Series([v[k] for v in per.values()], dtype=float) for k in ("tpr_difference",
                                                                                       "fpr_difference"))
            rows.append({"model": model, "train_group": train, "n_seeds": int(values.notna().sum()),
                         "value_mean": values.mean(), "value_std": values.std(ddof=1) if values.count() > 1 else np.nan,
                         "tpr_difference_mean": tpr.mean(), "fpr_difference_mean": fpr.mean(),
                         "per_seed": ", ".join(f"{s}: {v:.3f}" for s, v in values.items()),
                         "note": "; ".join(notes)})
    return pd.DataFrame(rows, columns=columns)


def equalized_odds_table(eo: pd.DataFrame) -> Table:
    """The display table of :func:`equalized_odds`."""
    frame = pd.DataFrame({
        "model": eo["model"], "trained on": eo["train_group"],
        "equalized-odds difference": [pm(m, sd) for m, sd in zip(eo["value_mean"], eo["value_std"])],
        "TPR spread": [num(v) for v in eo["tpr_difference_mean"]],
        "FPR spread": [num(v) for v in eo["fpr_difference_mean"]],
        "per seed": eo["per_seed"], "note": eo["note"].fillna(""),
    })
    return Table(frame, "Equalized-odds difference (mean over seeds)")
