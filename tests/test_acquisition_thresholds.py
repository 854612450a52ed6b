"""Issue 18, items 4-6: failure to acquire (FTA) and the generalised rates, thresholds chosen on development
identities, d' and WERM — each against an independent computation on small data (direct counts, brute-force
float64 scores, statsmodels' Clopper-Pearson, the formulas written out here)."""

from __future__ import annotations

import math
import statistics

import numpy as np
import pandas as pd
import pytest
from statsmodels.stats.proportion import proportion_confint
from test_verification_wiring import accepted, convention_threshold

from grid import experiment
from grid.config import resolve_config
from grid.plan import make_plan
from grid.report import load_results, stats
from grid.report.document import report_files
from grid.report.sections.acquisition import acquisition_rates_summary, acquisition_summary
from grid.report.sections.calibration import threshold_calibration
from grid.runner import load_data, run_grid, shared_arrays
from grid.splits import Protocol, make_split
from storage.errors import InputError
from storage.results import load
from storage.synth import SynthParams, generate
from storage.vocab import GENDERS
from tasks.kinds import impostor
from tasks.stats import acquisition, dev_eval, fairness, rates

# Under xdist this module's tests run on one worker: its module fixture (grid) is built once.
pytestmark = pytest.mark.xdist_group("acquisition_thresholds")


# ------------------------------------------------------------------------------------------- the formulas ---
def demographic_names(table, rows: np.ndarray) -> np.ndarray:
    """Each row's "<ethnicity>_<gender>" name, built directly from the table's codes (the default groups)."""
    return np.asarray([f"{table.ethnicities[e]}_{GENDERS[g]}" for e, g in
                       zip(table.ethnicity[rows], table.gender[rows])], dtype=str)


def test_werm_is_the_papers_weighted_product_of_max_geomean_ratios():
    fmr, fnmr = np.array([1e-3, 4e-3, 0.0]), np.array([0.02, 0.05, 0.08])
    eps = 1e-5      # Linghu et al. (IJCB 2024), compute_werm_geo: eps inside the geometric means, exponents 0.5
    geo_fmr = (np.prod(fmr + eps)) ** (1 / 3)
    geo_fnmr = (np.prod(fnmr + eps)) ** (1 / 3)
    expected = math.sqrt(4e-3 / geo_fmr) * math.sqrt(0.08 / geo_fnmr)
    value, note = fairness.werm(fmr, fnmr)
    assert value == pytest.approx(expected, rel=1e-12) and note == ""
    assert fairness.werm(fmr, fnmr, alpha=1.0, beta=0.0)[0] == pytest.approx(4e-3 / geo_fmr, rel=1e-12)
    assert fairness.werm([0.01, 0.01], [0.1, 0.1])[0] == pytest.approx(math.sqrt(0.01 / 0.01001 * 0.1 / 0.10001),
                                                                           rel=1e-12)
    value, note = fairness.werm([0.0, 0.0], [0.1, 0.2])           # the product would be 0: undefined instead
    assert math.isnan(value) and "every FMR is 0" in note
    table = fairness.summaries(fmr, fnmr).set_index("metric")
    assert table.loc["werm", "value"] == pytest.approx(expected) and table.loc["werm", "defined"]


def test_decidability_is_daugmans_d_prime():
    rng = np.random.default_rng(5)
    gen, imp = rng.normal(0.6, 0.1, 50), rng.normal(0.1, 0.2, 80)
    expected = abs(statistics.fmean(gen) - statistics.fmean(imp)) / math.sqrt(
        (statistics.pvariance(gen) + statistics.pvariance(imp)) / 2)
    assert rates.decidability(gen, imp) == pytest.approx(expected, rel=1e-12)
    values, counts = np.array([0.2, 0.5, 0.9]), np.array([3, 0, 2])            # weights = repeated scores
    assert rates.decidability(values, imp, w_gen=counts) == pytest.approx(
        rates.decidability(np.repeat(values, counts), imp), rel=1e-12)
    assert math.isnan(rates.decidability([], imp)) and math.isnan(rates.decidability([0.5, 0.5], [0.1, 0.1]))


