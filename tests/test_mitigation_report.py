"""The report's Mitigation section: every number against an independent computation on small hand-built frames
(fairlearn, scipy, statsmodels, brute-force loops), and the section of a results folder (a tiny real run plus
mitigated rows written with ResultStore) rendered in every format; a folder without mitigations is unchanged."""

from __future__ import annotations

import argparse
import itertools
import math
import shutil
import statistics
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fairlearn.metrics import equalized_odds_difference
from scipy import stats as sstats
from statsmodels.stats.multitest import multipletests

from grid.cli import report as cli_report
from grid.config import resolve_config
from grid.report import load_results, write_report
from grid.report.render import format_sections, render_html, render_latex, render_markdown
from grid.report.sections import mitigation as mit
from grid.report.sections.mitigation import (classifier_gaps, group_fnmr_values, impostor_values,
                                             paired_with_none, tradeoff, verification_gaps)
from grid.runner import run_grid
from storage.results import ResultStore, jobs_from_columns, jobs_to_columns
from storage.schema import TABLES, mitigated_table
from tasks import kinds
from tasks.mitigation import resolve_mitigation_config

from test_report import _check_html

RNG = np.random.default_rng(19)
GROUPS = ["asian", "caucasian", "black"]


# ------------------------------------------------------------------------------ hand-built frames: classifier
def _acc_frame(mitigations=("none", "reweight"), seeds=(0, 1, 2, 3), zero_error=None):
    rows = []
    for m, seed, g in itertools.product(mitigations, seeds, GROUPS):
        a = float(RNG.uniform(0.6, 0.95))
        if zero_error == (m, seed, g):
            a = 1.0
        rows.append({"mitigation": m, "model": "logreg", "train_group": "all", "test_group": g, "seed": seed,
                     "accuracy": a, "n_train": 60 - (5 if m != "none" else 0), "n_test": 16 + GROUPS.index(g)})
    return pd.DataFrame(rows)


def _pred_frame(mitigations=("none", "reweight"), seeds=(0, 1, 2, 3)):
    rows = []
    for m, seed, g in itertools.product(mitigations, seeds, GROUPS):
        y = np.r_[np.zeros(8, int), np.ones(8, int)]
        p = np.where(RNG.uniform(size=16) < 0.25, 1 - y, y)
        rows += [{"mitigation": m, "model": "logreg", "train_group": "all", "test_group": g, "seed": seed, "row": i,
                  "y_true": int(t), "y_pred": int(q)} for i, (t, q) in enumerate(zip(y, p))]
    return pd.DataFrame(rows)


def test_classifier_gaps_against_brute_force_and_fairlearn():
    acc = _acc_frame(zero_error=("reweight", 2, "black"))
    pred = _pred_frame()
    gaps = classifier_gaps(acc, pred).set_index(["mitigation", "seed", "metric"])
    for (m, seed), part in acc.groupby(["mitigation", "seed"]):
        a = list(part["accuracy"])
        assert gaps.loc[(m, seed, "overall_accuracy"), "value"] == pytest.approx(sum(a) / len(a), abs=1e-15)
        assert gaps.loc[(m, seed, "spread"), "value"] == pytest.approx(max(a) - min(a), abs=1e-15)
        errors = [1 - v for v in a]
        if min(errors) == 0:
            assert math.isnan(gaps.loc[(m, seed, "ser"), "value"])
            assert "lowest error is 0" in gaps.loc[(m, seed, "ser"), "note"]
        else:
            assert gaps.loc[(m, seed, "ser"), "value"] == pytest.approx(max(errors) / min(errors), rel=1e-12)
        assert gaps.loc[(m, seed, "spread"), "n_train"] == min(part["n_train"])
        assert gaps.loc[(m, seed, "spread"), "n_test"] == sum(part["n_test"])
        p = pred[(pred["mitigation"] == m) & (pred["seed"] == seed)]
        expected = equalized_odds_difference(p["y_true"], p["y_pred"], sensitive_features=p["test_group"])
        assert gaps.loc[(m, seed, "eod"), "value"] == pytest.approx(expected, abs=1e-12)
        assert gaps.loc[(m, seed, "eod"), "n_test"] == sum(part["n_test"])


