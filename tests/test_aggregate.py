"""Aggregates of a small stored grid against an independent pandas computation, and the paired test."""

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from grid.report import load_results
from grid.report import stats as agg
from storage.errors import InputError
from storage.results import ResultStore

# Under xdist this module's tests run on one worker: its module fixture (grid) is built once.
pytestmark = pytest.mark.xdist_group("aggregate")

MODELS = ["mlp", "xgboost"]
# "all" is not last in the config: the matrices must still put it last
TRAIN = ["all", "caucasian", "asian", "black"]
TEST = ["caucasian", "asian", "black"]
SEEDS = [0, 1, 2, 3]
NOISE = [0.012, -0.008, 0.012, -0.008]     # "all" vs diagonal: mean difference 0.002, sd 0.0115: no real effect


def plant(out, skip=(), fail=()):
    """Planted grid: diagonal 0.95, other single groups 0.85 (-0.10), "all" = diagonal + noise (mean +0.002).

    A per-seed effect shared by the cells of a column (same test set) makes the pairing by seed matter.
    """
    rng = np.random.default_rng(7)
    store = ResultStore(out)
    jobs, truth = [], []
    effect = {(m, t, s): rng.normal(0, 0.02) for m in MODELS for t in TEST for s in SEEDS}
    for model in MODELS:
        for train in TRAIN:
            for seed in SEEDS:
                job = f"cell-{model}-{train}-{seed}"
                record = {"job_id": job, "kind": "cell", "description": f"cell {model} train={train} seed={seed}",
                          "model": model, "train_group": train, "seed": seed}
                jobs.append(record)
                rows = []
                for test in TEST:
                    base = 0.95 + effect[model, test, seed]
                    if train == "all":
                        acc = base + NOISE[seed]
                    elif train == test:
                        acc = base
                    else:
                        acc = base - 0.10 + rng.normal(0, 0.004)
                    rows.append({"model": model, "train_group": train, "test_group": test, "seed": seed,
                                 "accuracy": acc, "accuracy_male": acc + rng.normal(0, 0.01),
                                 "accuracy_female": acc + rng.normal(0, 0.01), "balanced_accuracy": acc,
                                 "n_test": 500, "n_train": 1000, "train_seconds": 0.1,
                                 "job_id": job, "node": "local", "finished_at": "2026-01-01T00:00:00"})
                if job in skip:
                    continue
                if job in fail:
                    store.write_failure(job, record, "RuntimeError: planted", "Traceback ...")
                    continue
                truth += rows
                store.write_job(job, {"accuracy": pd.DataFrame(rows)}, record)
    groups = [f"{e}_{g}" for e in ("caucasian", "asian", "black") for g in ("male", "female")]
    ver, imp, rates = [], [], []
    for seed in SEEDS:
        for test in TEST:
            job = f"scores-{test}-{seed}"
            jobs.append({"job_id": job, "kind": "scores", "test_group": test, "seed": seed})
            row = pd.DataFrame([{"test_group": test, "seed": seed, "eer": rng.uniform(0.01, 0.05),
                                 "eer_threshold": rng.uniform(0.3, 0.5), "fnmr_at_fmr_1e_2": rng.uniform(0.02, 0.1),
                                 "fnmr_at_fmr_1e_3": rng.uniform(0.05, 0.3), "genuine_mean": 0.6,
                                 "impostor_mean": 0.2, "n_genuine": 1000, "n_impostor": 50000,
                                 "impostor_sampled": False, "job_id": job, "node": "local", "finished_at": "t"}])
            row = row.assign(eer_ci_low=row["eer"] - 0.005, eer_ci_high=row["eer"] + 0.005,
                             fnmr_at_fmr_1e_2_ci_low=np.nan, fnmr_at_fmr_1e_2_ci_high=np.nan,
                             fnmr_at_fmr_1e_3_ci_low=np.nan, fnmr_at_fmr_1e_3_ci_high=np.nan, n_resamples=0)
            ver.append(row)
            store.write_job(job, {"verification": row}, {"kind": "scores"})
        job = f"impostor-{seed}"
        jobs.append({"job_id": job, "kind": "impostor", "seed": seed})
        matrix = pd.DataFrame([{"seed": seed, "group_a": a, "group_b": b, "fmr": rng.uniform(0, 1e-3),
                                "n_pairs": 1000, "threshold": 0.4, "job_id": job} for a in groups for b in groups])
        rate = pd.DataFrame([{"seed": seed, "group": g, "fmr": rng.uniform(5e-4, 2e-3),
                              "fnmr": rng.uniform(0.01, 0.05), "threshold": 0.4, "n_genuine": 100,
                              "n_impostor": 10000, "job_id": job} for g in groups])
        matrix = matrix.assign(false_matches=(matrix["fmr"] * 1000).round().astype(int), ci_low=0.0, ci_high=0.01,
                               display="", resolved=True, reason="")
        rate = rate.assign(false_matches=(rate["fmr"] * 10000).round().astype(int),
                           false_non_matches=(rate["fnmr"] * 100).round().astype(int), fmr_ci_low=0.0,
                           fmr_ci_high=0.01, fnmr_ci_low=0.0, fnmr_ci_high=0.1, resolved=True, reason="")
        imp.append(matrix)
        rates.append(rate)
        store.write_job(job, {"impostor_matrix": matrix, "demographic_rates": rate}, {"kind": "impostor"})
    store.write_run({"config": {"grid": {"models": MODELS, "seeds": SEEDS, "train_groups": TRAIN,
                                         "test_groups": TEST}},
                     "data_fingerprint": "f00d", "versions": {"biasgrid": "0.1.0"}, "created_at": "2026-01-01",
                     "jobs": jobs})
    return pd.DataFrame(truth), pd.concat(ver), pd.concat(imp), pd.concat(rates)


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    out = tmp_path_factory.mktemp("grid")
    truth, ver, imp, rates = plant(out)
    return load_results(out), truth, ver, imp, rates


