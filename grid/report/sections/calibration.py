"""Thresholds chosen on development identities (``[verification] threshold_split = "dev"``): per group, the FMR
each threshold was chosen for (intended) beside the FMR it gives on the evaluation identities (achieved)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from grid.report.blocks import Block, Table, pm, sci
from grid.report.results import Results
from grid.report.sections import Summaries
from grid.report.sections.intervals import interval_text, operating_points_summary

COLUMNS = ["group", "threshold_kind", "intended_fmr", "n_seeds", "fmr_mean", "fmr_std", "ratio_mean", "ratio_std",
           "seed", "false_matches", "n_impostor", "fmr_seed", "fmr_ci_low", "fmr_ci_high", "ratio_seed",
           "ratio_ci_low", "ratio_ci_high", "fnmr_mean"]


def threshold_split(res: Results) -> str:
    """Where the folder's impostor jobs chose their thresholds: "test" (default) or "dev"."""
    return str((res.config.get("verification") or {}).get("threshold_split", "test"))


def threshold_calibration(res: Results) -> pd.DataFrame:
    """With a dev split, per group (and "all"), threshold kind (own / global) and intended FMR x (the target the
    threshold was chosen for on the development identities): the achieved FMR on the evaluation identities, mean
    and std (ddof=1) over seeds, the ratio achieved / x likewise, and the lowest seed's false matches / impostors
    with the Clopper-Pearson interval of the FMR and of the ratio (the interval divided by x). Columns
    :data:`COLUMNS`; empty without a dev split."""
    ops = res.tables["operating_points"].drop_duplicates(["seed", "group", "target_fmr", "threshold_kind"],
                                                         keep="last")
    if ops.empty or threshold_split(res) != "dev":
        return pd.DataFrame(columns=COLUMNS)
    first = int(ops["seed"].min())
    order = operating_points_summary(res)[["group", "target_fmr", "threshold_kind"]]
    rows = []
    for group, target, kind in order.itertuples(index=False):
        part = ops[(ops["group"] == group) & (ops["target_fmr"] == target) & (ops["threshold_kind"] == kind)]
        ratio = part["fmr"] / target
        one = part[part["seed"] == first].iloc[0]
        rows.append({"group": group, "threshold_kind": kind, "intended_fmr": float(target), "n_seeds": len(part),
                     "fmr_mean": part["fmr"].mean(), "fmr_std": part["fmr"].std(ddof=1),
                     "ratio_mean": ratio.mean(), "ratio_std": ratio.std(ddof=1), "seed": first,
                     "false_matches": int(one["false_matches"]), "n_impostor": int(one["n_impostor"]),
                     "fmr_seed": one["fmr"], "fmr_ci_low": one["fmr_ci_low"], "fmr_ci_high": one["fmr_ci_high"],
                     "ratio_seed": one["fmr"] / target, "ratio_ci_low": one["fmr_ci_low"] / target,
                     "ratio_ci_high": one["fmr_ci_high"] / target, "fnmr_mean": part["fnmr"].mean()})
    return pd.DataFrame(rows, columns=COLUMNS)


def calibration_blocks(res: Results, s: Summaries) -> list[Block]:
    """The intended and achieved FMR per group (nothing without a dev split)."""
    cal = s["threshold_calibration"]
    if cal.empty:
        return []
    fraction = (res.config.get("verification") or {}).get("dev_fraction", 0.5)
    seed = int(cal["seed"].iloc[0])
    frame = pd.DataFrame({
        "group": cal["group"], "threshold": cal["threshold_kind"],
        "intended FMR": [f"{v:g}" for v in cal["intended_fmr"]],
        "achieved FMR": [sci(m) + ("" if pd.isna(sd) else f" ± {sci(sd)}") for m, sd in
                         zip(cal["fmr_mean"], cal["fmr_std"])],
        "achieved / intended": [pm(m, sd, 2) for m, sd in zip(cal["ratio_mean"], cal["ratio_std"])],
        f"seed {seed}: false matches / impostors": [f"{k:,} / {n:,}" for k, n in
                                                    zip(cal["false_matches"], cal["n_impostor"])],
        f"seed {seed}: achieved / intended [95% CP]": [interval_text(v, lo, hi) for v, lo, hi in
                                                       zip(cal["ratio_seed"], cal["ratio_ci_low"],
                                                           cal["ratio_ci_high"])],
        "FNMR (%)": [pm(v, np.nan, 2, 100) for v in cal["fnmr_mean"]]})
    return [("h3", "Thresholds from development identities: intended and achieved FMR"),
            ("p", f"Every threshold was chosen on a development part of each group's test identities ({fraction:g} of "
                  "them, drawn per seed and group) and applied to the other identities (evaluation), where every rate "
                  "of this verification section is measured (threshold_split = \"dev\"; docs/REPORT.md). Intended: "
                  "the FMR the threshold was chosen for; achieved: its FMR on the evaluation identities; "
                  "their ratio (1 = calibrated). The global threshold's ratio per group shows the demographic "
                  "miscalibration of one threshold for everyone; a group's own threshold's ratio its sampling error."),
            ("table", Table(frame, "Intended and achieved FMR per group (mean ± std over seeds)"))]
