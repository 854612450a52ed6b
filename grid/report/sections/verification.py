"""Verification: EER and FNMR per test group, score densities and error-rate curves, demographic differentials at the global threshold and the cross-group impostor FMR; the section also shows the operating points and intervals, the all-pairs counts and the pair protocol."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from matplotlib import colors as mcolors
from matplotlib.figure import Figure
from scipy.stats import norm

from grid.report import fairness, figures
from grid.report.blocks import Block, FigureBlock, Table, num, pm, sci, png
from grid.report.results import Results, demographic_groups
from grid.report.sections import Section, Summaries
from grid.report.sections.allpairs import allpairs_blocks, allpairs_intervals, allpairs_summary
from grid.report.sections.intervals import (group_eer_summary, impostor_interval_matrix, interval_blocks, interval_text,
                                           operating_points_summary)
from grid.report.sections.pairs import pair_blocks, pair_protocol
from storage.errors import InputError
from tasks.stats import rates as trates


VERIFICATION_METRICS: tuple[str, ...] = ("eer", "fnmr_at_fmr_1e_3", "fnmr_at_fmr_1e_2")


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


def plot_score_densities(res: Results) -> Figure | None:
    """Genuine and impostor score densities per test group (histograms pooled over seeds), EER threshold marked."""
    hist = res.tables["verification_hist"]
    if hist.empty:
        return None
    ver = verification_summary(res).set_index("test_group") if not res.tables["verification"].empty else None
    groups = [g for g in res.test_groups if g in set(hist["test_group"])]
    fig = figures.new_figure(4.2 * len(groups), 3.4)
    axes = fig.subplots(1, len(groups), squeeze=False, sharey=True)[0]
    for ax, group in zip(axes, groups):
        color = figures.group_color(group)
        part = hist[hist["test_group"] == group]
        for kind, style in (("genuine", {"alpha": 0.45, "hatch": None}), ("impostor", {"alpha": 0.2, "hatch": "//"})):
            h = part[part["kind"] == kind].groupby(["bin_left", "bin_right"], as_index=False)["count"].sum()
            if h.empty or h["count"].sum() == 0:
                continue
            width = (h["bin_right"] - h["bin_left"]).to_numpy(float)
            density = h["count"].to_numpy(float) / (h["count"].sum() * width)
            edges = np.append(h["bin_left"].to_numpy(float), h["bin_right"].to_numpy(float)[-1])
            ax.stairs(density, edges, fill=True, color=color, alpha=style["alpha"], hatch=style["hatch"])
            ax.stairs(density, edges, color=color, linestyle="-" if kind == "genuine" else "--", linewidth=1.4,
                      label=kind)
        if ver is not None and group in ver.index:
            thr, eer = ver.at[group, "eer_threshold_mean"], ver.at[group, "eer_mean"]
            ax.axvline(thr, color="black", linewidth=1.0, linestyle=":",
                       label=f"EER threshold {thr:.3f}\n(EER {100 * eer:.2f}%)")
        ax.set_title(group, color=color, fontweight="bold")
        ax.set_xlabel("cosine similarity")
        ax.legend(fontsize=8, loc="upper left")
    axes[0].set_ylabel("density")
    fig.suptitle("Genuine and impostor scores per test group (pooled over seeds)", fontsize=11)
    return fig


def _mean_curves(res: Results) -> pd.DataFrame:
    curve = res.tables["verification_curve"]
    return curve.groupby(["test_group", "threshold"], as_index=False)[["fmr", "fnmr"]].mean()


def plot_error_rates(res: Results) -> Figure | None:
    """Left: FMR and FNMR against the threshold per group; right: DET curves (FNMR vs FMR, probit axes).

    Curves are the mean over seeds of FMR and FNMR at each threshold of the shared threshold grid.
    """
    if res.tables["verification_curve"].empty:
        return None
    curves = _mean_curves(res)
    groups = [g for g in res.test_groups if g in set(curves["test_group"])]
    fig = figures.new_figure(11.5, 4.4)
    ax_thr, ax_det = fig.subplots(1, 2)
    floor = 1e-5
    for group in groups:
        c = curves[curves["test_group"] == group].sort_values("threshold")
        color = figures.group_color(group)
        ax_thr.plot(c["threshold"], c["fmr"].clip(lower=floor), color=color, linestyle="-", label=f"{group} FMR")
        ax_thr.plot(c["threshold"], c["fnmr"].clip(lower=floor), color=color, linestyle="--", label=f"{group} FNMR")
        ok = (c["fmr"] > 0) & (c["fnmr"] > 0) & (c["fmr"] < 1) & (c["fnmr"] < 1)
        ax_det.plot(c.loc[ok, "fmr"], c.loc[ok, "fnmr"], color=color, linewidth=1.8, label=group)
    ax_thr.set_yscale("log")
    ax_thr.set_ylim(floor, 1.05)
    ax_thr.set_xlabel("threshold (cosine similarity)")
    ax_thr.set_ylabel("error rate (log)")
    ax_thr.set_title("FMR (solid) and FNMR (dashed) vs threshold")
    ax_thr.legend(fontsize=7, ncol=2)
    ax_thr.grid(alpha=0.3)
    _probit_axes(ax_det)
    ax_det.plot([1e-5, 0.95], [1e-5, 0.95], color="#999999", linewidth=0.8, linestyle=":", label="FMR = FNMR (EER)")
    ax_det.axvline(1e-3, color="#999999", linewidth=0.8, linestyle="--", label="FMR = 1e-3")
    ax_det.set_xlabel("FMR (probit scale)")
    ax_det.set_ylabel("FNMR (probit scale)")
    ax_det.set_title("DET curves")
    ax_det.legend(fontsize=8)
    return fig


def _probit_axes(ax) -> None:
    def forward(p):
        return norm.ppf(np.clip(p, 1e-9, 1 - 1e-9))

    def inverse(z):
        return norm.cdf(z)

    ticks = [1e-5, 1e-4, 1e-3, 1e-2, 0.05, 0.2, 0.5, 0.8, 0.95]
    labels = ["1e-5", "1e-4", "1e-3", "0.01", "0.05", "0.2", "0.5", "0.8", "0.95"]
    for axis in ("x", "y"):
        getattr(ax, f"set_{axis}scale")("function", functions=(forward, inverse))
        getattr(ax, f"set_{axis}ticks")(ticks, labels)
        getattr(ax, f"set_{axis}lim")(1e-5, 0.95)
    ax.grid(alpha=0.3)


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


def verification_blocks(res: Results, s: Summaries) -> list[Block]:
    blocks: list[Block] = [("h2", "Verification")]
    ver = s["verification"]
    blocks.append(("p", "Cosine-similarity verification of the test identities per ethnicity: genuine pairs are two "
                        "images of the same identity, impostor pairs images of different identities. Rates in %, "
                        "mean ± std over seeds."))
    if ver.empty:
        blocks.append(("note", "No verification results are stored (verification disabled, or every scores job "
                               "failed or is missing)."))
    else:
        frame = pd.DataFrame({
            "test group": ver["test_group"],
            "EER (%)": [pm(m, sd, 2, 100) for m, sd in zip(ver["eer_mean"], ver["eer_std"])],
            "FNMR @ FMR=1e-3 (%)": [pm(m, sd, 2, 100) for m, sd in
                                    zip(ver["fnmr_at_fmr_1e_3_mean"], ver["fnmr_at_fmr_1e_3_std"])],
            "FNMR @ FMR=1e-2 (%)": [pm(m, sd, 2, 100) for m, sd in
                                    zip(ver["fnmr_at_fmr_1e_2_mean"], ver["fnmr_at_fmr_1e_2_std"])],
            "EER threshold": [num(v) for v in ver["eer_threshold_mean"]],
            "genuine / impostor pairs": [f"{g:,.0f} / {i:,.0f}" for g, i in zip(ver["n_genuine"], ver["n_impostor"])],
            "seeds": ver["n_seeds"].astype(str),
        })
        if ver["eer_ci_low"].notna().any():
            seed = int(ver["ci_seed"].min())
            for m, label in (("eer", "EER"), ("fnmr_at_fmr_1e_3", "FNMR @ 1e-3")):
                frame[f"{label}, seed {seed} [95% CI] (%)"] = [
                    interval_text(100 * v, 100 * lo, 100 * hi) for v, lo, hi in
                    zip(ver[f"{m}_seed"], ver[f"{m}_ci_low"], ver[f"{m}_ci_high"])]
        notes = ["Impostor pairs were sampled (not every pair scored) in at least one seed of: "
                 + ", ".join(ver.loc[ver["impostor_sampled"], "test_group"])] if ver["impostor_sampled"].any() else []
        if ver["eer_ci_low"].notna().any():
            notes.append("Seed columns: that seed's value with its 95% identity-bootstrap percentile interval "
                         "(identities resampled within each gender of the test group; docs/REPORT.md); the mean "
                         "± std columns show the spread over seeds (other splits).")
        blocks.append(("table", Table(frame, "EER and FNMR per test group", None, notes)))
    for name, plot, caption in (
            ("scores.png", plot_score_densities, "Genuine and impostor score densities per test group, "
                                                         "EER threshold marked"),
            ("error_rates.png", plot_error_rates, "FMR and FNMR against the threshold, and DET curves "
                                                          "(mean over seeds)")):
        fig = plot(res)
        if fig is not None:
            blocks.append(("figure", FigureBlock(name, caption, png(fig))))

    blocks.append(("h3", "Demographic differentials at the global threshold"))
    blocks.append(("p", "One threshold for everyone (FMR = 1e-3 over all impostor pairs); each demographic group's "
                        "own FMR and FNMR at it, and the summaries used in the field (docs/REPORT.md): NIST's "
                        "Max/Min and Max/GeoMean (1 = equal), FDR (1 = no discrepancy) and GARBE (0 = equal), "
                        "a = 0.5, computed per seed then mean ± std. A ratio with a zero rate is undefined and "
                        "reported as such."))
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
    blocks += interval_blocks(res, s)
    blocks += allpairs_blocks(res, s)
    blocks += pair_blocks(res)
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


def _summaries(res: Results) -> Summaries:
    imp = impostor_fmr_matrix(res)
    out = {"verification": verification_summary(res), "demographic_rates": demographic_rates_summary(res),
           "fairness": fairness_summary(res), "fairness_by_seed": fairness_by_seed(res),
           "impostor_fmr": imp.reset_index() if not imp.empty else pd.DataFrame(columns=["group_a"]),
           "group_eer": group_eer_summary(res), "operating_points": operating_points_summary(res),
           "verification_intervals": res.tables["verification_ci"],
           "fairness_bounded_by_seed": bounded_fairness_by_seed(res)}
    for name, frame in pair_protocol(res).items():
        out[f"pairs_{name}"] = frame
    exact = allpairs_summary(res)
    for name in ("eer", "operating_points", "impostor_matrix"):
        out[f"allpairs_{name}"] = exact[name]
    out["allpairs_intervals"] = allpairs_intervals(res, exact)
    return out


SECTION = Section("verification", verification_blocks, _summaries)
