"""Issue 12 wired into the grid: the stored tables of a tiny grid against direct recomputation (brute-force cosine
scores, scikit-learn, statsmodels, fairlearn) — not against the building blocks that produced them."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import balanced_accuracy_score
from statsmodels.stats.proportion import proportion_confint

from conftest import accepted, convention_threshold, eer_sklearn
from grid.config import resolve_config
from grid.report import load_results, stats
from grid.runner import load_data, run_grid, shared_arrays
from grid.splits import Protocol, make_split
from storage.results import load
from storage.table import EmbeddingTable
from storage.attributes import default_groups

# Under xdist this module's tests run on one worker: its module fixture (grid) is built once.
pytestmark = pytest.mark.xdist_group("verification_wiring")

TINY = """
[data.synth]
identities_per_group = 60
dim = 24
[grid]
seeds = [3]
models = ["logreg", "xgboost"]
train_groups = ["asian", "all"]
[protocol]
train_per_gender = 8
test_per_gender = 8
[model.xgboost]
n_estimators = 10
[verification]
max_impostor_pairs = 1000000
target_fmr = 1e-2
target_fmrs = [1e-1, 1e-2, 1e-4]
bootstrap = 40
identities = "all"
allpairs_shards = 3
[tsne]
enabled = false
[run]
executor = "local"
workers = 2
report = false
"""
SEED = 3


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wiring")
    (tmp / "grid.toml").write_text(TINY)
    table = load_data(resolve_config(tmp / "grid.toml")["data"])
    write_pairs_csv(table, tmp / "pairs.csv")
    cfg = resolve_config(tmp / "grid.toml", {"run.out": str(tmp / "r"), "verification.pairs": str(tmp / "pairs.csv")})
    cfg["grid"]["test_groups"] = cfg["grid"]["test_groups"] or table.present_ethnicities()   # as the runner does
    summary = run_grid(cfg, progress=False)
    assert summary.exit_code == 0 and summary.failed == []
    split = make_split(table, SEED, Protocol(8, 8), cfg["grid"]["test_groups"])
    return cfg, table, split, load(tmp / "r"), tmp / "r"


def write_pairs_csv(table, path: Path) -> pd.DataFrame:
    """A pairs CSV over the table: per identity with two images one genuine pair (its first two images) and one
    impostor pair (its first image, the next identity's first image); no fold column (k-th pair -> fold k mod 10)."""
    frame = pd.DataFrame({"identity": table.identity, "image": table.image})
    first = frame.groupby("identity", sort=False).head(2)
    rows = []
    ids = list(dict.fromkeys(frame["identity"]))
    for k, who in enumerate(ids):
        imgs = first.loc[first["identity"] == who, "image"].tolist()
        nxt = frame.loc[frame["identity"] == ids[(k + 1) % len(ids)], "image"].iloc[0]
        if len(imgs) == 2:
            rows.append((f"{who}/{imgs[0]}", f"{who}/{imgs[1]}", 1))
            rows.append((f"{who}/{imgs[0]}", f"{ids[(k + 1) % len(ids)]}/{nxt}", 0))
    out = pd.DataFrame(rows, columns=["image_a", "image_b", "same"])
    out.to_csv(path, index=False)
    return out


def brute(table, split, test_groups):
    """Every pair of the impostor job's rows, scored in float64 by brute force."""
    rows = np.concatenate([split.verification[g] for g in test_groups])
    X = np.asarray(table.embeddings[rows], dtype=np.float64)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    S = X @ X.T
    ident = table.identity_codes()[rows]
    group = default_groups(table).per_row()[rows].astype(str)
    i, j = np.triu_indices(len(rows), 1)
    return S[i, j], ident[i] == ident[j], group[i], group[j], ident[i], ident[j]


def test_impostor_matrix_and_demographic_rates_counts_and_intervals(grid):
    cfg, table, split, tables, _ = grid
    s, gen, ga, gb, _, _ = brute(table, split, cfg["grid"]["test_groups"])
    imp = s[~gen]
    mat = tables["impostor_matrix"]
    t = float(mat["threshold"].iloc[0])
    assert t == pytest.approx(convention_threshold(imp, 1e-2), abs=1e-5)
    assert set(mat["group_a"]) == set(ga) and len(set(mat["group_a"])) == 6
    for r in mat.itertuples():
        sel = ~gen & (((ga == r.group_a) & (gb == r.group_b)) | ((ga == r.group_b) & (gb == r.group_a)))
        assert r.n_pairs == sel.sum() and r.false_matches in accepted(s[sel], t)
        k = r.false_matches
        assert r.fmr == pytest.approx(k / sel.sum())
        lo, hi = proportion_confint(k, int(sel.sum()), alpha=0.05, method="beta")
        assert (r.ci_low, r.ci_high) == pytest.approx((lo, hi), abs=1e-12)
        assert r.resolved == (k > 0 and sel.sum() * 1e-2 >= 1)
        assert r.display.startswith("<= ") == (k == 0)
    rates = tables["demographic_rates"].set_index("group")
    for g, r in rates.iterrows():
        own = gen & (ga == g)
        assert r.n_genuine == own.sum() and r.n_genuine - r.false_non_matches in accepted(s[own], t)
        fnm = r.false_non_matches
        lo, hi = proportion_confint(fnm, int(own.sum()), alpha=0.05, method="beta")
        assert (r.fnmr_ci_low, r.fnmr_ci_high) == pytest.approx((lo, hi), abs=1e-12)
    assert rates["false_matches"].sum() < mat["false_matches"].sum()   # cross-group false matches exist


def test_group_eer_and_own_and_global_operating_points(grid):
    cfg, table, split, tables, _ = grid
    s, gen, ga, gb, _, _ = brute(table, split, cfg["grid"]["test_groups"])
    eer = tables["group_eer"].set_index("group")
    ops = tables["operating_points"]
    t_global = float(tables["impostor_matrix"]["threshold"].iloc[0])
    assert set(eer.index) == {"all", *set(ga)}
    for g in eer.index:
        gsel = gen if g == "all" else gen & (ga == g)
        isel = ~gen if g == "all" else ~gen & (ga == g) & (gb == g)
        assert eer.loc[g, "eer"] == pytest.approx(eer_sklearn(s[gsel], s[isel]), abs=1e-5)
        mine = ops[ops["group"] == g]
        assert sorted(mine.loc[mine["threshold_kind"] == "own", "target_fmr"]) == [1e-4, 1e-2, 1e-1]
        for r in mine.itertuples():
            t = t_global if r.threshold_kind == "global" else convention_threshold(s[isel], r.target_fmr)
            if np.isfinite(t):
                assert r.threshold == pytest.approx(t, abs=1e-5)
                assert r.false_matches in accepted(s[isel], t)
                assert r.n_genuine - r.false_non_matches in accepted(s[gsel], t)
            else:          # no impostor may be accepted: the threshold is above the highest impostor score
                # (above the job's float32 score of it; the float64 one here may lie up to 1e-5 either side)
                assert r.threshold > s[isel].max() - 1e-5 and r.false_matches == 0
                assert r.n_genuine - r.false_non_matches in accepted(s[gsel], r.threshold)
            assert (r.n_impostor, r.n_genuine) == (isel.sum(), gsel.sum())
            assert r.resolved == (r.false_matches > 0 and isel.sum() * r.target_fmr >= 1)
            assert bool(r.reason) != r.resolved
    # a group's impostors (~130 pairs) cannot resolve FMR = 1e-4: flagged with the reason
    small = ops[(ops["group"] != "all") & (ops["target_fmr"] == 1e-4)]
    assert (~small["resolved"]).all() and small["reason"].str.contains("< 1/FMR").all()


def test_identity_bootstrap_intervals_are_stored_with_counts(grid):
    cfg, table, split, tables, _ = grid
    s, gen, ga, gb, _, _ = brute(table, split, cfg["grid"]["test_groups"])
    ci = tables["verification_ci"]
    assert (ci["seed"] == SEED).all() and (ci["n_resamples"] == 40).all()
    rates = tables["demographic_rates"].set_index("group")
    for r in ci[ci["quantity"] == "group_fmr"].itertuples():
        assert (r.k, r.n) == (rates.loc[r.group_a, "false_matches"], rates.loc[r.group_a, "n_impostor"])
    eer = ci[ci["quantity"] == "eer"].iloc[0]
    assert eer["estimate"] == pytest.approx(eer_sklearn(s[gen], s[~gen]), abs=1e-5)
    assert eer["ci_low"] < eer["estimate"] < eer["ci_high"]     # 40 resamples of 48 identities do vary
    cross = ci[ci["quantity"] == "cross_fmr"]
    assert len(cross) == 15 and set(ci["quantity"]) >= {"eer", "fnmr_at_fmr", "group_fnmr", "summary"}
    summaries = set(ci.loc[ci["quantity"] == "summary", "metric"])
    assert {"fmr_max_min", "fnmr_max_geomean", "fdr", "garbe"} <= summaries


def test_predictions_balanced_accuracy_and_equalized_odds(grid):
    from fairlearn.metrics import equalized_odds_difference

    _, table, split, tables, path = grid
    acc, pred = tables["accuracy"], tables["predictions"]
    assert len(pred) == acc["n_test"].sum()
    for r in acc.itertuples():
        part = pred[(pred["model"] == r.model) & (pred["train_group"] == r.train_group)
                    & (pred["test_group"] == r.test_group)]
        assert part["row"].tolist() == split.test[r.test_group].tolist()
        assert part["y_true"].tolist() == table.gender[split.test[r.test_group]].tolist()
        assert r.accuracy == pytest.approx((part["y_true"] == part["y_pred"]).mean())
        assert r.balanced_accuracy == pytest.approx(balanced_accuracy_score(part["y_true"], part["y_pred"]))
        assert r.n_train == len(split.train_rows(r.train_group))
    assert pred["score"].between(0, 1).all()        # logreg and xgboost have predict_proba
    eo = stats.equalized_odds(load_results(path))
    assert len(eo) == 4
    for r in eo.itertuples():
        part = pred[(pred["model"] == r.model) & (pred["train_group"] == r.train_group) & (pred["seed"] == SEED)]
        expected = equalized_odds_difference(part["y_true"], part["y_pred"], sensitive_features=part["test_group"])
        assert r.value_mean == pytest.approx(expected)


def test_paired_tests_report_plain_and_corrected(grid):
    """Nadeau-Bengio on planted per-seed accuracies: t = d̄ / sqrt((1/J + n_test/n_train) s²) by hand."""
    from scipy import stats as sps

    a = pd.Series([0.91, 0.93, 0.90, 0.94, 0.92])
    b = pd.Series([0.90, 0.90, 0.89, 0.91, 0.90])
    out = stats.paired_test(a, b, n_train=100, n_test=50)
    d = (a - b).to_numpy()
    t = d.mean() / np.sqrt((1 / 5 + 0.5) * d.var(ddof=1))
    assert out["t_corrected"] == pytest.approx(t)
    assert out["p_corrected"] == pytest.approx(2 * sps.t.sf(abs(t), 4))
    plain = sps.ttest_rel(a, b)
    assert out["t"] == pytest.approx(plain.statistic) and out["p_value"] == pytest.approx(plain.pvalue)
    # identical differences up to rounding: undefined, not |t| ~ 1e14
    x = pd.Series([k / 750 for k in (700, 703, 710)])
    y = pd.Series([(k - 3) / 750 for k in (700, 703, 710)])
    assert np.isnan(stats.paired_test(x, y)["t"])


def test_report_shows_intervals_operating_points_and_both_tests(grid, tmp_path):
    from grid.report import write_report

    *_, path = grid
    res = load_results(path)
    html = write_report(res, tmp_path / "rep")
    md = (tmp_path / "rep" / "report.md").read_text()
    for heading in ("Own and global operating points per group", "EER per demographic group",
                    f"Verification numbers with 95% intervals (seed {SEED})", "Equalized-odds difference",
                    f"Cross-group impostor FMR, seed {SEED}", "p (NB)", "Balanced accuracy",
                    "Exact counts over every pair of the table", "Standard pair protocol"):
        assert heading in md, heading
    assert (tmp_path / "rep" / "figures" / "group_rates.png").stat().st_size > 0
    # the interval matrix shows each stored cell's counts and CP interval, unresolved ones flagged
    mat = stats.impostor_interval_matrix(res)
    imp = res.tables["impostor_matrix"].set_index(["group_a", "group_b"])
    for (a, b), text in mat.stack().items():
        r = imp.loc[(a, b)]
        assert f"{r['false_matches']}/{r['n_pairs']}" in text and text.endswith("(unresolved)") != r["resolved"]
    ops = pd.read_csv(tmp_path / "rep" / "operating_points.csv")
    assert len(ops) == 7 * 4 and html.exists()


@pytest.mark.parametrize("key,value,message", [
    ("verification.bootstrap", 1, "'verification.bootstrap' must be 0"),
    ("verification.bootstrap", -5, "'verification.bootstrap' must be 0"),
    ("verification.target_fmrs", [], "'verification.target_fmrs' must be a non-empty list"),
    ("verification.target_fmrs", [1e-3, 2.0], "'verification.target_fmrs' must be a non-empty list"),
    ("verification.target_fmrs", [True], "'verification.target_fmrs' must be a non-empty list"),
])
def test_new_verification_keys_are_checked(tmp_path: Path, key, value, message):
    from storage.errors import InputError

    section, name = key.split(".")
    (tmp_path / "g.toml").write_text(f"[{section}]\n{name} = {str(value).lower() if value is True else value}\n"
                                     .replace("[True]", "[true]"))
    with pytest.raises(InputError, match=message):
        resolve_config(tmp_path / "g.toml")


def test_new_verification_keys_reach_the_impostor_job():
    from grid.plan import make_plan

    cfg = resolve_config(None, {"verification.bootstrap": 0})
    jobs = [j for j in make_plan(cfg, "f00") if j.kind == "impostor"]
    assert len(jobs) == 5
    assert all(j.params["bootstrap"] == 0 and j.params["target_fmrs"] == [1e-2, 1e-3, 1e-4] for j in jobs)
    other = [j for j in make_plan(resolve_config(None), "f00") if j.kind == "impostor"]
    assert {j.job_id for j in jobs}.isdisjoint(j.job_id for j in other)   # a different bootstrap = new jobs


def test_allpairs_shards_sum_to_brute_force_counts_of_every_pair(grid):
    from tasks.stats import allpairs
    from tasks.kinds.allpairs import count_shard

    _, table, _, tables, path = grid
    rows = tables["allpairs_counts"]
    assert len(table.embeddings) > 2048     # more than one block of 2048 rows: the shards share the work
    assert sorted(rows["shard"].unique()) == [0, 1, 2] and (rows["count"] > 0).all()
    # the sum of the stored shards = one unsharded count of the whole table: the same comparisons per pair of
    # groups (exact integers); per bin, only a score within float32 error of a bin edge may fall in the next bin
    # (the shards' blocks of matrix products add in another order than one block here; checked below)
    one = count_shard(table.embeddings, table.identity_codes(), default_groups(table).per_row(), 0, 1)
    key = ["group_a", "group_b", "kind", "bin"]
    summed = rows.groupby(key)["count"].sum().sort_index()
    one = one.groupby(key)["count"].sum()
    pd.testing.assert_series_equal(summed.groupby(key[:3]).sum(), one.groupby(key[:3]).sum(), check_dtype=False)
    both = summed.index.union(one.index)
    shard_moved = (summed.reindex(both, fill_value=0) - one.reindex(both, fill_value=0)).abs().sum()
    # against brute force over every pair of the table: comparisons per group pair, and per bin
    X = np.asarray(table.embeddings, dtype=np.float64)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    i, j = np.triu_indices(len(X), 1)
    s = (X @ X.T)[i, j]
    ident = table.identity_codes()
    group = default_groups(table).per_row().astype(str)
    gen = ident[i] == ident[j]
    first = group[i] <= group[j]
    lo, hi = np.where(first, group[i], group[j]), np.where(first, group[j], group[i])
    bins = np.floor((s + 1) * 2 ** allpairs.DEFAULT_BITS).astype(np.int64)
    brute = pd.DataFrame({"group_a": np.where(gen, group[i], lo), "group_b": np.where(gen, group[i], hi),
                          "kind": np.where(gen, "genuine", "impostor"), "bin": bins})
    expected = brute.groupby(key).size()
    per_pair = summed.groupby(["group_a", "group_b", "kind"]).sum()
    pd.testing.assert_series_equal(per_pair, expected.groupby(["group_a", "group_b", "kind"]).sum(),
                                   check_dtype=False, check_names=False)
    moved = (summed.reindex(expected.index.union(summed.index), fill_value=0)
             - expected.reindex(expected.index.union(summed.index), fill_value=0)).abs().sum()
    scaled = (s + 1) * 2 ** allpairs.DEFAULT_BITS
    near_edge = int((np.abs(scaled - np.round(scaled)) < 3e-7 * 2 ** allpairs.DEFAULT_BITS).sum())
    assert moved <= 2 * near_edge < 0.05 * len(s)   # only scores within float32 error (3e-7) of an edge may move
    assert shard_moved <= 2 * near_edge
    assert len(s) > 1e5
    # the report's exact tables come from these counts
    exact = stats.allpairs_summary(load_results(path))
    assert exact["impostor_matrix"]["n_pairs"].sum() == 2 * (~gen).sum() - ((~gen) & (group[i] == group[j])).sum()
    ops = exact["operating_points"]
    every = ops[(ops["group"] == "all") & (ops["threshold_kind"] == "own")]
    assert set(every["target_fmr"]) == {1e-1, 1e-2, 1e-4} and every["n_impostor"].iloc[0] == (~gen).sum()
    for r in every.itertuples():     # the edge threshold meets the target, and the counts at it are brute force's
        assert r.false_matches <= int(Fraction(str(r.target_fmr)) * r.n_impostor)
        assert r.false_matches in accepted(s[~gen], r.threshold, 3e-7)


def _pairs_path(grid) -> Path:
    return grid[4].parent / "pairs.csv"


def test_pair_protocol_job_against_a_direct_10_fold_computation(grid):
    """The pairs job's stored tables = 10-fold accuracy recomputed here (threshold = the best of every midpoint on
    the 9 training folds, lowest on ties), EER from scikit-learn, SER by hand."""
    _, table, _, tables, _ = grid
    pairs = pd.read_csv(_pairs_path(grid))
    key = {(i, m): r for r, (i, m) in enumerate(zip(table.identity, table.image))}
    ra = np.array([key[tuple(x.split("/"))] for x in pairs["image_a"]])
    rb = np.array([key[tuple(x.split("/"))] for x in pairs["image_b"]])
    X = np.asarray(table.embeddings, dtype=np.float64)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    s = np.einsum("ij,ij->i", X[ra], X[rb])
    same = pairs["same"].to_numpy(bool)
    folds = np.empty(len(same), int)
    folds[same] = np.arange(same.sum()) % 10
    folds[~same] = np.arange((~same).sum()) % 10
    eth = np.asarray(["asian", "caucasian", "black"])[table.ethnicity[ra]]
    groups = tables["pair_groups"].set_index("group")
    assert set(groups.index) == set(eth)
    errors = {}
    for g in groups.index:
        sel = eth == g
        accs = []
        for f in range(10):
            tr, te = sel & (folds != f), sel & (folds == f)
            v = np.unique(s[tr])
            cands = np.r_[v[0], (v[1:] + v[:-1]) / 2, np.nextafter(v[-1], np.inf)]
            train_acc = [((s[tr] >= t) == same[tr]).mean() for t in cands]
            t = cands[int(np.argmax(train_acc))]
            accs.append(((s[te] >= t) == same[te]).mean())
        assert groups.loc[g, "accuracy_mean"] == pytest.approx(np.mean(accs))
        assert groups.loc[g, "accuracy_std"] == pytest.approx(np.std(accs, ddof=1))
        assert groups.loc[g, "eer"] == pytest.approx(eer_sklearn(s[sel & same], s[sel & ~same]), abs=1e-9)
        assert groups.loc[g, "n_pairs"] == sel.sum()
        errors[g] = 1 - np.mean(accs)
    across = tables["pair_across"].iloc[0]
    if min(errors.values()) > 0:
        assert across["skewed_error_ratio"] == pytest.approx(max(errors.values()) / min(errors.values()))
    else:
        assert np.isnan(across["skewed_error_ratio"]) and "no error" in across["note"]
    ops = tables["pair_operating_points"]
    assert len(ops) == 3 * len(groups)
    # ~120 impostor pairs per group cannot resolve FMR = 1e-4 (n < 1/FMR): flagged with the reason
    tiny = ops[ops["target_fmr"] == 1e-4]
    assert (~tiny["resolved"]).all() and tiny["reason"].str.contains("< 1/FMR").all()
    for r in ops.itertuples():
        g = (eth == r.group) & ~same
        assert r.n_impostor == g.sum() and r.false_matches <= int(Fraction(str(r.target_fmr)) * g.sum())


def test_new_workers_take_group_names_from_the_data():
    """The workers name groups by the names the shared data carry (any vocabulary, grid.axes): without them there
    is no silent fallback to the study's names."""
    from tasks.kinds.pairs import evaluate
    from tasks.runtime import row_groups

    data = shared_arrays(EmbeddingTable(np.ones((4, 2), np.float32), np.array(list("abcd"), dtype=object),
                                        np.array(list("wxyz"), dtype=object), np.array([0, 1, 1, 0], np.int8),
                                        np.array([1, 0, 1, 0], np.int8), ("african", "indian")))
    assert row_groups(data).tolist() == ["african_female", "indian_male", "indian_female", "african_male"]
    assert row_groups(data, np.array([1, 2]), axis="group").tolist() == ["indian", "indian"]
    with pytest.raises(KeyError, match="demographic_names"):
        row_groups({k: v for k, v in data.items() if k != "demographic_names"}, np.array([1]))
    rng = np.random.default_rng(0)
    n = 40
    X = rng.normal(size=(2 * n, 8))
    X[1::2] = X[::2] + rng.normal(0, 0.3, (n, 8))          # image 1 of identity k is close to its image 0
    identity = np.repeat([f"p{k}" for k in range(n)], 2).astype(object)
    image = np.tile(["a", "b"], n).astype(object)
    ethnicity = np.repeat(np.arange(n) % 2, 2)
    rows = [(k, k % 10, f"p{k}", "a", f"p{k}", "b", True, "") for k in range(n)] + \
        [(n + k, k % 10, f"p{k}", "a", f"p{(k + 2) % n}", "a", False, "") for k in range(n)]
    table = pd.DataFrame(rows, columns=["line", "fold", "identity_a", "image_a", "identity_b", "image_b", "same",
                                        "group"]).assign(source="mem")
    out = evaluate(X, identity, image, np.array(["african", "indian"], dtype=object)[ethnicity], table, [1e-1])
    assert sorted(out["pair_groups"]["group"]) == ["african", "indian"]
    assert (out["pair_groups"]["n_pairs"] == n).all()
