"""Bias mitigation methods: the registry of built-ins, their config keys (defaults + checks), and their contract.

Every method is fitted on fitting rows only and applied to other rows; its formulas are in docs/REPORT.md,
section "Mitigation methods". Two sides:

Classifier side (a cell's model; ``side == "classifier"``), a class built by :func:`build_mitigation`::

    m = build_mitigation(name, config, seed)
    m.fit(build, X_train, y_train, group_train, identity_train)   # build() -> a fresh untrained classifier
    m.predict(X_test, group_test) -> 0/1                            # group labels of the rows predicted
    m.predict_proba(X_test, group_test) -> (n, 2)                   # optional: the cell's score column
    m.groups_                                                       # optional: the only groups it can predict

- ``reweight`` (:mod:`.reweight`): Kamiran & Calders' reweighing, the model trained with sample weights;
- ``reductions`` (:mod:`.reductions`): Fairlearn's ExponentiatedGradient (equalized odds or demographic parity);
- ``threshold_optimizer`` (:mod:`.threshold_optimizer`): Fairlearn's ThresholdOptimizer (equalized odds),
  fitted on an identity-disjoint validation part of the training identities;
- ``erase`` (:mod:`.erase`): LEACE concept erasure of the group from the embeddings before training.

Score side (verification; ``side == "score"``), fitted on identities disjoint from the evaluated ones::

    m = build_mitigation(name, config, seed)
    m.fit(X_fit, identity_fit, group_fit)          # every image of the fitting identities (group may be None
                                                   # for a method with uses_group_labels False)
    m.transform(X_eval, group_eval, a, b, scores) -> new scores of the pairs (a[i], b[i]) of the rows X_eval

- ``group_thresholds`` (:mod:`.group_thresholds`), ``fsn`` (:mod:`.fsn`), ``faircal`` (:mod:`.faircal`),
  ``znorm`` (:mod:`.znorm`).

Every method needs fitting rows of at least two groups (:func:`require_several_groups`; FSN and FairCal use no
group labels, so they are not refused for it). Nothing heavy is imported here: the driver resolves configs.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from storage.errors import InputError
from tasks.models import checked_options

_MAX_IMPOSTOR_PAIRS = 5_000_000  # the scores kind's default sample of impostor pairs


def _positive_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 1


def _open_fraction(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v < 1


def _positive(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) and v > 0


_TARGET = (1e-3, _open_fraction, "a number between 0 and 1 (the target FMR)")
_PAIRS = (_MAX_IMPOSTOR_PAIRS, lambda v: _positive_int(v) and v >= 1000, "an integer >= 1000")
_CLUSTERS = (100, lambda v: _positive_int(v) and v >= 2, "an integer >= 2")
_N_INIT = (1, _positive_int, "a positive integer (k-means restarts)")


@dataclass(frozen=True)
class Method:
    """A built-in mitigation: its side, where its class lives, whether it reads group labels, whether the
    model must take sample weights, and its config keys (key -> (default, check, what is expected))."""

    name: str
    side: str                  # "classifier" | "score"
    implementation: str        # "module:Class"
    uses_group_labels: bool
    needs_sample_weight: bool
    spec: Mapping[str, tuple[Any, Any, str]]


METHODS: dict[str, Method] = {m.name: m for m in (
    Method("reweight", "classifier", "tasks.mitigation.reweight:Reweight", True, True, {}),
    Method("reductions", "classifier", "tasks.mitigation.reductions:Reductions", True, True, {
        "constraint": ("equalized_odds", lambda v: v in ("equalized_odds", "demographic_parity"),
                       "'equalized_odds' or 'demographic_parity'"),
        "eps": (0.01, _positive, "a positive number (the allowed constraint violation)"),
        "max_iter": (50, _positive_int, "a positive integer")}),
    Method("threshold_optimizer", "classifier", "tasks.mitigation.threshold_optimizer:ThresholdOptimizer", True,
           False, {"validation_fraction": (0.3, _open_fraction, "a number between 0 and 1")}),
    Method("erase", "classifier", "tasks.mitigation.erase:Erase", True, False, {}),
    Method("group_thresholds", "score", "tasks.mitigation.group_thresholds:GroupThresholds", True, False,
           {"target_fmr": _TARGET, "max_impostor_pairs": _PAIRS}),
    Method("fsn", "score", "tasks.mitigation.fsn:FSN", False, False,
           {"n_clusters": _CLUSTERS, "target_fmr": _TARGET, "n_init": _N_INIT, "max_impostor_pairs": _PAIRS}),
    Method("faircal", "score", "tasks.mitigation.faircal:FairCal", False, False,
           {"n_clusters": _CLUSTERS, "n_init": _N_INIT, "max_impostor_pairs": _PAIRS}),
    Method("znorm", "score", "tasks.mitigation.znorm:ZNorm", True, False, {}),
)}


NONE = "none"      # the grid's reference: no mitigation (today's behaviour, today's job ids)
BASE = "base"      # the config key naming a variant's method: [mitigation."fsn-50"] base = "fsn"
SIDES = ("classifier", "score")


def _allowed() -> str:
    return f"{NONE}, " + ", ".join(METHODS) + ", or a dotted path 'package.module:builder'"


def method(name: str) -> Method:
    """The built-in mitigation ``name``; InputError naming the allowed ones."""
    if name not in METHODS:
        raise InputError(f"unknown mitigation {name!r}; allowed: {', '.join(METHODS)}")
    return METHODS[name]


def load_builder(name: str) -> Any:
    """The builder of a user mitigation ``"package.module:builder"``: a callable ``builder(config, seed)`` with
    attributes ``side`` ("classifier" or "score"), optionally ``uses_group_labels`` (default true),
    ``needs_sample_weight`` (default false) and ``defaults`` (its config keys); InputError when it is not one."""
    module_name, _, attr = name.partition(":")
    if not module_name or not attr:
        raise InputError(f"unknown mitigation {name!r}; allowed: {_allowed()}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise InputError(f"mitigation {name!r}: cannot import module {module_name!r} ({exc})") from None
    builder = getattr(module, attr, None)
    if not callable(builder):
        raise InputError(f"mitigation {name!r}: module {module_name!r} has no callable {attr!r}")
    if getattr(builder, "side", None) not in SIDES:
        raise InputError(f"mitigation {name!r}: the builder must have an attribute side = 'classifier' or "
                         f"'score', got {getattr(builder, 'side', None)!r}")
    return builder


def is_method(name: str) -> bool:
    """Whether ``name`` names a method (a built-in one or a user builder ``"package.module:builder"``)."""
    return name in METHODS or ":" in name


def method_of(name: str, config: Mapping | None = None) -> str:
    """The method that grid mitigation ``name`` runs: its config's :data:`BASE` for a variant, else itself."""
    base = config.get(BASE) if isinstance(config, Mapping) else None
    return base if isinstance(base, str) else name


