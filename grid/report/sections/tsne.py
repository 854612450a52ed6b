"""The t-SNE maps of the training embeddings (coloured by the group axis, split by the target's classes: by
default ethnicity and gender, the table's ``ethnicity`` and ``gender`` columns)."""

from __future__ import annotations

from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from grid.report import figures
from grid.report.blocks import Block, FigureBlock, png
from grid.report.results import Results, axis_names
from grid.report.sections import Section, Summaries


TSNE_PANELS: tuple[tuple[str, str, str], ...] = (
    ("male", "ethnicity", "Men, by ethnicity"),
    ("female", "ethnicity", "Women, by ethnicity"),
    ("all", "ethnicity", "All, by ethnicity"),
    ("all", "ethnicity_gender", "All, by ethnicity x gender"),
)


MARKERS = ("o", "^")   # class 0 and class 1 of the target (figures.GENDER_STYLE's)


def _panels(res: Results) -> tuple[tuple[tuple[str, str, str], ...], tuple[str, ...]]:
    """The four panels and the target's classes: the study's for the default axes, else named by the run's."""
    classes = tuple(axis_names(res, "target")) or ("male", "female")
    if classes == ("male", "female"):
        return TSNE_PANELS, classes
    axes = res.run.get("axes") or {}
    group, target = (" x ".join(axes[a]["attributes"]) for a in ("group", "target"))
    panels = tuple((c, "ethnicity", f"{c}, by {group}") for c in classes)
    return (*panels, ("all", "ethnicity", f"All, by {group}"),
            ("all", "ethnicity_gender", f"All, by {group} x {target}")), classes


def plot_tsne(res: Results, seed: int | None = None) -> Figure | None:
    """The study's four t-SNE scatter plots of one seed's training embeddings (default: the lowest seed)."""
    tsne = res.tables["tsne"]
    if tsne.empty:
        return None
    if seed is None:
        seed = int(tsne["seed"].min())
    tsne = tsne[tsne["seed"] == seed]
    fig = figures.new_figure(11, 10)
    axes = fig.subplots(2, 2).ravel()
    panels, classes = _panels(res)
    for ax, (subset, colour_by, title) in zip(axes, panels):
        part = tsne[tsne["subset"] == subset]
        ax.set_title(title, fontsize=11)
        ax.set_xticks([])
        ax.set_yticks([])
        if part.empty:
            ax.text(0.5, 0.5, f"no t-SNE for subset '{subset}'", ha="center", va="center", transform=ax.transAxes)
            continue
        handles = []
        ethnicities = [e for e in figures.ETHNICITY_COLORS if e in set(part["ethnicity"])] + \
            sorted(set(part["ethnicity"]) - set(figures.ETHNICITY_COLORS))
        for ethnicity in ethnicities:
            sel = part[part["ethnicity"] == ethnicity]
            if colour_by == "ethnicity":
                ax.scatter(sel["x"], sel["y"], s=5, color=figures.group_color(ethnicity), alpha=0.6, linewidths=0,
                           rasterized=True)
                handles.append(Line2D([], [], color=figures.group_color(ethnicity), marker="o", linestyle="",
                                      label=ethnicity))
                continue
            for gender, marker in zip(classes, MARKERS):
                g = sel[sel["gender"] == gender]
                if g.empty:
                    continue
                color = figures.demographic_color(f"{ethnicity}_{gender}")
                ax.scatter(g["x"], g["y"], s=7, color=color, alpha=0.8, linewidths=0, marker=marker, rasterized=True)
                handles.append(Line2D([], [], color=color, marker=marker, linestyle="", label=f"{ethnicity} {gender}"))
        ax.legend(handles=handles, fontsize=8, markerscale=1.5, loc="best")
    fig.suptitle(f"t-SNE of the training embeddings (seed {seed})", fontsize=12)
    return fig


def tsne_blocks(res: Results, summaries: Summaries | None = None) -> list[Block]:
    blocks: list[Block] = [("h2", "t-SNE of the training embeddings")]
    fig = plot_tsne(res)
    if fig is None:
        blocks.append(("note", "No t-SNE results are stored (t-SNE disabled, or its jobs failed or are missing)."))
    else:
        caption = ", ".join(title.replace(",", "").lower() if k else title.replace(",", "")
                            for k, (_, _, title) in enumerate(_panels(res)[0]))
        blocks.append(("figure", FigureBlock("tsne.png", caption, png(fig))))
    return blocks


SECTION = Section("tsne", tsne_blocks)
