"""What the report's figures share (matplotlib, Agg canvas, PNG): one colour per ethnicity in every figure, the
gender styles, a new figure, ``save(fig, path)``. The figures themselves are drawn by their sections
(``grid.report.sections``: each ``plot_*`` returns a matplotlib Figure, or None when there is nothing to draw, so
a notebook can show it). Figures are built on their own Agg canvas without pyplot: no global backend is changed
and nothing is left open.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from matplotlib import colors as mcolors
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

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


def new_figure(width: float, height: float) -> Figure:
    """An empty figure on its own Agg canvas, at the report's resolution."""
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save(fig: Figure, path: str | os.PathLike[str]) -> Path:
    """Write ``fig`` as PNG to ``path`` (folders created) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=DPI)
    return path


def text_color(rgba: tuple) -> str:
    r, g, b = rgba[:3]
    return "black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "white"


def group_label(group: str) -> str:
    return group.replace("_", " ")


def colormap(name: str) -> mcolors.Colormap:
    from matplotlib import colormaps
    return colormaps[name].with_extremes(bad="#eeeeee")