def describe(name: str, config: Mapping | None = None) -> Method:
    """The :class:`Method` facts of grid mitigation ``name`` (a built-in, a variant, or a user builder's
    attributes)."""
    base = method_of(name, config)
    if base in METHODS:
        return METHODS[base]
    builder = load_builder(base)
    return Method(base, builder.side, base, bool(getattr(builder, "uses_group_labels", True)),
                  bool(getattr(builder, "needs_sample_weight", False)), {})


def resolve_mitigation_config(name: str, overrides: Mapping | None) -> dict:
    """Defaults of mitigation ``name`` merged with ``overrides`` (a variant's: its ``base`` first, then its
    method's keys); InputError for an unknown mitigation, an unknown key or a bad value."""
    if not isinstance(name, str) or not name or name == NONE:
        raise InputError(f"mitigation {name!r} takes no config; a mitigation is one of: {_allowed()}")
    overrides = {} if overrides is None else overrides
    if not isinstance(overrides, Mapping):
        raise InputError(f"mitigation {name!r}: config must be a table of keys, got {overrides!r}")
    if BASE in overrides:
        base = overrides[BASE]
        if not isinstance(base, str) or not is_method(base):
            raise InputError(f"mitigation {name!r}: '{BASE}' must name a method ({_allowed()}), got {base!r}")
        if is_method(name):
            raise InputError(f"mitigation {name!r} is a method; a variant of {base!r} needs a name of its own, "
                             f"such as '{base.rpartition(':')[2]}-2'")
        try:
            options = resolve_mitigation_config(base, {k: v for k, v in overrides.items() if k != BASE})
        except InputError as exc:
            raise InputError(f"mitigation {name!r} (a variant of {base!r}): {exc}") from None
        return {BASE: base, **options}
    if name in METHODS:
        spec = METHODS[name].spec
        return {**{k: d for k, (d, _, _) in spec.items()},
                **checked_options(spec, overrides, f"mitigation {name!r}", "config key")}
    if ":" not in name:
        raise InputError(f"unknown mitigation {name!r}; allowed: {_allowed()} (a variant of one names it in its "
                         f"section: [mitigation.\"{name}\"] {BASE} = \"fsn\")")
    defaults = getattr(load_builder(name), "defaults", None)
    if defaults is None:
        return dict(overrides)
    unknown = sorted(set(overrides) - set(defaults))
    if unknown:
        raise InputError(f"mitigation {name!r} takes no config key {unknown[0]!r}; it takes: "
                         f"{', '.join(defaults) or 'no keys'}")
    return {**defaults, **overrides}