def test_fta_and_generalised_rates_equal_a_direct_count():
    rng = np.random.default_rng(11)
    names = np.array(["a_female", "a_male", "b_female"])
    row_group, acquired = names[rng.integers(0, 3, 400)], rng.random(400) > 0.15
    fta = acquisition.fta_table(row_group, acquired, list(names)).set_index("group")
    for g in names:
        n, k = int((row_group == g).sum()), int(((row_group == g) & ~acquired).sum())
        lo, hi = proportion_confint(k, n, alpha=0.05, method="beta")
        assert (fta.loc[g, "n_images"], fta.loc[g, "failed"]) == (n, k) and fta.loc[g, "fta"] == k / n
        assert (fta.loc[g, "fta_ci_low"], fta.loc[g, "fta_ci_high"]) == pytest.approx((lo, hi), abs=1e-12)

    gen, imp = rng.random(300), rng.random(900) * 0.7
    gg, ia, ib = names[rng.integers(0, 3, 300)], names[rng.integers(0, 3, 900)], names[rng.integers(0, 3, 900)]
    gok, iok = rng.random(300) > 0.2, rng.random(900) > 0.2
    t = 0.45
    out = acquisition.acquisition_rates(gen, gg, gok, imp, ia, ib, iok, t, list(names)).set_index(["group", "view"])
    for g in names:
        fm_ex = fnm_ex = n_imp_ex = n_gen_ex = fm_gen = fnm_gen = n_imp = n_gen = 0
        for s, grp, ok in zip(gen, gg, gok):          # a plain loop over the comparisons
            if grp != g:
                continue
            n_gen += 1
            fnm_gen += (not ok) or s < t
            if ok:
                n_gen_ex += 1
                fnm_ex += s < t
        for s, a, b, ok in zip(imp, ia, ib, iok):
            if a != g or b != g:
                continue
            n_imp += 1
            fm_gen += ok and s >= t                   # a failed image is a non-match: never a false match
            if ok:
                n_imp_ex += 1
                fm_ex += s >= t
        ex, ge = out.loc[(g, "excluded")], out.loc[(g, "generalised")]
        assert (ex.false_matches, ex.n_impostor, ex.false_non_matches, ex.n_genuine) == (fm_ex, n_imp_ex, fnm_ex,
                                                                                         n_gen_ex)
        assert (ge.false_matches, ge.n_impostor, ge.false_non_matches, ge.n_genuine) == (fm_gen, n_imp, fnm_gen,
                                                                                         n_gen)
        lo, hi = proportion_confint(fnm_gen, n_gen, alpha=0.05, method="beta")
        assert ge.fnmr == fnm_gen / n_gen and (ge.fnmr_ci_low, ge.fnmr_ci_high) == pytest.approx((lo, hi), abs=1e-12)


def test_dev_split_is_seeded_identity_disjoint_and_stratified():
    identity = np.repeat(np.arange(30), 3)
    group = np.where(identity < 10, "x_male", np.where(identity < 22, "x_female", "y_male"))
    dev = dev_eval.development(identity, group, 0.5, seed=7)
    assert np.array_equal(dev, dev_eval.development(identity, group, 0.5, seed=7))
    assert not np.array_equal(dev, dev_eval.development(identity, group, 0.5, seed=8))
    for ident in range(30):                                             # an identity lies in one part only
        assert len(set(dev[identity == ident])) == 1
    for g, n in (("x_male", 10), ("x_female", 12), ("y_male", 8)):      # half of each group's identities
        assert len(np.unique(identity[dev & (group == g)])) == round(0.5 * n)
    # a group's draw depends only on the seed and its own name, not on the other groups
    alone = dev_eval.development(identity[group == "y_male"], group[group == "y_male"], 0.5, seed=7)
    assert np.array_equal(alone, dev[group == "y_male"])
    assert len(np.unique(identity[dev_eval.development(identity, group, 0.01, 7)])) == 3 * 2   # at least 2 each
    with pytest.raises(InputError, match="y_male has 3 test identities"):
        dev_eval.development(identity[identity < 25], group[identity < 25], 0.5, seed=1)


