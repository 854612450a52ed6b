"""The accuracy matrices: mean ± std over seeds per model x train group x test group, and the cells without every
seed."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib import colors as mcolors
from matplotlib.figure import Figure

from grid.report import figures
from grid.report.blocks import Block, FigureBlock, Table, png, CORNER, metric_title, slug
from grid.report.results import Results, axis_names, verification_only
from grid.report.sections import Section, Summaries, kinds_filling
from grid.report.sections.jobs import job_status
from storage.errors import InputError


METRICS: tuple[str, ...] = ("accuracy", "accuracy_male", "accuracy_female", "balanced_accuracy")


MARK = "†"


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
    grouped = acc.groupby(keys, sort=False)[metric].agg(mean="mean", std="std", n="count")  # std: ddof=1
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


def seed_rows(res: Results, metric: str) -> pd.DataFrame:
    acc = res.tables["accuracy"].dropna(subset=[metric])
    return acc.drop_duplicates(["model", "train_group", "test_group", "seed"], keep="last")


def missing_cells(res: Results) -> pd.DataFrame:
    """Per model and train group, the seeds whose accuracy job (of a kind filling the accuracy table) failed or
    never finished.

    Columns: model, train_group, failed_seeds, missing_seeds (lists of ints).
    """
    status = job_status(res)
    cells = status[status["kind"].isin(kinds_filling("accuracy")) & (status["status"] != "done")]
    rows = []
    for (model, train), part in cells.groupby(["model", "train_group"], sort=False):
        rows.append({"model": model, "train_group": train,
                     "failed_seeds": sorted(int(s) for s in part.loc[part["status"] == "failed", "seed"]),
                     "missing_seeds": sorted(int(s) for s in part.loc[part["status"] == "missing", "seed"])})
    return pd.DataFrame(rows, columns=["model", "train_group", "failed_seeds", "missing_seeds"])


def plot_accuracy(res: Results, model: str,
                  metrics: tuple[str, ...] = ("accuracy",)) -> Figure | None:
    """Annotated heatmap(s) of one model's train x test matrix: mean ± std in each cell, † = fewer seeds.

    One panel per metric; the colour scale is shared across models and panels so figures compare at a glance.
    """
    all_stats = pd.concat([accuracy_stats(res, m) for m in metrics])
    if all_stats["mean"].dropna().empty:
        return None
    lo, hi = float(all_stats["mean"].min()), float(all_stats["mean"].max())
    if hi - lo < 1e-6:
        lo, hi = lo - 0.01, hi + 0.01
    cmap = figures.colormap("viridis")
    norm = mcolors.Normalize(lo, hi)
    n_rows, n_cols = len(res.train_groups), len(res.test_groups)
    fig = figures.new_figure(1.2 + 1.55 * n_cols * len(metrics) + 0.8, 1.0 + 0.75 * n_rows)
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    image = None
    for ax, metric in zip(axes, metrics):
        mean = accuracy_matrix(res, model, metric, "mean")
        text = matrix_text(res, model, metric)
        data = mean.to_numpy(float)
        image = ax.imshow(np.ma.masked_invalid(data), cmap=cmap, norm=norm, aspect="auto")
        for i in range(data.shape[0]):
            for j in range(data.shape[1]):
                label = text.iat[i, j].replace(" ± ", "\n± ")
                color = "black" if np.isnan(data[i, j]) else figures.text_color(cmap(norm(data[i, j])))
                ax.text(j, i, label, ha="center", va="center", fontsize=9, color=color)
        ax.set_xticks(range(data.shape[1]), [c for c in mean.columns])
        ax.set_yticks(range(data.shape[0]), [r for r in mean.index])
        for tick in [*ax.get_xticklabels(), *ax.get_yticklabels()]:
            tick.set_color(figures.group_color(tick.get_text()))
            tick.set_fontweight("bold")
        ax.set_xlabel("tested on")
        ax.set_ylabel("trained on")
        ax.set_title(f"{model}: {metric.replace('_', ' ')}", fontsize=11)
        ax.tick_params(length=0)
    if image is not None:
        fig.colorbar(image, ax=list(axes), shrink=0.85, label="mean over seeds")
    return fig


def matrix_blocks(res: Results, summaries: Summaries | None = None) -> list[Block]:
    blocks: list[Block] = [("h2", "Accuracy matrices")]
    n = len(res.seeds)
    blocks.append(("p", f"Mean ± standard deviation (ddof=1) over {n} seed{'s' if n != 1 else ''} "
                        f"({', '.join(map(str, res.seeds)) or 'none'}); rows: the group the classifier was trained "
                        f"on, columns: the group it was tested on. † marks a cell with fewer seeds than planned; "
                        f"— a cell without data. The CSV files hold mean, std and n as separate columns."))
    classes = axis_names(res, "target")
    if verification_only(res):
        return [("h2", "Accuracy matrices"), ("note", "A verification-only study (grid.models = []): no classifier "
                                                      "was trained.")]
    if not res.models:
        blocks.append(("note", "No accuracy results are stored: every cell job failed or is missing "
                               "(see Failed and missing jobs)."))
    for model in res.models:
        blocks.append(("h3", f"Model: {model}"))
        fig = plot_accuracy(res, model, ("accuracy",))
        if fig is not None:
            blocks.append(("figure", FigureBlock(f"accuracy_{slug(model)}.png",
                                            f"{model}: accuracy, mean ± std over seeds", png(fig))))
        for metric in METRICS:
            notes = [f"† {line}" for line in incomplete_cells(res, metric, model)]
            blocks.append(("table", Table(matrix_text(res, model, metric), f"{model}: {metric_title(metric, classes)}",
                                          CORNER, notes)))
        fig = plot_accuracy(res, model, ("accuracy_male", "accuracy_female"))
        if fig is not None:
            blocks.append(("figure", FigureBlock(f"accuracy_gender_{slug(model)}.png",
                                            f"{model}: {metric_title('accuracy_male', classes).lower()} and "
                                            f"{metric_title('accuracy_female', classes)[9:]}", png(fig))))
    return blocks


def missing_cell_blocks(res: Results) -> list[Block]:
    """The accuracy cells without every seed, for the job-status part."""
    cells = missing_cells(res)
    if cells.empty:
        return []
    frame = pd.DataFrame({"model": cells["model"], "trained on": cells["train_group"],
                          "failed seeds": [", ".join(map(str, v)) or "—" for v in cells["failed_seeds"]],
                          "missing seeds": [", ".join(map(str, v)) or "—" for v in cells["missing_seeds"]]})
    return [("table", Table(frame, "Accuracy cells without every seed"))]


SECTION = Section("matrices", matrix_blocks, lambda res: {metric: accuracy_stats(res, metric) for metric in METRICS},
                  missing_cell_blocks)
