"""The model registry: the gender classifiers a grid cell can train, their defaults, and user models.

Built-in types (:data:`MODEL_TYPES`):

- ``mlp``: the study's Keras classifier, corrected (input -> Dense(60, relu) -> Dense(60, relu) -> Dense(2,
  softmax), Adam, categorical cross-entropy, 200 epochs, batch 5), trained by the compiled trainer of
  :mod:`tasks.models.mlp` (``trainer = "fit"`` selects plain ``model.fit``, the slow reference).
- ``xgboost``: gradient-boosted trees (hist), a non-linear baseline tuned to train one cell of 3000 x 2048 in a
  few seconds on one thread.
- ``logreg``: scikit-learn's logistic regression, a linear probe.

A user model is a dotted path ``"package.module:builder"`` where ``builder(config: dict, seed: int, threads:
int)`` returns an object with ``fit(X, y)`` and ``predict(X) -> 0/1``; one whose ``fit`` also takes
``sample_weight`` (as the built-ins' do, :func:`takes_sample_weight`) can be trained by the mitigations that
weight rows (tasks/mitigation/); one with ``prepare(width)`` has it called before the timed ``fit`` of a cell
(one-time costs for inputs of that width, as the MLP's compilation). If the builder has a ``defaults``
attribute (a dict), it lists the config keys it takes and their defaults, and other keys are refused;
otherwise the config is passed as given.

A *variant* is a model of the grid with a name of its own and the options of a model type: its config names the
type in :data:`BASE` (``[model."mlp-256"] base = "mlp"``, ``hidden_units = [256, 256]``); :func:`model_type` gives
the type a name trains, and every function here takes a variant's name and config like a type's.

This module imports no TensorFlow, XGBoost or scikit-learn at module level: the driver resolves configs with it.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import numpy as np

from storage.errors import InputError

MODEL_TYPES: tuple[str, ...] = ("mlp", "xgboost", "logreg")
BASE = "base"   # the config key naming a variant's model type


class Classifier(Protocol):
    """What a cell trains: labels are gender codes, 0 = male, 1 = female."""

    def fit(self, X: np.ndarray, y: np.ndarray) -> Any: ...

    def predict(self, X: np.ndarray) -> np.ndarray: ...


# ----------------------------------------------------------------------------------------- value checks ---
def _positive_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 1


def _positive_float(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) and v > 0


def _non_negative_float(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) and v >= 0


def _fraction(v: Any) -> bool:
    return _positive_float(v) and v <= 1


def _units(v: Any) -> bool:
    return isinstance(v, (list, tuple)) and len(v) >= 1 and all(_positive_int(u) for u in v)


# key -> (default, check, what is expected)
_Spec = dict[str, tuple[Any, Callable[[Any], bool], str]]
_SPECS: dict[str, _Spec] = {
    "mlp": {
        "epochs": (200, _positive_int, "a positive integer"),
        "batch_size": (5, _positive_int, "a positive integer"),
        "hidden_units": ([60, 60], _units, "a non-empty list of positive integers (units per hidden layer)"),
        "learning_rate": (0.001, _positive_float, "a positive number"),
        "trainer": ("fast", lambda v: v in ("fast", "fit"), "'fast' (compiled loop) or 'fit' (plain model.fit)"),
    },
    "xgboost": {
        "n_estimators": (300, _positive_int, "a positive integer"),
        "max_depth": (3, _positive_int, "a positive integer"),
        "learning_rate": (0.1, _positive_float, "a positive number"),
        "subsample": (0.8, _fraction, "a number in (0, 1]"),
        "colsample_bytree": (0.2, _fraction, "a number in (0, 1]"),
        "max_bin": (32, lambda v: _positive_int(v) and v >= 2, "an integer >= 2"),
        "min_child_weight": (1.0, _non_negative_float, "a number >= 0"),
        "reg_lambda": (1.0, _non_negative_float, "a number >= 0"),
    },
    "logreg": {
        "C": (1.0, _positive_float, "a positive number (inverse regularisation strength)"),
        "max_iter": (1000, _positive_int, "a positive integer"),
        "tol": (1e-4, _positive_float, "a positive number"),
    },
}


def _allowed_models() -> str:
    return ", ".join(MODEL_TYPES) + ", or a dotted path 'package.module:builder'"


def load_builder(model: str) -> Callable[..., Any]:
    """Import the builder of a user model ``"package.module:builder"``; InputError if it cannot be found."""
    module_name, _, attr = model.partition(":")
    if not module_name or not attr:
        raise InputError(f"unknown model type {model!r}; allowed: {_allowed_models()}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise InputError(f"model {model!r}: cannot import module {module_name!r} ({exc})") from None
    builder = getattr(module, attr, None)
    if not callable(builder):
        raise InputError(f"model {model!r}: module {module_name!r} has no callable {attr!r}")
    return builder


def is_model_type(name: str) -> bool:
    """Whether ``name`` names a model type (a built-in one or a user builder ``"package.module:builder"``)."""
    return name in _SPECS or ":" in name


def model_type(model: str, config: Mapping | None = None) -> str:
    """The model type that grid model ``model`` trains: its config's :data:`BASE` for a variant, else itself."""
    base = config.get(BASE) if isinstance(config, Mapping) else None
    return base if isinstance(base, str) else model