def test_order_follows_config_with_all_last(grid):
    res = grid[0]
    assert res.models == MODELS and res.test_groups == TEST and res.seeds == SEEDS
    assert res.train_groups == ["caucasian", "asian", "black", "all"]
    mat = agg.accuracy_matrix(res, "mlp")
    assert list(mat.index) == res.train_groups and list(mat.columns) == TEST


@pytest.mark.parametrize("metric", agg.METRICS)
def test_stats_match_independent_pandas(grid, metric):
    res, truth = grid[0], grid[1]
    expected = truth.groupby(["model", "train_group", "test_group"])[metric].agg(["mean", "std", "count"])
    got = agg.accuracy_stats(res, metric).set_index(["model", "train_group", "test_group"])
    assert len(got) == len(expected) == len(MODELS) * len(TRAIN) * len(TEST)
    got = got.loc[expected.index]
    np.testing.assert_allclose(got["mean"], expected["mean"], rtol=1e-12)
    np.testing.assert_allclose(got["std"], expected["std"], rtol=1e-12)
    assert (got["n"] == expected["count"]).all() and not got["incomplete"].any()
    for model in MODELS:
        mean = agg.accuracy_matrix(res, model, metric)
        std = agg.accuracy_matrix(res, model, metric, "std")
        for train in TRAIN:
            for test in TEST:
                assert mean.at[train, test] == pytest.approx(expected.at[(model, train, test), "mean"])
                assert std.at[train, test] == pytest.approx(expected.at[(model, train, test), "std"])


def test_matrix_text(grid):
    res, truth = grid[0], grid[1]
    text = agg.matrix_text(res, "xgboost")
    cell = truth[(truth.model == "xgboost") & (truth.train_group == "asian") & (truth.test_group == "black")]
    assert text.at["asian", "black"] == f"{cell.accuracy.mean():.3f} ± {cell.accuracy.std():.3f}"
    assert "†" not in "".join(text.to_numpy().ravel())


def test_paired_difference_planted_and_none(grid):
    res, truth = grid[0], grid[1]
    diff = agg.paired_differences(res).set_index(["model", "test_group", "train_group"])
    assert len(diff) == len(MODELS) * len(TEST) * (len(TRAIN) - 1)
    for model in MODELS:
        for test in TEST:
            ref = truth[(truth.model == model) & (truth.test_group == test) & (truth.train_group == test)]
            ref = ref.set_index("seed").accuracy
            for train in TRAIN:
                if train == test:
                    continue
                cell = truth[(truth.model == model) & (truth.test_group == test) & (truth.train_group == train)]
                d = cell.set_index("seed").accuracy - ref
                row = diff.loc[(model, test, train)]
                assert row["n_pairs"] == len(SEEDS)
                assert row["mean_diff"] == pytest.approx(d.mean())
                half = stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))
                assert row["ci_low"] == pytest.approx(d.mean() - half)
                assert row["ci_high"] == pytest.approx(d.mean() + half)
                if train == "all":       # no planted difference
                    assert row["mean_diff"] == pytest.approx(0.002)
                    assert row["p_value"] > 0.05 and not row["significant"]
                    assert row["ci_low"] < 0 < row["ci_high"]
                else:                    # planted -0.10
                    assert row["p_value"] < 0.05 and row["p_holm"] < 0.05 and row["significant"]
                    assert row["ci_high"] < 0 and row["ci_low"] < -0.09 < row["ci_high"] + 0.02


