"""Job kind "mitigated_verification" (issue 19): a tiny `biasgrid run` with the four score mitigations whose stored
rows equal a direct computation (each method fitted directly on every image of the split's training identities,
every pair of the test identities scored by brute force and transformed, EER from scikit-learn's ROC, FMR and
FNMR by counting), whose ``none`` rows and job ids are those of a run without mitigations; one job per seed x
mitigation, each fitting its method once; the refusal without training identities."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import accepted, convention_threshold, eer_sklearn
from grid.cli import main
from grid.config import resolve_config
from grid.runner import load_checked_data, prepare, shared_arrays
from grid.splits import Protocol, make_split
from storage.attributes import default_groups
from storage.errors import InputError
from storage.results import jobs_from_columns, load
from tasks.kinds import impostor, mitigated_verification, scores
from tasks.mitigation import build_mitigation
from tasks.runtime import run_job
from tasks.stats import scoring

REPO = Path(__file__).resolve().parents[1]
SEEDS = (0, 1)
METHODS = ("group_thresholds", "fsn", "faircal", "znorm")
TOML = """
[data.synth]
identities_per_group = 16
dim = 16
images_per_identity = 4
[grid]
seeds = [0, 1]
models = []
mitigations = MITIGATIONS
[protocol]
train_per_gender = 8
test_per_gender = 8
[verification]
max_impostor_pairs = 20000
target_fmr = 1e-2
target_fmrs = [1e-1, 1e-2]
bootstrap = 20
[tsne]
enabled = false
[run]
executor = "local"
workers = WORKERS
report = false
"""
CONFIG = """
[mitigation.group_thresholds]
target_fmr = 1e-2
[mitigation.fsn]
n_clusters = 4
target_fmr = 1e-2
[mitigation.faircal]
n_clusters = 3
"""


def config(tmp: Path, name: str, mitigations: list[str], workers: int = 2, extra: str = "") -> Path:
    text = TOML.replace("MITIGATIONS", json.dumps(mitigations)).replace("WORKERS", str(workers))
    path = tmp / f"{name}.toml"
    path.write_text(text + (CONFIG if set(METHODS) <= set(mitigations) else "") + extra)
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The grid with every score mitigation (`biasgrid run`), and the config of the same grid without."""
    tmp = tmp_path_factory.mktemp("mitigated")
    mitigated = config(tmp, "mitigated", ["none", *METHODS])
    done = subprocess.run([sys.executable, "-m", "grid.cli", "run", "--config", str(mitigated), "--out",
                           str(tmp / "mitigated"), "--quiet"], capture_output=True, text=True, cwd=tmp, timeout=600,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(
                              filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))})
    assert done.returncode == 0, done.stderr
    assert "Warning" not in done.stderr, done.stderr       # no library warning reaches the terminal
    return resolve_config(mitigated), tmp / "mitigated", config(tmp, "plain", ["none"])


# ------------------------------------------------------------------------------------ direct computation ---
class Direct:
    """One seed's data, split and directly fitted methods; every pair of some rows, brute-force scored and
    transformed."""

    def __init__(self, cfg, seed: int):
        _, table, _ = load_checked_data(cfg)
        self.table, self.cfg, self.seed = table, cfg, seed
        self.groups = list(table.present_ethnicities())
        self.split = make_split(table, seed, Protocol(8, 8), self.groups)
        self.codes = table.identity_codes()
        self.demographic = default_groups(table).per_row().astype(str)
        train_ids = np.unique(self.codes[np.concatenate([self.split.train[g] for g in self.groups])])
        self.fitting = np.flatnonzero(np.isin(self.codes, train_ids))   # every image of the training identities
        X = table.embeddings
        self.fitted = {}
        for name in METHODS:
            labels = None if name in ("fsn", "faircal") else self.demographic[self.fitting]
            self.fitted[name] = build_mitigation(name, cfg["mitigation"][name], seed).fit(
                X[self.fitting], self.codes[self.fitting], labels)

    def pairs(self, rows: np.ndarray, name: str) -> dict[str, np.ndarray]:
        X = np.asarray(self.table.embeddings[rows], dtype=np.float64)
        Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
        i, j = np.triu_indices(len(rows), 1)
        s = (Xn @ Xn.T)[i, j]
        s = self.fitted[name].transform(self.table.embeddings[rows], self.demographic[rows], i, j, s)
        ident = self.codes[rows]
        return {"s": s, "gen": ident[i] == ident[j], "ga": self.demographic[rows][i], "gb": self.demographic[rows][j]}


