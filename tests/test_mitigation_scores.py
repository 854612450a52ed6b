"""Score-side mitigations (tasks/mitigation/), each against a direct computation on small data: group thresholds
and FSN against their formulas in a loop over every pair, FairCal against a direct implementation (beta maps
fitted by scipy's optimiser, mixed pair by pair), demographic Z-norm against its cohort loop. Fitting and
evaluated identities are disjoint, as in a grid."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy.optimize import minimize
from scipy.special import expit
from sklearn.cluster import KMeans

from storage.errors import InputError
from tasks.mitigation import build_mitigation
from tasks.stats import scoring

GROUPS = np.array(["asian", "black", "caucasian"])
TARGET = 1e-2


def faces(identities: int = 30, images: int = 4, d: int = 16, seed: int = 0) -> dict[str, np.ndarray]:
    """Images of ``identities`` per group (``images`` each) with a planted gap: a shared group direction whose
    weight differs by group, so one group's impostors are much more alike than another's (the same groups for
    every seed; the identities and images differ)."""
    rng = np.random.default_rng(seed)
    centre = np.random.default_rng(99).normal(size=(3, d))
    ident = np.repeat(np.arange(3 * identities), images)
    code = ident % 3
    person = rng.normal(size=(3 * identities, d))
    X = np.array([1.6, 0.9, 0.3])[code, None] * centre[code] + person[ident] + 0.7 * rng.normal(size=(len(ident), d))
    return {"X": X.astype(np.float32), "identity": ident + 1000 * seed, "group": GROUPS[code]}


FIT, EVAL = faces(seed=0), faces(seed=1)


def unit(X: np.ndarray) -> np.ndarray:
    return X.astype(np.float64) / np.linalg.norm(X.astype(np.float64), axis=1, keepdims=True)


def all_pairs(data: dict[str, np.ndarray]) -> list[tuple[int, int, float, bool]]:
    """(i, j, cosine, genuine) of every pair i < j, one at a time."""
    Xn = unit(data["X"])
    return [(i, j, float(Xn[i] @ Xn[j]), bool(data["identity"][i] == data["identity"][j]))
            for i, j in itertools.combinations(range(len(Xn)), 2)]


def threshold(impostor: list[float], target: float) -> float:
    """The convention, directly: the smallest observed impostor score t with #{s >= t} <= floor(target x n)."""
    allowed = int(np.floor(target * len(impostor) + 1e-9))
    ordered = sorted(impostor)
    for i, t in enumerate(ordered):  # at a value's first occurrence, n - i scores are >= it
        if (i == 0 or ordered[i - 1] != t) and len(ordered) - i <= allowed:
            return t
    return np.nextafter(ordered[-1], np.inf)


def evaluated_pairs() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    sc = scoring.score_pairs(EVAL["X"], EVAL["identity"], np.arange(len(EVAL["X"])), seed=0,
                             max_impostor_pairs=10**7, what="evaluated")
    return np.r_[sc.gen_a, sc.imp_a], np.r_[sc.gen_b, sc.imp_b], np.r_[sc.gen, sc.imp].astype(np.float64)


