"""The report's figures (matplotlib, Agg canvas, PNG), one colour per ethnicity in every figure.

Each ``plot_*`` function returns a matplotlib Figure (or None when there is nothing to draw), so a notebook can
show it; ``save(fig, path)`` writes a PNG. Figures are built on their own Agg canvas without pyplot: no global
backend is changed and nothing is left open.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colors as mcolors
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from scipy.stats import norm

from grid.report import stats
from grid.report.results import Results
from storage.vocab import ALL

# Okabe-Ito colour-blind-safe palette: one colour per ethnicity, the same in every figure.
ETHNICITY_COLORS: dict[str, str] = {"asian": "#E69F00", "caucasian": "#0072B2", "black": "#009E73"}
# Other groups (RFW, FairFace, ...): the rest of Okabe-Ito, then tab10's, each group its own, kept for the process.
_EXTRA_COLORS = ("#CC79A7", "#D55E00", "#56B4E9", "#F0E442", "#999999", "#9467BD", "#8C564B", "#17BECF",
                 "#BCBD22", "#7F7F7F", "#1F77B4", "#D62728")
_ASSIGNED: dict[str, str] = {}
GENDER_STYLE: dict[str, dict] = {"male": {"linestyle": "-", "marker": "o"},
                                 "female": {"linestyle": "--", "marker": "^"}}
DPI = 110


def group_color(group: str) -> str:
    """The colour of an ethnicity group (or of a demographic group "asian_female": its ethnicity's colour): the
    study's groups have fixed colours; any other group gets the next unused colour, the same in every figure."""
    ethnicity = group.rsplit("_", 1)[0] if group.endswith(("_male", "_female")) else group
    if ethnicity in ETHNICITY_COLORS:
        return ETHNICITY_COLORS[ethnicity]
    if ethnicity == ALL:
        return "#444444"
    if ethnicity not in _ASSIGNED:
        _ASSIGNED[ethnicity] = _EXTRA_COLORS[len(_ASSIGNED) % len(_EXTRA_COLORS)]
    return _ASSIGNED[ethnicity]


def demographic_color(group: str) -> str:
    """The ethnicity's colour, a darker shade of it for "<ethnicity>_male" and a lighter one for "_female"."""
    base = np.array(mcolors.to_rgb(group_color(group)))
    if group.endswith("_male"):
        base = base * 0.7
    elif group.endswith("_female"):
        base = base + (1 - base) * 0.4
    return mcolors.to_hex(base)


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save(fig: Figure, path: str | os.PathLike[str]) -> Path:
    """Write ``fig`` as PNG to ``path`` (folders created) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=DPI)
    return path


def _text_color(rgba: tuple) -> str:
    r, g, b = rgba[:3]
    return "black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "white"


def _label(group: str) -> str:
    return group.replace("_", " ")


# ------------------------------------------------------------------------------------------------ accuracy
def plot_accuracy(res: Results, model: str,
                  metrics: tuple[str, ...] = ("accuracy",)) -> Figure | None:
    """Annotated heatmap(s) of one model's train x test matrix: mean ± std in each cell, † = fewer seeds.

    One panel per metric; the colour scale is shared across models and panels so figures compare at a glance.
    """
    all_stats = pd.concat([stats.accuracy_stats(res, m) for m in metrics])
    if all_stats["mean"].dropna().empty:
        return None
    lo, hi = float(all_stats["mean"].min()), float(all_stats["mean"].max())
    if hi - lo < 1e-6:
        lo, hi = lo - 0.01, hi + 0.01
    cmap = _cmap("viridis")
    norm = mcolors.Normalize(lo, hi)
    n_rows, n_cols = len(res.train_groups), len(res.test_groups)
    fig = _figure(1.2 + 1.55 * n_cols * len(metrics) + 0.8, 1.0 + 0.75 * n_rows)
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    image = None
    for ax, metric in zip(axes, metrics):
        mean = stats.accuracy_matrix(res, model, metric, "mean")
        text = stats.matrix_text(res, model, metric)
        data = mean.to_numpy(float)
        image = ax.imshow(np.ma.masked_invalid(data), cmap=cmap, norm=norm, aspect="auto")
        for i in range(data.shape[0]):
            for j in range(data.shape[1]):
                label = text.iat[i, j].replace(" ± ", "\n± ")
                color = "black" if np.isnan(data[i, j]) else _text_color(cmap(norm(data[i, j])))
                ax.text(j, i, label, ha="center", va="center", fontsize=9, color=color)
        ax.set_xticks(range(data.shape[1]), [c for c in mean.columns])
        ax.set_yticks(range(data.shape[0]), [r for r in mean.index])
        for tick in [*ax.get_xticklabels(), *ax.get_yticklabels()]:
            tick.set_color(group_color(tick.get_text()))
            tick.set_fontweight("bold")
        ax.set_xlabel("tested on")
        ax.set_ylabel("trained on")
        ax.set_title(f"{model}: {metric.replace('_', ' ')}", fontsize=11)
        ax.tick_params(length=0)
    if image is not None:
        fig.colorbar(image, ax=list(axes), shrink=0.85, label="mean over seeds")
    return fig


def _cmap(name: str) -> mcolors.Colormap:
    from matplotlib import colormaps
    return colormaps[name].with_extremes(bad="#eeeeee")


# -------------------------------------------------------------------------------------------- verification
def plot_score_densities(res: Results) -> Figure | None:
    """Genuine and impostor score densities per test group (histograms pooled over seeds), EER threshold marked."""
    hist = res.tables["verification_hist"]
    if hist.empty:
        return None
    ver = stats.verification_summary(res).set_index("test_group") if not res.tables["verification"].empty else None
    groups = [g for g in res.test_groups if g in set(hist["test_group"])]
    fig = _figure(4.2 * len(groups), 3.4)
    axes = fig.subplots(1, len(groups), squeeze=False, sharey=True)[0]
    for ax, group in zip(axes, groups):
        color = group_color(group)
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
    fig = _figure(11.5, 4.4)
    ax_thr, ax_det = fig.subplots(1, 2)
    floor = 1e-5
    for group in groups:
        c = curves[curves["test_group"] == group].sort_values("threshold")
        color = group_color(group)
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
    mat = stats.impostor_fmr_matrix(res)
    if mat.empty:
        return None
    data = mat.to_numpy(float)
    positive = data[np.isfinite(data) & (data > 0)]
    fig = _figure(1.6 + 1.05 * data.shape[1], 1.2 + 0.8 * data.shape[0])
    ax = fig.subplots()
    cmap = _cmap("magma_r")
    lo = positive.min() if positive.size else 1e-6
    hi = positive.max() if positive.size else 1e-2
    norm = mcolors.LogNorm(lo, max(hi, lo * 10))
    shown = np.where(data > 0, data, np.nan)
    image = ax.imshow(np.ma.masked_invalid(shown), cmap=cmap, norm=norm, aspect="auto")
    for i in range(data.shape[0]):
        for j in range(data.shape[1]):
            v = data[i, j]
            label = "—" if np.isnan(v) else ("0" if v == 0 else f"{v:.1e}")
            color = "black" if not (v > 0) else _text_color(cmap(norm(v)))
            ax.text(j, i, label, ha="center", va="center", fontsize=8, color=color)
    ax.set_xticks(range(data.shape[1]), [_label(c) for c in mat.columns], rotation=35, ha="right")
    ax.set_yticks(range(data.shape[0]), [_label(r) for r in mat.index])
    for tick, name in [*zip(ax.get_xticklabels(), mat.columns), *zip(ax.get_yticklabels(), mat.index)]:
        tick.set_color(group_color(name))
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
    groups = [g for g in stats.demographic_groups(res) if g in dr.index] or list(dr.index)
    ci = res.tables["verification_ci"]
    ci = ci[ci["seed"] == seed].set_index(["quantity", "group_a"]) if not ci.empty else None
    fig = _figure(10.5, 0.9 + 0.45 * len(groups))
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
            color = demographic_color(g)
            ax.errorbar([v], [y], xerr=[[max(v - lo, 0)], [max(hi - v, 0)]], fmt="o", color=color, capsize=3,
                        markerfacecolor="white" if zero else color)
        ax.set_xlabel(f"{rate.upper()} at the global threshold" + (" (log)" if rate == "fmr" else ""))
        ax.grid(alpha=0.3)
    axes[0].set_xscale("log")
    axes[0].set_yticks(range(len(groups)), [_label(g) for g in groups])
    axes[0].invert_yaxis()
    fig.suptitle(f"Per-group rates, seed {seed}, 95% intervals", fontsize=10)
    return fig


# ------------------------------------------------------------------------------------------------------ t-SNE
TSNE_PANELS: tuple[tuple[str, str, str], ...] = (
    ("male", "ethnicity", "Men, by ethnicity"),
    ("female", "ethnicity", "Women, by ethnicity"),
    ("all", "ethnicity", "All, by ethnicity"),
    ("all", "ethnicity_gender", "All, by ethnicity x gender"),
)


def plot_tsne(res: Results, seed: int | None = None) -> Figure | None:
    """The study's four t-SNE scatter plots of one seed's training embeddings (default: the lowest seed)."""
    tsne = res.tables["tsne"]
    if tsne.empty:
        return None
    if seed is None:
        seed = int(tsne["seed"].min())
    tsne = tsne[tsne["seed"] == seed]
    fig = _figure(11, 10)
    axes = fig.subplots(2, 2).ravel()
    for ax, (subset, colour_by, title) in zip(axes, TSNE_PANELS):
        part = tsne[tsne["subset"] == subset]
        ax.set_title(title, fontsize=11)
        ax.set_xticks([])
        ax.set_yticks([])
        if part.empty:
            ax.text(0.5, 0.5, f"no t-SNE for subset '{subset}'", ha="center", va="center", transform=ax.transAxes)
            continue
        handles = []
        ethnicities = [e for e in ETHNICITY_COLORS if e in set(part["ethnicity"])] + \
            sorted(set(part["ethnicity"]) - set(ETHNICITY_COLORS))
        for ethnicity in ethnicities:
            sel = part[part["ethnicity"] == ethnicity]
            if colour_by == "ethnicity":
                ax.scatter(sel["x"], sel["y"], s=5, color=group_color(ethnicity), alpha=0.6, linewidths=0,
                           rasterized=True)
                handles.append(Line2D([], [], color=group_color(ethnicity), marker="o", linestyle="",
                                      label=ethnicity))
                continue
            for gender in ("male", "female"):
                g = sel[sel["gender"] == gender]
                if g.empty:
                    continue
                color = demographic_color(f"{ethnicity}_{gender}")
                ax.scatter(g["x"], g["y"], s=7, color=color, alpha=0.8, linewidths=0,
                           marker=GENDER_STYLE[gender]["marker"], rasterized=True)
                handles.append(Line2D([], [], color=color, marker=GENDER_STYLE[gender]["marker"], linestyle="",
                                      label=f"{ethnicity} {gender}"))
        ax.legend(handles=handles, fontsize=8, markerscale=1.5, loc="best")
    fig.suptitle(f"t-SNE of the training embeddings (seed {seed})", fontsize=12)
    return fig
