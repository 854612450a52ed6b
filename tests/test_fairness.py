"""The demographic-differential summaries against hand-computed values, with undefined values as NaN + note."""

import math

import numpy as np
import pandas as pd
import pytest

from grid.report import fairness

FMR = [0.001, 0.002, 0.004]
FNMR = [0.02, 0.05, 0.03]


def test_ratios_by_hand():
    assert fairness.max_min_ratio(FMR)[0] == pytest.approx(4.0)
    assert fairness.max_min_ratio(FNMR)[0] == pytest.approx(2.5)
    # geometric mean of 1e-3, 2e-3, 4e-3 is 2e-3
    assert fairness.max_geomean_ratio(FMR)[0] == pytest.approx(2.0)
    # (0.02 * 0.05 * 0.03) ** (1/3) = 0.0310723...
    assert fairness.max_geomean_ratio(FNMR)[0] == pytest.approx(0.05 / 0.031072325059538586)
    assert fairness.max_min_ratio([0.01, 0.01])[0] == 1.0


def test_gini_by_hand():
    # sum_i sum_j |x_i - x_j| over ordered pairs = 2 * (1 + 3 + 2) e-3 = 0.012; mean = 7e-3 / 3
    # Gini = 3/2 * 0.012 / (2 * 9 * 7e-3 / 3) = 3/7
    assert fairness.gini(FMR)[0] == pytest.approx(3 / 7)
    assert fairness.gini(FNMR)[0] == pytest.approx(0.3)
    assert fairness.gini([0.0, 1.0])[0] == pytest.approx(1.0)       # one group has every error: maximum 1
    assert fairness.gini([0.2, 0.2, 0.2])[0] == 0.0


def test_fdr_and_garbe_by_hand():
    # 1 - (0.5 * (0.004 - 0.001) + 0.5 * (0.05 - 0.02)) = 1 - 0.0165
    assert fairness.fdr(FMR, FNMR)[0] == pytest.approx(0.9835)
    assert fairness.fdr(FMR, FNMR, a=1.0)[0] == pytest.approx(0.997)
    assert fairness.garbe(FMR, FNMR)[0] == pytest.approx(0.5 * 3 / 7 + 0.5 * 0.3)
    assert fairness.fdr([0.1, 0.1], [0.2, 0.2])[0] == 1.0


def test_zero_rates_are_undefined_not_inf_or_zero():
    fmr = [0.0, 0.001, 0.002]
    value, note = fairness.max_min_ratio(fmr, "FMR")
    assert math.isnan(value) and "undefined" in note and "FMR" in note
    value, note = fairness.max_geomean_ratio(fmr, "FMR")
    assert math.isnan(value) and "undefined" in note
    # the Gini coefficient is defined with one zero rate (mean > 0): 3/2 * 0.008 / (18 * 0.001) = 2/3
    assert fairness.gini(fmr)[0] == pytest.approx(2 / 3)
    value, note = fairness.gini([0.0, 0.0, 0.0], "FNMR")
    assert math.isnan(value) and "every FNMR is 0" in note
    value, note = fairness.garbe([0.001, 0.002, 0.003], [0.0, 0.0, 0.0])
    assert math.isnan(value) and "FNMR" in note

    table = fairness.summaries(fmr, [0.0, 0.0, 0.0])
    assert not np.isinf(table["value"]).any()
    assert (table["value"] != 0).all()                       # nothing undefined is reported as 0
    undefined = table[~table["defined"]]
    assert set(undefined["metric"]) == {"fmr_max_min", "fmr_max_geomean", "fnmr_max_min", "fnmr_max_geomean", "garbe",
                                        "werm"}
    assert undefined["value"].isna().all() and (undefined["note"] != "").all()
    assert table.set_index("metric").at["fdr", "value"] == pytest.approx(1 - 0.5 * 0.002)


@pytest.mark.parametrize("fmr, fnmr", [([0.001, 0.002, 0.004], [0.02, 0.03, 0.01]), ([0.0, 0.001, 0.002], [0.0] * 3),
                                       ([0.1], [0.2]), ([0.1, np.nan], [0.1, 0.2]), ([0.0, 0.0], [0.5, 0.25])])
def test_summary_values_are_the_tables_values(fmr, fnmr):
    """summary_values (what the bootstrap evaluates per resample) gives summaries' values, metric by metric."""
    from tasks.stats.fairness import summary_values
    table = fairness.summaries(fmr, fnmr, 0.3)
    values = summary_values(fmr, fnmr, 0.3)
    assert list(values) == list(table["metric"]) == list(fairness.METRICS)
    np.testing.assert_array_equal(np.array(list(values.values())), table["value"].to_numpy(float))


def test_too_few_groups_or_missing_rate():
    assert math.isnan(fairness.max_min_ratio([0.1])[0])
    value, note = fairness.fdr([0.1, np.nan], [0.1, 0.2])
    assert math.isnan(value) and "missing" in note


def test_by_seed_then_mean_std():
    groups = ["asian_male", "asian_female", "black_male"]
    rates = pd.DataFrame({
        "seed": [0, 0, 0, 1, 1, 1, 2, 2, 2],
        "group": groups * 3,
        "fmr": [0.001, 0.002, 0.004, 0.002, 0.002, 0.006, 0.0, 0.001, 0.002],
        "fnmr": [0.02, 0.05, 0.03, 0.02, 0.04, 0.04, 0.03, 0.03, 0.06],
    })
    per_seed = fairness.by_seed(rates, groups=groups)
    assert len(per_seed) == 3 * len(fairness.METRICS)
    fmr_max_min = per_seed[per_seed["metric"] == "fmr_max_min"].set_index("seed")["value"]
    assert fmr_max_min[0] == pytest.approx(4.0) and fmr_max_min[1] == pytest.approx(3.0)
    assert math.isnan(fmr_max_min[2])

    summary = fairness.summarize(per_seed).set_index("metric")
    row = summary.loc["fmr_max_min"]
    assert row["mean"] == pytest.approx(3.5) and row["std"] == pytest.approx(np.std([4.0, 3.0], ddof=1))
    assert row["n_seeds"] == 2 and row["n_undefined"] == 1 and "seed 2" in row["note"]
    fdr = summary.loc["fdr"]
    expected = [1 - 0.5 * 0.003 - 0.5 * 0.03, 1 - 0.5 * 0.004 - 0.5 * 0.02, 1 - 0.5 * 0.002 - 0.5 * 0.03]
    assert fdr["mean"] == pytest.approx(np.mean(expected)) and fdr["n_undefined"] == 0
    assert fdr["std"] == pytest.approx(np.std(expected, ddof=1))


def test_by_seed_missing_group_is_undefined():
    rates = pd.DataFrame({"seed": [0, 0, 1], "group": ["a_male", "a_female", "a_male"],
                          "fmr": [0.001, 0.002, 0.001], "fnmr": [0.01, 0.02, 0.01]})
    per_seed = fairness.by_seed(rates)
    seed1 = per_seed[per_seed["seed"] == 1]
    assert not seed1["defined"].any() and seed1["note"].str.contains("a_female").all()
    assert fairness.by_seed(rates.iloc[:0]).empty
    assert fairness.summarize(fairness.by_seed(rates.iloc[:0])).empty