# ---------------------------------------------------------------------- the default's numbers are unchanged ---
# the impostor and scores jobs' ids of the default config (fixed fingerprint), pinned before issue 18: the same
# parameters, so the same numbers, and results folders written before resume without recomputing
PINNED = {("impostor", 0): "bbb589e21a79482b467b", ("impostor", 1): "cd3e5a5b0e9b9412083b",
          ("scores", 0, "asian"): "d2369bb98a8a8b3c684b", ("scores", 1, "black"): "13171ce48c52892224d0"}


def test_default_config_plans_the_same_jobs_as_before():
    cfg = resolve_config(None, {"grid.seeds": "2"})
    assert cfg["verification"]["threshold_split"] == "test"
    cfg["grid"]["test_groups"] = ["asian", "caucasian", "black"]
    cfg["grid"]["train_groups"] = ["asian", "caucasian", "black", "all"]
    ids = {(j.kind, j.seed, *([j.params["test_group"]] if j.kind == "scores" else [])): j.job_id
           for j in make_plan(cfg, "fixed-fingerprint") if j.kind in ("impostor", "scores")}
    assert {k: ids[k] for k in PINNED} == PINNED
    stored = experiment.fixed_part(cfg, "fp")           # a folder written before the new keys existed
    for key in ("threshold_split", "dev_fraction"):
        del stored["verification"][key]
    assert experiment.merge_fixed(stored, experiment.fixed_part(cfg, "fp"), "out")["verification"] == \
        experiment.fixed_part(cfg, "fp")["verification"]
    cfg["verification"]["threshold_split"] = "dev"
    with pytest.raises(InputError, match="threshold_split: stored 'test', new 'dev'"):
        experiment.merge_fixed(stored, experiment.fixed_part(cfg, "fp"), "out")


def small_job(fta: float = 0.0, **params):
    """An impostor-matrix job's payload and data on a small synthetic table (every pair scored)."""
    table = generate(SynthParams(identities_per_group=14, dim=16, fta=(fta, 0.0, fta)))
    split = make_split(table, 2, Protocol(4, 8))
    rows = np.concatenate(list(split.verification.values()))
    p = {"target_fmr": 1e-2, "max_impostor_pairs": 10**6, "target_fmrs": [1e-1, 1e-2], "bootstrap": 0,
         "sampling": "stratified", **params}
    return table, rows, {"params": p, "seed": 2, "rows": rows}, shared_arrays(table)


def test_every_face_detected_changes_no_number():
    table, rows, payload, data = small_job()
    assert table.face_detected is None and "face_detected" not in data
    plain = impostor.run(payload, data)
    assert "acquisition" not in plain and "acquisition_rates" not in plain
    data["face_detected"] = np.ones(len(table), bool)
    marked = impostor.run(payload, data)
    for name, frame in plain.items():
        pd.testing.assert_frame_equal(frame, marked[name])
    assert (marked["acquisition"]["failed"] == 0).all()
    dr = plain["demographic_rates"].set_index("group")
    for view, part in marked["acquisition_rates"].groupby("view"):
        part = part.set_index("group")
        for col in ("false_matches", "n_impostor", "false_non_matches", "n_genuine"):
            assert part[col].equals(dr.loc[part.index, col]), (view, col)