def _nb(x, y, n_train, n_test, confidence=0.95):
    """The Nadeau-Bengio corrected resampled t-test, written out with scipy's t distribution."""
    d = [a - b for a, b in zip(x, y)]
    J = len(d)
    mean = sum(d) / J
    var = sum((v - mean) ** 2 for v in d) / (J - 1)
    se = math.sqrt((1 / J + n_test / n_train) * var)
    t = mean / se
    half = sstats.t.ppf(0.5 + confidence / 2, J - 1) * se
    return mean, mean - half, mean + half, 2 * sstats.t.sf(abs(t), J - 1)


def test_paired_with_none_is_the_corrected_test_paired_by_seed_and_holm_per_mitigation():
    acc = _acc_frame(mitigations=("none", "reweight", "erase"), seeds=(0, 1, 2, 3, 4))
    acc = acc[~((acc["mitigation"] == "erase") & (acc["seed"] == 4))]       # a seed erase lacks: not paired
    acc = acc.sample(frac=1.0, random_state=3)                               # rows in any order
    gaps = classifier_gaps(acc, pd.DataFrame())
    diff = paired_with_none(gaps, ["model", "train_group"], ["none", "erase", "reweight"])
    assert list(dict.fromkeys(diff["mitigation"])) == ["erase", "reweight"]   # the given order, none left out
    assert set(diff["metric"]) == {"overall_accuracy", "spread", "ser"}
    for m in ("erase", "reweight"):
        part = diff[diff["mitigation"] == m]
        for r in part.itertuples():
            mine = gaps[(gaps["mitigation"] == m) & (gaps["metric"] == r.metric)].set_index("seed")["value"]
            ref = gaps[(gaps["mitigation"] == "none") & (gaps["metric"] == r.metric)].set_index("seed")["value"]
            seeds = sorted(set(mine.index) & set(ref.index))
            assert r.n_pairs == len(seeds) == (4 if m == "erase" else 5)
            x, y = [mine[s] for s in seeds], [ref[s] for s in seeds]
            n_train = min(acc[acc["mitigation"].isin([m, "none"])]["n_train"])       # the smaller side
            n_test = sum(acc[(acc["mitigation"] == "none") & (acc["seed"] == 0)]["n_test"])
            mean, lo, hi, p = _nb(x, y, n_train, n_test)
            assert r.mean_diff == pytest.approx(mean, abs=1e-14)
            assert r.mean_mitigation - r.mean_none == pytest.approx(mean, abs=1e-14)
            assert (r.ci_low_corrected, r.ci_high_corrected) == (pytest.approx(lo, abs=1e-12),
                                                                 pytest.approx(hi, abs=1e-12))
            assert r.p_corrected == pytest.approx(p, rel=1e-9)
            assert r.p_value == pytest.approx(sstats.ttest_rel(x, y).pvalue, rel=1e-9)   # the plain test beside
            assert (r.n_train, r.n_test) == (n_train, n_test)
        # Holm over the family: every row of this mitigation in this table
        expected = multipletests(part["p_corrected"].to_numpy(), method="holm")[1]
        np.testing.assert_allclose(part["p_holm_corrected"], expected, rtol=1e-12)
        assert (part["significant"] == (part["p_holm_corrected"] < 0.05)).all()


def test_undefined_values_are_left_out_of_the_pairs_with_a_note():
    acc = _acc_frame(seeds=(0, 1, 2, 3), zero_error=("reweight", 1, "asian"))
    diff = paired_with_none(classifier_gaps(acc, pd.DataFrame()), ["model", "train_group"]).set_index("metric")
    assert diff.loc["ser", "n_pairs"] == 3 and diff.loc["spread", "n_pairs"] == 4
    assert "lowest error is 0" in diff.loc["ser", "note"]
    # no none rows, or unknown sizes: nothing to compare / the corrected test undefined, said so
    assert paired_with_none(classifier_gaps(acc[acc["mitigation"] != "none"], pd.DataFrame()),
                            ["model", "train_group"]).empty
    unknown = classifier_gaps(acc.assign(n_train=np.nan), pd.DataFrame())
    out = paired_with_none(unknown, ["model", "train_group"])
    assert out["p_corrected"].isna().all() and out["p_holm_corrected"].isna().all()
    assert out["note"].str.contains("corrected test undefined").all()