@pytest.fixture(scope="module")
def direct(runs):
    cfg, _, _ = runs
    return {seed: Direct(cfg, seed) for seed in SEEDS}


# -------------------------------------------------------------------------------------------------- tests ---
def test_one_job_per_seed_and_score_mitigation_and_none_unchanged(runs):
    """The mitigated run's other jobs are the plain grid's (same ids), and their stored rows are what the plain
    grid's jobs give, each run here in-process."""
    cfg, mitigated, plain = runs
    planned = jobs_from_columns(json.loads((mitigated / "run.json").read_text())["jobs"])
    mine = [j for j in planned if j["kind"] == "mitigated_verification"]
    assert sorted((j["seed"], j["mitigation"]) for j in mine) == sorted((s, m) for s in SEEDS for m in METHODS)
    plain_cfg, table, fingerprint = load_checked_data(resolve_config(plain))
    before = prepare(plain_cfg, table, fingerprint)
    others = sorted(j["job_id"] for j in planned if j["kind"] != "mitigated_verification")
    assert others == sorted(j.job_id for j in before.jobs) and len(others) == len(SEEDS) * (3 + 1)  # ids unchanged
    data = shared_arrays(table, before.axes)
    fresh: dict[str, list[pd.DataFrame]] = {}
    for job in before.jobs:
        for name, df in run_job(job.payload(before.splits[job.seed]), data).tables.items():
            fresh.setdefault(name, []).append(df)
    a = load(mitigated)
    for name in ("verification", "verification_curve", "verification_hist", *mitigated_verification.IMPOSTOR_TABLES):
        b = pd.concat(fresh[name], ignore_index=True)
        keys = [c for c in a[name].columns if c not in ("node", "finished_at")]
        assert len(b) > 0
        pd.testing.assert_frame_equal(a[name][keys].sort_values(keys, ignore_index=True),
                                      b[keys].sort_values(keys, ignore_index=True), check_dtype=False)
    # the fixed grids of curves and histograms are not stored for a mitigation
    assert "mitigated_verification_curve" not in a and "mitigated_verification_hist" not in a
    assert set(a["mitigated_verification"]["mitigation"]) == set(METHODS)


def test_mitigated_scores_rows_equal_a_direct_computation(runs, direct):
    cfg, mitigated, _ = runs
    rows = load(mitigated)["mitigated_verification"]
    assert len(rows) == len(SEEDS) * len(METHODS) * 3
    for r in rows.itertuples():
        d = direct[r.seed]
        p = d.pairs(d.split.verification[r.test_group], r.mitigation)
        g, i = p["s"][p["gen"]], p["s"][~p["gen"]]
        assert (r.n_genuine, r.n_impostor, r.impostor_sampled) == (len(g), len(i), False)
        assert r.eer == pytest.approx(eer_sklearn(g, i), abs=1e-5)
        for target, col in ((1e-2, "fnmr_at_fmr_1e_2"), (1e-3, "fnmr_at_fmr_1e_3")):
            t = convention_threshold(i, target)
            assert r._asdict()[col] * len(g) in [len(g) - k for k in accepted(g, t)]
        assert (r.genuine_mean, r.impostor_mean) == pytest.approx((g.mean(), i.mean()), abs=1e-5)
        assert r.n_resamples == 20 and r.eer_ci_low <= r.eer + 1e-12 and r.eer <= r.eer_ci_high + 1e-12


