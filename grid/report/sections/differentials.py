"""Demographic differentials at the one global threshold of the impostor-matrix jobs: each group's FMR and FNMR,
the differential summaries (Max/Min, Max/GeoMean, FDR, GARBE, WERM) per seed and over seeds, and the cross-group
impostor FMR matrix."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib import colors as mcolors
from matplotlib.figure import Figure

from grid.report import fairness, figures
from grid.report.blocks import Block, FigureBlock, Table, num, png, pm, sci
from grid.report.results import Results, demographic_groups
from grid.report.sections import Summaries
from grid.report.sections.intervals import impostor_interval_matrix
from storage.errors import InputError
from tasks.stats import rates as trates


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
    """The demographic-differential summaries (Max/Min, Max/GeoMean, FDR, GARBE, WERM) per seed; see grid.fairness."""
    rates = res.tables["demographic_rates"].drop_duplicates(["seed", "group"], keep="last")
    groups = [g for g in demographic_groups(res) if g in set(rates["group"])] if not rates.empty else None
    return fairness.by_seed(rates, a, groups)


def fairness_summary(res: Results, a: float = fairness.DEFAULT_A) -> pd.DataFrame:
    """Mean ± std over seeds of each summary; columns metric, label, mean, std, n_seeds, n_undefined, note."""
    return fairness.summarize(fairness_by_seed(res, a))


def bounded_fairness_by_seed(res: Results) -> pd.DataFrame:
    """The differential summaries per seed from the stored counts (tasks.stats.rates.bounded_summaries): a ratio over a
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


def plot_impostor_matrix(res: Results) -> Figure | None:
    """Heatmap of the cross-group impostor FMR (mean over seeds) at the global threshold, log colour scale."""
    mat = impostor_fmr_matrix(res)
    if mat.empty:
        return None
    data = mat.to_numpy(float)
    positive = data[np.isfinite(data) & (data > 0)]
    fig = figures.new_figure(1.6 + 1.05 * data.shape[1], 1.2 + 0.8 * data.shape[0])
    ax = fig.subplots()
    cmap = figures.colormap("magma_r")
    lo = positive.min() if positive.size else 1e-6
    hi = positive.max() if positive.size else 1e-2
    norm = mcolors.LogNorm(lo, max(hi, lo * 10))
    shown = np.where(data > 0, data, np.nan)
    image = ax.imshow(np.ma.masked_invalid(shown), cmap=cmap, norm=norm, aspect="auto")
    for i in range(data.shape[0]):
        for j in range(data.shape[1]):
            v = data[i, j]
            label = "—" if np.isnan(v) else ("0" if v == 0 else f"{v:.1e}")
            color = "black" if not (v > 0) else figures.text_color(cmap(norm(v)))
            ax.text(j, i, label, ha="center", va="center", fontsize=8, color=color)
    ax.set_xticks(range(data.shape[1]), [figures.group_label(c) for c in mat.columns], rotation=35, ha="right")
    ax.set_yticks(range(data.shape[0]), [figures.group_label(r) for r in mat.index])
    for tick, name in [*zip(ax.get_xticklabels(), mat.columns), *zip(ax.get_yticklabels(), mat.index)]:
        tick.set_color(figures.group_color(name))
        tick.set_fontweight("bold")
    ax.tick_params(length=0)
    ax.set_title("Impostor FMR between demographic groups\n(global threshold, mean over seeds; grey = 0)",
                 fontsize=10)
    fig.colorbar(image, ax=ax, label="FMR (log scale)")
    return fig


def plot_group_rates(res: Results) -> Figure | None:
    """FMR (left, log scale) and FNMR (right) per demographic group at the global threshold, lowest seed, with
    95% error bars: the identity bootstrap's percentile interval when stored, else Clopper-Pearson. A group with
    no false match is drawn as an open marker at its rule-of-three bound 3/n (its FMR is below it)."""
    dr = res.tables["demographic_rates"].drop_duplicates(["seed", "group"], keep="last")
    if dr.empty or dr["false_matches"].isna().any():
        return None
    seed = int(dr["seed"].min())
    dr = dr[dr["seed"] == seed].set_index("group")
    groups = [g for g in demographic_groups(res) if g in dr.index] or list(dr.index)
    ci = res.tables["verification_ci"]
    ci = ci[ci["seed"] == seed].set_index(["quantity", "group_a"]) if not ci.empty else None
    fig = figures.new_figure(10.5, 0.9 + 0.45 * len(groups))
    axes = fig.subplots(1, 2, sharey=True)
    for ax, rate, quantity in ((axes[0], "fmr", "group_fmr"), (axes[1], "fnmr", "group_fnmr")):
        for y, g in enumerate(groups):
            r = dr.loc[g]
            if rate == "fmr" and not r["n_impostor"]:
                continue   # no impostor comparison in this group: its FMR is undefined, nothing to draw
            if ci is not None and (quantity, g) in ci.index:
                lo, hi = ci.loc[(quantity, g), ["ci_low", "ci_high"]].astype(float)
            else:
                lo, hi = r[f"{rate}_ci_low"], r[f"{rate}_ci_high"]
            zero = rate == "fmr" and r["false_matches"] == 0
            v = 3.0 / r["n_impostor"] if zero else r[rate]
            if rate == "fmr":                           # a log axis: the lower end at 0 is drawn at v / 100
                lo = lo if lo > 0 else v / 100
            color = figures.demographic_color(g)
            ax.errorbar([v], [y], xerr=[[max(v - lo, 0)], [max(hi - v, 0)]], fmt="o", color=color, capsize=3,
                        markerfacecolor="white" if zero else color)
        ax.set_xlabel(f"{rate.upper()} at the global threshold" + (" (log)" if rate == "fmr" else ""))
        ax.grid(alpha=0.3)
    axes[0].set_xscale("log")
    axes[0].set_yticks(range(len(groups)), [figures.group_label(g) for g in groups])
    axes[0].invert_yaxis()
    fig.suptitle(f"Per-group rates, seed {seed}, 95% intervals", fontsize=10)
    return fig