# ----------------------------------------------------------------------------------- hand-built frames: scores
DEMO = ["asian_male", "asian_female", "black_male", "black_female"]


def _rates_frame(mitigations=("none", "fsn"), seeds=(0, 1, 2)):
    rows = []
    for m, seed, g in itertools.product(mitigations, seeds, DEMO):
        n_gen, n_imp = int(RNG.integers(50, 90)), 1000
        fnm, fm = int(RNG.integers(1, 20)), int(RNG.integers(1, 6))
        if (m, seed, g) == ("fsn", 1, "black_male"):
            fm = 0                                                   # a zero FMR: its ratios undefined there
        rows.append({"mitigation": m, "seed": seed, "group": g, "fmr": fm / n_imp, "fnmr": fnm / n_gen,
                     "n_genuine": n_gen, "n_impostor": n_imp, "false_matches": fm, "false_non_matches": fnm})
    return pd.DataFrame(rows)


def _gini(x):
    n, mean = len(x), sum(x) / len(x)
    return n / (n - 1) * sum(abs(a - b) for a in x for b in x) / (2 * n * n * mean)


def test_verification_gaps_against_brute_force():
    rates = _rates_frame()
    gaps = verification_gaps(rates, DEMO, 60.0, 48.0).set_index(["mitigation", "seed", "metric"])
    assert (gaps["n_train"] == 60).all() and (gaps["n_test"] == 48).all()
    for (m, seed), part in rates.groupby(["mitigation", "seed"]):
        part = part.set_index("group").loc[DEMO]
        fmr, fnmr = list(part["fmr"]), list(part["fnmr"])
        value = lambda k: gaps.loc[(m, seed, k), "value"]   # noqa: E731
        assert value("fnmr_overall") == pytest.approx(sum(part["false_non_matches"]) / sum(part["n_genuine"]))
        geo = lambda x: math.prod(x) ** (1 / len(x))         # noqa: E731
        assert value("fnmr_max_min") == pytest.approx(max(fnmr) / min(fnmr), rel=1e-12)
        assert value("fnmr_max_geomean") == pytest.approx(max(fnmr) / geo(fnmr), rel=1e-12)
        if min(fmr) == 0:
            for k in ("fmr_max_min", "fmr_max_geomean"):
                assert math.isnan(value(k)) and gaps.loc[(m, seed, k), "note"]
        else:
            assert value("fmr_max_min") == pytest.approx(max(fmr) / min(fmr), rel=1e-12)
            assert value("fmr_max_geomean") == pytest.approx(max(fmr) / geo(fmr), rel=1e-12)
        fdr = 1 - (0.5 * max(abs(a - b) for a in fmr for b in fmr) + 0.5 * max(abs(a - b) for a in fnmr
                                                                               for b in fnmr))
        assert value("fdr") == pytest.approx(fdr, abs=1e-15)
        assert value("garbe") == pytest.approx(0.5 * _gini(fmr) + 0.5 * _gini(fnmr), rel=1e-12)
        werm = (max(fmr) / geo([v + 1e-5 for v in fmr])) ** 0.5 * (max(fnmr) / geo([v + 1e-5 for v in fnmr])) ** 0.5
        assert value("werm") == pytest.approx(werm, rel=1e-12)
    fnmr = group_fnmr_values(rates, DEMO[::-1], 60.0, 48.0)
    assert list(dict.fromkeys(fnmr['group'])) == DEMO[::-1]
    fnmr = fnmr.set_index(["mitigation", "seed", "group"])["value"]
    for r in rates.itertuples():
        assert fnmr[r.mitigation, r.seed, r.group] == r.false_non_matches / r.n_genuine


