"""Verification scores: pairs, planted EERs, an independent brute-force EER, sampling, the impostor matrix."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from storage.errors import InputError
from tasks.stats import bootstrap
from tasks.kinds.impostor import impostor_matrix
from tasks.kinds.scores import HIST_EDGES, score_group
from tasks.stats.rates import threshold_at_fmr
from tasks.stats.scoring import (THRESHOLDS, genuine_pairs, pair_scores, row_norms, sample_impostor_pairs,
                                 sample_stratum, score_pairs, stratify, stratum_sizes)


def unit(X: np.ndarray) -> np.ndarray:
    return (X / np.linalg.norm(X, axis=1, keepdims=True)).astype(np.float32)


def faces(identities: int, per_identity: int, d: int = 64, spread: float = 1.0, seed: int = 0,
          offset: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Non-negative, L2-normalised images: each identity a random centre, its images the centre plus noise of
    size ``spread`` (large spread: identity does not matter; tiny spread: images of an identity coincide)."""
    rng = np.random.default_rng(seed)
    codes = np.repeat(np.arange(identities), per_identity) + offset
    centres = rng.normal(size=(identities, d))
    X = np.abs(centres[codes - offset] + spread * rng.normal(size=(len(codes), d)))
    return unit(X), codes


def brute_scores(X, codes):
    """Every pair's cosine, by a double loop: (genuine scores, impostor scores)."""
    gen, imp = [], []
    for i, j in itertools.combinations(range(len(X)), 2):
        s = float(X[i] @ X[j] / np.linalg.norm(X[i]) / np.linalg.norm(X[j]))
        (gen if codes[i] == codes[j] else imp).append(s)
    return np.array(gen), np.array(imp)


# ------------------------------------------------------------------------------------------------ pairs ---
def test_genuine_pairs_are_all_pairs_within_each_identity():
    a, b = genuine_pairs(np.array([7, 7, 1, 5, 5, 5, 1, 9]))
    assert list(zip(a.tolist(), b.tolist())) == [(0, 1), (2, 6), (3, 4), (3, 5), (4, 5)]


@pytest.mark.parametrize("n,k", [(8, 5), (60, 50)])  # dense (lists every pair) and sparse (draws) samplers
def test_impostor_sample_is_distinct_valid_and_uniform(n, k):
    codes = np.arange(n)
    codes[1] = 0  # one genuine pair (0, 1) that must never be drawn
    n_imp = n * (n - 1) // 2 - 1
    counts = np.zeros((n, n))
    reps = 600
    rng = np.random.default_rng(0)
    for _ in range(reps):
        a, b = sample_impostor_pairs(codes, k, rng)
        assert len(a) == k and (a < b).all() and (codes[a] != codes[b]).all()
        assert len(np.unique(a * n + b)) == k and (np.diff(a * n + b) > 0).all()
        np.add.at(counts, (a, b), 1)
    observed = counts[np.triu_indices(n, 1)]
    observed = observed[observed > 0] if counts[0, 1] == 0 else pytest.fail("drew a genuine pair")
    assert len(observed) == n_imp  # every impostor pair drawn at some point
    expected = reps * k / n_imp
    chi2 = ((observed - expected) ** 2 / expected).sum()
    assert abs(chi2 - (n_imp - 1)) < 5 * np.sqrt(2 * (n_imp - 1))  # chi-square within 5 sd of its mean


def test_impostor_sample_is_fixed_by_the_seed():
    codes = np.repeat(np.arange(100), 3)
    a1, b1 = sample_impostor_pairs(codes, 1000, np.random.default_rng(4))
    a2, b2 = sample_impostor_pairs(codes, 1000, np.random.default_rng(4))
    a3, _ = sample_impostor_pairs(codes, 1000, np.random.default_rng(5))
    assert np.array_equal(a1, a2) and np.array_equal(b1, b2) and not np.array_equal(a1, a3)


