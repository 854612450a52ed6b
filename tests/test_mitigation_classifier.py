"""Classifier-side mitigations (tasks/mitigation/), each against an independent computation on small data:
reweighing against the formula counted by brute force, reductions and the threshold optimizer against Fairlearn
called directly on the same rows and seed, LEACE erasure against what it promises (no linear classifier finds
the group, zero cross-covariance, the gender signal kept)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from storage.errors import InputError
from tasks.mitigation import METHODS, build_mitigation, require_several_groups, resolve_mitigation_config
from tasks.mitigation.erase import LeaceEraser
from tasks.mitigation.reweight import reweighing_weights
from tasks.mitigation.threshold_optimizer import validation_split
from tasks.models import build_model
from tasks.stats.classifier_stats import equalized_odds_difference

GROUPS = np.array(["asian", "black", "caucasian"])
# Fairlearn called directly warns about its own use of pandas; the wrappers silence that (tested below)
pytestmark = pytest.mark.filterwarnings(r"ignore:::fairlearn(\.|$)")


def planted(n: int = 900, d: int = 12, seed: int = 0, balanced: bool = False) -> dict[str, np.ndarray]:
    """Three groups with a planted gap: the gender signal (dimension 0) is strong in the first group and weak
    in the last, which is also shifted along it (a different FPR at one threshold); the group shows along
    dimension 1; female prevalence differs by group (so reweighing has work to do). Two rows per identity
    (rows i and i + 3, of one group). ``balanced``: as the study's train groups, half of each group female and
    no shift (the gender signal then has no group component)."""
    rng = np.random.default_rng(seed)
    group = GROUPS[np.arange(n) % 3]
    code = np.arange(n) % 3
    if balanced:
        y = (np.arange(n) // 3 % 2).astype(np.int64)
    else:
        y = (rng.random(n) < np.array([0.3, 0.5, 0.7])[code]).astype(np.int64)
    X = rng.normal(size=(n, d))
    X[:, 0] += (2 * y - 1) * np.array([2.0, 1.0, 0.6])[code] + np.array([0.0, 0.0, 0.0 if balanced else 0.8])[code]
    X[:, 1] += np.array([2.5, -2.5, 0.0])[code]
    return {"X": X.astype(np.float32), "y": y, "group": group, "identity": np.arange(n) // 6 * 3 + code}


def logreg(seed: int = 0):
    return lambda: build_model("logreg", {}, seed=seed)


def halves(data: dict[str, np.ndarray]) -> tuple[dict, dict]:
    n = len(data["y"]) // 2
    return ({k: v[:n] for k, v in data.items()}, {k: v[n:] for k, v in data.items()})


# ----------------------------------------------------------------------------------------- registry ---
def test_every_method_resolves_its_defaults_and_refuses_unknown_keys_and_bad_values():
    for name in METHODS:
        assert build_mitigation(name, None, seed=0) is not None
    assert resolve_mitigation_config("reductions", {"eps": 0.05}) == {
        "constraint": "equalized_odds", "eps": 0.05, "max_iter": 50}
    with pytest.raises(InputError, match=r"mitigation 'fsn' takes no config key 'k'; it takes: n_clusters"):
        resolve_mitigation_config("fsn", {"k": 3})
    with pytest.raises(InputError, match=r"'reductions': config key 'constraint' must be 'equalized_odds' or"):
        resolve_mitigation_config("reductions", {"constraint": "parity"})
    with pytest.raises(InputError, match=r"mitigation 'none' takes no config; a mitigation is one of: none, rew"):
        resolve_mitigation_config("none", {})
    with pytest.raises(InputError, match=r"unknown mitigation 'nope'; allowed: none, reweight, reductions"):
        resolve_mitigation_config("nope", {})
    variant = resolve_mitigation_config("fsn-50", {"base": "fsn", "n_clusters": 50})
    assert variant == {"base": "fsn", "n_clusters": 50, "target_fmr": 1e-3, "n_init": 1,
                       "max_impostor_pairs": 5_000_000}
    assert build_mitigation("fsn-50", variant, seed=0).n_clusters == 50
    with pytest.raises(InputError, match=r"mitigation 'fsn' is a method; a variant of 'znorm' needs a name"):
        resolve_mitigation_config("fsn", {"base": "znorm"})


def test_a_single_group_is_refused_with_a_clear_message():
    with pytest.raises(InputError, match=r"train group 'asian': a mitigation needs fitting rows of at least two "
                                         r"groups, got only 'asian'"):
        require_several_groups(["asian"] * 5, "train group 'asian'")
    d = planted(n=60)
    for name in ("reweight", "reductions", "threshold_optimizer", "erase"):
        with pytest.raises(InputError, match=f"mitigation '{name}': a mitigation needs .* two groups"):
            build_mitigation(name, None, 0).fit(logreg(), d["X"], d["y"], np.full(60, "asian"), d["identity"])


def test_methods_that_weight_rows_refuse_a_model_without_sample_weights():
    class NoWeights:
        def fit(self, X, y):
            return self

        def predict(self, X):
            return np.zeros(len(X), int)

    d = planted(n=60)
    for name in ("reweight", "reductions"):
        with pytest.raises(InputError, match=f"mitigation '{name}' needs a model whose fit takes sample_weight; "
                                             "NoWeights.fit does not"):
            build_mitigation(name, None, 0).fit(NoWeights, d["X"], d["y"], d["group"])


# ----------------------------------------------------------------------------------------- reweight ---
def test_reweighing_weights_are_the_formula_counted_by_brute_force():
    d = planted(n=301, seed=3)
    g, y = d["group"], d["y"]
    n = len(y)
    expected = np.empty(n)
    for i in range(n):
        n_g = sum(1 for j in range(n) if g[j] == g[i])
        n_y = sum(1 for j in range(n) if y[j] == y[i])
        n_gy = sum(1 for j in range(n) if g[j] == g[i] and y[j] == y[i])
        expected[i] = (n_g / n) * (n_y / n) / (n_gy / n)
    w = reweighing_weights(g, y)
    np.testing.assert_allclose(w, expected, rtol=1e-12)
    assert w.std() > 0.1  # prevalence differs by group: the weights are not all 1
    # under the weights, group and class are independent: P_w(g, y) = P_w(g) P_w(y)
    for gg in GROUPS:
        for yy in (0, 1):
            joint = w[(g == gg) & (y == yy)].sum() / w.sum()
            assert joint == pytest.approx(w[g == gg].sum() / w.sum() * w[y == yy].sum() / w.sum(), rel=1e-12)


def test_reweight_trains_the_model_with_those_weights():
    train, test = halves(planted())
    ours = build_mitigation("reweight", None, 0).fit(logreg(), train["X"], train["y"], train["group"])
    direct = LogisticRegression(random_state=0).fit(train["X"], train["y"],
                                                    sample_weight=reweighing_weights(train["group"], train["y"]))
    plain = LogisticRegression(random_state=0).fit(train["X"], train["y"])
    np.testing.assert_allclose(ours.predict_proba(test["X"]), direct.predict_proba(test["X"]), rtol=1e-10)
    assert np.array_equal(ours.predict(test["X"], test["group"]), direct.predict(test["X"]))
    assert np.abs(direct.predict_proba(test["X"]) - plain.predict_proba(test["X"])).max() > 1e-3


# --------------------------------------------------------------------------------------- reductions ---
@pytest.mark.parametrize("constraint", ["equalized_odds", "demographic_parity"])
def test_reductions_equals_fairlearn_called_directly_on_the_same_rows_and_seed(constraint):
    from fairlearn.reductions import DemographicParity, EqualizedOdds, ExponentiatedGradient

    train, test = halves(planted())
    config = {"constraint": constraint, "eps": 0.02, "max_iter": 15}
    ours = build_mitigation("reductions", config, seed=7).fit(logreg(), train["X"], train["y"], train["group"])
    moment = EqualizedOdds() if constraint == "equalized_odds" else DemographicParity()
    direct = ExponentiatedGradient(LogisticRegression(random_state=0), constraints=moment, eps=0.02, max_iter=15)
    direct.fit(train["X"], train["y"], sensitive_features=train["group"])
    pred = ours.predict(test["X"], test["group"])
    assert np.array_equal(pred, direct.predict(test["X"], random_state=7))
    assert np.array_equal(pred, ours.predict(test["X"], test["group"]))  # seeded: same seed, same predictions
    assert not np.array_equal(pred, build_mitigation("reductions", config, seed=8).fit(
        logreg(), train["X"], train["y"], train["group"]).predict(test["X"]))
    if constraint == "equalized_odds":  # and it does reduce the planted gap on the training rows
        plain = LogisticRegression(random_state=0).fit(train["X"], train["y"]).predict(train["X"])
        before = equalized_odds_difference(train["y"], plain, train["group"])["value"]
        after = equalized_odds_difference(train["y"], ours.predict(train["X"]), train["group"])["value"]
        assert after < before - 0.1


# ------------------------------------------------------------------------------ threshold optimizer ---
def test_validation_split_is_identity_disjoint_per_group_and_seeded():
    d = planted(n=600)
    fit, val = validation_split(d["identity"], d["group"], 0.3, seed=5)
    assert len(np.intersect1d(fit, val)) == 0 and len(fit) + len(val) == 600
    assert not set(d["identity"][fit]) & set(d["identity"][val])  # no identity on both sides
    for g in GROUPS:
        ids = np.unique(d["identity"][d["group"] == g])
        assert len(np.unique(d["identity"][val][d["group"][val] == g])) == round(0.3 * len(ids))
    again = validation_split(d["identity"], d["group"], 0.3, seed=5)
    assert np.array_equal(again[1], val)
    assert not np.array_equal(validation_split(d["identity"], d["group"], 0.3, seed=6)[1], val)
    with pytest.raises(InputError, match="group 'x' has 1 training identity; a validation split needs at least 2"):
        validation_split(np.zeros(4, int), np.array(["x"] * 4), 0.3, seed=0)
    with pytest.raises(InputError, match="identity 0 has training rows in two groups"):
        validation_split(np.array([0, 0, 1, 2]), np.array(["x", "y", "x", "y"]), 0.3, seed=0)


def test_threshold_optimizer_equals_fairlearn_on_the_validation_part_and_the_same_seed():
    from fairlearn.postprocessing import ThresholdOptimizer

    train, test = halves(planted(n=1200))
    # float64 rows: Fairlearn 0.15 called directly fails on float32 scores under pandas 3 (the wrapper casts)
    train["X"], test["X"] = train["X"].astype(np.float64), test["X"].astype(np.float64)
    ours = build_mitigation("threshold_optimizer", {"validation_fraction": 0.4}, seed=11)
    ours.fit(logreg(), train["X"], train["y"], train["group"], train["identity"])
    fit, val = validation_split(train["identity"], train["group"], 0.4, seed=11)
    model = LogisticRegression(random_state=0).fit(train["X"][fit], train["y"][fit])
    direct = ThresholdOptimizer(estimator=model, constraints="equalized_odds", prefit=True, predict_method="auto")
    direct.fit(train["X"][val], train["y"][val], sensitive_features=train["group"][val])
    pred = ours.predict(test["X"], test["group"])
    assert np.array_equal(pred, direct.predict(test["X"], sensitive_features=test["group"], random_state=11))
    assert np.array_equal(pred, ours.predict(test["X"], test["group"]))
    plain = model.predict(test["X"])
    before = equalized_odds_difference(test["y"], plain, test["group"])["value"]
    after = equalized_odds_difference(test["y"], pred, test["group"])["value"]
    assert after < before  # the planted gap shrinks on the (unseen) test rows
    with pytest.raises(InputError, match="group 'hispanic' has no thresholds"):
        ours.predict(test["X"][:2], np.array(["hispanic", "asian"]))


# ------------------------------------------------------------------------------------------- erase ---
def test_leace_erasure_leaves_no_linear_group_signal_and_keeps_the_gender_signal():
    d = planted(n=6000, d=24, seed=1, balanced=True)
    train, held = halves(d)
    eraser = LeaceEraser.fit(train["X"], train["group"])
    Xe, He = eraser(train["X"]), eraser(held["X"])
    # the cross-covariance with the one-hot group is zero on the fitting rows
    Z = (train["group"][:, None] == GROUPS[None, :]).astype(float)
    cross = (Xe - Xe.mean(0)).T @ (Z - Z.mean(0)) / len(Z)
    assert np.abs(cross).max() < 1e-8
    before = (train["X"] - train["X"].mean(0)).T @ (Z - Z.mean(0)) / len(Z)
    assert np.abs(before).max() > 0.5
    # no linear classifier predicts the group above chance on held-out rows (it did before: > 0.8)
    chance = max(np.mean(held["group"] == g) for g in GROUPS)
    margin = 3 * np.sqrt(chance * (1 - chance) / len(He))
    raw = LogisticRegression(max_iter=2000).fit(train["X"], train["group"]).score(held["X"], held["group"])
    erased = LogisticRegression(max_iter=2000).fit(Xe, train["group"]).score(He, held["group"])
    assert raw > 0.8 and erased < chance + margin
    # the gender signal remains
    assert LogisticRegression(max_iter=2000).fit(Xe, train["y"]).score(He, held["y"]) > 0.75


def test_erase_trains_the_model_on_erased_rows_and_predicts_erased_rows():
    train, test = halves(planted())
    ours = build_mitigation("erase", None, 0).fit(logreg(), train["X"], train["y"], train["group"])
    eraser = LeaceEraser.fit(train["X"], train["group"])
    direct = LogisticRegression(random_state=0).fit(eraser(train["X"]).astype(np.float32), train["y"])
    np.testing.assert_allclose(ours.predict_proba(test["X"]),
                               direct.predict_proba(eraser(test["X"]).astype(np.float32)), rtol=1e-6)
    assert np.array_equal(ours.predict(test["X"]), direct.predict(eraser(test["X"]).astype(np.float32)))


def test_leace_handles_more_dimensions_than_rows():
    """n < d (the grid's 2000 x 2048 training rows): the covariance is singular; its pseudo-inverse square root
    still zeroes the cross-covariance."""
    d = planted(n=120, d=300, seed=2)
    Xe = LeaceEraser.fit(d["X"], d["group"])(d["X"])
    Z = (d["group"][:, None] == GROUPS[None, :]).astype(float)
    assert np.abs((Xe - Xe.mean(0)).T @ (Z - Z.mean(0))).max() / len(Z) < 1e-8
    assert np.isfinite(Xe).all()


def test_the_fairlearn_wrappers_let_no_library_warning_through():
    import warnings

    train, test = halves(planted(n=300))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for name, config in (("reductions", {"max_iter": 5}), ("threshold_optimizer", {})):
            m = build_mitigation(name, config, 0).fit(logreg(), train["X"], train["y"], train["group"],
                                                      train["identity"])
            m.predict(test["X"], test["group"])
    assert [str(w.message) for w in caught] == []


@pytest.mark.parametrize("model,config", [("xgboost", {"n_estimators": 5}),
                                          ("mlp", {"epochs": 1, "hidden_units": [4], "batch_size": 5})])
def test_every_classifier_method_trains_the_other_built_in_models(model, config):
    """xgboost and the mlp (its own trainer, sample weights included) go through every classifier method (their
    float32 scores too, which Fairlearn 0.15 cannot post-process under pandas 3 by itself: the wrapper hands it
    float64); the same seed gives the same predictions."""
    train, test = halves(planted(n=150))
    build = lambda: build_model(model, config, seed=0)  # noqa: E731
    for name in ("reweight", "reductions", "threshold_optimizer", "erase"):
        preds = [build_mitigation(name, {"max_iter": 2} if name == "reductions" else {}, seed=1)
                 .fit(build, train["X"], train["y"], train["group"], train["identity"])
                 .predict(test["X"], test["group"]) for _ in range(2)]
        assert preds[0].shape == (len(test["X"]),) and set(np.unique(preds[0])) <= {0, 1}
        assert np.array_equal(preds[0], preds[1])