def test_impostor_matrix_cells_once_per_pair_and_their_differences():
    rows = []
    for m, seed in itertools.product(("none", "znorm"), (0, 1, 2)):
        for a, b in itertools.combinations_with_replacement(DEMO, 2):
            v = float(RNG.uniform(1e-5, 2e-3))
            rows += [{"mitigation": m, "seed": seed, "group_a": a, "group_b": b, "fmr": v},
                     {"mitigation": m, "seed": seed, "group_a": b, "group_b": a, "fmr": v}][: 1 if a == b else 2]
    matrix = pd.DataFrame(rows)
    values = impostor_values(matrix, DEMO, 60.0, 48.0)
    assert len(values) == 2 * 3 * 10                       # 10 unordered pairs of 4 groups, per mitigation and seed
    assert all(DEMO.index(a) <= DEMO.index(b) for a, b in zip(values["group_a"], values["group_b"]))
    diff = paired_with_none(values, ["group_a", "group_b"])
    assert len(diff) == 10
    for r in diff.itertuples():
        cell = matrix[(matrix["group_a"] == r.group_a) & (matrix["group_b"] == r.group_b)]
        x = cell[cell["mitigation"] == "znorm"].sort_values("seed")["fmr"].tolist()
        y = cell[cell["mitigation"] == "none"].sort_values("seed")["fmr"].tolist()
        mean, lo, hi, p = _nb(x, y, 60, 48)
        assert r.mean_diff == pytest.approx(mean, rel=1e-9) and r.p_corrected == pytest.approx(p, rel=1e-9)
        assert r.ci_low_corrected == pytest.approx(lo, rel=1e-9)
    np.testing.assert_allclose(diff["p_holm_corrected"], multipletests(diff["p_corrected"], method="holm")[1])


def test_tradeoff_points_are_means_and_stds_over_seeds():
    acc = _acc_frame(mitigations=("none", "reweight", "erase"))
    gaps = classifier_gaps(acc, pd.DataFrame())
    pts = tradeoff(gaps, "overall_accuracy", "spread", ["model", "train_group"]).set_index("mitigation")
    for m in ("none", "reweight", "erase"):
        xs, ys = [], []
        for _, part in acc[acc["mitigation"] == m].groupby("seed"):
            xs.append(statistics.fmean(part["accuracy"]))
            ys.append(max(part["accuracy"]) - min(part["accuracy"]))
        assert pts.loc[m, "x_mean"] == pytest.approx(statistics.fmean(xs))
        assert pts.loc[m, "x_std"] == pytest.approx(statistics.stdev(xs))
        assert pts.loc[m, "y_mean"] == pytest.approx(statistics.fmean(ys))
        assert pts.loc[m, "y_std"] == pytest.approx(statistics.stdev(ys))
        assert pts.loc[m, "n_seeds"] == 4


# ------------------------------------------------------------------------------------------ a results folder
SMALL = """
[data.synth]
identities_per_group = 30
dim = 32
[grid]
seeds = 3
models = ["logreg"]
train_groups = ["asian", "all"]
[protocol]
train_per_gender = 10
test_per_gender = 8
[verification]
max_impostor_pairs = 20000
bootstrap = 0
[tsne]
enabled = false
[run]
executor = "local"
workers = 2
report = false
"""
CLASSIFIER, SCORE = "reweight", "fsn"
MITIGATED_KINDS = {"mitigated_cell": ("accuracy", "predictions"),
             "mitigated_verification": ("verification", "impostor_matrix", "demographic_rates", "group_eer",
                                        "operating_points", "verification_ci")}


@pytest.fixture(scope="module")
def mitigation_kinds():
    """The two mitigated kinds: the registered ones, else stand-ins declaring the same tables and section (they
    plan nothing: the rows are written by the test)."""
    kinds.all_kinds()
    added = []
    for name, bases in MITIGATED_KINDS.items():
        if name not in kinds.KINDS:
            kinds.register(kinds.JobKind(name, plan=lambda cfg: [], rows=lambda params, split: {},
                                         run="tasks.runtime:run_job",
                                         tables=tuple(mitigated_table(TABLES[b]) for b in bases),
                                         record=("model", "train_group", "mitigation") if name == "mitigated_cell"
                                         else ("mitigation",),
                                         report=("grid.report.sections.mitigation:SECTION",)))
            added.append(name)
    yield
    for name in added:
        kinds.unregister(name)


