"""What every classifier-side mitigation shares: the checks of its training rows, training a model with sample
weights, and the base of the methods that train one model on (possibly transformed) features."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from storage.errors import InputError
from tasks.mitigation import require_several_groups
from tasks.models import takes_sample_weight

Build = Callable[[], Any]  # a fresh, untrained classifier (fit / predict), e.g. tasks.models.build_model(...)


def training_rows(name: str, X: np.ndarray, y: np.ndarray, group: Any,
                  identity: Any = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(X, y, group, identity) checked: a 2-D matrix, one 0/1 label, group label and identity per row, at
    least two groups; identity defaults to one per row. InputError naming mitigation ``name`` otherwise."""
    X = np.asarray(X)
    y = np.asarray(y)
    group = np.asarray(group)
    if X.ndim != 2 or len(X) == 0:
        raise InputError(f"mitigation {name!r}: training rows must be a non-empty (n, d) matrix, got {X.shape}")
    identity = np.arange(len(X)) if identity is None else np.asarray(identity)
    for what, values in (("labels", y), ("group labels", group), ("identities", identity)):
        if values.shape != (len(X),):
            raise InputError(f"mitigation {name!r}: expected {len(X)} {what}, one per training row, "
                             f"got shape {values.shape}")
    if not np.isin(y, (0, 1)).all():
        raise InputError(f"mitigation {name!r}: labels must be 0 or 1")
    require_several_groups(group, f"mitigation {name!r}")
    return X, y.astype(np.int64), group, identity


@contextlib.contextmanager
def quiet_fairlearn() -> Iterator[None]:
    """Fairlearn 0.15's own deprecation warnings (pandas 3 ``.at`` setting) silenced while it runs: they are
    about Fairlearn's code, not the user's, and must not reach the terminal."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", module=r"fairlearn(\.|$)")
        yield


def weightable(name: str, model: Any) -> Any:
    """``model``, checked to take sample weights in ``fit``; InputError naming mitigation ``name`` otherwise."""
    if not takes_sample_weight(model):
        raise InputError(f"mitigation {name!r} needs a model whose fit takes sample_weight; "
                         f"{type(model).__name__}.fit does not")
    return model


class OneModel:
    """A mitigation that trains one model on ``features(X)``; predictions delegate to it."""

    model_: Any = None

    def features(self, X: np.ndarray) -> np.ndarray:
        return X

    def predict(self, X: np.ndarray, group: Any = None) -> np.ndarray:
        """0/1 predictions of rows X (``group`` is not needed)."""
        if self.model_ is None:
            raise RuntimeError("predict before fit")
        return np.asarray(self.model_.predict(self.features(X))).astype(np.int64)

    def predict_proba(self, X: np.ndarray, group: Any = None) -> np.ndarray:
        """The model's (n, 2) class probabilities; AttributeError when it has none."""
        return self.model_.predict_proba(self.features(X))
