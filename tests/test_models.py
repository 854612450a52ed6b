"""Model registry, config resolution, thread budget, and the mlp's compiled trainer (vs Keras itself)."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest

from storage.errors import InputError
from tasks.models import MODEL_TYPES, build_model, resolve_model_config
from tasks.runtime import limit_threads


def separable(n: int = 60, d: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two non-negative, L2-normalised Gaussian clusters with a wide margin: gender 0 loads on the first 8
    dimensions, gender 1 on the next 8."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    X = np.abs(rng.normal(0, 0.1, (n, d)))
    X[y == 0, :8] += 1.0
    X[y == 1, 8:16] += 1.0
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    return X.astype(np.float32), y


# ------------------------------------------------------------------------------------------ configs ---
def test_defaults_are_the_study_protocol_and_json_ready():
    mlp = resolve_model_config("mlp", None)
    assert mlp == {"epochs": 200, "batch_size": 5, "hidden_units": [60, 60], "learning_rate": 0.001,
                   "trainer": "fast"}
    assert set(resolve_model_config("xgboost", {})) >= {"n_estimators", "max_depth", "learning_rate", "max_bin"}
    assert resolve_model_config("logreg", {"C": 10})["C"] == 10


def test_overrides_merge_and_do_not_alias_defaults():
    a = resolve_model_config("mlp", {"epochs": 3, "hidden_units": (8,)})
    assert a["epochs"] == 3 and a["hidden_units"] == [8] and a["batch_size"] == 5
    a["hidden_units"].append(1)
    assert resolve_model_config("mlp", {})["hidden_units"] == [60, 60]


def test_unknown_model_type_names_it_and_the_allowed_ones():
    with pytest.raises(InputError, match=r"'svm'.*mlp, xgboost, logreg.*package\.module:builder"):
        resolve_model_config("svm", {})


def test_unknown_config_key_names_it_and_the_keys_taken():
    with pytest.raises(InputError,
                       match=r"'mlp' takes no config key 'epoch'; it takes: epochs, batch_size, hidden_units"):
        resolve_model_config("mlp", {"epoch": 3})
    with pytest.raises(InputError, match=r"'xgboost' takes no config key 'epochs'.*n_estimators"):
        resolve_model_config("xgboost", {"epochs": 3})


@pytest.mark.parametrize("model,key,value", [("mlp", "epochs", 0), ("mlp", "batch_size", 2.5),
                                             ("mlp", "hidden_units", []), ("mlp", "trainer", "turbo"),
                                             ("xgboost", "subsample", 1.5), ("logreg", "C", -1.0),
                                             ("mlp", "epochs", True)])
def test_bad_values_are_refused_with_what_is_expected(model, key, value):
    with pytest.raises(InputError, match=rf"'{model}'.*'{key}' must be"):
        resolve_model_config(model, {key: value})


def test_build_model_checks_the_config_too():
    with pytest.raises(InputError, match="takes no config key 'depth'"):
        build_model("xgboost", {"depth": 3}, seed=0)


# -------------------------------------------------------------------------------------- user models ---
@pytest.fixture
def user_models(tmp_path, monkeypatch):
    (tmp_path / "my_models.py").write_text(textwrap.dedent("""
        import numpy as np

        class Threshold:
            def __init__(self, feature, seed):
                self.feature, self.seed, self.cut = feature, seed, None
            def fit(self, X, y):
                self.cut = (X[y == 0, self.feature].mean() + X[y == 1, self.feature].mean()) / 2
                return self
            def predict(self, X):
                return (X[:, self.feature] < self.cut).astype(int)

        def declared(config, seed, threads):
            return Threshold(config["feature"], seed)
        declared.defaults = {"feature": 0}

        def free(config, seed, threads):
            return Threshold(config.get("feature", 0), seed)

        def broken(config, seed, threads):
            return 42
        """))
    monkeypatch.syspath_prepend(str(tmp_path))
    return "my_models"


def test_user_model_with_declared_defaults(user_models):
    assert resolve_model_config(f"{user_models}:declared", None) == {"feature": 0}
    assert resolve_model_config(f"{user_models}:declared", {"feature": 3}) == {"feature": 3}
    with pytest.raises(InputError, match=r"takes no config key 'depth'; it takes: feature"):
        resolve_model_config(f"{user_models}:declared", {"depth": 2})
    X, y = separable()
    clf = build_model(f"{user_models}:declared", {}, seed=1)
    assert (clf.fit(X, y).predict(X) == y).all()


def test_user_model_without_defaults_gets_its_config_as_given(user_models):
    assert resolve_model_config(f"{user_models}:free", {"anything": 1}) == {"anything": 1}


@pytest.mark.parametrize("path,message", [("no_such_module_xyz:build", "cannot import module 'no_such_module_xyz'"),
                                          ("my_models:missing", "has no callable 'missing'"),
                                          ("my_models:broken", "returned int, which has no fit/predict")])
def test_user_model_errors(user_models, path, message):
    with pytest.raises(InputError, match=message):
        build_model(path, {}, seed=0)


# ------------------------------------------------------------------------------------------- threads ---
def test_limit_threads_refuses_bad_counts_and_can_be_repeated():
    with pytest.raises(InputError, match="positive integer"):
        limit_threads(0)
    limit_threads(1)
    limit_threads(1)
    from threadpoolctl import threadpool_info

    assert all(lib["num_threads"] == 1 for lib in threadpool_info())


# ----------------------------------------------------------------------------------- training models ---
@pytest.mark.parametrize("model,config", [("mlp", {"epochs": 10, "learning_rate": 0.01}),
                                          ("xgboost", {"n_estimators": 20}), ("logreg", {})])
def test_each_model_type_separates_separable_classes(model, config):
    assert model in MODEL_TYPES
    X, y = separable()
    X_test, y_test = separable(seed=1)
    clf = build_model(model, resolve_model_config(model, config), seed=0)
    clf.fit(X, y)
    assert (np.asarray(clf.predict(X_test)) == y_test).all()


def test_xgboost_same_seed_same_numbers_other_seed_other_numbers():
    rng = np.random.default_rng(0)
    X = rng.random((200, 20)).astype(np.float32)
    y = (X[:, 0] + 0.3 * rng.random(200) > 0.6).astype(int)
    config = resolve_model_config("xgboost", {"n_estimators": 30})
    p = [build_model("xgboost", config, seed=s).fit(X, y).predict_proba(X) for s in (3, 3, 4)]
    assert np.array_equal(p[0], p[1])
    assert not np.array_equal(p[0], p[2])


# ----------------------------------------------------------------------------- mlp compiled trainer ---
def test_mlp_architecture_is_the_corrected_study_model():
    from tasks.models.mlp import build_keras_model

    model = build_keras_model(2048, [60, 60], seed=0)
    shapes = [tuple(w.shape) for w in model.get_weights()]
    assert shapes == [(2048, 60), (60,), (60, 60), (60,), (60, 2), (2,)]
    assert model.layers[-1].activation.__name__ == "softmax"
    assert [layer.activation.__name__ for layer in model.layers[:-1]] == ["relu", "relu"]


@pytest.mark.parametrize("hidden,batch", [((20, 7), 5), ((16,), 5), ((20, 7), 17)])
def test_fast_trainer_matches_keras_train_on_batch_over_the_same_batches(hidden, batch):
    """Same initial weights, same batches in the same order (23 rows, batch 5 or 17: a partial last batch of 3
    or 6; 20 hidden units are padded to 32 inside the loop, 17 rows take the matmul gradient), Keras' own Adam
    and loss step by step: the compiled loop must land on the same weights."""
    import keras

    from tasks.models.mlp import build_keras_model, epoch_orders, train_fast

    rng = np.random.default_rng(0)
    n, d, epochs, seed = 23, 40, 3, 7
    X = np.abs(rng.normal(size=(n, d))).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    y = (rng.random(n) < 0.5).astype(np.int64)
    fast, reference = build_keras_model(d, hidden, seed=3), build_keras_model(d, hidden, seed=3)
    start = [w.copy() for w in fast.get_weights()]
    train_fast(fast, X, y, epochs=epochs, batch_size=batch, learning_rate=0.01, seed=seed)

    reference.compile(optimizer=keras.optimizers.Adam(learning_rate=0.01), loss="categorical_crossentropy")
    Y = np.eye(2, dtype=np.float32)[y]
    for order in epoch_orders(seed, epochs, n):
        assert sorted(order.tolist()) == list(range(n))
        for s in range(0, n, batch):
            reference.train_on_batch(X[order[s:s + batch]], Y[order[s:s + batch]])
    for w_fast, w_ref, w0 in zip(fast.get_weights(), reference.get_weights(), start):
        assert np.abs(w_ref - w0).max() > 1e-3  # training moved every tensor ...
        np.testing.assert_allclose(w_fast, w_ref, rtol=1e-4, atol=2e-5)  # ... and both trainers alike


def test_mlp_same_seed_same_numbers_other_seed_other_numbers():
    X, y = separable(n=40, d=24)
    config = resolve_model_config("mlp", {"epochs": 3})
    runs = [build_model("mlp", config, seed=s).fit(X, y) for s in (5, 5, 6)]
    probs = [m.predict_proba(X) for m in runs]
    assert np.array_equal(probs[0], probs[1])
    assert all(np.array_equal(a, b) for a, b in zip(runs[0].model_.get_weights(), runs[1].model_.get_weights()))
    assert not np.array_equal(probs[0], probs[2])


def test_mlp_refuses_labels_that_are_not_gender_codes():
    X, _ = separable(n=10)
    with pytest.raises(InputError, match="gender codes 0"):
        build_model("mlp", {"epochs": 1}, seed=0).fit(X, np.arange(10))
