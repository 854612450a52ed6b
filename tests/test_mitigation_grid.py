"""Issue 19 end to end: on the built-in data with a planted gap, one grid with every built-in mitigation (four
classifier, four score mitigations) runs on both executors with the same numbers, survives kill -9 and resumes
with every row once, its report compares each mitigation with none (the numbers recomputed here from the stored
rows), and the report's Mitigation section renders in a real browser."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import browser
from conftest import biasgrid, kill_midway, needs_browser
from storage.results import load
from test_grid import VOLATILE, cli

pytestmark = pytest.mark.xdist_group("mitigation_grid")

CLASSIFIER = ["reweight", "reductions", "threshold_optimizer", "erase"]
SCORE = ["group_thresholds", "fsn", "faircal", "znorm"]
CONFIG = f"""
[data.synth]
identities_per_group = 24
dim = 24
images_per_identity = 4
image_noise = [0.55, 0.55, 1.0]         # the planted gap: black faces' images spread most (verification)
gender_separation = [6.0, 6.0, 2.5]     # ... and their gender is the hardest to tell (classification)
[grid]
models = ["logreg"]
seeds = 2
train_groups = ["asian", "all"]         # asian: one group, skipped by the classifier mitigations
mitigations = {json.dumps(["none", *CLASSIFIER, *SCORE])}
[protocol]
train_per_gender = 10
test_per_gender = 8
[verification]
max_impostor_pairs = 20000
bootstrap = 0
target_fmr = 0.05                       # FMRs the tiny data resolve, for every group (and below, cluster)
[mitigation.group_thresholds]
target_fmr = 0.05
[mitigation.fsn]
n_clusters = 4
target_fmr = 0.05
[mitigation.faircal]
n_clusters = 4
[mitigation.reductions]
max_iter = 5
[tsne]
enabled = false
[run]
workers = 2
"""
JOBS = {"cell": 2 * 2, "mitigated_cell": 4 * 2, "scores": 3 * 2, "impostor": 2, "mitigated_verification": 4 * 2}


def stable(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame without what legitimately differs between runs, in a canonical row order."""
    cols = [c for c in frame.columns if c not in VOLATILE]
    return frame[cols].sort_values(cols).reset_index(drop=True)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[Path, dict[str, Path]]:
    """(the config, {executor: its results folder}), each run as a user runs it (the local one in this process:
    conftest.biasgrid prints what a process of its own prints, Python's warnings included)."""
    root = tmp_path_factory.mktemp("mitigation_grid")
    config = root / "grid.toml"
    config.write_text(CONFIG)
    out = {}
    for executor in ("local", "ray"):
        out[executor] = root / executor
        command = biasgrid if executor == "local" else cli   # Ray in a process of its own (conftest.biasgrid)
        done = command("run", "--config", str(config), "--executor", executor, "--out", str(out[executor]), cwd=root)
        assert done.returncode == 0, done.stderr[-3000:]
        assert "Warning" not in done.stderr and "warn" not in done.stdout.lower(), done.stderr[-3000:]
    return config, out


def test_every_mitigation_runs_on_both_executors_with_the_same_numbers(runs) -> None:
    _, out = runs
    run = json.loads((out["local"] / "run.json").read_text())
    assert Counter(run["jobs"]["kind"]) == JOBS
    local, ray = load(out["local"]), load(out["ray"])
    for name in ("mitigated_accuracy", "mitigated_predictions"):
        assert sorted(p.name for p in (out["local"] / name).iterdir()) == [f"mitigation={m}" for m in sorted(CLASSIFIER)]
        assert set(local[name]["train_group"]) == {"all"}                 # the single-group row is skipped
    for name in ("mitigated_verification", "mitigated_impostor_matrix", "mitigated_demographic_rates",
                 "mitigated_group_eer", "mitigated_operating_points"):
        assert sorted(local[name]["mitigation"].unique()) == sorted(SCORE), name
    compared = 0
    for name, frame in local.items():
        if len(frame):
            pd.testing.assert_frame_equal(stable(frame), stable(ray[name]), check_dtype=False, obj=name)
            compared += 1
        else:
            assert len(ray[name]) == 0, name
    assert compared >= 16
    # the planted gap is there to mitigate: black faces are classified worst and verified worst
    acc = local["accuracy"][local["accuracy"]["train_group"] == "all"].groupby("test_group")["accuracy"].mean()
    assert acc.idxmin() == "black" and acc.max() - acc.min() > 0.1
    rates = local["demographic_rates"]
    fnmr = rates.groupby(rates["group"].str.split("_").str[0])["fnmr"].mean()
    assert fnmr.idxmax() == "black"
    # reweighing's weights are all 1 on the protocol's balanced training rows (every group x gender cell of the
    # same size): the same model as none. Every other method changes predictions or scores.
    key = ["seed", "test_group", "row"]
    pred = local["predictions"]
    base = pred[pred["train_group"] == "all"].set_index(key)["y_pred"].sort_index()
    for name, part in local["mitigated_predictions"].groupby("mitigation"):
        changed = (part.set_index(key)["y_pred"].sort_index() != base).mean()
        assert changed == 0 if name == "reweight" else changed > 0, name
    key = ["seed", "group"]
    base = local["demographic_rates"].set_index(key).sort_index()
    for name, part in local["mitigated_demographic_rates"].groupby("mitigation"):
        part = part.set_index(key).sort_index()
        assert not (np.allclose(part["fnmr"], base["fnmr"]) and np.allclose(part["fmr"], base["fmr"])), name