def _write_mitigated(out: Path) -> None:
    """Add a classifier mitigation (train group all only: asian is single-group) and a score mitigation to a real
    run's folder: the none rows shifted (seeded), written as their mitigated tables, planned in run.json."""
    store = ResultStore(out)
    run = store.run_info()
    base = load_results(out)
    rng = np.random.default_rng(7)
    jobs = jobs_from_columns(run["jobs"])
    acc, pred = base.tables["accuracy"], base.tables["predictions"]
    for seed in base.seeds:
        jid = f"mitcell{seed:02d}"
        a = acc[(acc["train_group"] == "all") & (acc["seed"] == seed)].copy()
        a["accuracy"] = np.clip(a["accuracy"] + rng.normal(0.02, 0.03, len(a)), 0, 1)
        p = pred[(pred["train_group"] == "all") & (pred["seed"] == seed)].copy()
        flip = rng.uniform(size=len(p)) < 0.1
        p.loc[flip, "y_pred"] = 1 - p.loc[flip, "y_pred"]
        record = {"job_id": jid, "kind": "mitigated_cell", "model": "logreg", "train_group": "all",
                  "mitigation": CLASSIFIER, "seed": seed,
                  "description": f"mitigated cell logreg train=all {CLASSIFIER} seed={seed}"}
        store.write_job(jid, {"mitigated_accuracy": a.assign(mitigation=CLASSIFIER, job_id=jid),
                              "mitigated_predictions": p.assign(mitigation=CLASSIFIER, job_id=jid)}, record)
        jobs.append(record)
        jid = f"mitver{seed:02d}"
        tables = {}
        for name in MITIGATED_KINDS["mitigated_verification"]:
            rows = base.tables[name]
            rows = rows[rows["seed"] == seed].copy()
            if name == "demographic_rates":
                rows["false_non_matches"] = np.minimum(rows["n_genuine"], rows["false_non_matches"]
                                                       + rng.integers(0, 3, len(rows)))
                rows["fnmr"] = rows["false_non_matches"] / rows["n_genuine"]
            if name == "impostor_matrix":
                rows["fmr"] = rows["fmr"] * rng.uniform(0.5, 1.5)
            tables[f"mitigated_{name}"] = rows.assign(mitigation=SCORE, job_id=jid)
        record = {"job_id": jid, "kind": "mitigated_verification", "mitigation": SCORE, "seed": seed,
                  "description": f"mitigated verification {SCORE} seed={seed}"}
        store.write_job(jid, tables, record)
        jobs.append(record)
    run["config"]["grid"]["mitigations"] = ["none", CLASSIFIER, SCORE]
    run["config"]["mitigation"] = {m: resolve_mitigation_config(m, {}) for m in (CLASSIFIER, SCORE)}
    run["jobs"] = jobs_to_columns(jobs)
    for name in [f"mitigated_{b}" for bases in MITIGATED_KINDS.values() for b in bases]:
        run["tables"][name] = {"columns": TABLES[name].columns, "partition": TABLES[name].partition}
    store.write_run(run)


@pytest.fixture(scope="module")
def folders(tmp_path_factory, mitigation_kinds):
    """(a real run's folder without mitigations, the same with mitigated rows)."""
    root = tmp_path_factory.mktemp("mitigation")
    (root / "grid.toml").write_text(SMALL)
    plain = root / "plain"
    assert run_grid(resolve_config(root / "grid.toml", {"run.out": str(plain)}), progress=False).exit_code == 0
    mitigated = root / "mitigated"
    shutil.copytree(plain, mitigated)
    _write_mitigated(mitigated)
    return plain, mitigated


def _parquet(out: Path, name: str) -> pd.DataFrame:
    """A table read straight from its Parquet files (not through the report's loader)."""
    return pd.read_parquet(out / name)