def resolve_model_config(model: str, overrides: Mapping | None) -> dict:
    """Defaults of ``model`` merged with ``overrides``: a JSON-ready dict (a variant's: its ``base`` first, then
    its type's options). Unknown model, unknown key or bad value raise InputError naming it and what is allowed."""
    if not isinstance(model, str) or not model:
        raise InputError(f"model must be a name, got {model!r}; allowed: {_allowed_models()}")
    overrides = {} if overrides is None else overrides
    if not isinstance(overrides, Mapping):
        raise InputError(f"model {model!r}: config must be a table of keys, got {overrides!r}")
    if BASE in overrides:
        base = overrides[BASE]
        if not isinstance(base, str) or not is_model_type(base):
            raise InputError(f"model {model!r}: '{BASE}' must name a model type ({_allowed_models()}), got {base!r}")
        if is_model_type(model):
            raise InputError(f"model {model!r} is a model type; a variant of {base!r} needs a name of its own, "
                             f"such as '{base.rpartition(':')[2]}-2'")
        try:
            options = resolve_model_config(base, {k: v for k, v in overrides.items() if k != BASE})
        except InputError as exc:
            raise InputError(f"model {model!r} (a variant of {base!r}): {exc}") from None
        return {BASE: base, **options}
    if model in _SPECS:
        spec = _SPECS[model]
        return {**{key: _copy(default) for key, (default, _, _) in spec.items()},
                **checked_options(spec, overrides, f"model {model!r}", "config key")}
    if ":" not in model:
        raise InputError(f"unknown model type {model!r}; allowed: {_allowed_models()} (a variant of one names it "
                         f"in its section: [model.\"{model}\"] {BASE} = \"mlp\")")
    defaults = getattr(load_builder(model), "defaults", None)
    if defaults is None:
        return dict(overrides)
    unknown = sorted(set(overrides) - set(defaults))
    if unknown:
        raise InputError(f"model {model!r} takes no config key {unknown[0]!r}; it takes: "
                         f"{', '.join(defaults) or 'no keys'}")
    return {**defaults, **overrides}


def _copy(value: Any) -> Any:
    return list(value) if isinstance(value, (list, tuple)) else value


def checked_options(spec: Mapping[str, tuple[Any, Callable[[Any], bool], str]], given: Mapping[str, Any],
                    what: str, noun: str) -> dict[str, Any]:
    """``given`` checked against ``spec`` (name -> (default, check, what it must be)), sequences copied as lists;
    InputError naming ``what`` and the ``noun`` (e.g. "config key") for an unknown name or a value that fails."""
    out: dict[str, Any] = {}
    for key, value in given.items():
        if key not in spec:
            raise InputError(f"{what} takes no {noun} {key!r}; it takes: {', '.join(spec)}")
        _, check, expected = spec[key]
        if not check(value):
            raise InputError(f"{what}: {noun} {key!r} must be {expected}, got {value!r}")
        out[key] = _copy(value)
    return out


def build_model(model: str, config: Mapping, seed: int, threads: int = 1) -> Classifier:
    """An untrained classifier of type ``model`` (or of a variant's type) with ``config`` (resolved first),
    initialised by ``seed``, using at most ``threads`` threads."""
    config = resolve_model_config(model, config)
    model = model_type(model, config)
    config = {k: v for k, v in config.items() if k != BASE}
    if model == "mlp":
        from tasks.models.mlp import MLPClassifier

        return MLPClassifier(**config, seed=seed, threads=threads)
    if model == "xgboost":
        from xgboost import XGBClassifier

        return XGBClassifier(tree_method="hist", n_jobs=threads, random_state=seed, **config)
    if model == "logreg":
        from sklearn.linear_model import LogisticRegression

        return LogisticRegression(**config, random_state=seed)
    built = load_builder(model)(dict(config), seed, threads)
    if not (callable(getattr(built, "fit", None)) and callable(getattr(built, "predict", None))):
        raise InputError(f"model {model!r}: the builder returned {type(built).__name__}, which has no fit/predict")
    return built


def takes_sample_weight(classifier: Any) -> bool:
    """Whether ``classifier.fit`` accepts a ``sample_weight`` keyword (by name or through ``**kwargs``). The
    built-ins' do: logreg and xgboost natively, the mlp with Keras' arithmetic (tasks/models/mlp.py)."""
    try:
        params = inspect.signature(classifier.fit).parameters.values()
    except (AttributeError, TypeError, ValueError):
        return False
    return any(p.name == "sample_weight" or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)