def test_the_report_compares_each_mitigation_with_none_on_the_same_seeds(runs) -> None:
    _, out = runs
    tables = load(out["local"])
    acc, mit = tables["accuracy"], tables["mitigated_accuracy"]
    gaps = pd.read_csv(out["local"] / "report" / "mitigation_gaps.csv")
    none = acc[acc["train_group"] == "all"].groupby("seed")["accuracy"].mean()     # mean over test groups
    for name in CLASSIFIER:
        mine = mit[mit["mitigation"] == name].groupby("seed")["accuracy"].mean()
        diff = (mine - none).to_numpy()
        row = gaps[(gaps["mitigation"] == name) & (gaps["metric"] == "overall_accuracy")].iloc[0]
        assert row["mean_none"] == pytest.approx(none.mean(), abs=1e-12)
        assert row["mean_mitigation"] == pytest.approx(mine.mean(), abs=1e-12)
        assert row["mean_diff"] == pytest.approx(diff.mean(), abs=1e-12) and row["n_pairs"] == 2
    methods = pd.read_csv(out["local"] / "report" / "mitigation_methods.csv").set_index("mitigation")
    assert set(methods.index) == {"none", *CLASSIFIER, *SCORE}
    assert not methods.loc["fsn", "uses_group_labels"] and not methods.loc["faircal", "uses_group_labels"]
    assert methods.loc["znorm", "uses_group_labels"] and methods.loc["group_thresholds", "uses_group_labels"]
    assert all(methods.loc[m, "skipped_train_groups"] == "asian" for m in CLASSIFIER)
    md = (out["local"] / "report" / "report.md").read_text()
    assert "## Mitigation" in md and md.index("## Verification") < md.index("## Mitigation")
    assert all(name in md for name in [*CLASSIFIER, *SCORE])


@needs_browser
def test_the_mitigation_section_renders_in_a_real_browser(runs, tmp_path) -> None:
    _, out = runs
    facts = browser.render(out["local"] / "report" / "report.html", tmp_path / "page.png")
    assert facts.problems("Mitigation") == []
    section = facts.section("Mitigation")
    assert len(section.images) >= 2                   # gap against accuracy: the classifier and the score side
    assert len(section.tables) >= 3 and all(t.rows > 0 for t in section.tables)
    assert facts.problems() == []


def test_kill_9_midway_then_resume_stores_every_row_once(runs, tmp_path) -> None:
    config, out = runs
    again = tmp_path / "r"
    args = ["run", "--config", str(config), "--executor", "local", "--out", str(again), "--no-report"]
    ledger = again / "_jobs"
    kill_midway(args, lambda: ledger.exists() and len(list(ledger.glob("*.json"))) >= 6)
    done_before = len(list(ledger.glob("*.json")))
    assert 0 < done_before < sum(JOBS.values())
    resumed = biasgrid(*args, cwd=tmp_path)   # the resume needs no process of its own
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"{done_before} already stored" in resumed.stderr
    first, second = load(out["local"]), load(again)
    for name, frame in first.items():
        pd.testing.assert_frame_equal(stable(frame), stable(second[name]), check_dtype=False, obj=name)
