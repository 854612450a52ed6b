"""Per-sample weights of the model types (what the reweight and reductions mitigations train with): the mlp's
fast trainer against Keras' own ``train_on_batch(x, y, sample_weight=w)``, and the builders' ``fit`` taking
``sample_weight`` without changing the unweighted numbers."""

from __future__ import annotations

import numpy as np
import pytest

from storage.errors import InputError
from tasks.models import build_model, resolve_model_config


def rows(n: int = 23, d: int = 40, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Non-negative L2-normalised rows, random 0/1 labels and weights in [0, 3) (one exactly 0)."""
    rng = np.random.default_rng(seed)
    X = np.abs(rng.normal(size=(n, d))).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    y = (rng.random(n) < 0.5).astype(np.int64)
    w = (3 * rng.random(n)).astype(np.float32)
    w[1] = 0.0
    return X, y, w


@pytest.mark.parametrize("hidden,batch", [((20, 7), 5), ((20, 7), 17)])
def test_fast_trainer_with_weights_matches_keras_train_on_batch(hidden, batch):
    """Same initial weights, same batches (a partial last batch of 3 or 6 rows; 17 rows take the matmul
    gradient), Keras' Adam and weighted loss step by step: the compiled loop lands on the same weights, and
    they differ from the unweighted run's (the weights matter)."""
    import keras

    from tasks.models.mlp import build_keras_model, epoch_orders, train_fast

    X, y, w = rows()
    n, epochs, seed = len(X), 3, 7
    fast, unweighted, reference = (build_keras_model(X.shape[1], hidden, seed=3) for _ in range(3))
    train_fast(fast, X, y, epochs=epochs, batch_size=batch, learning_rate=0.01, seed=seed, sample_weight=w)
    train_fast(unweighted, X, y, epochs=epochs, batch_size=batch, learning_rate=0.01, seed=seed)

    reference.compile(optimizer=keras.optimizers.Adam(learning_rate=0.01), loss="categorical_crossentropy")
    Y = np.eye(2, dtype=np.float32)[y]
    for order in epoch_orders(seed, epochs, n):
        for s in range(0, n, batch):
            b = order[s:s + batch]
            reference.train_on_batch(X[b], Y[b], sample_weight=w[b])
    for w_fast, w_ref in zip(fast.get_weights(), reference.get_weights()):
        np.testing.assert_allclose(w_fast, w_ref, rtol=1e-4, atol=2e-5)
    assert max(np.abs(p - q).max() for p, q in zip(fast.get_weights(), unweighted.get_weights())) > 1e-3


def test_unit_weights_give_the_unweighted_numbers_bit_for_bit():
    from tasks.models.mlp import build_keras_model, train_fast

    X, y, _ = rows(n=31)
    a, b = build_keras_model(X.shape[1], (16,), seed=1), build_keras_model(X.shape[1], (16,), seed=1)
    train_fast(a, X, y, epochs=2, batch_size=5, learning_rate=0.01, seed=2)
    train_fast(b, X, y, epochs=2, batch_size=5, learning_rate=0.01, seed=2, sample_weight=np.ones(len(X)))
    assert all(np.array_equal(p, q) for p, q in zip(a.get_weights(), b.get_weights()))


@pytest.mark.parametrize("trainer", ["fast", "fit"])
def test_mlp_classifier_takes_weights_and_a_zero_weight_row_is_ignored(trainer):
    """A row of weight 0 contributes nothing: training with it (weight 0) equals training ... with its label
    flipped (weight 0): same weights. Checked on both trainers."""
    X, y, w = rows(n=20)
    config = resolve_model_config("mlp", {"epochs": 2, "hidden_units": [8], "trainer": trainer})
    flipped = y.copy()
    flipped[1] = 1 - flipped[1]
    a = build_model("mlp", config, seed=4).fit(X, y, sample_weight=w)
    b = build_model("mlp", config, seed=4).fit(X, flipped, sample_weight=w)
    c = build_model("mlp", config, seed=4).fit(X, y)
    for p, q in zip(a.model_.get_weights(), b.model_.get_weights()):
        np.testing.assert_allclose(p, q, rtol=1e-5, atol=1e-6)
    assert any(np.abs(p - q).max() > 1e-4 for p, q in zip(a.model_.get_weights(), c.model_.get_weights()))


@pytest.mark.parametrize("weights", [np.ones(3), np.full(20, -1.0), np.r_[np.ones(19), np.nan]])
def test_mlp_refuses_weights_of_the_wrong_shape_or_value(weights):
    X, y, _ = rows(n=20)
    with pytest.raises(InputError, match="sample_weight must be 20 finite numbers >= 0"):
        build_model("mlp", {"epochs": 1, "hidden_units": [4]}, seed=0).fit(X, y, sample_weight=weights)


@pytest.mark.parametrize("model,config", [("logreg", {}), ("xgboost", {"n_estimators": 20})])
def test_builders_fit_takes_sample_weight_and_unit_weights_change_nothing(model, config):
    """logreg and xgboost: ``fit(X, y, sample_weight=w)``; unit weights give the unweighted model's
    probabilities, other weights other probabilities."""
    X, y, w = rows(n=80, d=10)
    config = resolve_model_config(model, config)
    plain = build_model(model, config, seed=1).fit(X, y).predict_proba(X)
    ones = build_model(model, config, seed=1).fit(X, y, sample_weight=np.ones(len(X))).predict_proba(X)
    weighted = build_model(model, config, seed=1).fit(X, y, sample_weight=w).predict_proba(X)
    np.testing.assert_allclose(ones, plain, rtol=1e-6, atol=1e-7)
    assert np.abs(weighted - plain).max() > 1e-3
