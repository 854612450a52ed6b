"""Bias mitigation methods: the registry of built-ins, their config keys (defaults + checks), and their contract.

Every method is fitted on fitting rows only and applied to other rows; its formulas are in docs/REPORT.md,
section "Mitigation methods". Two sides:

Classifier side (a cell's model; ``side == "classifier"``), a class built by :func:`build_mitigation`::

    m = build_mitigation(name, config, seed)
    m.fit(build, X_train, y_train, group_train, identity_train)   # build() -> a fresh untrained classifier
    m.predict(X_test, group_test) -> 0/1                            # group labels of the rows predicted

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


def method(name: str) -> Method:
    """The built-in mitigation ``name``; InputError naming the allowed ones."""
    if name not in METHODS:
        raise InputError(f"unknown mitigation {name!r}; allowed: {', '.join(METHODS)}")
    return METHODS[name]


def resolve_mitigation_config(name: str, overrides: Mapping | None) -> dict:
    """Defaults of mitigation ``name`` merged with ``overrides``; InputError for an unknown key or bad value."""
    spec = method(name).spec
    overrides = {} if overrides is None else overrides
    if not isinstance(overrides, Mapping):
        raise InputError(f"mitigation {name!r}: config must be a table of keys, got {overrides!r}")
    return {**{k: d for k, (d, _, _) in spec.items()},
            **checked_options(spec, overrides, f"mitigation {name!r}", "config key")}


def build_mitigation(name: str, config: Mapping | None, seed: int) -> Any:
    """An unfitted instance of mitigation ``name`` with ``config`` (resolved first), seeded by ``seed``."""
    config = resolve_mitigation_config(name, config)
    module, _, cls = method(name).implementation.partition(":")
    return getattr(importlib.import_module(module), cls)(seed=seed, **config)


def require_several_groups(group: Any, what: str) -> np.ndarray:
    """``group`` (labels of the fitting rows, or the names of a train group's groups) as an array; InputError
    naming ``what`` when it holds fewer than two distinct groups (a mitigation compares groups)."""
    labels = np.asarray(group)
    present = np.unique(labels.astype(str)) if labels.size else labels
    if len(present) < 2:
        shown = f"only {str(present[0])!r}" if len(present) else "no rows"
        raise InputError(f"{what}: a mitigation needs fitting rows of at least two groups, got {shown}")
    return labels
