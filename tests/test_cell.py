"""The train-and-evaluate cell: one training, every test group, per-gender accuracies, bad arguments."""

from __future__ import annotations

import textwrap

import numpy as np
import pandas as pd
import pytest

from storage.errors import InputError
from storage.schema import TABLES
from tasks.kinds.cell import run_cell


def data(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """180 rows, 3 blocks of 60 (train, test "a", test "b"), genders alternating; classes separable with a
    wide margin (gender 0 loads on dims 0-7, gender 1 on dims 8-15); non-negative, L2-normalised."""
    rng = np.random.default_rng(seed)
    n, d = 180, 32
    gender = (np.arange(n) % 2).astype(np.int8)
    X = np.abs(rng.normal(0, 0.1, (n, d)))
    X[gender == 0, :8] += 1.0
    X[gender == 1, 8:16] += 1.0
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    return X.astype(np.float32), gender, np.arange(60), {"a": np.arange(60, 120), "b": np.arange(120, 180)}


@pytest.mark.parametrize("model,config", [("mlp", {"epochs": 10, "learning_rate": 0.01}),
                                          ("xgboost", {"n_estimators": 20}), ("logreg", {})])
def test_separable_classes_give_accuracy_one_for_every_model_type(model, config):
    X, gender, train, tests = data()
    out = run_cell(X, gender, train, tests, model=model, model_config=config, train_group="asian", seed=0)["accuracy"]
    assert list(out.columns) == [c for c in TABLES["accuracy"].names if c not in ("job_id", "node", "finished_at")]
    assert out["test_group"].tolist() == ["a", "b"]
    assert (out[["model", "train_group", "seed"]].drop_duplicates().values.tolist() == [[model, "asian", 0]])
    assert (out[["accuracy", "accuracy_male", "accuracy_female"]] == 1.0).all().all()
    assert out["n_test"].tolist() == [60, 60]
    assert (out["train_seconds"] > 0).all() and out["train_seconds"].nunique() == 1


def test_per_gender_accuracy_on_a_planted_test_group():
    """Test group "swapped": its women look like the training men. accuracy_male 1, accuracy_female 0."""
    X, gender, train, tests = data()
    swapped = np.arange(120, 180)
    women = swapped[gender[swapped] == 1]
    X = X.copy()
    X[women] = X[swapped[gender[swapped] == 0]]
    out = run_cell(X, gender, train, {"a": tests["a"], "swapped": swapped}, model="logreg", model_config={},
                   train_group="all", seed=1)["accuracy"].set_index("test_group")
    assert out.loc["a", "accuracy"] == 1.0
    assert out.loc["swapped", "accuracy_male"] == 1.0
    assert out.loc["swapped", "accuracy_female"] == 0.0
    assert out.loc["swapped", "accuracy"] == pytest.approx(0.5)


def test_a_test_group_with_one_gender_has_nan_for_the_other():
    X, gender, train, _ = data()
    men = np.arange(60, 120)[gender[60:120] == 0]
    out = run_cell(X, gender, train, {"men": men}, model="logreg", model_config={}, train_group="x", seed=0)["accuracy"]
    assert out.loc[0, "accuracy_male"] == 1.0 and np.isnan(out.loc[0, "accuracy_female"])


def test_trains_once_for_all_test_groups(tmp_path, monkeypatch):
    (tmp_path / "counting_model.py").write_text(textwrap.dedent("""
        from sklearn.linear_model import LogisticRegression
        FITS = []
        class Counting(LogisticRegression):
            def fit(self, X, y):
                FITS.append(len(X))
                return super().fit(X, y)
        def build(config, seed, threads):
            return Counting()
        """))
    monkeypatch.syspath_prepend(str(tmp_path))
    import counting_model

    X, gender, train, tests = data()
    out = run_cell(X, gender, train, {**tests, "c": np.arange(60, 180)}, model="counting_model:build",
                   model_config={}, train_group="asian", seed=0)["accuracy"]
    assert len(out) == 3
    assert counting_model.FITS == [60]


def test_same_seed_same_numbers():
    X, gender, train, tests = data()
    noisy = X + np.random.default_rng(9).normal(0, 0.2, X.shape).astype(np.float32)  # not trivially separable
    runs = [run_cell(noisy, gender, train, tests, model="xgboost", model_config={"n_estimators": 15},
                     train_group="asian", seed=s)["accuracy"].drop(columns="train_seconds") for s in (2, 2)]
    pd.testing.assert_frame_equal(runs[0], runs[1])


@pytest.mark.parametrize("change,message", [
    (lambda a: {**a, "test_sets": {"a": np.array([], dtype=int)}}, "test group 'a' has no rows"),
    (lambda a: {**a, "test_sets": {"a": np.array([0, 999])}}, r"test group 'a'.*\[0, 180\)"),
    (lambda a: {**a, "test_sets": {}}, "no test groups"),
    (lambda a: {**a, "train_idx": np.arange(0, 60, 2)}, "train group 'asian' has only rows of target class 0"),
    (lambda a: {**a, "train_idx": np.array([0.5, 1.5])}, "row indices must be integers"),
    (lambda a: {**a, "model": "forest"}, r"unknown model type 'forest'; allowed: mlp, xgboost, logreg"),
    (lambda a: {**a, "model_config": {"depth": 2}}, r"'logreg' takes no config key 'depth'; it takes: C, max_iter"),
    (lambda a: {**a, "gender": np.full(180, 2)}, "target codes must be 0 or 1"),
    (lambda a: {**a, "gender": np.zeros(10)}, "one code per embedding row"),
])
def test_bad_arguments_name_what_is_wrong(change, message):
    X, gender, train, tests = data()
    args = dict(X=X, gender=gender, train_idx=train, test_sets=tests, model="logreg", model_config={},
                train_group="asian", seed=0)
    with pytest.raises(InputError, match=message):
        run_cell(**change(args))


@pytest.mark.parametrize("model,config", [("xgboost", {"n_estimators": 15}), ("logreg", {})])
def test_predictions_table_agrees_with_sklearn_on_the_same_model(model, config):
    """The stored predictions are the model's: balanced accuracy from them (scikit-learn) equals the accuracy
    table's column, accuracy equals their mean, and the score is the model's class-1 probability."""
    from sklearn.metrics import balanced_accuracy_score

    from tasks.models import build_model

    X, gender, train, tests = data()
    noisy = X + np.random.default_rng(4).normal(0, 0.6, X.shape).astype(np.float32)
    codes = np.arange(len(X)) // 2
    out = run_cell(noisy, gender, train, tests, model=model, model_config=config, train_group="asian", seed=3,
                   identity_codes=codes)
    acc, pred = out["accuracy"].set_index("test_group"), out["predictions"]
    assert list(pred.columns) == [c for c in TABLES["predictions"].names if c != "job_id"]
    reference = build_model(model, config, seed=3)
    reference.fit(noisy[train], gender[train])
    for name, rows in tests.items():
        part = pred[pred["test_group"] == name]
        assert part["row"].tolist() == rows.tolist() and part["identity"].tolist() == codes[rows].tolist()
        assert part["y_true"].tolist() == gender[rows].tolist()
        assert part["y_pred"].tolist() == reference.predict(noisy[rows]).tolist()
        np.testing.assert_allclose(part["score"], reference.predict_proba(noisy[rows])[:, 1], rtol=1e-6)
        assert acc.loc[name, "balanced_accuracy"] == pytest.approx(
            balanced_accuracy_score(part["y_true"], part["y_pred"]))
        assert acc.loc[name, "accuracy"] == pytest.approx((part["y_true"] == part["y_pred"]).mean())
    assert (acc["n_train"] == len(train)).all()
    assert 0 < acc["balanced_accuracy"].min() < 1   # noisy: not trivially separable, so the check has teeth


def test_a_model_without_predict_proba_stores_nan_scores(tmp_path, monkeypatch):
    (tmp_path / "hard_model.py").write_text(textwrap.dedent("""
        import numpy as np
        class Hard:
            def fit(self, X, y):
                return self
            def predict(self, X):
                return (X[:, 0] > 0).astype(int)
        def build(config, seed, threads):
            return Hard()
        """))
    monkeypatch.syspath_prepend(str(tmp_path))
    X, gender, train, tests = data()
    out = run_cell(X, gender, train, tests, model="hard_model:build", model_config={}, train_group="a", seed=0)
    pred = out["predictions"]
    assert pred["score"].isna().all() and (pred["identity"] == -1).all()
    assert pred["y_pred"].tolist() == (X[np.r_[tests["a"], tests["b"]], 0] > 0).astype(int).tolist()