def test_the_section_numbers_against_the_stored_rows(folders):
    _, out = folders
    res = load_results(out)
    s = mit.mitigation_summaries(res)
    # classifier: the spread of every seed from the stored files, the corrected test by hand
    acc = _parquet(out, "accuracy")
    macc = _parquet(out, "mitigated_accuracy")
    spread = {}
    for name, frame in (("none", acc[acc["train_group"] == "all"]), (CLASSIFIER, macc)):
        for seed, part in frame.groupby("seed"):
            spread[name, seed] = max(part["accuracy"]) - min(part["accuracy"])
    row = s["mitigation_gaps"].set_index(["mitigation", "train_group", "metric"]).loc[(CLASSIFIER, "all", "spread")]
    n_train = min(acc[acc["train_group"] == "all"]["n_train"].min(), macc["n_train"].min())
    n_test = acc[(acc["train_group"] == "all") & (acc["seed"] == 0)]["n_test"].sum()
    mean, lo, hi, p = _nb([spread[CLASSIFIER, s_] for s_ in range(3)], [spread["none", s_] for s_ in range(3)],
                          n_train, n_test)
    assert row["mean_diff"] == pytest.approx(mean, abs=1e-12) and row["p_corrected"] == pytest.approx(p)
    assert row["ci_low_corrected"] == pytest.approx(lo) and row["ci_high_corrected"] == pytest.approx(hi)
    # the cells: one row per test group, the asian train group (skipped) has none
    cells = s["mitigation_accuracy"]
    assert sorted(cells["test_group"]) == sorted(GROUPS) and set(cells["train_group"]) == {"all"}
    # score side: FDR per seed from the stored rates, n_train / n_test = identities of the protocol
    rates, mrates = _parquet(out, "demographic_rates"), _parquet(out, "mitigated_demographic_rates")
    fdr = {}
    for name, frame in (("none", rates), (SCORE, mrates)):
        for seed, part in frame.groupby("seed"):
            f, n = list(part["fmr"]), list(part["fnmr"])
            fdr[name, seed] = 1 - (0.5 * (max(f) - min(f)) + 0.5 * (max(n) - min(n)))
    row = s["mitigation_verification"].set_index("metric").loc["fdr"]
    assert (row["n_train"], row["n_test"]) == (10 * 2 * 3, 8 * 2 * 3)
    mean, lo, hi, p = _nb([fdr[SCORE, k] for k in range(3)], [fdr["none", k] for k in range(3)], 60, 48)
    assert row["mean_diff"] == pytest.approx(mean, abs=1e-12) and row["p_corrected"] == pytest.approx(p)
    # Holm per mitigation and table, against statsmodels
    for name in ("mitigation_accuracy", "mitigation_gaps", "mitigation_verification", "mitigation_group_fnmr",
                 "mitigation_impostor"):
        d = s[name].dropna(subset=["p_corrected"])
        assert len(d), name
        np.testing.assert_allclose(d["p_holm_corrected"], multipletests(d["p_corrected"], method="holm")[1])
    assert len(s["mitigation_impostor"]) == 21                 # 6 demographic groups: 21 unordered pairs
    # the methods: labels, and the single-group train group skipped by the classifier mitigation
    meth = s["mitigation_methods"].set_index("mitigation")
    assert meth.loc[CLASSIFIER, "uses_group_labels"] and not meth.loc[SCORE, "uses_group_labels"]
    assert meth.loc[CLASSIFIER, "skipped_train_groups"] == "asian" and meth.loc[SCORE, "side"] == "score"
    pts = s["mitigation_tradeoff"].set_index(["side", "mitigation"])
    assert set(pts.index) == {("classifier", "none"), ("classifier", CLASSIFIER), ("score", "none"),
                              ("score", SCORE)}


def test_the_section_in_every_format(folders, tmp_path, capsys):
    """`biasgrid report` prints the section's overview (terminal) and writes it as HTML, Markdown and LaTeX."""
    _, out = folders
    res = load_results(out)
    s = mit.mitigation_summaries(res)
    parser = argparse.ArgumentParser(prog="biasgrid")
    cli_report.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["report", str(out), "--out", str(tmp_path / "report")])
    assert args.func(args) == 0
    terminal = capsys.readouterr().out
    assert "Classifier mitigations: mean ± std over seeds" in terminal and "Score mitigations" in terminal
    point = s["mitigation_tradeoff"].set_index(["side", "mitigation"])
    for side, name, digits in (("classifier", CLASSIFIER, 3), ("score", SCORE, 4)):
        p = point.loc[(side, name)]
        assert f"{p['x_mean']:.{digits}f} ± {p['x_std']:.{digits}f}" in terminal
    assert format_sections(res) in terminal                                   # printed whole
    html = (tmp_path / "report" / "report.html").read_text(encoding="utf-8")
    _check_html(html)
    for text in ("Mitigation", "Classifier gaps, mitigated − none", "Demographic differentials, mitigated − none",
                 "reweight: no job for train group(s) asian", "Label-free (no group labels used): fsn",
                 "Cross-group impostor FMR, fsn − none"):
        assert text in html, text
    spread = s["mitigation_gaps"].set_index(["mitigation", "metric"]).loc[(CLASSIFIER, "spread")]
    assert f"{spread['mean_diff']:+.3f} [{spread['ci_low_corrected']:+.3f}, {spread['ci_high_corrected']:+.3f}]" \
        in html
    for name in ("mitigation_classifier.png", "mitigation_scores.png"):
        assert (tmp_path / "report" / "figures" / name).read_bytes()[:4] == b"\x89PNG"
    for name in s:
        csv = pd.read_csv(tmp_path / "report" / f"{name}.csv")
        assert len(csv) == len(s[name]), name
    md = (tmp_path / "report" / "report.md").read_text(encoding="utf-8")
    tex = (tmp_path / "report" / "tables.tex").read_text(encoding="utf-8")
    assert "## Mitigation" in md and "figures/mitigation_classifier.png" in md and "| reweight |" in md
    assert "Classifier gaps, mitigated" in tex and tex.count(r"\begin{table}") == tex.count(r"\end{table}")
    blocks = mit.SECTION.blocks(res, s)              # the renderers on the section's blocks alone
    assert blocks[0] == ("h2", "Mitigation")
    tables = sum(kind == "table" for kind, _ in blocks)
    assert render_markdown(blocks).count("\n|---") == render_latex(blocks).count(r"\begin{table}") == tables
    assert render_html(blocks).count("<table") == tables


