"""The identity bootstrap against a direct resampling loop that builds each resampled data set explicitly."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import roc_curve

from grid.report import fairness
from storage.errors import InputError
from conftest import eer_from_roc
from tasks.stats import bootstrap
from tasks.stats.fairness import summary_values

NAMES = ["asian_female", "asian_male", "black_female"]


def data(seed=0, n_id=45):
    """Identities with 2-4 images; every genuine pair and every impostor pair of images, scored."""
    rng = np.random.default_rng(seed)
    per = rng.integers(2, 5, n_id)
    img_id = np.repeat(np.arange(n_id), per)
    group = np.arange(n_id) % 3
    quality = rng.normal(0, 0.3, n_id)
    i, j = np.triu_indices(len(img_id), 1)
    a, b = img_id[i], img_id[j]
    s = np.where(a == b, rng.normal(2.0, 1.0, a.size) + quality[a], rng.normal(0, 1, a.size) + 0.4 * (group[a] == 2))
    return np.round(s, 2), a, b, group


def direct_statistics(s, a, b, group, m, targets, global_target, pooled=None, stratum=None):
    """The statistics of the resample with multiplicities m, by materialising it: identity i is copied m_i times
    (copy c of i is a new identity), its genuine comparisons once per copy, impostor (i, j) once per copy pair.
    Impostors with ``pooled`` False are left out of the pooled numbers (threshold, EER, FNMR at FMR), those with
    ``stratum`` False out of the per-group ones."""
    pooled = np.ones(len(s), bool) if pooled is None else pooled
    stratum = np.ones(len(s), bool) if stratum is None else stratum
    gen, imp, strat, imp_pairs, gen_groups = [], [], [], [], []
    for x, y, v, in_pool, in_stratum in zip(a, b, s, pooled, stratum):
        if x == y:
            gen += [v] * m[x]
            gen_groups += [group[x]] * m[x]
        else:
            imp += [v] * int(m[x] * m[y] * in_pool)
            strat += [v] * int(m[x] * m[y] * in_stratum)
            imp_pairs += [(group[x], group[y])] * int(m[x] * m[y] * in_stratum)
    gen, imp, strat, gen_groups = np.array(gen), np.array(imp), np.array(strat), np.array(gen_groups)
    labels = np.r_[np.ones(gen.size), np.zeros(imp.size)]
    fpr, tpr, thr = roc_curve(labels, np.r_[gen, imp], drop_intermediate=False)
    out = {("eer", "all", "", np.nan, ""): eer_from_roc(fpr, 1 - tpr, thr)[0]}

    def threshold(x, target):  # the convention, by a loop: smallest impostor score with FMR <= target
        ok = [t for t in np.unique(x) if (x >= t).sum() * 10**9 <= round(target * 10**9) * x.size]
        return min(ok) if ok else np.nextafter(x.max(), np.inf)

    for t in targets:
        out[("fnmr_at_fmr", "all", "", t, "")] = (gen < threshold(imp, t)).mean()
    t = threshold(imp, global_target)
    pa = np.array([min(p) for p in imp_pairs])
    pb = np.array([max(p) for p in imp_pairs])
    fmr, fnmr = [], []
    for g, name in enumerate(NAMES):
        sel = (pa == g) & (pb == g)
        fmr.append((strat[sel] >= t).mean())
        fnmr.append((gen[gen_groups == g] < t).mean())
        out[("group_fmr", name, "", global_target, "")] = fmr[-1]
        out[("group_fnmr", name, "", global_target, "")] = fnmr[-1]
    for g in range(3):
        for h in range(g + 1, 3):
            sel = (pa == g) & (pb == h)
            out[("cross_fmr", NAMES[g], NAMES[h], global_target, "")] = (strat[sel] >= t).mean()
    for _, row in fairness.summaries(fmr, fnmr).iterrows():
        out[("summary", "", "", global_target, row["metric"])] = row["value"]
    return out


def test_multiplicities_are_stratified_draws():
    group = np.array([0, 1, 0, 2, 1, 0, 0])
    m = bootstrap.identity_multiplicities(group, 2000, seed=5)
    assert m.shape == (2000, 7) and m.dtype == np.int32
    for g in range(3):
        assert (m[:, group == g].sum(axis=1) == (group == g).sum()).all()
    assert m.mean(axis=0) == pytest.approx(np.ones(7), abs=0.08)
    assert np.array_equal(m, bootstrap.identity_multiplicities(group, 2000, seed=5))
    # replicate the documented draw order
    rng = np.random.default_rng(5)
    first = np.zeros(7, int)
    for g in range(3):
        mem = np.flatnonzero(group == g)
        np.add.at(first, mem[rng.integers(0, mem.size, mem.size)], 1)
    assert np.array_equal(m[0], first)


@pytest.mark.parametrize("prefix", ["chosen", "too short"])
def test_each_resample_equals_the_materialised_resample(prefix):
    s, a, b, group = data()
    targets, gt = (0.05, 0.01, 1e-7), 0.01            # 1e-7: no impostor may be accepted
    st = bootstrap.VerificationStatistics(s, a, b, group, NAMES, targets, gt, fairness.summaries)
    mult = bootstrap.identity_multiplicities(group, 6, seed=1)
    assert 0 < st.prefix <= st.n
    if prefix == "too short":       # every resample then needs the comparisons beyond the prefix
        st.prefix = 50
        for m in mult:
            with pytest.raises(bootstrap._Deeper):
                st._evaluate(m, st.prefix)
    keys, reps = st.replicates(mult)
    for r in range(len(mult)):
        assert_same(keys, reps[r], direct_statistics(s, a, b, group, mult[r], targets, gt))


def assert_same(keys, values, direct):
    """Every statistic of ``direct`` equals the one with the same key (NaN target FMRs match) to 1e-12."""
    got = dict(zip(keys, values))
    assert len(got) == len(direct)
    for key, value in direct.items():
        k = next(x for x in got if x[:3] == key[:3] and x[4] == key[4] and
                 (x[3] == key[3] or (np.isnan(x[3]) and np.isnan(key[3]))))
        if np.isnan(value):
            assert np.isnan(got[k]), key
        else:
            assert got[k] == pytest.approx(value, abs=1e-12), key


def test_pooled_and_per_group_impostors_of_a_stratified_sample():
    """Some impostor pairs count only for the pooled numbers, some only for their pair of groups (a topped-up
    stratified sample, tasks.stats.scoring.stratify): each resample equals the materialised one."""
    s, a, b, group = data(seed=3)
    rng = np.random.default_rng(7)
    pair_role = rng.integers(0, 3, (len(group), len(group)))          # 0: both, 1: pooled only, 2: stratum only
    role = np.where(a == b, 0, pair_role[np.minimum(a, b), np.maximum(a, b)])
    pooled, stratum = role != 2, role != 1
    targets, gt = (0.05, 0.01), 0.01
    st = bootstrap.VerificationStatistics(s, a, b, group, NAMES, targets, gt, fairness.summaries, pooled, stratum)
    mult = np.vstack([np.ones(len(group), np.int32), bootstrap.identity_multiplicities(group, 4, seed=2)])
    keys, reps = st.replicates(mult)
    for r in range(len(mult)):
        assert_same(keys, reps[r], direct_statistics(s, a, b, group, mult[r], targets, gt, pooled, stratum))
    plain = bootstrap.VerificationStatistics(s, a, b, group, NAMES, targets, gt, fairness.summaries)
    assert not np.allclose(plain.evaluate(None)[1], reps[0], equal_nan=True)   # the masks change the numbers


def test_interval_is_the_percentile_of_a_direct_loop():
    s, a, b, group = data(seed=2, n_id=30)
    out = bootstrap.bootstrap_verification(s, a, b, group, NAMES, target_fmrs=(0.05,), global_target_fmr=0.02,
                                           n_resamples=40, seed=3, summarize=fairness.summaries)
    assert list(out.columns) == bootstrap.COLUMNS
    mult = bootstrap.identity_multiplicities(group, 40, seed=3)
    direct = [direct_statistics(s, a, b, group, m, (0.05,), 0.02) for m in mult]
    eer = np.array([next(v for k, v in d.items() if k[0] == "eer") for d in direct])
    row = out[out.quantity == "eer"].iloc[0]
    assert row.ci_low == pytest.approx(np.quantile(eer, 0.025))
    assert row.ci_high == pytest.approx(np.quantile(eer, 0.975))
    assert row.n_defined == 40 and row.ci_low <= row.estimate <= row.ci_high
    fnmr = np.array([d[("group_fnmr", "black_female", "", 0.02, "")] for d in direct])
    row = out[(out.quantity == "group_fnmr") & (out.group_a == "black_female")].iloc[0]
    assert row.ci_high == pytest.approx(np.quantile(fnmr, 0.975))
    assert row.k >= 0 and row.n > 0 and row.estimate == pytest.approx(row.k / row.n)
    ci = stats.binomtest(int(row.k), int(row.n)).proportion_ci(method="exact")
    assert row.cp_low == pytest.approx(ci.low, abs=1e-12) and row.cp_high == pytest.approx(ci.high)
    assert np.isnan(out[out.quantity == "eer"].cp_low.iloc[0])
    # summaries: the intervals skip resamples where the summary is undefined, and say so
    summ = out[out.quantity == "summary"].set_index("metric")
    ser = np.array([d[("summary", "", "", 0.02, "fmr_max_min")] for d in direct])
    assert summ.loc["fmr_max_min", "n_defined"] == (~np.isnan(ser)).sum()
    if np.isnan(ser).any():
        assert "undefined in" in summ.loc["fmr_max_min", "note"]


def test_a_single_identity_per_group_resample_is_the_data():
    # one identity per group: every resample draws the same identities, so the interval is the point
    s, a, b, group = data(seed=4, n_id=3)
    out = bootstrap.bootstrap_verification(s, a, b, group, NAMES, target_fmrs=(0.1,), global_target_fmr=0.1,
                                           n_resamples=5, seed=0)
    ok = out.dropna(subset=["estimate"])
    assert np.allclose(ok.ci_low, ok.estimate) and np.allclose(ok.ci_high, ok.estimate)


def test_bad_input():
    with pytest.raises(InputError):
        bootstrap.identity_multiplicities(np.array([0, 1]), 0)
    with pytest.raises(InputError):
        bootstrap.VerificationStatistics(np.zeros(2), np.array([0, 5]), np.array([1, 1]), np.array([0, 1]), NAMES)


def test_wiring_from_a_scores_job_agrees_with_the_impostor_matrix_job():
    """The documented wiring (docs/REPORT.md, "API for wiring"): the scores job's pairs -> point estimates equal to
    the impostor-matrix job's demographic rates and matrix (one threshold convention everywhere)."""
    from tasks.stats import rates
    from tasks.kinds.impostor import impostor_matrix
    from tasks.stats.scoring import score_pairs

    rng = np.random.default_rng(8)
    n_id, per, d = 60, 3, 32
    codes = np.repeat(np.arange(n_id), per)
    X = np.abs(rng.normal(size=(n_id, d))[codes] + 0.9 * rng.normal(size=(len(codes), d))).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    id_group = np.arange(n_id) % 3
    group_names = np.array(NAMES)
    row_group = group_names[id_group[codes]].astype(object)
    rows = np.arange(len(codes))
    job = impostor_matrix(X, codes, row_group, rows, seed=0, target_fmr=0.01)
    sc = score_pairs(X, codes, rows, seed=0, max_impostor_pairs=10**7, what="test")
    c = codes[rows]
    ci = bootstrap.bootstrap_verification(np.r_[sc.gen, sc.imp], c[np.r_[sc.gen_a, sc.imp_a]],
                                          c[np.r_[sc.gen_b, sc.imp_b]], id_group, NAMES, target_fmrs=(0.01,),
                                          global_target_fmr=0.01, n_resamples=20, seed=0,
                                          summarize=fairness.summaries)
    ops = rates.group_operating_points(sc.gen, row_group[sc.gen_a], sc.imp, row_group[sc.imp_a],
                                       row_group[sc.imp_b], target_fmrs=(0.01,), global_target_fmr=0.01)
    dem = job["demographic_rates"].set_index("group")
    glob = ops["operating_points"].query("threshold_kind == 'global'").set_index("group")
    for name in NAMES:
        assert glob.loc[name, "threshold"] == pytest.approx(dem.loc[name, "threshold"])
        assert glob.loc[name, "fmr"] == pytest.approx(dem.loc[name, "fmr"])
        assert glob.loc[name, "fnmr"] == pytest.approx(dem.loc[name, "fnmr"])
        row = ci[(ci.quantity == "group_fmr") & (ci.group_a == name)].iloc[0]
        assert row.estimate == pytest.approx(dem.loc[name, "fmr"]) and row.n == dem.loc[name, "n_impostor"]
        row = ci[(ci.quantity == "group_fnmr") & (ci.group_a == name)].iloc[0]
        assert row.estimate == pytest.approx(dem.loc[name, "fnmr"]) and row.n == dem.loc[name, "n_genuine"]
    m = job["impostor_matrix"].set_index(["group_a", "group_b"])
    for _, row in ci[ci.quantity == "cross_fmr"].iterrows():
        assert row.estimate == pytest.approx(m.loc[(row.group_a, row.group_b), "fmr"])