# ------------------------------------------------------------------------------------------- through a grid ---
GRID = """
[data.synth]
identities_per_group = 40
dim = 24
fta = {asian = 0.25, black = 0.1}
[grid]
seeds = [4]
models = ["logreg"]
train_groups = ["asian"]
[protocol]
train_per_gender = 6
test_per_gender = 12
[verification]
max_impostor_pairs = 1000000
target_fmr = 1e-2
target_fmrs = [1e-1, 1e-2]
bootstrap = 20
threshold_split = "dev"
dev_fraction = 0.4
[tsne]
enabled = false
[run]
executor = "local"
workers = 1
report = false
"""
SEED = 4


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fta_dev")
    (tmp / "grid.toml").write_text(GRID)
    cfg = resolve_config(tmp / "grid.toml", {"run.out": str(tmp / "r")})
    table = load_data(cfg["data"])
    summary = run_grid(cfg, progress=False)
    assert summary.exit_code == 0 and summary.failed == []
    split = make_split(table, SEED, Protocol(6, 12), table.present_ethnicities())
    rows = np.concatenate([split.verification[g] for g in table.present_ethnicities()])
    return table, rows, load(tmp / "r"), tmp / "r"


def brute_pairs(table, rows):
    """Every pair of ``rows`` scored in float64: (score, genuine, group a, group b, acquired both)."""
    X = np.asarray(table.embeddings[rows], dtype=np.float64)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    i, j = np.triu_indices(len(rows), 1)
    ident = table.identity_codes()[rows]
    group = demographic_names(table, rows)
    ok = table.face_detected[rows]
    return (X @ X.T)[i, j], ident[i] == ident[j], group[i], group[j], ok[i] & ok[j]


def test_synthetic_failures_are_marked_per_ethnicity(grid):
    table, _, _, _ = grid
    failed = ~table.face_detected
    e = np.asarray(table.ethnicities)[table.ethnicity]
    assert not failed[e == "caucasian"].any()
    assert 0.18 < failed[e == "asian"].mean() < 0.32 and 0.05 < failed[e == "black"].mean() < 0.16
    same = generate(SynthParams(identities_per_group=40, dim=24))            # the embeddings do not change
    assert np.array_equal(same.embeddings, table.embeddings) and same.face_detected is None
    assert same.fingerprint() != table.fingerprint()


def test_fta_counts_the_test_images_of_each_group(grid):
    table, rows, tables, _ = grid
    group = demographic_names(table, rows)
    acq = tables["acquisition"].set_index("group")
    assert set(acq.index) == set(group) and (acq["seed"] == SEED).all()
    for g, r in acq.iterrows():
        n, k = int((group == g).sum()), int(((group == g) & ~table.face_detected[rows]).sum())
        assert (r.n_images, r.failed) == (n, k)
        lo, hi = proportion_confint(k, n, alpha=0.05, method="beta")
        assert (r.fta_ci_low, r.fta_ci_high) == pytest.approx((lo, hi), abs=1e-12)


def test_dev_thresholds_and_eval_rates_equal_a_direct_computation(grid):
    table, rows, tables, _ = grid
    codes = table.identity_codes()[rows]
    group = demographic_names(table, rows)
    dev = dev_eval.development(codes, group, 0.4, SEED)          # the same seeded split the job drew
    s_d, gen_d, ga_d, gb_d, _ = brute_pairs(table, rows[dev])
    s_e, gen_e, ga_e, gb_e, ok_e = brute_pairs(table, rows[~dev])
    t_global = convention_threshold(s_d[~gen_d], 1e-2)
    dr = tables["demographic_rates"].set_index("group")
    assert dr["threshold"].to_numpy() == pytest.approx(t_global, abs=1e-5)
    for g, r in dr.iterrows():     # measured on the evaluation identities only
        imp, gen = ~gen_e & (ga_e == g) & (gb_e == g), gen_e & (ga_e == g)
        assert (r.n_impostor, r.n_genuine) == (imp.sum(), gen.sum())
        assert r.false_matches in accepted(s_e[imp], t_global)
        assert r.n_genuine - r.false_non_matches in accepted(s_e[gen], t_global)
    ops = tables["operating_points"]
    for r in ops[ops["threshold_kind"] == "own"].itertuples():
        dimp = ~gen_d if r.group == "all" else ~gen_d & (ga_d == r.group) & (gb_d == r.group)
        eimp = ~gen_e if r.group == "all" else ~gen_e & (ga_e == r.group) & (gb_e == r.group)
        t = convention_threshold(s_d[dimp], r.target_fmr)        # chosen on development ...
        if np.isfinite(t):
            assert r.threshold == pytest.approx(t, abs=1e-5)
        else:
            assert r.threshold > s_d[dimp].max()
        assert r.n_impostor == eimp.sum() and r.false_matches in accepted(s_e[eimp], r.threshold)   # ... applied
    assert "verification_ci" not in tables or tables["verification_ci"].empty    # no bootstrap with a dev split
    # the acquisition views at the same (development) threshold, over the evaluation comparisons
    ar = tables["acquisition_rates"].set_index(["group", "view"])
    for g in dr.index:
        imp, gen = ~gen_e & (ga_e == g) & (gb_e == g), gen_e & (ga_e == g)
        ge = ar.loc[(g, "generalised")]
        assert (ge.n_impostor, ge.n_genuine) == (imp.sum(), gen.sum())
        assert ge.false_matches in accepted(s_e[imp & ok_e], t_global)
        assert ge.n_genuine - ge.false_non_matches in accepted(s_e[gen & ok_e], t_global)   # failed: non-matches
        ex = ar.loc[(g, "excluded")]
        assert (ex.n_impostor, ex.n_genuine, ex.false_matches) == ((imp & ok_e).sum(), (gen & ok_e).sum(),
                                                                   ge.false_matches)


