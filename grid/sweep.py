"""The ``[sweep]`` table: one model's config keys as axes, expanded into variants of that model.

``"xgboost.max_depth" = [3, 6]`` replaces model ``xgboost`` of ``grid.models`` by the variants
``xgboost-max_depth=3`` and ``xgboost-max_depth=6`` (several keys of one model: their product, keys in the
table's order). Each variant is a model of the grid (``tasks.models``: its config names its type in ``base``), so
its job ids, rows and matrices are its own and a results folder fixes its config like any model's.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Mapping
from typing import Any

from storage.errors import InputError
from tasks.models import BASE


def _show(value: Any) -> str:
    """A swept value as it appears in a variant's name: strings as they are, anything else as compact JSON."""
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


def sweep_axes(sweep: Mapping[str, Any], source: str) -> dict[str, list[tuple[str, list[Any]]]]:
    """The sweep table checked, by model: [(config key, its values)] in the table's order."""
    axes: dict[str, list[tuple[str, list[Any]]]] = {}
    for dotted, values in sweep.items():
        model, _, key = dotted.rpartition(".")
        where = f"{source}: [sweep] '{dotted}'"
        if not model or not key:
            raise InputError(f"{where}: a sweep key is MODEL.KEY, such as \"xgboost.max_depth\"")
        if key == BASE:
            raise InputError(f"{where}: a variant's '{BASE}' is not swept; name each variant in a [model.NAME] "
                             f"section instead")
        shown = [_show(v) for v in values] if isinstance(values, list) else []
        if not shown:
            raise InputError(f"{where} must be a non-empty list of values, got {values!r}")
        if len(set(shown)) != len(shown):
            raise InputError(f"{where} repeats a value: {values!r}")
        axes.setdefault(model, []).append((key, list(values)))
    return axes


def expand(models: list[str], sections: Mapping[str, Any], axes: Mapping[str, list[tuple[str, list[Any]]]],
           source: str, limit: int) -> tuple[list[str], dict[str, Any]]:
    """``models`` with each swept model replaced (in place) by its variants, and the model sections with each
    variant's: the swept model's section (its ``base``, or the model itself as base) updated by the swept values.
    InputError when that gives more than ``limit`` models (``run.max_jobs``: each plans at least one job)."""
    count = sum(math.prod(len(values) for _, values in axes[m]) if m in axes else 1 for m in models)
    if count > limit:
        raise InputError(f"{source}: [sweep] gives {count:,} models, more than run.max_jobs ({limit:,}); "
                         f"sweep fewer values")
    out_models: list[str] = []
    out_sections = {m: s for m, s in sections.items() if m not in axes}
    for model in models:
        if model not in axes:
            out_models.append(model)
            continue
        section = dict(sections.get(model) or {})
        section.setdefault(BASE, model)
        keys = [key for key, _ in axes[model]]
        for combo in itertools.product(*(values for _, values in axes[model])):
            name = model + "".join(f"-{key}={_show(value)}" for key, value in zip(keys, combo))
            if name in models or name in out_models:
                raise InputError(f"{source}: [sweep] gives model {name!r}, which 'grid.models' already names")
            out_models.append(name)
            out_sections[name] = {**section, **dict(zip(keys, combo))}
    return out_models, out_sections
