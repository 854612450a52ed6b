"""tasks.stats.classifier_stats against scipy, the Nadeau-Bengio formula, scikit-learn and Fairlearn."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from fairlearn.metrics import equalized_odds_difference as fl_eod
from scipy import stats
from sklearn.metrics import balanced_accuracy_score

from storage.errors import InputError
from tasks.stats import classifier_stats as cs


def test_paired_t_test_matches_scipy():
    rng = np.random.default_rng(0)
    a, b = rng.normal(0.9, 0.01, 7), rng.normal(0.89, 0.01, 7)
    out = cs.paired_t_test(a, b)
    ref = stats.ttest_rel(a, b)
    assert out["t"] == pytest.approx(ref.statistic) and out["p_value"] == pytest.approx(ref.pvalue)
    ci = ref.confidence_interval(0.95)
    assert out["ci_low"] == pytest.approx(ci.low) and out["ci_high"] == pytest.approx(ci.high)
    # Series are aligned on their index (seeds), missing pairs dropped
    sa = pd.Series(a, index=range(7))
    sb = pd.Series(np.r_[b[2:6], np.nan, 0.5, 0.5], index=range(2, 9))   # seeds 2-5 pair; 6 is NaN
    assert cs.paired_t_test(sa, sb)["n_pairs"] == 4


def test_constant_difference_up_to_rounding_is_undefined():
    k = np.array([700, 705, 712, 721, 733])           # accuracies on 750 test images, 3 more errors each seed
    a, b = k / 750, (k - 3) / 750
    d = a - b
    assert 0 < d.std(ddof=1) < 1e-15                  # rounding noise: grid's paired_test gives |t| ~ 1e14 here
    assert abs(stats.ttest_rel(a, b).statistic) > 1e12
    out = cs.paired_t_test(a, b)
    assert math.isnan(out["t"]) and "identical" in out["note"] and out["ci_low"] == out["mean_diff"]
    out = cs.paired_t_test(a, a)
    assert math.isnan(out["t"]) and "identical" in out["note"]
    assert math.isnan(cs.paired_t_test([1.0], [0.5])["t"])


def test_corrected_resampled_t_test_formula():
    rng = np.random.default_rng(1)
    a, b = rng.normal(0.9, 0.01, 5), rng.normal(0.885, 0.01, 5)
    d = a - b
    J, n1, n2 = 5, 3000, 1500
    out = cs.corrected_resampled_t_test(a, b, n_train=n1, n_test=n2)
    t = d.mean() / math.sqrt((1 / J + n2 / n1) * d.var(ddof=1))
    assert out["t"] == pytest.approx(t) and out["df"] == J - 1
    assert out["p_value"] == pytest.approx(2 * stats.t.sf(abs(t), J - 1))
    assert out["t_plain"] == pytest.approx(stats.ttest_rel(a, b).statistic)
    assert abs(out["t"]) < abs(out["t_plain"]) and out["p_value"] > out["p_plain"]
    assert out["correction"] == pytest.approx(1 + J * n2 / n1)
    assert out["t_plain"] / out["t"] == pytest.approx(math.sqrt(out["correction"]))
    half = stats.t.ppf(0.975, J - 1) * math.sqrt((1 / J + n2 / n1) * d.var(ddof=1))
    assert out["ci_high"] - out["ci_low"] == pytest.approx(2 * half)
    with pytest.raises(InputError):
        cs.corrected_resampled_t_test(a, b, 0, 10)


def predictions(seed=0, n=600):
    rng = np.random.default_rng(seed)
    group = rng.choice(["asian", "black", "caucasian"], n)
    y = rng.integers(0, 2, n)
    flip = rng.random(n) < np.where(group == "black", 0.2, 0.07) * np.where(y == 1, 1.5, 0.7)
    return y, np.where(flip, 1 - y, y), group


@pytest.mark.parametrize("seed", range(3))
def test_balanced_accuracy_and_rates_match_sklearn(seed):
    y, p, g = predictions(seed)
    r = cs.classification_rates(y, p, g).set_index("group")
    assert cs.balanced_accuracy(y, p) == pytest.approx(balanced_accuracy_score(y, p))
    for name in ("asian", "black", "caucasian"):
        s = g == name
        assert r.loc[name, "balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y[s], p[s]))
        assert r.loc[name, "tpr"] == pytest.approx(((p == 1) & (y == 1) & s).sum() / ((y == 1) & s).sum())
        assert r.loc[name, "n"] == s.sum()


@pytest.mark.parametrize("seed", range(4))
def test_equalized_odds_matches_fairlearn(seed):
    y, p, g = predictions(seed)
    out = cs.equalized_odds_difference(y, p, g)
    assert out["value"] == pytest.approx(fl_eod(y, p, sensitive_features=g))
    assert out["value"] == max(out["tpr_difference"], out["fpr_difference"])


def test_undefined_cases_say_why():
    out = cs.equalized_odds_difference([1, 1, 0, 1], [1, 0, 0, 1], ["a", "a", "a", "b"])
    assert math.isnan(out["value"]) and "b: no negatives" in out["note"]
    with pytest.raises(InputError):
        cs.balanced_accuracy([1, 1], [1, 0])
    with pytest.raises(InputError):
        cs.classification_rates([0, 2], [0, 1])