def clusters(k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's KMeans called directly on the L2-normalised fitting rows: (fitting labels, eval labels)."""
    km = KMeans(n_clusters=k, n_init=1, random_state=seed).fit(unit(FIT["X"]).astype(np.float32))
    return km.labels_, km.predict(unit(EVAL["X"]).astype(np.float32))


def fmr_spread(scores: np.ndarray, a: np.ndarray, b: np.ndarray, t: float) -> float:
    """max - min over groups of the within-group FMR of the evaluated impostor pairs at threshold t."""
    imp = EVAL["identity"][a] != EVAL["identity"][b]
    ga, gb = EVAL["group"][a], EVAL["group"][b]
    fmr = [np.mean(scores[imp & (ga == g) & (gb == g)] >= t) for g in GROUPS]
    return max(fmr) - min(fmr)


# ----------------------------------------------------------------------------------- group thresholds ---
def test_group_thresholds_equal_each_groups_own_threshold_and_the_shift_in_a_loop():
    m = build_mitigation("group_thresholds", {"target_fmr": TARGET}, seed=0).fit(FIT["X"], FIT["identity"],
                                                                                FIT["group"])
    pairs = all_pairs(FIT)
    g = FIT["group"]
    t = threshold([s for _, _, s, gen in pairs if not gen], TARGET)
    own = {x: threshold([s for i, j, s, gen in pairs if not gen and g[i] == x and g[j] == x], TARGET)
           for x in GROUPS}
    assert m.global_threshold_ == pytest.approx(t, abs=1e-6)
    np.testing.assert_allclose(m.thresholds_, [own[x] for x in GROUPS], atol=1e-6)
    assert np.ptp(m.thresholds_) > 0.1  # the planted gap: the groups' own thresholds differ
    a, b, s = evaluated_pairs()
    out = m.transform(EVAL["X"], EVAL["group"], a, b, s)
    ge = EVAL["group"]
    direct = [s[p] - ((own[ge[a[p]]] - t) + (own[ge[b[p]]] - t)) / 2 for p in range(len(s))]
    np.testing.assert_allclose(out, direct, atol=1e-5)
    assert fmr_spread(out, a, b, t) < fmr_spread(s, a, b, t) / 2  # the FMR gap at one threshold shrinks


# ------------------------------------------------------------------------------------------------ fsn ---
def test_fsn_equals_the_papers_formula_in_a_direct_loop():
    k, seed = 4, 3
    m = build_mitigation("fsn", {"n_clusters": k, "target_fmr": TARGET}, seed=seed).fit(FIT["X"], FIT["identity"])
    fit_labels, eval_labels = clusters(k, seed)
    assert np.array_equal(m.kmeans_.labels_, fit_labels)
    pairs = all_pairs(FIT)
    impostor = [(i, j, s) for i, j, s, gen in pairs if not gen]
    t = threshold([s for _, _, s in impostor], TARGET)
    t_c = [threshold([s for i, j, s in impostor if fit_labels[i] == c or fit_labels[j] == c], TARGET)
           for c in range(k)]
    np.testing.assert_allclose(m.thresholds_, t_c, atol=1e-6)
    a, b, s = evaluated_pairs()
    out = m.transform(EVAL["X"], None, a, b, s)
    direct = [s[p] - 0.5 * ((t_c[eval_labels[a[p]]] - t) + (t_c[eval_labels[b[p]]] - t)) for p in range(len(s))]
    np.testing.assert_allclose(out, direct, atol=1e-5)
    assert np.abs(out - s).max() > 0.01


def test_fsn_and_faircal_use_no_group_labels_and_are_seeded():
    a, b, s = evaluated_pairs()
    for name in ("fsn", "faircal"):
        config = {"n_clusters": 4, "max_impostor_pairs": 5000}  # a sample of the fitting impostors
        runs = [build_mitigation(name, config, seed=q).fit(FIT["X"], FIT["identity"], None)
                .transform(EVAL["X"], None, a, b, s) for q in (5, 5, 6)]
        assert np.array_equal(runs[0], runs[1])
        assert not np.array_equal(runs[0], runs[2])


# -------------------------------------------------------------------------------------------- faircal ---
def beta_direct(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float, float]:
    """Beta calibration by maximum likelihood with scipy's optimiser (not scikit-learn), with the monotone refit."""
    p = np.clip((scores + 1) / 2, np.finfo(float).eps, 1 - np.finfo(float).eps)
    F = np.column_stack([np.log(p), -np.log(1 - p)])

    def fit(cols: list[int]) -> np.ndarray:
        def nll(w: np.ndarray) -> float:
            z = F[:, cols] @ w[:-1] + w[-1]
            return float(np.sum(np.logaddexp(0, z) - labels * z))
        return minimize(nll, np.zeros(len(cols) + 1), method="BFGS", options={"gtol": 1e-10}).x

    w = fit([0, 1])
    if w[0] < 0:
        w = fit([1])
        return 0.0, w[0], w[1]
    if w[1] < 0:
        w = fit([0])
        return w[0], 0.0, w[1]
    return w[0], w[1], w[2]


def beta_apply(params: tuple[float, float, float], s: float) -> float:
    a, b, c = params
    p = min(max((s + 1) / 2, np.finfo(float).eps), 1 - np.finfo(float).eps)
    return float(expit(a * np.log(p) - b * np.log(1 - p) + c))


def test_faircal_equals_a_direct_implementation():
    k, seed = 3, 2
    m = build_mitigation("faircal", {"n_clusters": k}, seed=seed).fit(FIT["X"], FIT["identity"])
    fit_labels, eval_labels = clusters(k, seed)
    assert np.array_equal(m.kmeans_.labels_, fit_labels)
    pairs = all_pairs(FIT)
    maps, sizes = [], []
    for c in range(k):
        mine = [(s, gen) for i, j, s, gen in pairs if fit_labels[i] == c or fit_labels[j] == c]
        sizes.append(len(mine))
        maps.append(beta_direct(np.array([s for s, _ in mine]), np.array([float(g) for _, g in mine])))
    assert m.fallback_ == [] and list(m.pairs_) == sizes
    a, b, s = evaluated_pairs()
    out = m.transform(EVAL["X"], None, a, b, s)
    direct = []
    for p in range(len(s)):
        ka, kb = eval_labels[a[p]], eval_labels[b[p]]
        direct.append((sizes[ka] * beta_apply(maps[ka], s[p]) + sizes[kb] * beta_apply(maps[kb], s[p]))
                      / (sizes[ka] + sizes[kb]))
    np.testing.assert_allclose(out, direct, atol=1e-4)
    assert 0 <= out.min() and out.max() <= 1
    genuine = EVAL["identity"][a] == EVAL["identity"][b]
    assert out[genuine].mean() > 0.5 > out[~genuine].mean()


# ---------------------------------------------------------------------------------------------- znorm ---
def test_znorm_equals_demographic_z_normalisation_in_a_cohort_loop():
    m = build_mitigation("znorm", None, seed=0).fit(FIT["X"], FIT["identity"], FIT["group"])
    F, E = unit(FIT["X"]), unit(EVAL["X"])
    mu, sd = [], []
    for x, g in zip(E, EVAL["group"]):
        cohort = [float(x @ c) for c, h in zip(F, FIT["group"]) if h == g]
        mu.append(np.mean(cohort))
        sd.append(np.std(cohort, ddof=1))
    a, b, s = evaluated_pairs()
    out = m.transform(EVAL["X"], EVAL["group"], a, b, s)
    direct = [0.5 * ((s[p] - mu[a[p]]) / sd[a[p]] + (s[p] - mu[b[p]]) / sd[b[p]]) for p in range(len(s))]
    np.testing.assert_allclose(out, direct, atol=1e-4)
    # the groups' impostor score levels are brought together (their medians differed by the planted gap)
    imp = EVAL["identity"][a] != EVAL["identity"][b]
    same = EVAL["group"][a] == EVAL["group"][b]
    med = lambda v: [np.median(v[imp & same & (EVAL["group"][a] == g)]) for g in GROUPS]  # noqa: E731
    assert np.ptp(med(out)) / np.std(out[imp]) < np.ptp(med(s)) / np.std(s[imp]) / 3


# --------------------------------------------------------------------------------------------- errors ---
def test_score_methods_refuse_bad_fitting_or_evaluated_input_with_one_sentence():
    a, b, s = evaluated_pairs()
    fitted = build_mitigation("group_thresholds", {"target_fmr": TARGET}, 0).fit(FIT["X"], FIT["identity"],
                                                                                FIT["group"])
    with pytest.raises(InputError, match="mitigation 'group_thresholds': group 'indian' has no fitting images"):
        fitted.transform(EVAL["X"], np.where(EVAL["group"] == "black", "indian", EVAL["group"]), a, b, s)
    with pytest.raises(InputError, match=r"pair positions must be integers in \[0, "):
        fitted.transform(EVAL["X"], EVAL["group"], a + len(EVAL["X"]), b, s)
    for name in ("group_thresholds", "znorm"):
        with pytest.raises(InputError, match=f"mitigation '{name}': a mitigation needs fitting rows of at least "
                                             "two groups, got only 'asian'"):
            build_mitigation(name, None, 0).fit(FIT["X"], FIT["identity"], np.full(len(FIT["X"]), "asian"))
    with pytest.raises(InputError, match="mitigation 'fsn': n_clusters = 500 exceeds the 360 fitting images"):
        build_mitigation("fsn", {"n_clusters": 500}, 0).fit(FIT["X"], FIT["identity"])
    with pytest.raises(InputError, match="no identity has two images"):
        build_mitigation("faircal", {"n_clusters": 2}, 0).fit(FIT["X"], np.arange(len(FIT["X"])))
