"""MLflow tracking against a real local store, read back with ``mlflow.search_runs``: one parent per results folder,
a child per job with its parameters and metrics, the report as the parent's artifacts, every job once after a
``kill -9`` and a resume, an unreachable server refused before anything runs, and results tracking does not change."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow   # the test extra installs biasgrid[mlflow]
import pandas as pd
import pytest

import biasgrid
from storage.results import load

from conftest import free_port, kill_midway
from test_api import GRID
from test_grid import KEYS, cli, stable


def runs_of(out: Path) -> pd.DataFrame:
    """Every active run of the folder's local store (parent and children)."""
    uri = f"sqlite:///{out / 'mlflow' / 'mlflow.db'}"
    experiment = mlflow.tracking.MlflowClient(uri).get_experiment_by_name("biasgrid")
    mlflow.set_tracking_uri(uri)
    return mlflow.search_runs(experiment_ids=[experiment.experiment_id])


def parents_and_children(runs: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    child = runs["tags.mlflow.parentRunId"].notna()
    return runs[~child], runs[child]


def test_a_run_logs_a_parent_and_each_job_with_its_numbers(tmp_path: Path) -> None:
    config = tmp_path / "grid.toml"
    config.write_text(GRID.replace("report = false", "report = true"))
    out = tmp_path / "r"
    res = biasgrid.run(config, progress=False, **{"run.out": str(out), "tracking.mlflow": "local"})
    parents, children = parents_and_children(runs_of(out))
    assert len(parents) == 1 and parents["status"].iat[0] == "FINISHED"
    parent = parents["run_id"].iat[0]
    assert json.loads((out / "tracking.json").read_text()) == {"local": {"biasgrid": parent}}
    assert set(children["tags.mlflow.parentRunId"]) == {parent}
    ledger = {j["job_id"]: j for j in res.jobs}
    assert sorted(children["tags.biasgrid.job_id"]) == sorted(ledger) and len(children) == 2 * 2 + 3 * 2 + 2
    assert (children["status"] == "FINISHED").all()
    by_job = children.set_index("tags.biasgrid.job_id")
    for row in res.accuracy.itertuples():   # every cell's accuracy on every test group
        assert by_job.at[row.job_id, f"metrics.accuracy.{row.test_group}"] == pytest.approx(row.accuracy)
        assert by_job.at[row.job_id, f"metrics.accuracy_female.{row.test_group}"] == pytest.approx(row.accuracy_female)
        assert by_job.at[row.job_id, "params.train_group"] == row.train_group
        assert by_job.at[row.job_id, "params.model_config.C"] == "1.0"
    for row in res.verification.itertuples():   # every scores job's EER and FNMR
        assert by_job.at[row.job_id, "metrics.eer"] == pytest.approx(row.eer)
        assert by_job.at[row.job_id, "metrics.fnmr_at_fmr_1e_3"] == pytest.approx(row.fnmr_at_fmr_1e_3)
        assert by_job.at[row.job_id, "tags.biasgrid.kind"] == "scores"
    imp = res.tables["impostor_matrix"]
    for row in imp.itertuples():             # every impostor job's cross-group FMRs
        assert by_job.at[row.job_id, f"metrics.fmr.{row.group_a}.{row.group_b}"] == pytest.approx(row.fmr)
    assert parents["metrics.jobs_run"].iat[0] == len(ledger)
    artifacts = mlflow.tracking.MlflowClient(mlflow.get_tracking_uri())
    names = {a.path for a in artifacts.list_artifacts(parent, "report")} | {a.path for a in artifacts.list_artifacts(parent)}
    assert {"run.json", "report/report.html", "report/row_spread.csv", "report/verification.csv"} <= names

    # tracking changes no result: the same config untracked stores the same numbers under the same job ids
    plain = biasgrid.run(config, progress=False, **{"run.out": str(tmp_path / "plain")})
    assert {j["job_id"] for j in plain.jobs} == set(ledger)
    for table, keys in KEYS.items():
        if table != "tsne":
            pd.testing.assert_frame_equal(stable(res.tables[table], keys), stable(plain.tables[table], keys),
                                          check_dtype=False)

    # a later run on the folder (another seed) continues the same parent, and adds only the new jobs' children
    more = biasgrid.run(config, progress=False, **{"run.out": str(out), "tracking.mlflow": "local", "grid.seeds": 3})
    parents, children = parents_and_children(runs_of(out))
    assert list(parents["run_id"]) == [parent] and parents["metrics.jobs_run"].iat[0] == more.summary.ran == 6
    assert sorted(children["tags.biasgrid.job_id"]) == sorted(j["job_id"] for j in more.jobs)


def test_kill_9_and_resume_leave_one_parent_with_every_job_once(tmp_path: Path) -> None:
    config = tmp_path / "grid.toml"
    config.write_text(GRID)
    out = tmp_path / "r"
    args = ["run", "--config", str(config), "--out", str(out), "--seeds", "8", "--mlflow"]
    ledger = out / "_jobs"
    kill_midway(args, lambda: ledger.exists() and len(list(ledger.glob("*.json"))) >= 6)
    run = json.loads((out / "run.json").read_text())
    assert 0 < len(list(ledger.glob("*.json"))) < len(run["jobs"]["job_id"])
    parents, _ = parents_and_children(runs_of(out))
    assert len(parents) == 1 and parents["status"].iat[0] == "RUNNING"   # killed: the parent was never closed
    done = cli(*args)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "INFO" not in done.stderr and "Warning" not in done.stderr   # MLflow's own logging stays off the terminal
    parents, children = parents_and_children(runs_of(out))
    assert len(parents) == 1 and parents["status"].iat[0] == "FINISHED"
    jobs = json.loads((out / "run.json").read_text())["jobs"]["job_id"]
    assert sorted(children["tags.biasgrid.job_id"]) == sorted(jobs)      # every job, exactly once
    assert (children["status"] == "FINISHED").all()
    assert set(children["tags.mlflow.parentRunId"]) == set(parents["run_id"])
    acc = load(out)["accuracy"]
    assert len(acc) == 2 * 3 * 8 and not acc.duplicated(KEYS["accuracy"]).any()


def test_an_unreachable_tracking_server_is_exit_3_before_anything_runs(tmp_path: Path) -> None:
    out = tmp_path / "r"
    uri = f"http://127.0.0.1:{free_port()}"
    done = cli("run", "--out", str(out), "--mlflow", uri, "--executor", "local")
    assert done.returncode == 3, done.stderr
    assert f"biasgrid: error: tracking.mlflow {uri}: no MLflow server answers there" in done.stderr
    assert not out.exists()


def test_a_local_store_needs_a_local_results_folder(tmp_path: Path) -> None:
    with pytest.raises(biasgrid.InputError, match="must then be a local folder"):
        biasgrid.run(None, progress=False, **{"run.out": "memory://nowhere/r", "tracking.mlflow": "local"})


def test_a_run_starts_by_removing_children_of_jobs_the_folder_does_not_hold(tmp_path: Path) -> None:
    """The crash windows of a run, made on purpose: a job logged but never stored (its driver killed before the
    store), and two children of one job (a job logged again); the next run's start keeps one child per stored job."""
    from grid.tracking import Tracker
    from storage.results import ResultStore
    from tasks.runtime import Outcome

    out = tmp_path / "r"
    out.mkdir()
    cfg = {"tracking": {"mlflow": "local", "experiment": "biasgrid"}, "run": {"out": str(out), "connect_timeout": 5}}
    store = ResultStore(out)
    first = Tracker(cfg, progress=False)
    first.start(store, {})
    accuracy = pd.DataFrame({"model": ["logreg"] * 2, "test_group": ["asian", "black"], "accuracy": [0.75, 0.5]})
    for job_id in ("a", "b", "lost"):
        first.job(f"cell {job_id}", "cell", 0, {"model": "logreg", "threads": 1}, Outcome(job_id, {"accuracy": accuracy}))
    first.children = {}   # as a driver killed then: it forgets that "a" has a child, and logs it again
    first.job("cell a", "cell", 0, {"model": "logreg"}, Outcome("a", error="RuntimeError: planted"))
    assert sorted(parents_and_children(runs_of(out))[1]["tags.biasgrid.job_id"]) == ["a", "a", "b", "lost"]

    Tracker(cfg, progress=False).start(store, {"a": {"status": "failed"}, "b": {"status": "done"}})
    parents, children = parents_and_children(runs_of(out))
    assert len(parents) == 1 and sorted(children["tags.biasgrid.job_id"]) == ["a", "b"]
    by_job = children.set_index("tags.biasgrid.job_id")
    assert by_job.at["a", "status"] == "FAILED" and by_job.at["a", "tags.biasgrid.error"] == "RuntimeError: planted"
    assert by_job.at["b", "metrics.accuracy.black"] == 0.5 and "params.threads" not in children.columns