def test_mitigated_impostor_tables_equal_a_direct_computation(runs, direct):
    cfg, mitigated, _ = runs
    t = load(mitigated)
    none = {"impostor_matrix": t["impostor_matrix"]}
    outside = {}
    for (seed, name), mat in t["mitigated_impostor_matrix"].groupby(["seed", "mitigation"]):
        d = direct[seed]
        p = d.pairs(np.concatenate([d.split.verification[g] for g in d.groups]), name)
        s, gen, ga, gb = p["s"], p["gen"], p["ga"], p["gb"]
        thr = float(mat["threshold"].iloc[0])
        assert thr == pytest.approx(convention_threshold(s[~gen], 1e-2), abs=1e-5)
        outside[name] = not -1 <= thr <= 1
        assert thr != pytest.approx(none["impostor_matrix"].query("seed == @seed")["threshold"].iloc[0], abs=1e-4)
        for r in mat.itertuples():
            sel = ~gen & (((ga == r.group_a) & (gb == r.group_b)) | ((ga == r.group_b) & (gb == r.group_a)))
            assert r.n_pairs == sel.sum() and r.false_matches in accepted(s[sel], thr)
        rates = t["mitigated_demographic_rates"].query("seed == @seed and mitigation == @name").set_index("group")
        assert set(rates.index) == set(ga) and len(rates) == 6
        for group, r in rates.iterrows():
            own, imp = gen & (ga == group), ~gen & (ga == group) & (gb == group)
            assert (r.n_genuine, r.n_impostor) == (own.sum(), imp.sum())
            assert r.n_genuine - r.false_non_matches in accepted(s[own], thr)
            assert r.false_matches in accepted(s[imp], thr) and r.threshold == thr
        eer = t["mitigated_group_eer"].query("seed == @seed and mitigation == @name").set_index("group")
        ops = t["mitigated_operating_points"].query("seed == @seed and mitigation == @name")
        for group in eer.index:
            gsel = gen if group == "all" else gen & (ga == group)
            isel = ~gen if group == "all" else ~gen & (ga == group) & (gb == group)
            assert eer.loc[group, "eer"] == pytest.approx(eer_sklearn(s[gsel], s[isel]), abs=1e-5)
            for r in ops[(ops["group"] == group) & (ops["threshold_kind"] == "own")].itertuples():
                own_t = convention_threshold(s[isel], r.target_fmr)
                assert r.threshold == pytest.approx(own_t, abs=1e-5) and r.false_matches in accepted(s[isel], own_t)
                assert r.n_genuine - r.false_non_matches in accepted(s[gsel], own_t)
        ci = t["mitigated_verification_ci"].query("seed == @seed and mitigation == @name")
        assert (ci["n_resamples"] == 20).all() and {"eer", "group_fmr", "cross_fmr", "summary"} <= set(ci["quantity"])
        assert ci.query("quantity == 'eer'")["estimate"].iloc[0] == pytest.approx(eer_sklearn(s[gen], s[~gen]),
                                                                                  abs=1e-5)
    # transformed scores leave [-1, 1] (z-scores) or are probabilities: thresholds come from the data
    assert outside["znorm"] and not outside["faircal"]
    assert t["mitigated_impostor_matrix"].query("mitigation == 'faircal'")["threshold"].between(0, 1).all()


# ------------------------------------------------------------------------------------ the worker in-process ---
class Counting:
    """A user score mitigation recording its calls; ``scale``/``shift``: an increasing affine map of the scores."""

    side, uses_group_labels, defaults = "score", True, {"scale": 1.0, "shift": 0.0}
    fits: list[int] = []
    transforms: list[int] = []

    def __init__(self, config, seed):
        self.scale, self.shift = config["scale"], config["shift"]

    def fit(self, X, identity, group):
        Counting.fits.append(len(X))
        assert len(np.unique(group)) == 6
        return self

    def transform(self, X, group, a, b, s):
        Counting.transforms.append(len(X))
        return self.scale * np.asarray(s) + self.shift


def counting(config, seed):
    return Counting(config, seed)


counting.side, counting.uses_group_labels, counting.defaults = Counting.side, True, Counting.defaults