def differential_blocks(res: Results, s: Summaries) -> list[Block]:
    """Each demographic group's rates at the one global threshold, their figure and the differential summaries."""
    blocks: list[Block] = []
    blocks.append(("h3", "Demographic differentials at the global threshold"))
    blocks.append(("p", "One threshold for everyone (FMR = 1e-3 over all impostor pairs); each demographic group's "
                        "own FMR and FNMR at it, and the summaries used in the field (docs/REPORT.md): NIST's "
                        "Max/Min and Max/GeoMean (1 = equal), FDR (1 = no discrepancy) and GARBE (0 = equal), "
                        "a = 0.5, and WERM (Linghu et al.: the FMR and FNMR Max/GeoMean ratios with eps = 1e-5, "
                        "each to the power 0.5, multiplied; 1 = equal), computed per seed then mean ± std. A ratio "
                        "with a zero rate is undefined and reported as such."))
    rates = s["demographic_rates"]
    if rates.empty:
        blocks.append(("note", "No demographic rates are stored (the impostor job failed, is missing, or "
                               "verification is disabled)."))
    else:
        frame = pd.DataFrame({
            "group": rates["group"],
            "FMR": [sci(m) + ("" if pd.isna(sd) else f" ± {sci(sd)}") for m, sd in
                    zip(rates["fmr_mean"], rates["fmr_std"])],
            "FNMR (%)": [pm(m, sd, 2, 100) for m, sd in zip(rates["fnmr_mean"], rates["fnmr_std"])],
            "threshold": [num(v) for v in rates["threshold_mean"]], "seeds": rates["n_seeds"].astype(str),
        })
        blocks.append(("table", Table(frame, "FMR and FNMR per demographic group at the global threshold")))
        fig = plot_group_rates(res)
        if fig is not None:
            blocks.append(("figure", FigureBlock("group_rates.png", "FMR and FNMR per demographic group at the global "
                                                 "threshold, lowest seed, 95% identity-bootstrap intervals (Clopper–"
                                                 "Pearson when no bootstrap is stored); an open marker = 0 false "
                                                 "matches, drawn at its rule-of-three bound 3/n", png(fig))))
        fair = s["fairness"]
        frame = pd.DataFrame({
            "summary": fair["label"],
            "mean ± std": [pm(m, sd, 3) if not pd.isna(m) else "undefined" for m, sd in
                           zip(fair["mean"], fair["std"])],
            "defined in seeds": fair["n_seeds"].astype(str), "undefined in seeds": fair["n_undefined"].astype(str),
            "note": fair["note"].fillna(""),
        })
        blocks.append(("table", Table(frame, "Demographic-differential summaries")))
        bounded = s["fairness_bounded_by_seed"]
        if not bounded.empty and (bounded["bound"] == ">=").any():
            b = bounded[bounded["bound"] == ">="]
            frame = pd.DataFrame({"seed": b["seed"].astype(str), "summary": b["metric"],
                                  "lower bound": [f">= {v:.3g}" for v in b["value"]], "note": b["note"]})
            blocks.append(("table", Table(frame, "Ratios over a zero rate, as lower bounds (rule of three)")))
    return blocks


def impostor_matrix_blocks(res: Results) -> list[Block]:
    """The cross-group impostor FMR at the global threshold: heatmap, mean matrix, the lowest seed's counts."""
    blocks: list[Block] = []
    mat = impostor_fmr_matrix(res)
    blocks.append(("h3", "Cross-group impostor FMR"))
    if mat.empty:
        blocks.append(("note", "No impostor matrix is stored."))
    else:
        blocks.append(("p", "FMR of impostor pairs between an image of group A (rows) and one of group B (columns) at "
                            "the global threshold, mean over seeds."))
        fig = plot_impostor_matrix(res)
        if fig is not None:
            blocks.append(("figure", FigureBlock("impostor_fmr.png", "Cross-group impostor FMR", png(fig))))
        blocks.append(("table", Table(mat.map(sci), "Cross-group impostor FMR (mean over seeds)", "A \\ B")))
        ci = impostor_interval_matrix(res)
        if not ci.empty:
            seed = int(res.tables["impostor_matrix"]["seed"].min())
            blocks.append(("table", Table(ci, f"Cross-group impostor FMR, seed {seed}: false matches / pairs with "
                                              f"the Clopper–Pearson 95% interval", "A \\ B")))
    return blocks
