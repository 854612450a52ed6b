"""Kind "mitigated_cell": its plan (model x train group of several groups x seed x classifier mitigation), the
cell jobs' ids untouched by the mitigation axis, the refusals before a run, and a tiny `biasgrid run` whose
mitigated rows equal the methods fitted and applied directly on the rows the split gives."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import balanced_accuracy_score

import storage
from grid.axes import resolve_axes
from grid.config import resolve_config
from grid.plan import make_plan
from grid.runner import load_checked_data, prepare
from grid.splits import Protocol, make_split
from storage.errors import InputError
from storage.schema import TABLES
from storage.synth import SynthParams, generate
from storage.table import EmbeddingTable, write_table
from tasks.kinds.mitigated_cell import several_groups
from tasks.mitigation import build_mitigation
from tasks.models import build_model

REPO = Path(__file__).resolve().parents[1]
GRID = {"grid.models": ["logreg", "xgboost"], "grid.seeds": "2",
        "grid.train_groups": ["asian", "caucasian", "black", "asian+black", "all"],
        "grid.test_groups": ["asian", "caucasian", "black"]}
SYNTH = {"identities_per_group": 20, "dim": 16}


def mitigated(jobs: list) -> list:
    return [j for j in jobs if j.kind == "mitigated_cell"]


# -------------------------------------------------------------------------------------------------- plan ---
def test_plan_is_the_product_of_its_axes_without_single_group_train_groups() -> None:
    cfg = resolve_config(None, {**GRID, "grid.mitigations": ["reweight", "fsn", "threshold_optimizer"]})
    jobs = mitigated(make_plan(cfg, "fp"))
    # 2 models x 2 train groups of several groups x 2 seeds x 2 classifier mitigations (fsn is a score one)
    assert len(jobs) == 2 * 2 * 2 * 2 == len({j.job_id for j in jobs})
    assert {j.params["train_group"] for j in jobs} == {"asian+black", "all"}
    assert {j.params["mitigation"] for j in jobs} == {"reweight", "threshold_optimizer"}
    assert {(j.params["model"], j.params["train_group"], j.seed, j.params["mitigation"]) for j in jobs} == {
        (m, t, s, x) for m in ("logreg", "xgboost") for t in ("asian+black", "all") for s in (0, 1)
        for x in ("reweight", "threshold_optimizer")}
    job = next(j for j in jobs if j.params["mitigation"] == "threshold_optimizer")
    assert job.params["mitigation_config"] == {"validation_fraction": 0.3}
    assert job.params["test_groups"] == ["asian", "caucasian", "black"]
    assert job.description == (f"cell {job.params['model']} train={job.params['train_group']} seed={job.seed} "
                               f"mitigation=threshold_optimizer")
    assert job.record()["mitigation"] == "threshold_optimizer" and job.record()["train_group"] in ("asian+black", "all")
    assert mitigated(make_plan(resolve_config(None, {**GRID, "grid.mitigations": ["fsn"]}), "fp")) == []
    only_single = resolve_config(None, {**GRID, "grid.train_groups": ["asian", "black"],
                                        "grid.mitigations": ["reweight"]})
    assert mitigated(make_plan(only_single, "fp")) == []          # skipped, not refused
    assert [several_groups(t) for t in ("asian", "all", "black+asian")] == [False, True, True]


def test_the_mitigation_axis_leaves_every_other_job_id_unchanged() -> None:
    plain = make_plan(resolve_config(None, GRID), "fp")
    cfg = {**GRID, "grid.mitigations": ["reweight", "erase", "group_thresholds"]}
    with_axis = make_plan(resolve_config(None, cfg), "fp")
    assert not mitigated(plain) and len(mitigated(with_axis)) == 2 * 2 * 2 * 2
    assert [j.job_id for j in with_axis if not j.kind.startswith("mitigated_")] == [j.job_id for j in plain]
    # a mitigation's config is part of its jobs' ids, not of the cells'
    variant = make_plan(resolve_config({"mitigation": {"threshold_optimizer": {"validation_fraction": 0.5}}},
                                       {**GRID, "grid.mitigations": ["threshold_optimizer"]}), "fp")
    default = make_plan(resolve_config(None, {**GRID, "grid.mitigations": ["threshold_optimizer"]}), "fp")
    assert not {j.job_id for j in mitigated(variant)} & {j.job_id for j in mitigated(default)}
    assert [j.job_id for j in variant if j.kind == "cell"] == [j.job_id for j in plain if j.kind == "cell"]


# ---------------------------------------------------------------------------------------------- refusals ---
UNWEIGHTED = textwrap.dedent("""
    from sklearn.linear_model import LogisticRegression

    class Unweighted:
        def __init__(self):
            self.model = LogisticRegression()
        def fit(self, X, y):
            self.model.fit(X, y)
            return self
        def predict(self, X):
            return self.model.predict(X)

    def build(config, seed, threads):
        return Unweighted()
    """)


def checked(options: dict) -> None:
    """Plan and check the run as `biasgrid run` does before writing anything."""
    cfg, table, fingerprint = load_checked_data(resolve_config(None, options))
    prepare(cfg, table, fingerprint)


def test_a_sample_weight_method_with_a_model_without_sample_weights_is_refused(tmp_path, monkeypatch) -> None:
    (tmp_path / "unweighted_model.py").write_text(UNWEIGHTED)
    monkeypatch.syspath_prepend(str(tmp_path))
    base = {"data.synth": SYNTH, "grid.seeds": "1", "protocol.train_per_gender": 6, "protocol.test_per_gender": 4,
            "verification.enabled": False, "tsne.enabled": False, "run.out": str(tmp_path / "r")}
    with pytest.raises(InputError, match=r"^grid.mitigations: mitigation 'reweight' trains the model with sample "
                                         r"weights, but the fit of model 'unweighted_model:build' takes no "
                                         r"sample_weight; remove 'reweight' or 'unweighted_model:build'"):
        checked({**base, "grid.models": ["unweighted_model:build"], "grid.mitigations": ["reweight"]})
    with pytest.raises(InputError, match=r"mitigation 'reductions' trains the model with sample weights"):
        checked({**base, "grid.models": ["logreg", "unweighted_model:build"],
                 "grid.mitigations": ["threshold_optimizer", "reductions"]})
    checked({**base, "grid.models": ["unweighted_model:build"], "grid.mitigations": ["threshold_optimizer", "erase"]})
    checked({**base, "grid.models": ["logreg", "xgboost", "mlp"], "grid.mitigations": ["reweight", "reductions"]})
    assert not (tmp_path / "r").exists()


def test_all_over_data_of_one_group_is_refused_with_a_mitigation(tmp_path) -> None:
    full = generate(SynthParams(**SYNTH))
    keep = full.ethnicity == full.ethnicities.index("asian")
    path = tmp_path / "asian.parquet"
    write_table(EmbeddingTable(full.embeddings[keep], full.identity[keep], full.image[keep], full.ethnicity[keep],
                               full.gender[keep], full.ethnicities), path)
    base = {"data.path": str(path), "grid.models": ["logreg"], "grid.seeds": "1", "grid.train_groups": ["all"],
            "protocol.train_per_gender": 6, "protocol.test_per_gender": 4, "verification.enabled": False,
            "tsne.enabled": False}
    checked(base)                                                   # without mitigations: the plain cell
    with pytest.raises(InputError, match=r"^grid.mitigations: mitigation 'erase' needs training rows of several "
                                         r"groups, but train group 'all' is the data's one group \(asian\) of "
                                         r"\[grid\] group 'ethnicity'"):
        checked({**base, "grid.mitigations": ["erase"]})


# -------------------------------------------------------------------------------------------- end to end ---
CONFIG = """
[data.synth]
identities_per_group = 20
dim = 16
[grid]
models = ["logreg"]
seeds = 2
train_groups = ["asian", "asian+black", "all"]
mitigations = [{mitigations}]
[protocol]
train_per_gender = 10
test_per_gender = 6
[verification]
enabled = false
[tsne]
enabled = false
[run]
executor = "local"
workers = 1
{extra}
"""
CLASSIFIER = ["reweight", "threshold_optimizer", "erase"]
KEYS = ["train_group", "test_group", "seed"]
VARYING = ["train_seconds", "node", "finished_at"]   # wall times and where and when a job ran


def write_config(path: Path, mitigations: list[str], extra: str = "") -> Path:
    path.write_text(CONFIG.format(mitigations=", ".join(f'"{m}"' for m in mitigations), extra=extra))
    return path


def biasgrid(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-m", "grid.cli", *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=600)


def direct(config: Path) -> Callable[[str, str, int], dict[str, tuple[np.ndarray, np.ndarray]]]:
    """``fitted(name, train_group, seed)``: mitigation ``name`` fitted and applied outside the grid on the rows of
    the seed's split of ``config``'s data: test group -> (true labels, predictions); the threshold optimizer
    predicts only the groups it has thresholds for (those of the train group)."""
    cfg, table, _ = load_checked_data(resolve_config(config))
    axes = resolve_axes(cfg, table)
    X, y = table.embeddings, axes.target.codes.astype(np.int64)
    groups = np.asarray(axes.group.names, dtype=object)[axes.group.codes]

    def fitted(name: str, train_group: str, seed: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        split = make_split(table, seed, Protocol(10, 6), group=axes.group, target=axes.target)
        train = split.train_rows(train_group)
        method = build_mitigation(name, cfg["mitigation"].get(name), seed)
        method.fit(lambda: build_model("logreg", cfg["model"]["logreg"], seed=seed), X[train], y[train],
                   groups[train], table.identity_codes()[train])
        return {g: (y[rows], method.predict(X[rows], groups[rows])) for g, rows in split.test.items()
                if name != "threshold_optimizer" or train_group == "all" or g in train_group.split("+")}

    return fitted


def test_a_grid_with_classifier_mitigations_runs_stores_and_resumes(tmp_path: Path) -> None:
    config = write_config(tmp_path / "grid.toml", ["none", *CLASSIFIER])
    out = tmp_path / "r"
    ran = biasgrid("run", "--config", str(config), "--out", str(out), "--quiet", "--no-report", cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    tables = storage.load(out, ["mitigated_accuracy", "mitigated_predictions"])
    acc, pred = tables["mitigated_accuracy"], tables["mitigated_predictions"]
    assert sorted(p.name for p in (out / "mitigated_accuracy").iterdir()) == [f"mitigation={m}" for m in
                                                                              sorted(CLASSIFIER)]
    assert list(acc.columns) == ["mitigation", *TABLES["accuracy"].names]
    assert list(pred.columns) == ["mitigation", *TABLES["predictions"].names]

    # every row equals the method fitted and applied directly on the same rows
    assert not ((acc.mitigation == "threshold_optimizer") & (acc.train_group == "asian+black") &
                (acc.test_group == "caucasian")).any()                # no thresholds for a group not trained on
    checked, fitted = 0, direct(config)
    for (name, train_group, seed), rows in acc.groupby(["mitigation", "train_group", "seed"]):
        expected = fitted(str(name), str(train_group), int(seed))
        assert sorted(rows["test_group"]) == sorted(expected)
        for row in rows.itertuples():
            y, p = expected[row.test_group]
            stored = pred[(pred.mitigation == name) & (pred.train_group == train_group) & (pred.seed == seed) &
                          (pred.test_group == row.test_group)].sort_values("row")
            assert stored["y_pred"].tolist() == p.tolist() and stored["y_true"].tolist() == y.tolist()
            assert row.accuracy == pytest.approx(float(np.mean(p == y)), abs=1e-12)
            assert row.accuracy_male == pytest.approx(float(np.mean(p[y == 0] == 0)), abs=1e-12)
            assert row.accuracy_female == pytest.approx(float(np.mean(p[y == 1] == 1)), abs=1e-12)
            assert row.balanced_accuracy == pytest.approx(balanced_accuracy_score(y, p), abs=1e-12)
            assert row.n_test == len(y) and row.n_train == 2 * 10 * (3 if train_group == "all" else 2)
            assert stored["score"].isna().all() == (name == "threshold_optimizer")
            checked += 1
    assert checked == 2 * 2 * 3 * 3 - 2      # train groups x seeds x mitigations x test groups, less the skipped
    assert not (acc["train_group"] == "asian").any()                 # a single-group train group: no mitigation
    assert not acc.equals(acc.assign(accuracy=1.0))

    # the none rows are those of a run without mitigations (the same jobs: same ids, same numbers)
    plain_config = write_config(tmp_path / "plain.toml", ["none"])
    plain = tmp_path / "plain"
    assert biasgrid("run", "--config", str(plain_config), "--out", str(plain), "--quiet", "--no-report",
                    cwd=tmp_path).returncode == 0
    for table in ("accuracy", "predictions"):
        a, b = (pd.read_parquet(folder / table) for folder in (out, plain))
        order = [*KEYS, "job_id", *(["row"] if table == "predictions" else [])]
        a, b = (f.drop(columns=[c for c in VARYING if c in f]).sort_values(order).reset_index(drop=True)
                for f in (a, b))
        pd.testing.assert_frame_equal(a, b)
    assert not (plain / "mitigated_accuracy").exists()

    # one more mitigation: only its jobs run
    before = {p.name: p.stat().st_mtime_ns for p in (out / "_jobs").iterdir()}
    more = write_config(tmp_path / "more.toml", ["none", *CLASSIFIER, "reductions"],
                        "[mitigation.reductions]\nmax_iter = 5")
    again = biasgrid("run", "--config", str(more), "--out", str(out), "--no-report", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "18 already stored" in again.stderr and "4 to run" in again.stderr   # 6 cells + 12; 2 groups x 2 seeds
    after = {p.name: p.stat().st_mtime_ns for p in (out / "_jobs").iterdir()}
    assert {k: after[k] for k in before} == before and len(after) == len(before) + 4
    acc = pd.read_parquet(out / "mitigated_accuracy")
    assert sorted(acc["mitigation"].unique()) == sorted([*CLASSIFIER, "reductions"])
    assert (acc["mitigation"] == "reductions").sum() == 2 * 2 * 3
    run = json.loads((out / "run.json").read_text())
    assert run["config"]["mitigation"]["reductions"]["max_iter"] == 5