def test_pairing_by_seed_matters():
    # the same shift in every seed, on top of a large seed effect: paired test significant, CI tight
    seed_effect = pd.Series([0.0, 0.05, -0.04, 0.02, 0.08], index=[0, 1, 2, 3, 4])
    x = 0.9 + seed_effect + pd.Series([0.001, -0.001, 0.0, 0.0015, -0.0005], index=seed_effect.index)
    y = 0.91 + seed_effect
    out = agg.paired_test(x, y)
    assert out["p_value"] < 0.001 and out["ci_high"] < 0
    assert stats.ttest_ind(x, y).pvalue > 0.5        # an unpaired test would not see it
    # pairs only on seeds present in both; fewer than 2 pairs is undefined, not 0
    one = agg.paired_test(x.loc[[0]], y.loc[[0, 1]])
    assert one["n_pairs"] == 1 and np.isnan(one["p_value"]) and np.isnan(one["ci_low"]) and "undefined" in one["note"]
    same = agg.paired_test(x, x - 0.01)
    assert np.isnan(same["p_value"]) and same["mean_diff"] == pytest.approx(0.01) and "identical" in same["note"]


def test_holm():
    p = pd.Series([0.01, 0.04, 0.03, np.nan])
    # sorted 0.01, 0.03, 0.04 -> 3*0.01, max(0.03, 2*0.03), max(0.06, 1*0.04)
    np.testing.assert_allclose(agg.holm(p).to_numpy(), [0.03, 0.06, 0.06, np.nan])


def test_row_spread_and_best_column(grid):
    res, truth = grid[0], grid[1]
    spread = agg.row_spread(res).set_index(["model", "train_group"])
    means = truth.groupby(["model", "train_group", "test_group"]).accuracy.mean()
    for model in MODELS:
        for train in TRAIN:
            row = means.loc[(model, train)]
            got = spread.loc[(model, train)]
            assert got["range"] == pytest.approx(row.max() - row.min())
            assert got["std_groups"] == pytest.approx(np.std(row.to_numpy(), ddof=0))
            assert got["skewed_error_ratio"] == pytest.approx((1 - row).max() / (1 - row).min())
            assert got["worst_test_group"] == row.idxmin() and got["n_seeds"] == len(SEEDS)
    best = agg.best_train_group(res).set_index(["model", "test_group"])
    for model in MODELS:
        for test in TEST:
            col = means.loc[model].xs(test, level="test_group")
            assert best.loc[(model, test), "best_train_group"] == col.idxmax()
            assert best.loc[(model, test), "best_train_group"] == "all"
            assert best.loc[(model, test), "runner_up"] == test
            assert best.loc[(model, test), "p_value"] > 0.05          # all vs same group: no real difference


def test_verification_aggregates(grid):
    res, ver, imp, rates = grid[0], grid[2], grid[3], grid[4]
    summary = agg.verification_summary(res).set_index("test_group")
    expected = ver.groupby("test_group").agg(eer_mean=("eer", "mean"), eer_std=("eer", "std"),
                                             f3=("fnmr_at_fmr_1e_3", "mean"), f3s=("fnmr_at_fmr_1e_3", "std"))
    assert list(summary.index) == TEST
    np.testing.assert_allclose(summary.loc[expected.index, "eer_mean"], expected["eer_mean"])
    np.testing.assert_allclose(summary.loc[expected.index, "eer_std"], expected["eer_std"])
    np.testing.assert_allclose(summary.loc[expected.index, "fnmr_at_fmr_1e_3_mean"], expected["f3"])
    np.testing.assert_allclose(summary.loc[expected.index, "fnmr_at_fmr_1e_3_std"], expected["f3s"])

    mat = agg.impostor_fmr_matrix(res)
    pivot = imp.pivot_table(index="group_a", columns="group_b", values="fmr", aggfunc="mean")
    assert list(mat.index)[:2] == ["caucasian_male", "caucasian_female"]
    pd.testing.assert_frame_equal(mat, pivot.loc[mat.index, mat.columns], check_names=False)

    fair = agg.fairness_summary(res).set_index("metric")
    per_seed = rates.groupby("seed").agg(
        max_min=("fmr", lambda x: x.max() / x.min()),
        fdr_fnmr=("fnmr", lambda x: x.max() - x.min()), fdr_fmr=("fmr", lambda x: x.max() - x.min()))
    assert fair.at["fmr_max_min", "mean"] == pytest.approx(per_seed["max_min"].mean())
    assert fair.at["fmr_max_min", "std"] == pytest.approx(per_seed["max_min"].std())
    fdr = 1 - 0.5 * per_seed["fdr_fmr"] - 0.5 * per_seed["fdr_fnmr"]
    assert fair.at["fdr", "mean"] == pytest.approx(fdr.mean())
    assert (fair["n_seeds"] == len(SEEDS)).all()


