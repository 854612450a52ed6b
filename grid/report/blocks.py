"""The report's document model: blocks (headings, paragraphs, notes, tables of display strings, figures), the
formatting of numbers into display strings, and the names the renderers share. Sections build blocks
(``grid.report.sections``); ``document`` gathers them and ``render`` writes them out."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

METRIC_TITLES = {"accuracy": "Accuracy", "accuracy_male": "Accuracy on men", "accuracy_female": "Accuracy on women",
                 "balanced_accuracy": "Balanced accuracy ((TPR + TNR)/2, female positive)"}


def metric_title(metric: str, classes: list[str] | tuple[str, ...] = ()) -> str:
    """The title of an accuracy metric; with another target than gender (``classes``: its two values), the
    per-class accuracies and the positive class are named by its values."""
    if len(classes) != 2 or tuple(classes) == ("male", "female"):
        return METRIC_TITLES[metric]
    return {"accuracy_male": f"Accuracy on {classes[0]}", "accuracy_female": f"Accuracy on {classes[1]}",
            "balanced_accuracy": f"Balanced accuracy ((TPR + TNR)/2, {classes[1]} positive)"}.get(metric,
                                                                                                METRIC_TITLES[metric])
CORNER = "trained on \\ tested on"


# ------------------------------------------------------------------------------------------------ document model
@dataclass
class Table:
    frame: pd.DataFrame           # display strings; the index is shown as the first column when index_name is set
    caption: str
    index_name: str | None = None
    notes: list[str] = field(default_factory=list)


@dataclass
class FigureBlock:
    name: str                     # file name under figures/
    caption: str
    png: bytes


Block = tuple[str, Any]           # ("h2"|"h3"|"p"|"note"|"pre"|"table"|"figure", content)


def explained(title: str, text: str, data: pd.DataFrame, empty: str, table: Callable[[pd.DataFrame], Table],
              level: str = "h3") -> list[Block]:
    """A heading, the paragraph explaining it, then ``table(data)``, or the note ``empty`` when there is no data."""
    return [(level, title), ("p", text), ("note", empty) if data.empty else ("table", table(data))]


def png(fig: Any) -> bytes:
    """A matplotlib figure as PNG bytes, at the report's resolution."""
    import io

    from grid.report.figures import DPI
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in text)


# ---------------------------------------------------------------------------------------------------- formatting
def num(v: Any, digits: int = 3) -> str:
    return "—" if v is None or pd.isna(v) else f"{v:.{digits}f}"


def pm(mean: Any, std: Any, digits: int = 3, scale: float = 1.0) -> str:
    if mean is None or pd.isna(mean):
        return "—"
    if std is None or pd.isna(std):
        return f"{mean * scale:.{digits}f}"
    return f"{mean * scale:.{digits}f} ± {std * scale:.{digits}f}"


def p_text(p: Any) -> str:
    if p is None or pd.isna(p):
        return "undefined"
    return "<1e-4" if p < 1e-4 else f"{p:.4f}"


def sci(v: Any) -> str:
    return "—" if v is None or pd.isna(v) else ("0" if v == 0 else f"{v:.2e}")


def yes(v: Any) -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return "—"
    return "yes" if bool(v) else "no"


def ci_text(mean: Any, lo: Any, hi: Any) -> str:
    if mean is None or pd.isna(mean):
        return "—"
    if pd.isna(lo):
        return f"{mean:+.3f}"
    return f"{mean:+.3f} [{lo:+.3f}, {hi:+.3f}]"