def test_report_shows_fta_calibration_d_prime_and_werm(grid):
    table, rows, tables, path = grid
    res = load_results(path)
    cal = threshold_calibration(res)
    ops = tables["operating_points"].set_index(["group", "threshold_kind", "target_fmr"])
    assert len(cal) == len(ops)
    for r in cal.itertuples():
        op = ops.loc[(r.group, r.threshold_kind, r.intended_fmr)]
        assert r.fmr_mean == op.fmr and r.ratio_mean == pytest.approx(op.fmr / r.intended_fmr)
        lo, hi = proportion_confint(int(op.false_matches), int(op.n_impostor), alpha=0.05, method="beta")
        assert (r.ratio_ci_low, r.ratio_ci_high) == pytest.approx((lo / r.intended_fmr, hi / r.intended_fmr))
    fta = acquisition_summary(res).set_index("group")
    assert fta["fta_mean"].to_dict() == pytest.approx(tables["acquisition"].set_index("group")["fta"].to_dict())
    views = acquisition_rates_summary(res)
    assert set(views["view"]) == {"scored", "excluded", "generalised"}
    werm = stats.fairness_summary(res).set_index("metric").loc["werm", "mean"]
    dr = tables["demographic_rates"]
    assert werm == pytest.approx(fairness.werm(dr["fmr"], dr["fnmr"])[0])
    s, gen, ga, gb, _ = brute_pairs(table, rows[~dev_eval.development(
        table.identity_codes()[rows], demographic_names(table, rows), 0.4, SEED)])
    eer = tables["group_eer"].set_index("group")
    g = "asian_female"
    assert eer.loc[g, "d_prime"] == pytest.approx(rates.decidability(s[gen & (ga == g)],
                                                                     s[~gen & (ga == g) & (gb == g)]), rel=1e-5)
    text = report_files(res)["report.md"].decode()
    for heading in ("Failure to acquire", "intended and achieved FMR", "decidability d'", "WERM"):
        assert heading in text


def test_bad_threshold_split_keys_are_refused_naming_the_key(tmp_path):
    for text, message in (('[verification]\nthreshold_split = "eval"',
                           "'verification.threshold_split' must be one of test, dev, got 'eval'"),
                          ("[verification]\ndev_fraction = 1.0", "'verification.dev_fraction' must be between 0 and 1"),
                          ("[data.synth]\nfta = {asian = 1.5}", "'fta' must be probabilities from 0 to 1")):
        (tmp_path / "c.toml").write_text(text)
        with pytest.raises(InputError, match=message):
            resolve_config(tmp_path / "c.toml")
