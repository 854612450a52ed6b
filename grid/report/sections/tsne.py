"""The t-SNE maps of the training embeddings."""

from __future__ import annotations

from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from grid.report import figures
from grid.report.blocks import Block, FigureBlock, png
from grid.report.results import Results
from grid.report.sections import Section, Summaries


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
    fig = figures.new_figure(11, 10)
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
            for gender in ("male", "female"):
                g = sel[sel["gender"] == gender]
                if g.empty:
                    continue
                color = figures.demographic_color(f"{ethnicity}_{gender}")
                ax.scatter(g["x"], g["y"], s=7, color=color, alpha=0.8, linewidths=0,
                           marker=figures.GENDER_STYLE[gender]["marker"], rasterized=True)
                handles.append(Line2D([], [], color=color, marker=figures.GENDER_STYLE[gender]["marker"], linestyle="",
                                      label=f"{ethnicity} {gender}"))
        ax.legend(handles=handles, fontsize=8, markerscale=1.5, loc="best")
    fig.suptitle(f"t-SNE of the training embeddings (seed {seed})", fontsize=12)
    return fig


def tsne_blocks(res: Results, summaries: Summaries | None = None) -> list[Block]:
    blocks: list[Block] = [("h2", "t-SNE of the training embeddings")]
    fig = plot_tsne(res)
    if fig is None:
        blocks.append(("note", "No t-SNE results are stored (t-SNE disabled, or its jobs failed or are missing)."))
    else:
        caption = "Men by ethnicity, women by ethnicity, all by ethnicity, all by ethnicity x gender"
        blocks.append(("figure", FigureBlock("tsne.png", caption, png(fig))))
    return blocks


SECTION = Section("tsne", tsne_blocks)