def build_mitigation(name: str, config: Mapping | None, seed: int) -> Any:
    """An unfitted instance of mitigation ``name`` (a method, a variant or a user builder) with ``config``
    (resolved first), seeded by ``seed``."""
    config = resolve_mitigation_config(name, config)
    base = method_of(name, config)
    options = {k: v for k, v in config.items() if k != BASE}
    if base not in METHODS:
        return load_builder(base)(dict(options), seed)
    module, _, cls = METHODS[base].implementation.partition(":")
    return getattr(importlib.import_module(module), cls)(seed=seed, **options)


def mitigations_of(cfg: Mapping[str, Any], side: str) -> list[str]:
    """The grid's mitigations of ``side`` ("classifier" or "score"), in the config's order, ``none`` first."""
    return [NONE] + [m for m in cfg["grid"]["mitigations"]
                     if m != NONE and describe(m, cfg["mitigation"][m]).side == side]


def check_mitigations(cfg: dict[str, Any], where: Any) -> None:
    """Check ``grid.mitigations`` and the ``[mitigation.NAME]`` sections of the resolved config ``cfg`` and
    replace each section by its resolved config (``where(dotted key)`` names who set a key). ``none`` is always
    part of the grid (the reference of every comparison): it is put first when the list leaves it out."""
    names = cfg["grid"]["mitigations"]
    if not all(isinstance(n, str) and n.strip() for n in names):
        raise InputError(f"{where('grid.mitigations')} must be a list of names, got {names!r}")
    names = [n.strip() for n in names]
    if len(set(names)) != len(names):
        raise InputError(f"{where('grid.mitigations')} repeats a name: {names!r}")
    names = [NONE] + [n for n in names if n != NONE]
    sections = cfg["mitigation"]
    unselected = sorted(set(sections) - set(names))
    if unselected:
        raise InputError(f"{where('mitigation')}: [mitigation.{unselected[0]}] configures a mitigation that is not "
                         f"in 'grid.mitigations' ({', '.join(names)})")
    if NONE in sections:
        raise InputError(f"{where('mitigation')}: [mitigation.{NONE}] cannot be configured (it is no mitigation)")
    resolved = {}
    for n in names[1:]:
        try:
            resolved[n] = resolve_mitigation_config(n, sections.get(n))
            side = describe(n, resolved[n]).side
        except InputError as exc:
            raise InputError(f"{where('grid.mitigations')}: {exc}") from None
        if side == "classifier" and not cfg["grid"]["models"]:
            raise InputError(f"{where('grid.mitigations')}: {n!r} mitigates a classifier, but 'grid.models' is "
                             f"empty (a verification-only study); use a score mitigation "
                             f"({', '.join(m.name for m in METHODS.values() if m.side == 'score')})")
    cfg["grid"]["mitigations"], cfg["mitigation"] = names, resolved


def require_several_groups(group: Any, what: str) -> np.ndarray:
    """``group`` (labels of the fitting rows, or the names of a train group's groups) as an array; InputError
    naming ``what`` when it holds fewer than two distinct groups (a mitigation compares groups)."""
    labels = np.asarray(group)
    present = np.unique(labels.astype(str)) if labels.size else labels
    if len(present) < 2:
        shown = f"only {str(present[0])!r}" if len(present) else "no rows"
        raise InputError(f"{what}: a mitigation needs fitting rows of at least two groups, got {shown}")
    return labels