@pytest.mark.parametrize("scale,shift,where", [(1.0, 0.0, "test"), (2.0, 1.0, "test"), (2.0, 1.0, "dev")])
def test_the_fit_is_once_per_job_and_a_monotone_map_keeps_every_count(tmp_path, scale, shift, where):
    """The worker fits once, transforms each test group's pairs and the seed's (and, with thresholds chosen on a
    development part, those too); with a sampled, stratified impostor job (max_impostor_pairs 1000) an increasing
    affine map gives the none jobs' counts and rates exactly, its thresholds and EER threshold mapped, and the
    identity map every number of the none jobs."""
    name = "test_mitigated_verification:counting"
    path = config(tmp_path, "counting", ["none", name], extra=f'[mitigation."{name}"]\nscale = {scale}\n'
                  f'shift = {shift}\n')
    cfg = resolve_config(path, {"verification.max_impostor_pairs": 1000, "verification.bootstrap": 0,
                                "verification.threshold_split": where})
    cfg, table, fingerprint = load_checked_data(cfg)
    plan = prepare(cfg, table, fingerprint)
    data = shared_arrays(table, plan.axes)
    jobs = {j.kind: j for j in plan.jobs if j.seed == 0}
    job = jobs["mitigated_verification"]
    Counting.fits.clear(), Counting.transforms.clear()
    got = mitigated_verification.run(job.payload(plan.splits[0]), data)
    split = plan.splits[0]
    assert Counting.fits == [sum(len(split.fitting[g]) for g in cfg["grid"]["test_groups"])]
    sizes = [len(split.verification[g]) for g in cfg["grid"]["test_groups"]]
    dev = [] if where == "test" else [pytest.approx(sum(sizes) / 2, rel=0.2)]   # the development part's pairs
    assert Counting.transforms == [*sizes, *dev, sum(sizes) - (Counting.transforms[-2] if dev else 0)]
    base = impostor.run(jobs["impostor"].payload(split), data)
    assert base["impostor_matrix"]["n_pairs"].sum() > 0 and cfg["verification"]["sampling"] == "stratified"
    for table_name in mitigated_verification.IMPOSTOR_TABLES[:-1]:
        mine = got[f"mitigated_{table_name}"].drop(columns="mitigation")
        assert (got[f"mitigated_{table_name}"]["mitigation"] == name).all()
        ref = base[table_name][mine.columns]
        for col in ("threshold", "eer_threshold"):
            if col in ref:
                finite = np.isfinite(ref[col])
                ref.loc[finite, col] = scale * ref.loc[finite, col] + shift
        if scale == 1.0:
            pd.testing.assert_frame_equal(mine.reset_index(drop=True), ref.reset_index(drop=True))
        else:
            counts = [c for c in ref.columns if c.startswith(("false_", "n_", "fmr", "fnmr", "eer")) or
                      c in ("group", "group_a", "group_b", "target_fmr")]
            pd.testing.assert_frame_equal(mine[counts].reset_index(drop=True), ref[counts].reset_index(drop=True),
                                          rtol=1e-12, atol=1e-12)
            for col in {"threshold", "eer_threshold"} & set(ref.columns):
                assert np.allclose(mine[col], ref[col], rtol=1e-6, equal_nan=True)
    for group in cfg["grid"]["test_groups"]:
        one = scores.run(next(j for j in plan.jobs if j.kind == "scores" and j.seed == 0 and
                              j.params["test_group"] == group).payload(split), data)["verification"]
        mine = got["mitigated_verification"].query("test_group == @group").iloc[0]
        assert mine["n_impostor"] == one["n_impostor"].iloc[0] and mine["impostor_sampled"]
        assert mine["eer"] == pytest.approx(one["eer"].iloc[0], abs=1e-12)
        assert mine["fnmr_at_fmr_1e_2"] == one["fnmr_at_fmr_1e_2"].iloc[0]
        assert mine["genuine_mean"] == pytest.approx(scale * one["genuine_mean"].iloc[0] + shift, rel=1e-6)


def test_a_transform_must_give_one_finite_score_per_pair():
    X = np.random.default_rng(0).normal(size=(12, 4)).astype(np.float32)
    sc = scoring.score_pairs(X, np.repeat(np.arange(4), 3), np.arange(12), seed=0, max_impostor_pairs=10**6,
                             what="rows")
    with pytest.raises(InputError, match="non-finite"):
        scoring.transformed(sc, np.arange(12), lambda rows, a, b, s: np.where(a == 0, np.inf, s))
    with pytest.raises(InputError, match="shape"):
        scoring.transformed(sc, np.arange(12), lambda rows, a, b, s: s[:-1])


def test_splits_fitting_rows_are_every_image_of_the_training_identities(runs):
    cfg, _, _ = runs
    _, table, _ = load_checked_data(cfg)
    codes = table.identity_codes()
    split = make_split(table, 0, Protocol(8, 8))
    for g, rows in split.fitting.items():
        ids = np.unique(codes[split.train[g]])
        assert np.array_equal(rows, np.flatnonzero(np.isin(codes, ids)))
        assert not set(codes[rows]) & set(codes[split.verification[g]])
    assert all(len(r) == 0 for r in make_split(table, 0, Protocol(0, 8)).fitting.values())


def test_score_mitigations_without_training_identities_are_refused(tmp_path, capsys):
    path = config(tmp_path, "only", ["none", "fsn"], extra="")
    path.write_text(path.read_text().replace("train_per_gender = 8", "train_per_gender = 0"))
    out = tmp_path / "r"
    code = main(["run", "--config", str(path), "--out", str(out), "--quiet", "--executor", "local"])
    err = capsys.readouterr().err
    assert code == 2 and "protocol.train_per_gender = 0" in err and "score mitigations (fsn)" in err
    assert "fit on every image of each seed's training identities" in err
    assert not (out / "run.json").exists()
