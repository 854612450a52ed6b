"""The report's sections, one module per topic, gathered from the job kinds (the one place the report's order and
contents are declared: each kind's ``report`` names its sections, ``tasks.kinds.JobKind``).

A :class:`Section` turns loaded :class:`~grid.report.results.Results` into the report's CSV tables
(``summaries``) and blocks (``blocks``, given every section's summaries), and may add blocks to the "Failed
and missing jobs" part (``status``) and to what the terminal prints (``terminal``). :func:`kind_sections` lists the sections of the registered kinds, each once,
in the order of the first kind naming it; the job-status part (:mod:`grid.report.sections.jobs`) and the
configuration close the report around them (``grid.report.document``).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pandas as pd

from grid.report.blocks import Block
from grid.report.results import Results
from storage.errors import InputError
from tasks import kinds

Summaries = dict[str, pd.DataFrame]


def _no_summaries(res: Results) -> Summaries:
    return {}


@dataclass(frozen=True)
class Section:
    """One part of the report: ``summaries(res)`` -> CSV tables by file name (without .csv), ``blocks(res, s)``
    -> its blocks (``s``: every section's summaries), ``status(res)`` -> blocks about its jobs, ``terminal(res)``
    -> the blocks ``biasgrid run`` and ``biasgrid report`` also print (after the accuracy matrices)."""

    name: str
    blocks: Callable[[Results, Summaries], list[Block]]
    summaries: Callable[[Results], Summaries] = _no_summaries
    status: Callable[[Results], list[Block]] | None = None
    terminal: Callable[[Results], list[Block]] | None = None


def section(reference: str) -> Any:
    """The object a kind's ``report`` entry names, ``"module:NAME"``; InputError naming it when it is missing."""
    module, _, name = reference.partition(":")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise InputError(f"report section {reference!r} cannot be loaded ({exc}); expected \"module:NAME\" naming "
                         f"a grid.report.sections.Section") from None


def kind_sections() -> list[Section]:
    """The sections of every registered kind, each once, in kind order."""
    seen: dict[str, Section] = {}
    for kind in kinds.all_kinds():
        for reference in kind.report:
            seen.setdefault(reference, section(reference))
    return list(seen.values())


def kinds_filling(table: str) -> set[str]:
    """The names of the registered kinds whose jobs fill results table ``table``."""
    return {kind.name for kind in kinds.all_kinds() if table in kind.table_names}