def test_incomplete_cells_and_job_status(tmp_path):
    truth, *_ = plant(tmp_path, skip={"cell-mlp-asian-3"}, fail={"cell-mlp-black-0", "cell-mlp-black-1"})
    res = load_results(tmp_path)
    st = agg.accuracy_stats(res).set_index(["model", "train_group", "test_group"])
    assert st.loc[("mlp", "asian", "black"), "n"] == 3 and st.loc[("mlp", "asian", "black"), "incomplete"]
    assert st.loc[("mlp", "black", "black"), "n"] == 2
    assert st.loc[("xgboost", "asian", "black"), "n"] == 4 and not st.loc[("xgboost", "asian", "black"),
                                                                         "incomplete"]
    exp = truth.groupby(["model", "train_group", "test_group"]).accuracy.agg(["mean", "std"])
    assert st.loc[("mlp", "asian", "black"), "mean"] == pytest.approx(exp.loc[("mlp", "asian", "black"), "mean"])
    assert agg.matrix_text(res, "mlp").at["asian", "black"].endswith("†")
    assert "mlp train=asian (every test group): 3 of 4 seeds" in agg.incomplete_cells(res)
    status = agg.job_status(res).set_index("job_id")
    assert status.at["cell-mlp-asian-3", "status"] == "missing"
    assert status.at["cell-mlp-black-0", "status"] == "failed"
    assert "RuntimeError: planted" in status.at["cell-mlp-black-0", "error"]
    cells = agg.missing_cells(res).set_index(["model", "train_group"])
    assert cells.at[("mlp", "black"), "failed_seeds"] == [0, 1]
    assert cells.at[("mlp", "asian"), "missing_seeds"] == [3]
    # the paired test uses the seeds both cells have
    diff = agg.paired_differences(res).set_index(["model", "test_group", "train_group"])
    assert diff.loc[("mlp", "black", "asian"), "n_pairs"] == 1      # black->black has seeds 2, 3; asian->black 0-2
    assert np.isnan(diff.loc[("mlp", "black", "asian"), "p_value"])


def test_rows_of_unfinished_or_unplanned_jobs_are_ignored(tmp_path):
    truth, *_ = plant(tmp_path)
    store = ResultStore(tmp_path)
    stray = truth.iloc[:3].assign(job_id="stray", accuracy=0.0)   # data files of a job without a ledger record
    store.write_table_rows("accuracy", "stray", stray)
    res = load_results(tmp_path)
    assert (res.tables["accuracy"]["job_id"] != "stray").all()
    assert any("ignored 3 row(s)" in note for note in res.notes)


def test_not_a_results_folder(tmp_path):
    with pytest.raises(InputError, match="no such results folder"):
        load_results(tmp_path / "nope")
    with pytest.raises(InputError, match="not a biasgrid results folder"):
        load_results(tmp_path)
    (tmp_path / "run.json").write_text("{not json")
    with pytest.raises(InputError, match="run.json"):
        load_results(tmp_path)


def test_empty_results_folder_gives_empty_frames(tmp_path):
    ResultStore(tmp_path).write_run({"config": {"grid": {"models": ["mlp"], "seeds": [0, 1],
                                                         "train_groups": ["asian"], "test_groups": ["asian"]}},
                                     "jobs": [{"job_id": "j0", "kind": "cell", "model": "mlp",
                                               "train_group": "asian", "seed": 0}]})
    res = load_results(tmp_path)
    summaries = agg.all_summaries(res)
    assert summaries["accuracy"]["n"].tolist() == [0]
    assert summaries["verification"].empty and summaries["fairness"].empty
    assert agg.job_status(res)["status"].tolist() == ["missing"]
    assert json.loads((tmp_path / "run.json").read_text())["jobs"][0]["job_id"] == "j0"
