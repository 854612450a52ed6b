"""Failure to acquire: each demographic group's FTA, and its verification rates at the global threshold counted
three ways (every image as embedded; images without a detected face excluded; their comparisons as failures)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from grid.report import fairness
from grid.report.blocks import Block, Table, pm, sci
from grid.report.results import Results, demographic_groups
from grid.report.sections import Summaries

VIEWS = {"scored": "as scored", "excluded": "failures excluded", "generalised": "generalised"}
RATE_COLUMNS = ["group", "view", "n_seeds", "fmr_mean", "fmr_std", "fnmr_mean", "fnmr_std", "false_matches",
                "n_impostor", "false_non_matches", "n_genuine"]


def _ordered(frame: pd.DataFrame, res: Results) -> pd.DataFrame:
    order = {g: i for i, g in enumerate(demographic_groups(res))}
    return frame.assign(_o=frame["group"].map(order)).sort_values("_o", kind="stable").drop(columns="_o")


def acquisition_summary(res: Results) -> pd.DataFrame:
    """Per demographic group: FTA = failed / images, mean and std (ddof=1) over seeds, and the lowest seed's counts
    with their Clopper-Pearson interval. Columns: group, n_seeds, fta_mean, fta_std, seed, failed, n_images,
    fta_ci_low, fta_ci_high, display. Empty when the table had no face_detected column."""
    acq = res.tables["acquisition"].drop_duplicates(["seed", "group"], keep="last")
    columns = ["group", "n_seeds", "fta_mean", "fta_std", "seed", "failed", "n_images", "fta_ci_low", "fta_ci_high",
               "display"]
    if acq.empty:
        return pd.DataFrame(columns=columns)
    first = acq[acq["seed"] == acq["seed"].min()].set_index("group")
    out = acq.groupby("group").agg(n_seeds=("seed", "count"), fta_mean=("fta", "mean"),
                                   fta_std=("fta", lambda v: v.std(ddof=1))).reset_index()
    out = out.join(first[["seed", "failed", "n_images", "fta_ci_low", "fta_ci_high", "display"]], on="group")
    return _ordered(out, res)[columns].reset_index(drop=True)


def acquisition_rates_summary(res: Results) -> pd.DataFrame:
    """Per demographic group and view (scored: ``demographic_rates``; excluded, generalised: ``acquisition_rates``),
    FMR and FNMR at the global threshold as mean and std (ddof=1) over seeds, and the counts summed over seeds.
    Columns :data:`RATE_COLUMNS`. Empty when the table had no face_detected column."""
    acq = res.tables["acquisition_rates"].drop_duplicates(["seed", "group", "view"], keep="last")
    if acq.empty:
        return pd.DataFrame(columns=RATE_COLUMNS)
    scored = res.tables["demographic_rates"].drop_duplicates(["seed", "group"], keep="last").assign(view="scored")
    both = pd.concat([scored[scored["seed"].isin(acq["seed"])], acq], ignore_index=True)
    out = both.groupby(["group", "view"]).agg(
        n_seeds=("seed", "count"), fmr_mean=("fmr", "mean"), fmr_std=("fmr", lambda v: v.std(ddof=1)),
        fnmr_mean=("fnmr", "mean"), fnmr_std=("fnmr", lambda v: v.std(ddof=1)),
        **{c: (c, "sum") for c in ("false_matches", "n_impostor", "false_non_matches", "n_genuine")}).reset_index()
    out["_v"] = out["view"].map({v: i for i, v in enumerate(VIEWS)})
    out = _ordered(out.sort_values("_v", kind="stable"), res).drop(columns="_v")
    return out[RATE_COLUMNS].reset_index(drop=True)


def acquisition_fairness(res: Results) -> pd.DataFrame:
    """The differential summaries (tasks.stats.fairness) of each view's per-group rates, per seed then mean ± std
    over seeds. Columns: view, and those of :func:`tasks.stats.fairness.summarize`."""
    acq = res.tables["acquisition_rates"].drop_duplicates(["seed", "group", "view"], keep="last")
    if acq.empty:
        return pd.DataFrame(columns=["view", "metric", "label", "mean", "std", "n_seeds", "n_undefined", "note"])
    scored = res.tables["demographic_rates"].drop_duplicates(["seed", "group"], keep="last").assign(view="scored")
    both = pd.concat([scored[scored["seed"].isin(acq["seed"])], acq], ignore_index=True)
    groups = [g for g in demographic_groups(res) if g in set(acq["group"])]
    frames = [fairness.summarize(fairness.by_seed(both[both["view"] == view], groups=groups)).assign(view=view)
              for view in VIEWS if view in set(both["view"])]
    out = pd.concat(frames, ignore_index=True)
    return out[["view", *[c for c in out.columns if c != "view"]]]


def acquisition_blocks(res: Results, s: Summaries) -> list[Block]:
    """FTA per group, the rates counted three ways, and their differential summaries (nothing without FTA data)."""
    fta, rates, fair = s["acquisition"], s["acquisition_rates"], s["acquisition_fairness"]
    if fta.empty:
        return []
    blocks: list[Block] = [("h3", "Failure to acquire")]
    blocks.append(("p", "FTA = images without a detected face / images of the group's test identities "
                        "(face_detected = false: embedded from the centre crop), mean ± std over seeds, and the "
                        "lowest seed's count with its Clopper–Pearson 95% interval. The rates at the global threshold are "
                        "given three ways: as scored (every image as embedded, the tables above), failures excluded "
                        "(only comparisons of two acquired images) and generalised (every comparison; one involving "
                        "a failed image is a non-match: a false non-match when genuine, never a false match; "
                        "ISO/IEC 19795-1, docs/REPORT.md)."))
    frame = pd.DataFrame({
        "group": fta["group"], "FTA (%)": [pm(m, sd, 2, 100) for m, sd in zip(fta["fta_mean"], fta["fta_std"])],
        f"failed / images, seed {int(fta['seed'].min())} [95% CP]": [
            f"{k:,} / {n:,} [{100 * lo:.2f}%, {100 * hi:.2f}%]" for k, n, lo, hi in
            zip(fta["failed"], fta["n_images"], fta["fta_ci_low"], fta["fta_ci_high"])],
        "seeds": fta["n_seeds"].astype(str)})
    blocks.append(("table", Table(frame, "Failure to acquire per demographic group")))
    wide = rates.pivot(index="group", columns="view", values=["fnmr_mean", "fmr_mean"])
    wide = wide.reindex([g for g in fta["group"] if g in wide.index])
    frame = pd.DataFrame({"group": wide.index})
    for view, label in VIEWS.items():
        if ("fnmr_mean", view) in wide.columns:
            frame[f"FNMR {label} (%)"] = [pm(v, np.nan, 2, 100) for v in wide[("fnmr_mean", view)]]
    for view, label in VIEWS.items():
        if ("fmr_mean", view) in wide.columns:
            frame[f"FMR {label}"] = [sci(v) for v in wide[("fmr_mean", view)]]
    blocks.append(("table", Table(frame, "FNMR and FMR at the global threshold, counted three ways (mean over seeds)",
                                  notes=["Counts per view: acquisition_rates.csv."])))
    if not fair.empty:
        table = fair.pivot(index="metric", columns="view", values="mean")
        table = table.reindex([m for m in fairness.METRICS if m in table.index])
        labels = fair.drop_duplicates("metric").set_index("metric")["label"]
        frame = pd.DataFrame({"summary": [labels[m] for m in table.index]})
        for view, label in VIEWS.items():
            if view in table.columns:
                frame[label] = [f"{v:.3f}" if not pd.isna(v) else "undefined" for v in table[view]]
        blocks.append(("table", Table(frame, "Demographic-differential summaries, counted three ways (mean over "
                                             "seeds)")))
    return blocks