def test_a_folder_without_mitigations_is_unchanged(folders, tmp_path):
    plain, _ = folders
    res = load_results(plain)
    assert mit.mitigation_summaries(res) == {} and mit.SECTION.blocks(res, {}) == []
    assert format_sections(res) == ""
    with_section = write_report(res, tmp_path / "with")
    saved = {name: kinds.KINDS.pop(name) for name in MITIGATED_KINDS}   # the report without the mitigated kinds
    try:
        without = write_report(load_results(plain), tmp_path / "without")
    finally:
        kinds.KINDS.update(saved)
    assert with_section.read_bytes() == without.read_bytes()
    assert sorted(p.name for p in (tmp_path / "with").rglob("*")) == \
        sorted(p.name for p in (tmp_path / "without").rglob("*"))
    assert "Mitigation" not in with_section.read_text(encoding="utf-8")


def test_the_methods_note_variants_unknown_builders_and_skipped_train_groups(mitigation_kinds):
    from grid.report.results import Results, Tables

    rows = mitigated_table(TABLES["accuracy"]).empty()
    rows = pd.concat([rows, pd.DataFrame([{"mitigation": "nosuch.module:build", "model": "logreg",
                                           "train_group": "all", "test_group": "asian", "seed": 0,
                                           "accuracy": 0.9}])], ignore_index=True)
    jobs = [{"job_id": f"j{i}", "kind": "mitigated_cell", "mitigation": m, "model": "logreg", "train_group": g,
             "seed": 0} for i, (m, g) in enumerate([("reweight", "all"), ("reweight", "asian+black"),
                                                     ("nosuch.module:build", "all")])]
    run = {"config": {"grid": {"mitigations": ["none", "reweight", "fsn-50"]},
                      "mitigation": {"reweight": {}, "fsn-50": {"base": "fsn", "n_clusters": 50}}},
           "jobs": jobs_to_columns(jobs)}
    res = Results("x", Tables(frames={"mitigated_accuracy": rows}), run, {}, ["logreg"],
                  ["asian", "asian+black", "all"], GROUPS, [0])
    meth = mit.mitigation_methods(res).set_index("mitigation")
    assert list(meth.index) == ["none", "reweight", "fsn-50", "nosuch.module:build"]   # config order, then found
    assert meth.loc["fsn-50", "method"] == "fsn" and meth.loc["fsn-50", "side"] == "score"
    assert not meth.loc["fsn-50", "uses_group_labels"] and meth.loc["reweight", "needs_sample_weight"]
    assert meth.loc["reweight", "skipped_train_groups"] == "asian"
    assert meth.loc["nosuch.module:build", "side"] == "classifier"              # from its stored rows
    assert meth.loc["nosuch.module:build", "uses_group_labels"] is None
    assert "cannot import module 'nosuch.module'" in meth.loc["nosuch.module:build", "note"]
    assert meth.loc["nosuch.module:build", "skipped_train_groups"] == "asian, asian+black"