def _roles(group, a, b, seed=7):
    """Pooled and stratum masks of a topped-up stratified sample (see the test above)."""
    pair_role = np.random.default_rng(seed).integers(0, 3, (len(group), len(group)))
    role = np.where(a == b, 0, pair_role[np.minimum(a, b), np.maximum(a, b)])
    return role != 2, role != 1


# name: (data seed, identities, stratified masks, class settings, resamples)
BATCH_CASES = {
    "ties": (0, 45, False, {}, 12),
    "distinct scores, several blocks": (1, 60, False, {"block_bytes": 1}, 9),
    "one identity per group": (4, 3, False, {}, 5),
    "two identities per group": (5, 6, False, {}, 8),
    "stratified masks": (3, 45, True, {}, 10),
    "sparse totals, float64 products": (2, 40, True, {"dense_identities": 0, "float32_below": 0}, 8),
    "prefix too short": (6, 45, False, {"deeper": 10 ** 9}, 6),
    "prefix too short, deeper prefixes": (6, 45, False, {}, 6),
}


@pytest.mark.parametrize("case", list(BATCH_CASES))
def test_batched_equals_one_at_a_time(case, monkeypatch):
    """BatchedVerificationStatistics (what bootstrap_verification uses) gives the one-resample-at-a-time values
    to 1e-12, NaNs in the same places, the point estimate's counts equal, the same intervals for the same seed."""
    seed, n_id, masks, settings, R = BATCH_CASES[case]
    s, a, b, group = data(seed, n_id)
    if case == "distinct scores, several blocks":
        s = s + np.random.default_rng(seed).normal(0, 1e-3, s.size)
    pooled, stratum = _roles(group, a, b) if masks else (None, None)
    for name, value in settings.items():
        monkeypatch.setattr(bootstrap.BatchedVerificationStatistics, name, value)
    targets, gt = (0.05, 0.01, 1e-7), 0.01
    args = (s, a, b, group, NAMES, targets, gt, fairness.summaries, pooled, stratum)
    old = bootstrap.VerificationStatistics(*args)     # summaries as a table; the jobs' mapping in the batched form
    new = bootstrap.BatchedVerificationStatistics(*args[:7], summary_values, *args[8:])
    levels = []                                      # the prefix lengths the resamples were evaluated on
    if case.startswith("prefix too short"):          # every resample then reads deeper comparisons
        new.prefix = new._level(50)
        assert new.prefix.partial
        block = new._block
        monkeypatch.setattr(new, "_block", lambda M, level, reads=None: levels.append(level.L) or
                            block(M, level, reads))
    if settings.get("block_bytes") == 1:
        assert new._rows_per_block(new.prefix) == 1
    if case == "ties":                               # running sums read across several chunks
        assert new.prefix.pA.size > 2 * bootstrap._Running.CHUNK
    if settings.get("dense_identities") == 0:
        assert not isinstance(new.stratum_blocks[0][2], np.ndarray)
        assert all(blk.dtype == np.float64 for *_, blk in new.stratum_blocks + new.pooled_blocks)
    assert (new.pooled_blocks is new.stratum_blocks) == (not masks)
    mult = bootstrap.identity_multiplicities(group, R, seed=seed)
    heavy = mult[:2].copy()
    heavy[0, 0], heavy[1, 1] = 200, 15               # weights beyond int16 and int8 products
    mult = np.vstack([mult, heavy, np.ones_like(heavy[:1])])
    keys, want = old.replicates(mult)
    got_keys, got = new.replicates(mult)
    assert got_keys == keys and got.shape == want.shape
    assert np.array_equal(np.isnan(got), np.isnan(want))
    ok = ~np.isnan(want)
    assert np.abs(got[ok] - want[ok]).max() <= 1e-12
    point_old, point_new = old.evaluate(None), new.evaluate(None)
    assert point_new[0] == point_old[0]
    assert np.array_equal(point_new[2], point_old[2]) and np.array_equal(point_new[3], point_old[3])
    assert np.allclose(point_new[1], point_old[1], rtol=0, atol=1e-12, equal_nan=True)
    if case == "prefix too short":
        assert new._full is not None                 # the exact fallback ran, straight after the prefix
        assert sorted(set(levels)) == [new.prefix.L, new.n]
    if case == "prefix too short, deeper prefixes":  # prefixes twice as deep, each time for the rows left
        depths = sorted(set(levels))
        assert len(depths) >= 3 and all(b >= 2 * a for a, b in zip(depths, depths[1:]))
    if case.startswith("prefix too short"):
        assert np.allclose(point_new[1], want[-1], rtol=0, atol=1e-12, equal_nan=True)
    intervals = bootstrap.run(new, group, R, seed)
    reference = bootstrap.run(old, group, R, seed)
    num = ["estimate", "ci_low", "ci_high", "cp_low", "cp_high"]
    assert np.allclose(intervals[num].to_numpy(float), reference[num].to_numpy(float), rtol=0, atol=1e-12,
                       equal_nan=True)
    assert intervals.drop(columns=num).equals(reference.drop(columns=num))
