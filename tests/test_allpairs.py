"""tasks.stats.allpairs against brute force: every pair's score binned by a double loop, sharding, rates at edges."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from storage.errors import InputError
from tasks.stats import allpairs, rates
from tasks.stats import allpairs_rates


def table(n_id=30, seed=0, d=16, groups=3, shuffle=False):
    """Identities with 1-4 images in ``groups`` groups; rows need not be L2-normalised for the counts."""
    rng = np.random.default_rng(seed)
    per = rng.integers(1, 5, n_id)
    ids = np.repeat(np.arange(n_id), per)
    grp = (np.arange(n_id) % groups)[ids]
    # entries k/16 (k = 0..3): every dot product is a multiple of 2^-8 computed exactly in float32 whatever the
    # BLAS kernel's order, so the brute-force reference sees the very same scores (and many lie on bin edges)
    centres = rng.integers(0, 4, (n_id, d))
    X = (np.clip(centres[ids] + rng.integers(-1, 2, (len(ids), d)), 0, 3) / 16).astype(np.float32)
    if shuffle:
        p = rng.permutation(len(ids))
        X, ids, grp = X[p], ids[p], grp[p]
    return np.ascontiguousarray(X), ids, grp


def brute(X, ids, grp, G, bits):
    """Counts by a double loop: the float32 score of each pair, its bin by comparing with exact edges."""
    edges = allpairs.bin_edges(bits)
    B = len(edges) - 1
    gen, imp = np.zeros((G, B), np.int64), np.zeros((G, G, B), np.int64)
    S = X @ X.T
    for i, j in itertools.combinations(range(len(X)), 2):
        s = float(S[i, j])
        k = min(max(int(np.searchsorted(edges, s, side="right")) - 1, 0), B - 1)
        if ids[i] == ids[j]:
            gen[grp[i], k] += 1
        else:
            imp[min(grp[i], grp[j]), max(grp[i], grp[j]), k] += 1
    return gen, imp


@pytest.mark.parametrize("shuffle,block", [(False, 7), (True, 7), (False, 1000), (True, 13)])
def test_counts_equal_brute_force(shuffle, block):
    X, ids, grp = table(shuffle=shuffle)
    gen, imp = brute(X, ids, grp, 3, 8)
    c = allpairs.all_pair_counts(X, ids, grp, 3, bits=8, block=block)
    assert np.array_equal(c.genuine, gen) and np.array_equal(c.impostor, imp)
    n = len(X)
    assert c.n_genuine + c.n_impostor == n * (n - 1) // 2


def test_shards_add_up_to_the_full_counts():
    X, ids, grp = table(n_id=40, seed=1, shuffle=True)
    tasks = allpairs.block_tasks(len(X), 9)
    full = allpairs.shard_counts(X, ids, grp, 3, tasks, 10)
    parts = [allpairs.shard_counts(X, ids, grp, 3, tasks[k::3], 10) for k in range(3)]
    total = parts[0] + parts[1] + parts[2]
    assert np.array_equal(total.genuine, full.genuine) and np.array_equal(total.impostor, full.impostor)
    # every pair i < j in exactly one task
    cover = np.zeros((len(X), len(X)), int)
    for i0, i1, j0, j1 in tasks:
        for i in range(i0, i1):
            for j in range(j0, j1):
                cover[i, j] += (i < j) if (i0, i1) == (j0, j1) else 1
    assert np.array_equal(cover, np.triu(np.ones_like(cover), 1))


def test_bins_are_exact_at_edges():
    bits = 14
    e = allpairs.bin_edges(bits)
    k = np.array([0, 1, 5, 16383, 16384, 16385, 32767])
    edge = e[k].astype(np.float32)
    assert np.array_equal(edge.astype(np.float64), e[k])              # edges are float32-exact
    assert np.array_equal(allpairs.score_bins(edge, bits), k)          # an edge falls in its own bin
    below = np.nextafter(edge, np.float32(-2))
    assert np.array_equal(allpairs.score_bins(below[1:], bits), k[1:] - 1)
    assert allpairs.score_bins(np.float32([1.0, 1.0000001, -1.5]), bits).tolist() == [32767, 32767, 0]
    with pytest.raises(InputError):
        allpairs.n_bins(30)


def test_rates_from_histograms_match_the_exact_convention():
    rng = np.random.default_rng(3)
    bits = 12
    gen = np.clip(rng.normal(0.6, 0.15, 3000), -1, 0.9999).astype(np.float32)
    imp = np.clip(rng.normal(0.1, 0.12, 200000), -1, 0.9999).astype(np.float32)
    B = allpairs.n_bins(bits)
    hg = np.bincount(allpairs.score_bins(gen, bits), minlength=B)
    hi = np.bincount(allpairs.score_bins(imp, bits), minlength=B)
    w = 2.0 ** -bits
    for target in (1e-2, 1e-3, 1e-4, 1e-5):
        th = allpairs_rates.hist_threshold_at_fmr(hi, target, bits)
        t_exact = rates.threshold_at_fmr(imp, target)
        fm, n_imp, fnm, n_gen = allpairs_rates.hist_counts_at(hg, hi, th, bits)
        assert fm == (imp >= th).sum() and fnm == (gen < th).sum()           # exact counts at the edge
        assert fm <= rates.max_accepted(target, n_imp)
        assert th < t_exact + w and not ((imp >= th) & (imp < t_exact)).any()
    eer, t = allpairs_rates.hist_eer(hg, hi, bits)
    eer_exact, t_exact = rates.ScoreCurve(gen, imp).eer()
    assert abs(eer - eer_exact) < 2e-3 and abs(t - t_exact) < 2 * w


def test_group_tables_from_counts_match_the_score_level_tables():
    X, ids, grp = table(n_id=60, seed=2, d=8)
    bits = 16
    c = allpairs.all_pair_counts(X, ids, grp, 3, bits=bits, block=50)
    names = ["g0", "g1", "g2"]
    out = allpairs_rates.hist_group_tables(c, names, target_fmrs=(1e-2,), global_target_fmr=1e-2)
    S = X @ X.T
    iu, ju = np.triu_indices(len(X), 1)
    s = S[iu, ju]
    same = ids[iu] == ids[ju]
    t = out["operating_points"].query("threshold_kind == 'global'")["threshold"].iloc[0]
    m = out["impostor_matrix"].set_index(["group_a", "group_b"])
    for a in range(3):
        for b in range(3):
            sel = ~same & (((grp[iu] == a) & (grp[ju] == b)) | ((grp[iu] == b) & (grp[ju] == a)))
            row = m.loc[(names[a], names[b])]
            assert row.n_pairs == sel.sum() and row.false_matches == (s[sel] >= t).sum()
    g1 = out["operating_points"].query("group == 'g1' and threshold_kind == 'global'").iloc[0]
    gs = s[same & (grp[iu] == 1)]
    assert g1.false_non_matches == (gs < t).sum() and g1.n_genuine == gs.size


def materialised(X, ids, grp, m, bits, target, G):
    """Weighted all-pairs statistics at the global threshold by a double loop: impostor pair (p, q) of identities
    i != j counts m_i m_j times, a genuine pair of identity i m_i times (the resample, materialised)."""
    edges = allpairs.bin_edges(bits)
    B = len(edges) - 1
    S = X @ X.T
    imp = np.zeros((G, G, B))
    gen = np.zeros((G, B))
    for p, q in itertools.combinations(range(len(X)), 2):
        k = min(max(int(np.searchsorted(edges, float(S[p, q]), side="right")) - 1, 0), B - 1)
        i, j = ids[p], ids[q]
        if i == j:
            gen[grp[p], k] += m[i]
        else:
            a, b = sorted((grp[p], grp[q]))
            imp[a, b, k] += m[i] * m[j]
    total = imp.sum(axis=(0, 1))
    acc = np.r_[np.cumsum(total[::-1])[::-1], 0]
    kk = int(np.argmax(acc <= rates.max_accepted(target, int(total.sum()))))
    out = {"threshold": edges[kk]}
    for a in range(G):
        for b in range(a, G):
            out[(a, b)] = (imp[a, b, kk:].sum(), imp[a, b].sum())
        out[a] = (gen[a, :kk].sum(), gen[a].sum())
    return out


def test_tail_bootstrap_equals_materialised_resamples_and_full_counts():
    from grid.report import fairness
    from tasks.stats import bootstrap

    X, ids, grp = table(n_id=36, seed=5, d=8)
    G, bits, target = 3, 10, 0.02
    n_id = ids.max() + 1
    id_group = np.zeros(n_id, int)
    id_group[ids] = grp
    c = np.bincount(ids, minlength=n_id)
    tasks = allpairs.block_tasks(len(X), 11)
    tails = []
    for k in range(2):                                         # two shards' tails add up
        t = allpairs.TailCounts.empty(bits, lo_score=0.05)
        allpairs.shard_counts(X, ids, grp, G, tasks[k::2], bits, tail=t)
        tails.append(t.compact())
    tail = tails[0] + tails[1]
    names = ["g0", "g1", "g2"]
    st = allpairs_rates.TailStatistics(tail, id_group, c, names, target, fairness.summaries)
    full = allpairs.all_pair_counts(X, ids, grp, G, bits=bits, block=11)
    ref = allpairs_rates.hist_group_tables(full, names, target_fmrs=(), global_target_fmr=target)
    keys, est, ks, ns = st.evaluate(None)
    got = {k[:3]: (v, a, b) for k, v, a, b in zip(keys, est, ks, ns)}
    ops = ref["operating_points"].set_index("group")
    assert got[("threshold", "all", "")][0] == ops.loc["all", "threshold"]
    for g in names:
        assert got[("group_fmr", g, "")][1:] == (ops.loc[g, "false_matches"], ops.loc[g, "n_impostor"])
        assert got[("group_fnmr", g, "")][1:] == (ops.loc[g, "false_non_matches"], ops.loc[g, "n_genuine"])
    mult = bootstrap.identity_multiplicities(id_group, 4, seed=2)
    for m in mult:
        keys, v, ks, ns = st.evaluate(m)
        got = {k[:3]: (x, a, b) for k, x, a, b in zip(keys, v, ks, ns)}
        direct = materialised(X, ids, grp, m, bits, target, G)
        assert got[("threshold", "all", "")][0] == direct["threshold"]
        for a in range(G):
            assert got[("group_fmr", names[a], "")][1:] == direct[(a, a)]
            assert got[("group_fnmr", names[a], "")][1:] == direct[a]
            for b in range(a + 1, G):
                assert got[("cross_fmr", names[a], names[b], )][1:] == direct[(a, b)]
    out = allpairs_rates.tail_bootstrap(tail, id_group, c, names, global_target_fmr=target, n_resamples=30, seed=1)
    assert (out.n_defined == 30).all() and (out.ci_low <= out.ci_high).all()
    # a tail that starts above the threshold cannot place it: NaN, counted as undefined
    high = allpairs.TailCounts.empty(bits, lo_score=ops.loc["all", "threshold"] + 0.03)
    allpairs.shard_counts(X, ids, grp, G, tasks, bits, tail=high)
    out = allpairs_rates.tail_bootstrap(high, id_group, c, names, global_target_fmr=target, n_resamples=5, seed=1)
    assert out.estimate.isna().all() and (out.n_defined == 0).all()
    assert out.note.str.contains("undefined in every resample").all()


# ------------------------------------------------------------------ the TensorFlow block product (GPU path) ---
def test_the_tensorflow_product_bins_exact_scores_as_numpy_does_ties_at_edges_included():
    """Scores that both products compute exactly (multiples of 2^-8, many on the edges of 2^-8 bins) get the
    same bins from TensorFlow as from numpy and the brute force: a tie at an edge is kept identically."""
    X, ids, grp = table(n_id=60, seed=4, shuffle=True)
    gen, imp = brute(X, ids, grp, 3, 8)
    tasks = allpairs.block_tasks(len(X), 23)
    tf_counts = allpairs.shard_counts(X, ids, grp, 3, tasks, 8, binner=allpairs.tensorflow_bins)
    assert np.array_equal(tf_counts.genuine, gen) and np.array_equal(tf_counts.impostor, imp)
    S = X @ X.T
    on_edge = np.isin(S[np.triu_indices(len(X), 1)], allpairs.bin_edges(8))
    assert on_edge.mean() > 0.5    # most pairs do tie at an edge


def test_the_tensorflow_product_moves_pairs_only_across_an_edge_within_its_rounding():
    """Generic 2048-d rows: the two float32 products differ in the last bits of most scores, so a pair can land in
    the neighbouring bin. Totals are identical; at every edge the counts at or above it differ by at most the
    pairs whose numpy score lies within the rounding bound 2 d 2^-24 of that edge."""
    rng = np.random.default_rng(5)
    n, d, bits = 1200, 2048, 14
    X = rng.standard_normal((n, d)).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    ids, grp = np.arange(n) // 4, (np.arange(n) // 4) % 2
    tasks = allpairs.block_tasks(n, 512)
    np_counts = allpairs.shard_counts(X, ids, grp, 2, tasks, bits)
    tf_counts = allpairs.shard_counts(X, ids, grp, 2, tasks, bits, binner=allpairs.tensorflow_bins)
    import tensorflow as tf

    S_np, S_tf = X @ X.T, tf.linalg.matmul(X, X, transpose_b=True).numpy()
    bound = 2 * d * 2.0 ** -24
    assert np.abs(S_np - S_tf).max() <= bound
    for a, b in [(0, 0), (0, 1), (1, 1)]:
        assert np_counts.impostor[a, b].sum() == tf_counts.impostor[a, b].sum()
    assert np.array_equal(np_counts.genuine.sum(-1), tf_counts.genuine.sum(-1))
    upper = np.triu_indices(n, 1)
    s = S_np[upper].astype(np.float64)
    edges = allpairs.bin_edges(bits)
    near = np.zeros(len(edges) - 1, np.int64)      # pairs within the bound of edge k (k >= 1)
    k = np.clip(np.round((s + 1) * 2 ** bits).astype(np.int64), 1, len(edges) - 2)
    np.add.at(near, k[np.abs(s - edges[k]) <= bound], 1)
    for counts in ("genuine", "impostor"):
        a = getattr(np_counts, counts).reshape(-1, len(near))
        b = getattr(tf_counts, counts).reshape(-1, len(near))
        at_or_above = lambda c: np.cumsum(c[:, ::-1], axis=1)[:, ::-1]   # noqa: E731
        assert (np.abs(at_or_above(a) - at_or_above(b)).sum(axis=0) <= near).all()


def test_an_allpairs_job_that_asked_for_a_gpu_runs_the_tensorflow_product_with_the_same_counts(monkeypatch):
    """The job's ask reaches the worker function: ``resources = {GPU: 1}`` runs the TensorFlow product (on the
    CPU where TensorFlow sees no GPU); on exact scores its table equals the numpy job's."""
    from tasks.kinds import allpairs as kind

    rng = np.random.default_rng(6)
    n, d = 300, 16
    X = np.zeros((n, d), np.float32)      # unit rows of four entries +-1/2: every score a multiple of 1/4, exact
    for row in X:
        row[rng.choice(d, 4, replace=False)] = rng.choice([-0.5, 0.5], 4)
    ids = np.arange(n) // 3
    data = {"X": X, "identity_codes": ids, "demographic": (ids % 3 * 2 + ids % 2).astype(np.int32),
            "demographic_names": np.array([f"{e}_{g}" for e in "abc" for g in ("male", "female")], dtype=object)}
    job = {"seed": 0, "params": {"shard": 0, "n_shards": 1, "bits": 8}}
    calls = []
    real = allpairs.tensorflow_bins
    monkeypatch.setattr(allpairs, "tensorflow_bins", lambda A, B, bits: calls.append(1) or real(A, B, bits))
    on_gpu = kind.run({**job, "resources": {"CPU": 1, "GPU": 1.0}}, data)["allpairs_counts"]
    on_cpu = kind.run({**job, "resources": {"CPU": 1}}, data)["allpairs_counts"]
    assert calls and len(on_cpu) > 10 and on_gpu.equals(on_cpu)