@pytest.mark.parametrize("n_pairs", [30, 1500])  # few pairs: matrix-vector path; many: blocked matrix products
def test_pair_scores_are_cosines(n_pairs):
    rng = np.random.default_rng(1)
    X = rng.normal(size=(300, 16)).astype(np.float32) * rng.uniform(0.5, 3, (300, 1)).astype(np.float32)
    rows = rng.permutation(300)[:200]
    keys = np.sort(rng.choice(200 * 199 // 2, n_pairs, replace=False))
    a, b = np.triu_indices(200, 1)
    a, b = a[keys], b[keys]
    got = pair_scores(X, rows, row_norms(X, rows), a, b)
    want = np.einsum("ij,ij->i", unit(X[rows[a]]), unit(X[rows[b]]))
    np.testing.assert_allclose(got, want, atol=1e-5)


@pytest.mark.parametrize("n_pairs", [30, 1500])
@pytest.mark.parametrize("scale", [2.0 ** 66, 2.0 ** -140, 1e20, 1e-42])
def test_pair_scores_do_not_depend_on_the_embeddings_scale(n_pairs, scale):
    """Issue 21: x 1e20 overflowed the float32 squared norms (every score 0), x 1e-42 underflowed them ("all
    zeros"). Values on a grid of 1/64, so that x 2^-140 is exact too: power-of-two scales give the same bits, others
    the same cosines up to the scaled values' own rounding (denormals at 1e-42 keep only a few bits)."""
    rng = np.random.default_rng(2)
    X = (np.round(rng.normal(size=(300, 16)) * 16) / 64).astype(np.float32)
    rows = rng.permutation(300)[:200]
    keys = np.sort(rng.choice(200 * 199 // 2, n_pairs, replace=False))
    a, b = (i[keys] for i in np.triu_indices(200, 1))
    base = pair_scores(X, rows, row_norms(X, rows), a, b)
    Xs = X * np.float32(scale)
    assert np.isfinite(Xs).all() and (np.abs(Xs).max(axis=1) > 0).all()
    got = pair_scores(Xs, rows, row_norms(Xs, rows), a, b)
    if np.log2(scale).is_integer():
        np.testing.assert_array_equal(got, base)
    else:
        np.testing.assert_allclose(got, base, atol=1e-6 if scale > 1 else 2e-2)


# ----------------------------------------------------------------------------------------- planted EERs ---
def test_identical_genuine_and_impostor_distributions_give_eer_near_half():
    X, codes = faces(300, 5, spread=50.0)  # identity is drowned in noise
    v = score_group(X, codes, np.arange(len(X)), seed=0)["verification"].iloc[0]
    assert v.n_genuine == 300 * 10 and not v.impostor_sampled
    assert v.eer == pytest.approx(0.5, abs=0.04)


def test_fully_separated_distributions_give_eer_zero():
    X, codes = faces(40, 4, d=128, spread=1e-3)
    out = score_group(X, codes, np.arange(len(X)), seed=0)
    v = out["verification"].iloc[0]
    assert v.eer == 0.0 and v.fnmr_at_fmr_1e_2 == 0.0 and v.fnmr_at_fmr_1e_3 == 0.0
    assert v.genuine_mean > 0.99 > v.impostor_mean
    gen, imp = brute_scores(X, codes)
    assert imp.max() < v.eer_threshold <= gen.min()


def test_eer_agrees_with_an_independent_brute_force_computation():
    X, codes = faces(60, 4, spread=1.2, seed=3)
    v = score_group(X, codes, np.arange(len(X)), seed=0)["verification"].iloc[0]
    gen, imp = brute_scores(X, codes)
    assert (v.n_genuine, v.n_impostor) == (len(gen), len(imp))
    # FMR(t) = P(impostor >= t), FNMR(t) = P(genuine < t) at every distinct score t, by plain loops.
    fmr = np.array([(imp >= t).mean() for t in np.unique(np.r_[gen, imp])])
    fnmr = np.array([(gen < t).mean() for t in np.unique(np.r_[gen, imp])])
    lower, upper = np.max(np.minimum(fmr, fnmr)), np.min(np.maximum(fmr, fnmr))
    assert 0.05 < v.eer < 0.45  # a real overlap, not a degenerate case
    assert lower - 1e-9 <= v.eer <= upper + 1e-9  # the crossing lies between the bracketing operating points
    assert upper - lower < 0.02
    assert v.genuine_mean == pytest.approx(gen.mean(), abs=1e-5)
    assert v.impostor_mean == pytest.approx(imp.mean(), abs=1e-5)
    # FNMR at FMR = x: the FNMR at the lowest observed impostor score whose FMR <= x (the convention of
    # tasks.stats.rates; the next float above the highest impostor score when none qualifies)
    for x, col in ((1e-2, "fnmr_at_fmr_1e_2"), (1e-3, "fnmr_at_fmr_1e_3")):
        ok = [t for t in np.unique(imp) if (imp >= t).sum() <= x * len(imp)]
        t = min(ok) if ok else np.nextafter(imp.max(), np.inf)
        assert getattr(v, col) == pytest.approx((gen < t).mean(), abs=1e-9)


def test_curve_and_histograms_on_the_fixed_grid():
    X, codes = faces(50, 3, spread=1.0, seed=2)
    out = score_group(X, codes, np.arange(len(X)), seed=0)
    curve, hist, v = out["verification_curve"], out["verification_hist"], out["verification"].iloc[0]
    assert np.array_equal(curve["threshold"], THRESHOLDS) and len(curve) == 1001
    assert curve["fmr"].iloc[0] == 1.0 and curve["fnmr"].iloc[0] == 0.0
    assert (np.diff(curve["fmr"]) <= 0).all() and (np.diff(curve["fnmr"]) >= 0).all()
    gen, imp = brute_scores(X, codes)
    for t in (0.3, 0.6, 0.9):
        row = curve.iloc[int(np.argmin(np.abs(THRESHOLDS - t)))]
        assert row.fmr == pytest.approx((imp >= row.threshold).mean(), abs=1e-3)
        assert row.fnmr == pytest.approx((gen < row.threshold).mean(), abs=1e-3)
    assert np.array_equal(hist.loc[hist.kind == "genuine", "bin_left"], HIST_EDGES[:-1])
    assert hist.groupby("kind")["count"].sum().to_dict() == {"genuine": v.n_genuine, "impostor": v.n_impostor}
    counts, _ = np.histogram(imp, bins=HIST_EDGES)
    assert abs(hist.loc[hist.kind == "impostor", "count"].to_numpy() - counts).sum() <= 2  # float32 vs 64 edges


# ------------------------------------------------------------------------------------------- sampling ---
def test_sampled_impostors_are_counted_and_seeded():
    X, codes = faces(100, 3, spread=1.0)
    rows = np.arange(len(X))
    runs = [score_group(X, codes, rows, seed=s, max_impostor_pairs=2000)["verification"] for s in (1, 1, 2)]
    assert runs[0].loc[0, "impostor_sampled"] and runs[0].loc[0, "n_impostor"] == 2000
    assert runs[0].equals(runs[1])
    assert runs[0].loc[0, "impostor_mean"] != runs[2].loc[0, "impostor_mean"]
    full = score_group(X, codes, rows, seed=0)["verification"].iloc[0]
    assert not full.impostor_sampled and full.n_impostor == 300 * 299 // 2 - 100 * 3
    assert runs[0].loc[0, "impostor_mean"] == pytest.approx(full.impostor_mean, abs=0.01)


def test_rows_select_the_group_and_x_is_not_modified():
    X, codes = faces(30, 3, seed=5)
    rows = np.arange(0, 60)  # the first 20 identities only
    before = X.copy()
    sc = score_pairs(X, codes, rows, seed=0, max_impostor_pairs=10**6, what="g")
    assert len(sc.gen) == 20 * 3 and len(sc.imp) == 60 * 59 // 2 - 60
    assert np.array_equal(X, before)


@pytest.mark.parametrize("codes,rows,message", [
    (np.arange(10), np.arange(10), "no identity has two images"),
    (np.zeros(10, int), np.arange(10), "all images belong to one identity"),
    (np.zeros(5, int), np.arange(10), "one entry per embedding row"),
    (np.repeat(np.arange(5), 2), np.array([0, 1, 12]), r"\[0, 10\)"),
    (np.repeat(np.arange(5), 2), np.array([0, 1, 1]), "listed twice"),
])
def test_bad_arguments(codes, rows, message):
    X = unit(np.random.default_rng(0).random((10, 8)))
    with pytest.raises(InputError, match=message):
        score_group(X, codes, rows, seed=0)


def test_zero_embedding_is_refused():
    X = unit(np.random.default_rng(0).random((6, 8)))
    X[2] = 0
    with pytest.raises(InputError, match="all zeros"):
        score_group(X, np.repeat(np.arange(3), 2), np.arange(6), seed=0)


# -------------------------------------------------------------------------------------- impostor matrix ---
def test_threshold_at_fmr():
    imp = np.array([0.1, 0.2, 0.3, 0.3, 0.5, 0.9, 0.9, 0.95, 0.97, 0.99])
    assert threshold_at_fmr(imp, 0.3) == 0.95  # 3 of 10 accepted
    assert threshold_at_fmr(imp, 0.25) == 0.97  # 0.95 would accept 3/10 > 0.25
    assert threshold_at_fmr(imp, 0.01) > 0.99  # even the top score is too many


def test_impostor_matrix_with_a_planted_lookalike_group():
    """Group "b_f" is made of lookalikes (every image near one direction): its impostors match each other at the
    global threshold; the groups' cross pairs do not."""
    Xa, ca = faces(40, 3, d=64, spread=0.3, seed=1)
    rng = np.random.default_rng(2)
    common = np.abs(rng.normal(size=64))
    Xb = unit(common + 0.05 * np.abs(rng.normal(size=(120, 64))))
    cb = np.repeat(np.arange(40), 3) + 1000
    X, codes = np.vstack([Xa, Xb]), np.r_[ca, cb]
    group = np.array(["a_m"] * 120 + ["b_f"] * 120, dtype=object)
    out = impostor_matrix(X, codes, group, np.arange(240), seed=0, target_fmr=0.05)
    m = out["impostor_matrix"].set_index(["group_a", "group_b"])
    rates = out["demographic_rates"].set_index("group")
    t = m["threshold"].iloc[0]

    gen, imp = brute_scores(X, codes)
    near = 1e-6  # the threshold is one of the job's float32 scores; brute force is float64: allow ties to move
    assert (imp >= t + near).mean() <= 0.05 < (imp >= np.max(imp[imp < t - near])).mean()  # global threshold
    assert m.loc[("b_f", "b_f"), "fmr"] > 0.2
    assert m.loc[("a_m", "a_m"), "fmr"] < 0.01 and m.loc[("a_m", "b_f"), "fmr"] < 0.01
    assert m.loc[("a_m", "b_f")].equals(m.loc[("b_f", "a_m")])
    assert m.loc[("a_m", "b_f"), "n_pairs"] == 120 * 120
    assert m.loc[("a_m", "a_m"), "n_pairs"] + m.loc[("b_f", "b_f"), "n_pairs"] + 120 * 120 == len(imp)
    for g, sl in (("a_m", slice(0, 120)), ("b_f", slice(120, 240))):
        g_gen, g_imp = brute_scores(X[sl], codes[sl])
        assert rates.loc[g, "fmr"] == m.loc[(g, g), "fmr"]
        assert rates.loc[g, "fmr"] == pytest.approx((g_imp >= t).mean(), abs=2 / len(g_imp))  # up to ties at t
        assert rates.loc[g, "fnmr"] == pytest.approx((g_gen < t).mean(), abs=2 / len(g_gen))
        assert rates.loc[g, "n_genuine"] == len(g_gen) and rates.loc[g, "n_impostor"] == len(g_imp)


def test_impostor_matrix_sampled_and_bad_groups():
    X, codes = faces(60, 3, seed=4)
    group = np.where(np.arange(180) < 90, "x", "y").astype(object)
    a = impostor_matrix(X, codes, group, np.arange(180), seed=3, max_impostor_pairs=3000, sampling="uniform")
    b = impostor_matrix(X, codes, group, np.arange(180), seed=3, max_impostor_pairs=3000, sampling="uniform")
    assert a["impostor_matrix"].equals(b["impostor_matrix"])
    m = a["impostor_matrix"]
    assert m.loc[m.group_a <= m.group_b, "n_pairs"].sum() == 3000
    with pytest.raises(InputError, match="one entry per embedding row"):
        impostor_matrix(X, codes, group[:10], np.arange(180), seed=0)
    split = group.copy()
    split[1] = "y"  # identity 0 now has images in both groups
    with pytest.raises(InputError, match="identity code 0 has images in more than one"):
        impostor_matrix(X, codes, split, np.arange(180), seed=0)
    with pytest.raises(InputError, match="target_fmr"):
        impostor_matrix(X, codes, group, np.arange(180), seed=0, target_fmr=1.5)


def test_stratified_sampling_tops_up_starved_pairs_of_groups():
    """Groups of 150 and 30 images, 3000 sampled pairs, target 1e-2: each pair of groups needs 10 / 1e-2 = 1000
    pairs; y-y (405 pairs in all) and x-y (4500) get fewer from the uniform sample and are topped up."""
    X, codes = faces(60, 3, seed=4)
    group = np.where(np.arange(180) < 150, "x", "y").astype(object)
    rows = np.arange(180)
    kw = dict(seed=3, max_impostor_pairs=3000, target_fmr=1e-2, target_fmrs=[1e-2])
    uni = impostor_matrix(X, codes, group, rows, sampling="uniform", **kw)
    strat = impostor_matrix(X, codes, group, rows, **kw)
    again = impostor_matrix(X, codes, group, rows, **kw)
    assert strat["impostor_matrix"].equals(again["impostor_matrix"])
    u, m = (r["impostor_matrix"].set_index(["group_a", "group_b"]) for r in (uni, strat))
    assert u.loc[("x", "y"), "n_pairs"] < 1000 and u.loc[("y", "y"), "n_pairs"] < 405      # starved
    assert m.loc[("x", "y"), "n_pairs"] == 1000 and m.loc[("y", "y"), "n_pairs"] == 405      # topped up
    assert m.loc[("x", "x"), "n_pairs"] == u.loc[("x", "x"), "n_pairs"] >= 1000              # left as it was
    assert m["threshold"].iloc[0] == u["threshold"].iloc[0]       # pooled: the uniform sample alone
    t = m["threshold"].iloc[0]
    _, y_imp = brute_scores(X[150:], codes[150:])                 # every y-y impostor pair
    assert m.loc[("y", "y"), "false_matches"] == np.count_nonzero(y_imp >= t)
    ops = strat["operating_points"].set_index(["group", "threshold_kind"])
    assert ops.loc[("y", "own"), "n_impostor"] == 405 and ops.loc[("all", "own"), "n_impostor"] == 3000

    sc = score_pairs(X, codes, rows, seed=3, max_impostor_pairs=3000, what="test")
    g = (group == "y").astype(np.int64)
    top = stratify(sc, X, rows, codes, g, 2, target_fmr=1e-2, seed=3)
    extra = ~top.imp_pooled
    pairs = set(zip(top.imp_a[extra].tolist(), top.imp_b[extra].tolist()))
    assert len(pairs) == extra.sum() == 1000 + 405                # distinct pairs
    assert all(a < b and codes[a] != codes[b] for a, b in pairs)  # impostor pairs, ordered
    assert top.imp_pooled.sum() == 3000 and np.array_equal(top.imp[:3000], sc.imp)
    sa, sb = g[top.imp_a], g[top.imp_b]
    assert (top.imp_stratum & top.imp_pooled & (sa != sb)).sum() == 0   # x-y's uniform pairs: pooled only
    assert np.allclose(top.imp[extra], (X[top.imp_a[extra]] * X[top.imp_b[extra]]).sum(1) /
                       np.linalg.norm(X[top.imp_a[extra]], axis=1) / np.linalg.norm(X[top.imp_b[extra]], axis=1),
                       atol=1e-5)
    with pytest.raises(InputError, match="sampling"):
        impostor_matrix(X, codes, group, rows, sampling="random", **kw)


def test_threshold_at_fmr_is_inclusive_in_exact_arithmetic():
    # 3e-4 x 5,000,000 = 1499.9999999999998 in floating point: exactly 1500 false matches are allowed.
    n, allowed = 5_000_000, 1500
    imp = np.zeros(n, np.float32)
    imp[-allowed:] = 0.9          # 1500 impostors at 0.9: FMR(0.9) = 3e-4 exactly, which meets the target
    imp[-allowed - 1] = 0.5
    assert 3e-4 * n < allowed     # the floating-point product that made the old comparison exclusive
    assert threshold_at_fmr(imp, 3e-4) == pytest.approx(0.9)
    imp[-allowed - 1] = 0.9       # 1501 at 0.9: over the target, so nothing at 0.9 may be accepted
    assert threshold_at_fmr(imp, 3e-4) == float(np.nextafter(np.float64(np.float32(0.9)), np.inf))


def test_scores_job_intervals_are_the_identity_bootstrap_of_its_pairs():
    """A scores job's EER and FNMR intervals = tasks.stats.bootstrap on every pair scored by a double loop, identities
    resampled within each gender; its EER = the bootstrap's point estimate."""
    X, codes = faces(40, 3, seed=6, spread=1.5)
    gender = np.repeat(np.arange(40) % 2, 3)
    out = score_group(X, codes, np.arange(120), seed=5, n_resamples=150, strata=gender)["verification"].iloc[0]
    i, j = np.array(list(itertools.combinations(range(120), 2))).T
    s = np.einsum("ij,ij->i", X[i], X[j]) / np.linalg.norm(X[i], axis=1) / np.linalg.norm(X[j], axis=1)
    ident_group = np.arange(40) % 2
    direct = bootstrap.bootstrap_verification(s, codes[i], codes[j], ident_group, ["0", "1"],
                                              target_fmrs=(1e-2, 1e-3), global_target_fmr=1e-3, n_resamples=150,
                                              seed=5).set_index(["quantity", "target_fmr"], drop=False)
    eer = direct[direct["quantity"] == "eer"].iloc[0]
    assert out["eer"] == pytest.approx(eer["estimate"], abs=1e-6)
    assert (out["eer_ci_low"], out["eer_ci_high"]) == pytest.approx((eer["ci_low"], eer["ci_high"]), abs=1e-6)
    for target, name in ((1e-2, "fnmr_at_fmr_1e_2"), (1e-3, "fnmr_at_fmr_1e_3")):
        row = direct.loc[("fnmr_at_fmr", target)]
        assert out[name] == pytest.approx(row["estimate"], abs=1e-12)
        assert (out[f"{name}_ci_low"], out[f"{name}_ci_high"]) == pytest.approx((row["ci_low"], row["ci_high"]),
                                                                                abs=1e-6)
    assert out["n_resamples"] == 150 and out["eer_ci_low"] < out["eer_ci_high"]
    plain = score_group(X, codes, np.arange(120), seed=5)["verification"].iloc[0]
    assert plain["n_resamples"] == 0 and np.isnan(plain["eer_ci_low"])


def test_stratum_sizes_and_samples_against_a_double_loop():
    rng = np.random.default_rng(4)
    ids = np.repeat(np.arange(30), rng.integers(1, 5, 30))
    grp = (np.arange(30) % 3)[ids]
    sizes = stratum_sizes(ids, grp, 3)
    for a in range(3):
        for b in range(a, 3):
            ra, rb = np.flatnonzero(grp == a), np.flatnonzero(grp == b)
            every = {(x, y) for x in ra for y in rb if ids[x] != ids[y] and (a != b or x < y)}
            assert sizes[a, b] == len(every)
            for want in (min(25, len(every)), len(every)):
                keys = sample_stratum(ra, rb, ids, want, len(every), np.random.default_rng(a + b), a == b)
                got = {(int(ra[k // len(rb)]), int(rb[k % len(rb)])) for k in keys}
                assert len(keys) == len(got) == want and got <= every
            assert got == every                                      # want = all: every pair once
    assert np.tril(sizes, -1).sum() == 0
