"""tasks.stats.rates against independent computations: scipy/statsmodels intervals, sklearn's ROC, brute-force loops."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn.metrics import roc_curve
from statsmodels.stats.proportion import proportion_confint

from grid.report import fairness
from storage.errors import InputError
from conftest import eer_from_roc
from tasks.stats import rates


def test_clopper_pearson_matches_scipy_and_statsmodels():
    ks = np.array([0, 0, 1, 3, 17, 50, 99, 100, 0])
    ns = np.array([1, 3000, 10, 1000, 400, 100, 100, 100, 5_000_000])
    lo, hi = rates.clopper_pearson(ks, ns)
    for k, n, a, b in zip(ks, ns, lo, hi):
        ci = stats.binomtest(int(k), int(n)).proportion_ci(confidence_level=0.95, method="exact")
        sm = proportion_confint(int(k), int(n), alpha=0.05, method="beta")
        # binomtest finds the bounds by root-finding (relative tolerance ~1e-7 at n = 5e6); statsmodels and the
        # closed form for k = 0 (upper = 1 - (a/2)^(1/n)) are beta quantiles like ours
        assert a == pytest.approx(ci.low, rel=1e-6, abs=1e-12) and b == pytest.approx(ci.high, rel=1e-6)
        assert a == pytest.approx(sm[0], abs=1e-12) and b == pytest.approx(sm[1], rel=1e-9, abs=1e-15)
        if k == 0:
            assert b == pytest.approx(-np.expm1(np.log(0.025) / n), rel=1e-9)
    lo, hi = rates.clopper_pearson([0], [0])
    assert np.isnan(lo[0]) and np.isnan(hi[0])
    with pytest.raises(InputError):
        rates.clopper_pearson([3], [2])


def test_zero_counts_show_their_bound():
    f = rates.rate_frame([0, 5, 0], [3000, 1000, 0], "fmr_")
    assert f["fmr_rate"].iloc[0] == 0 and f["fmr_upper_3n"].iloc[0] == pytest.approx(1e-3)
    assert f["fmr_display"].iloc[0] == "<= 1.00e-03 (0/3000)"
    assert math.isnan(f["fmr_upper_3n"].iloc[1]) and f["fmr_display"].iloc[1] == "0.005 (5/1000)"
    assert math.isnan(f["fmr_rate"].iloc[2]) and "0 comparisons" in f["fmr_display"].iloc[2]
    # the rule of three: P(0 events | p = 3/n) ~ e^-3 ~ 0.05
    assert (1 - 3 / 3000) ** 3000 == pytest.approx(0.05, abs=0.001)


def test_max_accepted_is_exact():
    assert 3e-4 * 5_000_000 < 1500
    assert rates.max_accepted(3e-4, 5_000_000) == 1500
    assert rates.max_accepted(1e-3, 999) == 0 and rates.max_accepted(1e-3, 1000) == 1
    assert rates.max_accepted(0.1, 3) == 0 and rates.max_accepted(0.7, 10) == 7
    for bad in (0, 1, -0.1, "0.1", True):
        with pytest.raises(InputError):
            rates.max_accepted(bad, 10)


def brute_threshold(imp, target):
    ok = [t for t in np.unique(imp) if (imp >= t).sum() <= rates.max_accepted(target, len(imp))]
    return min(ok) if ok else np.nextafter(imp.max(), np.inf)


@pytest.mark.parametrize("seed", range(5))
def test_threshold_convention_against_a_loop_with_ties_and_weights(seed):
    rng = np.random.default_rng(seed)
    imp = np.round(rng.normal(size=300), 1)     # many ties
    gen = np.round(rng.normal(1.5, 1, size=80), 1)
    curve = rates.ScoreCurve(gen, imp)
    for target in (0.5, 0.1, 0.01, 1e-3):
        assert rates.threshold_at_fmr(imp, target) == brute_threshold(imp, target)
        assert curve.threshold_at_fmr(target) == brute_threshold(imp, target)
        # integer weights = the scores repeated
        w = rng.integers(0, 3, size=imp.size)
        assert curve.threshold_at_fmr(target, w) == brute_threshold(np.repeat(imp, w), target)


@pytest.mark.parametrize("seed", range(4))
def test_eer_and_curve_match_sklearn_roc_curve(seed):
    rng = np.random.default_rng(seed)
    gen = np.round(rng.normal(1.0, 1.0, 200), 2)
    imp = np.round(rng.normal(0.0, 1.0, 900), 2)
    labels = np.r_[np.ones(gen.size), np.zeros(imp.size)]
    fpr, tpr, thr = roc_curve(labels, np.r_[gen, imp], drop_intermediate=False)
    curve = rates.ScoreCurve(gen, imp)
    t, fm, fnm, n_imp, n_gen = curve.curve()
    assert np.allclose(fm / n_imp, fpr) and np.allclose(fnm / n_gen, 1 - tpr) and np.array_equal(t[1:], thr[1:])
    assert curve.eer() == pytest.approx(eer_from_roc(fpr, 1 - tpr, thr))
    # weighted curve = curve of the repeated scores
    wg, wi = rng.integers(0, 3, gen.size), rng.integers(0, 3, imp.size)
    rep = rates.ScoreCurve(np.repeat(gen, wg), np.repeat(imp, wi))
    assert curve.eer(wg, wi) == pytest.approx(rep.eer())
    assert curve.counts_at(0.3, wg, wi) == rep.counts_at(0.3)


@pytest.mark.parametrize("seed", range(4))
def test_sorted_forms_equal_the_sorting_ones(seed):
    """sorted_eer, sorted_roc and sorted_threshold_at_fmr (what the verification jobs use, scores sorted once) give
    ScoreCurve's EER, scikit-learn's roc_curve and the brute-force threshold exactly, ties included; a NaN run as
    np.unique counts it."""
    rng = np.random.default_rng(seed)
    gen = np.round(rng.normal(1.0, 1.0, 150 + seed), 1 + seed % 2)
    imp = np.round(rng.normal(0.0, 1.0, 700), 1 + seed % 2)
    assert rates.sorted_eer(np.sort(gen), np.sort(imp)) == rates.ScoreCurve(gen, imp).eer()
    labels = np.r_[np.ones(gen.size), np.zeros(imp.size)]
    fpr, tpr, thr = roc_curve(labels, np.r_[gen, imp], drop_intermediate=False)
    assert rates.sorted_eer(np.sort(gen), np.sort(imp)) == pytest.approx(eer_from_roc(fpr, 1 - tpr, thr))
    got = rates.sorted_roc(np.sort(gen), np.sort(imp))                 # the scores job's ROC: sklearn's, exactly
    for x, y in zip(got, (fpr, tpr, thr)):
        np.testing.assert_array_equal(x, y)
    for target in (0.5, 0.1, 0.01, 1e-3, 1e-6):
        assert rates.sorted_threshold_at_fmr(np.sort(imp), target) == brute_threshold(imp, target)
    with_nan = np.sort(np.r_[imp, np.nan, np.nan])
    assert np.array_equal(rates._run_starts(with_nan), np.unique(with_nan, return_index=True)[1])
    with pytest.raises(InputError):
        rates.sorted_eer(np.sort(np.r_[gen, np.inf]), np.sort(imp))


def test_resolution_flags():
    assert rates.resolution(999, 1, 1e-3) == (False, "n_impostor=999 < 1/FMR=1000")
    assert rates.resolution(1000, 1, 1e-3) == (True, "")
    ok, why = rates.resolution(10**6, 0, 1e-3)
    assert not ok and "0 false matches" in why


def test_group_operating_points_against_direct_computation():
    rng = np.random.default_rng(7)
    names = np.array(["a_m", "a_f", "b_m"])
    gen = rng.normal(1, 1, 600)
    gen_group = names[rng.integers(0, 3, gen.size)]
    imp = rng.normal(0, 1, 20000) + 0.0
    ga, gb = names[rng.integers(0, 3, imp.size)], names[rng.integers(0, 3, imp.size)]
    imp[(ga == "b_m") & (gb == "b_m")] += 0.5         # one group with more false matches
    out = rates.group_operating_points(gen, gen_group, imp, ga, gb, target_fmrs=(1e-2, 1e-3),
                                       global_target_fmr=1e-3)
    ops, eer = out["operating_points"], out["eer"]
    assert list(ops.columns) == rates.OP_COLUMNS and len(ops) == 4 * 3
    t_global = brute_threshold(imp, 1e-3)
    for name in names:
        g, i = gen[gen_group == name], imp[(ga == name) & (gb == name)]
        own = ops[(ops.group == name) & (ops.threshold_kind == "own") & (ops.target_fmr == 1e-2)].iloc[0]
        t = brute_threshold(i, 1e-2)
        assert own.threshold == t and own.false_matches == (i >= t).sum() and own.n_impostor == i.size
        assert own.fnmr == pytest.approx((g < t).mean()) and own.false_non_matches == (g < t).sum()
        glob = ops[(ops.group == name) & (ops.threshold_kind == "global")].iloc[0]
        assert glob.threshold == t_global and glob.fmr == pytest.approx((i >= t_global).mean())
        ci = stats.binomtest(int(glob.false_matches), int(glob.n_impostor)).proportion_ci(method="exact")
        assert glob.fmr_ci_low == pytest.approx(ci.low, abs=1e-12) and glob.fmr_ci_high == pytest.approx(ci.high)
        row = eer[eer.group == name].iloc[0]
        labels = np.r_[np.ones(g.size), np.zeros(i.size)]
        fpr, tpr, thr = roc_curve(labels, np.r_[g, i], drop_intermediate=False)
        assert row.eer == pytest.approx(eer_from_roc(fpr, 1 - tpr, thr)[0])
    # ~6.7K impostors per group: FMR 1e-3 resolved unless no false match
    small = ops[(ops.target_fmr == 1e-3) & (ops.threshold_kind == "own")]
    assert small["resolved"].all() == (small["false_matches"] > 0).all()


def test_unresolved_operating_point_is_flagged():
    out = rates.group_operating_points(np.linspace(0, 1, 50), np.array(["x"] * 50), np.linspace(-1, 0.2, 500),
                                       np.array(["x"] * 500), np.array(["x"] * 500), target_fmrs=(1e-3,))
    own = out["operating_points"].query("group == 'x' and threshold_kind == 'own'").iloc[0]
    assert not own.resolved and "n_impostor=500 < 1/FMR=1000" in own.reason and "0 false matches" in own.reason
    assert own.fmr == 0 and own.fmr_display.startswith("<= ")


def test_ratios_over_a_zero_rate_are_lower_bounds():
    fm, ni = np.array([0, 4, 8]), np.array([10000, 2000, 2000])
    fn, ng = np.array([30, 60, 45]), np.array([1000, 1000, 1000])
    out = rates.bounded_summaries(fm, ni, fn, ng, fairness.summaries).set_index("metric")
    # FMR Max/Min = 0.004 / 0 is undefined; with 3/10000 for the zero group: >= 0.004 / 3e-4
    assert out.loc["fmr_max_min", "bound"] == ">=" and out.loc["fmr_max_min", "defined"]
    assert out.loc["fmr_max_min", "value"] == pytest.approx(0.004 / 3e-4)
    gm = np.exp(np.mean(np.log([3e-4, 0.002, 0.004])))
    assert out.loc["fmr_max_geomean", "value"] == pytest.approx(0.004 / gm)
    assert out.loc["fnmr_max_min", "bound"] == "" and out.loc["fnmr_max_min", "value"] == pytest.approx(2.0)
    assert out.loc["fdr", "value"] == pytest.approx(fairness.fdr([0, 0.002, 0.004], [0.03, 0.06, 0.045])[0])
    # a zero group with too few comparisons: 3/n above the highest rate bounds nothing -> NaN with the reason
    out = rates.bounded_summaries(np.array([0, 4]), np.array([100, 2000]), fn[:2], ng[:2],
                                  fairness.summaries).set_index("metric")
    assert math.isnan(out.loc["fmr_max_min", "value"]) and "no bound" in out.loc["fmr_max_min", "note"]


def test_group_operating_points_take_group_codes_as_they_take_names():
    """Integer codes into ``groups`` (what the impostor job passes) give the frames names give."""
    rng = np.random.default_rng(11)
    names = ["a_m", "a_f", "b_m"]
    gc, ca, cb = rng.integers(0, 3, 400), rng.integers(0, 3, 9000), rng.integers(0, 3, 9000)
    gen, imp = rng.normal(1, 1, gc.size), rng.normal(0, 1, ca.size)
    by_name = rates.group_operating_points(gen, np.array(names)[gc], imp, np.array(names)[ca], np.array(names)[cb],
                                           target_fmrs=(1e-2,), groups=names)
    by_code = rates.group_operating_points(gen, gc, imp, ca, cb, target_fmrs=(1e-2,), groups=names)
    for key in ("eer", "operating_points"):
        pd.testing.assert_frame_equal(by_name[key], by_code[key])
    assert (rates.label_codes(np.array(["b_m", "x", "a_m"]), names) == [2, -1, 0]).all()
