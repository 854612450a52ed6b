"""Verification: EER and FNMR per test group, score densities and error-rate curves, demographic differentials at
the global threshold and the cross-group impostor FMR; the section also shows the operating points and intervals,
the all-pairs counts and the pair protocol."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from scipy.stats import norm

from grid.report import figures
from grid.report.blocks import Block, FigureBlock, Table, explained, num, png, pm
from grid.report.results import Results
from grid.report.sections import Section, Summaries
from grid.report.sections.acquisition import (acquisition_blocks, acquisition_fairness, acquisition_rates_summary,
                                              acquisition_summary)
from grid.report.sections.allpairs import allpairs_blocks, allpairs_intervals, allpairs_summary
from grid.report.sections.differentials import (bounded_fairness_by_seed, demographic_rates_summary,
                                                differential_blocks, fairness_by_seed, fairness_summary,
                                                impostor_fmr_matrix, impostor_matrix_blocks)
from grid.report.sections.intervals import group_eer_summary, interval_blocks, interval_text, operating_points_summary
from grid.report.sections.calibration import calibration_blocks, threshold_calibration
from grid.report.sections.pairs import pair_blocks, pair_protocol


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


def _verification_table(ver: pd.DataFrame) -> Table:
    """The display table of :func:`verification_summary`, with the lowest seed's intervals when stored."""
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
    return Table(frame, "EER and FNMR per test group", None, notes)


def verification_blocks(res: Results, s: Summaries) -> list[Block]:
    """Verification: per test group, the score figures, the demographic differentials, the failure to acquire, the
    operating points and intervals, the intended and achieved FMR of thresholds from development identities, the
    all-pairs counts, the pair protocol, the cross-group impostor FMR."""
    blocks = explained("Verification",
                       "Cosine-similarity verification of the test identities per ethnicity: genuine pairs are two "
                       "images of the same identity, impostor pairs images of different identities. Rates in %, "
                       "mean ± std over seeds.",
                       s["verification"], "No verification results are stored (verification disabled, or every "
                                          "scores job failed or is missing).", _verification_table, "h2")
    for name, plot, caption in (
            ("scores.png", plot_score_densities, "Genuine and impostor score densities per test group, "
                                                         "EER threshold marked"),
            ("error_rates.png", plot_error_rates, "FMR and FNMR against the threshold, and DET curves "
                                                          "(mean over seeds)")):
        fig = plot(res)
        if fig is not None:
            blocks.append(("figure", FigureBlock(name, caption, png(fig))))

    blocks += differential_blocks(res, s)
    blocks += acquisition_blocks(res, s)
    blocks += interval_blocks(res, s)
    blocks += calibration_blocks(res, s)
    blocks += allpairs_blocks(res, s)
    blocks += pair_blocks(res)
    blocks += impostor_matrix_blocks(res)
    return blocks


def _summaries(res: Results) -> Summaries:
    imp = impostor_fmr_matrix(res)
    out = {"verification": verification_summary(res), "demographic_rates": demographic_rates_summary(res),
           "fairness": fairness_summary(res), "fairness_by_seed": fairness_by_seed(res),
           "impostor_fmr": imp.reset_index() if not imp.empty else pd.DataFrame(columns=["group_a"]),
           "group_eer": group_eer_summary(res), "operating_points": operating_points_summary(res),
           "verification_intervals": res.tables["verification_ci"],
           "fairness_bounded_by_seed": bounded_fairness_by_seed(res), "acquisition": acquisition_summary(res),
           "acquisition_rates": acquisition_rates_summary(res), "acquisition_fairness": acquisition_fairness(res),
           "threshold_calibration": threshold_calibration(res)}
    for name, frame in pair_protocol(res).items():
        out[f"pairs_{name}"] = frame
    exact = allpairs_summary(res)
    for name in ("eer", "operating_points", "impostor_matrix"):
        out[f"allpairs_{name}"] = exact[name]
    out["allpairs_intervals"] = allpairs_intervals(res, exact)
    return out


SECTION = Section("verification", verification_blocks, _summaries)
