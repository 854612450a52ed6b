"""The grid end to end: both executors give identical numbers; a killed run resumes with every row once;
a failing job is recorded while every other result is stored; bad input writes nothing."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from grid.config import resolve_config
from grid.runner import run_grid
from storage.results import ResultStore, load

from conftest import biasgrid, kill_midway

REPO = Path(__file__).resolve().parents[1]

SMALL = """
[data.synth]
identities_per_group = 30
dim = 32
[grid]
seeds = 2
models = ["logreg", "mlp"]
[protocol]
train_per_gender = 10
test_per_gender = 8
[model.mlp]
epochs = 3
batch_size = 8
[verification]
max_impostor_pairs = 20000
bootstrap = 50            # the default 1000 is the bootstrap tests' business: keep these grids quick
[tsne]
perplexity = 5.0
pca_dims = 10
subsets = ["all"]
[run]
workers = 2
report = false
"""

# Columns that legitimately differ between two runs of the same config.
VOLATILE = {"train_seconds", "job_id", "node", "finished_at"}
KEYS = {
    "accuracy": ["model", "train_group", "test_group", "seed"],
    "verification": ["test_group", "seed"],
    "verification_curve": ["test_group", "seed", "threshold"],
    "verification_hist": ["test_group", "seed", "kind", "bin_left"],
    "impostor_matrix": ["seed", "group_a", "group_b"],
    "demographic_rates": ["seed", "group"],
    "predictions": ["model", "train_group", "test_group", "seed", "row"],
    "group_eer": ["seed", "group"],
    "operating_points": ["seed", "group", "target_fmr", "threshold_kind"],
    "verification_ci": ["seed", "quantity", "group_a", "group_b", "target_fmr", "metric"],
    "tsne": ["seed", "subset", "identity"],
}


def config_file(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "grid.toml"
    path.write_text(SMALL + extra)
    return path


def cli(*args: str, env_extra: dict[str, str] | None = None, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "grid.cli", *args], capture_output=True, text=True, env=env,
                          timeout=600, **kw)


def stable(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    cols = [c for c in frame.columns if c not in VOLATILE]
    return frame[cols].sort_values(keys).reset_index(drop=True)


def test_ray_and_local_executors_store_identical_numbers(tmp_path: Path) -> None:
    path = config_file(tmp_path)
    by_executor = {}
    for executor in ("local", "ray"):   # each in a process of its own, as a user runs it
        result = cli("run", "--config", str(path), "--executor", executor, "--out", str(tmp_path / executor),
                     "--quiet")
        assert result.returncode == 0, result.stderr[-3000:]
        by_executor[executor] = load(tmp_path / executor)
    local, ray = by_executor["local"], by_executor["ray"]
    # 2 models x 4 train groups x 3 test groups x 2 seeds
    assert len(local["accuracy"]) == 48
    for table, keys in KEYS.items():
        assert len(local[table]) > 0, table
        pd.testing.assert_frame_equal(stable(local[table], keys), stable(ray[table], keys), check_dtype=False)
    # the ray run recorded a Ray node, the local run the host
    assert all("/" in n for n in ray["accuracy"]["node"])
    # pandas reads a stored table straight from its folder, partitions included
    direct = pd.read_parquet(tmp_path / "ray" / "accuracy")
    assert len(direct) == 48 and set(direct["model"].astype(str)) == {"logreg", "mlp"}


def test_duckdb_reads_the_store(tmp_path: Path) -> None:
    duckdb = pytest.importorskip("duckdb")
    cfg = resolve_config(config_file(tmp_path), {"run.executor": "local", "run.out": str(tmp_path / "r"),
                                                 "grid.models": ["logreg"], "verification.enabled": False,
                                                 "tsne.enabled": False})
    assert run_grid(cfg, progress=False).exit_code == 0
    glob = str(tmp_path / "r" / "accuracy" / "**" / "*.parquet")
    rows = duckdb.sql(f"select model, count(*) as n from read_parquet('{glob}', hive_partitioning=true) "
                      f"group by model").fetchall()
    assert rows == [("logreg", 24)]
    # pandas and storage.load read the same rows
    import storage

    assert len(pd.read_parquet(tmp_path / "r" / "accuracy")) == 24
    tables = storage.load(tmp_path / "r")
    assert len(tables["accuracy"]) == 24 and tables["verification"].empty and tables["failures"].empty


def test_rerun_skips_stored_jobs_and_new_seeds_run_only_new_jobs(tmp_path: Path) -> None:
    path = config_file(tmp_path)
    over = {"run.executor": "local", "run.out": str(tmp_path / "r"), "grid.models": ["logreg"],
            "tsne.enabled": False, "grid.seeds": "1"}
    first = run_grid(resolve_config(path, over), progress=False)
    assert first.ran == first.planned == 4 + 3 + 1
    again = run_grid(resolve_config(path, over), progress=False)
    assert again.ran == 0 and again.stored_before == first.planned
    more = run_grid(resolve_config(path, {**over, "grid.seeds": "2"}), progress=False)
    assert more.ran == first.planned and more.stored_before == first.planned
    acc = load(tmp_path / "r")["accuracy"]
    assert len(acc) == 24 and not acc.duplicated(KEYS["accuracy"]).any()


def test_data_without_genuine_pairs_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    from storage.errors import InputError

    out = tmp_path / "r"
    cfg = resolve_config(config_file(tmp_path, ""), {"run.executor": "local", "run.out": str(out),
                                                      "data.synth": {"identities_per_group": 30, "dim": 32,
                                                                     "images_per_identity": 1}})
    with pytest.raises(InputError, match="no asian test identity has two or more images"):
        run_grid(cfg, progress=False)
    assert not out.exists()
    # without verification the same data runs
    cfg = resolve_config(config_file(tmp_path, ""), {"run.executor": "local", "run.out": str(out),
                                                      "grid.models": ["logreg"], "tsne.enabled": False,
                                                      "verification.enabled": False, "grid.seeds": "1",
                                                      "data.synth": {"identities_per_group": 30, "dim": 32,
                                                                     "images_per_identity": 1}})
    assert run_grid(cfg, progress=False).exit_code == 0


def test_sigkill_midway_then_rerun_stores_every_row_exactly_once(tmp_path: Path) -> None:
    out = tmp_path / "r"
    path = config_file(tmp_path, "")
    args = ["run", "--config", str(path), "--executor", "local", "--workers", "2", "--out", str(out),
            "--seeds", "3", "--no-report"]
    ledger = out / "_jobs"
    kill_midway(args, lambda: ledger.exists() and len(list(ledger.glob("*.json"))) >= 4)
    done_before = len(list(ledger.glob("*.json")))
    run = json.loads((out / "run.json").read_text())
    assert 0 < done_before < len(run["jobs"]["job_id"])
    # only whole files are visible: every stored Parquet file reads
    for file in out.rglob("*.parquet"):
        pd.read_parquet(file)
    result = biasgrid(*args)   # the rerun needs no process of its own: in this one
    assert result.returncode == 0, result.stderr
    tables = load(out)
    acc = tables["accuracy"]
    assert len(acc) == 2 * 4 * 3 * 3
    assert not acc.duplicated(KEYS["accuracy"]).any()
    for table in ("verification", "impostor_matrix", "tsne"):
        assert not tables[table].duplicated(KEYS[table]).any(), table
    assert len(tables["verification"]) == 3 * 3
    assert not list(out.rglob(".*.tmp"))  # stale temporaries are hidden, and none are left by a clean run


FLAKY = '''
import numpy as np


class Centroid:
    """Nearest class mean; fails for seed 1 (a planted error)."""

    def __init__(self, seed):
        self.seed = seed

    def fit(self, X, y):
        if self.seed == 1:
            raise RuntimeError("planted failure for seed 1")
        self.means = np.stack([X[y == k].mean(axis=0) for k in (0, 1)])
        return self

    def predict(self, X):
        return np.argmin(((X[:, None, :] - self.means[None]) ** 2).sum(-1), axis=1)


def build(config, seed, threads):
    return Centroid(seed)
'''


@pytest.mark.parametrize("executor", ["ray", "local"])
def test_a_failing_job_is_recorded_and_every_other_row_stored(tmp_path: Path, executor: str,
                                                               monkeypatch: pytest.MonkeyPatch,
                                                               request: pytest.FixtureRequest) -> None:
    pkg = tmp_path / "flakymodels"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(FLAKY)
    out = tmp_path / "r"
    path = config_file(tmp_path, "")
    args = ["run", "--config", str(path), "--executor", executor, "--out", str(out),
            "--models", "logreg,flakymodels:build", "--no-report"]
    if executor == "ray":   # Ray runs in a process of its own (conftest.biasgrid)
        env = {"PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO)])}

        def command(*argv: str) -> subprocess.CompletedProcess:
            return cli(*argv, env_extra=env)
    else:                   # the local pool's workers (spawned) get this process's sys.path
        monkeypatch.syspath_prepend(str(tmp_path))
        request.addfinalizer(lambda: sys.modules.pop("flakymodels", None))   # imported here too: forgotten after
        command = biasgrid
    result = command(*args)
    assert result.returncode == 1, result.stderr
    assert "planted failure for seed 1" in result.stderr
    tables = load(out)
    failures = tables["failures"]
    assert len(failures) == 4  # flaky model x 4 train groups, seed 1
    assert failures["error"].str.contains("planted failure for seed 1").all()
    assert failures["traceback"].str.contains("RuntimeError").all()
    acc = tables["accuracy"]
    assert len(acc) == (8 + 4) * 3  # logreg: 4 groups x 2 seeds; flaky: 4 groups x seed 0
    assert set(acc[acc["model"] == "flakymodels:build"]["seed"]) == {0}
    status = biasgrid("status", str(out))
    assert status.returncode == 1 and "4 failed" in status.stdout and "0 missing" in status.stdout
    # a plain rerun does not retry the failed jobs; --rerun-failed does (and they fail again)
    rerun = command(*args)
    assert rerun.returncode == 1 and "0 jobs run" in rerun.stdout
    retry = command(*args, "--rerun-failed")
    assert retry.returncode == 1 and "4 jobs run" in retry.stdout
    assert len(load(out)["failures"]) == 4


def test_bad_input_exits_2_and_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "r"
    bad_cfg = tmp_path / "bad.toml"
    bad_cfg.write_text("[grid]\nseeds = 2\ncolour = 'blue'\n")
    result = biasgrid("run", "--config", str(bad_cfg), "--out", str(out))   # refused before Ray starts
    assert result.returncode == 2
    assert "grid.colour" in result.stderr
    result = cli("run", "--config", str(config_file(tmp_path)), "--out", str(out), "--data",
                 str(tmp_path / "missing.parquet"))
    assert result.returncode == 2 and "missing.parquet" in result.stderr
    assert not out.exists()
    # a protocol asking more identities than the data has: the message names the group and the counts
    too_many = tmp_path / "too_many.toml"
    too_many.write_text(SMALL.replace("train_per_gender = 10", "train_per_gender = 25"))
    out2 = tmp_path / "r2"
    result = cli("run", "--config", str(too_many), "--out", str(out2))
    assert result.returncode == 2
    assert "30" in result.stderr and "33" in result.stderr
    assert not out2.exists()


def test_status_of_a_folder_that_is_not_a_results_folder(tmp_path: Path) -> None:
    result = biasgrid("status", str(tmp_path))
    assert result.returncode == 2 and "run.json" in result.stderr


def test_store_is_written_atomically(tmp_path: Path) -> None:
    store = ResultStore(tmp_path / "r")
    frame = pd.DataFrame([{"seed": 0, "group_a": "a", "group_b": "b", "fmr": 0.1, "n_pairs": 10,
                           "threshold": 0.5, "false_matches": 1, "ci_low": 0.0025, "ci_high": 0.445,
                           "display": "0.1 (1/10)", "resolved": True, "reason": "", "job_id": "j"}])
    store.write_job("j", {"impostor_matrix": frame}, {"kind": "impostor"})
    files = sorted(p.relative_to(tmp_path / "r").as_posix() for p in (tmp_path / "r").rglob("*") if p.is_file())
    assert files == ["_jobs/j.json", "impostor_matrix/seed=0/j.parquet"]
    assert store.ledger()["j"]["status"] == "done"
    store.write_job("j", {"impostor_matrix": frame}, {"kind": "impostor"})  # the same job again replaces it
    assert len(load(tmp_path / "r")["impostor_matrix"]) == 1


def test_results_path_may_be_a_pyarrow_uri(tmp_path: Path) -> None:
    uri = (tmp_path / "r").as_uri()  # file:///...: the same pyarrow file-system code path as s3://
    cfg = resolve_config(config_file(tmp_path), {"run.executor": "local", "run.out": uri, "grid.models": ["logreg"],
                                                 "verification.enabled": False, "tsne.enabled": False})
    assert run_grid(cfg, progress=False).exit_code == 0
    assert len(load(uri)["accuracy"]) == 24
    assert len(pd.read_parquet(tmp_path / "r" / "accuracy")) == 24


MLP_TINY = """
[data.synth]
identities_per_group = 20
dim = 16
[grid]
models = ["mlp"]
seeds = 1
train_groups = ["all"]
[model.mlp]
epochs = 2
[protocol]
train_per_gender = 8
test_per_gender = 6
[verification]
enabled = false
[tsne]
enabled = false
"""


def test_a_local_mlp_run_prints_no_library_log(tmp_path: Path) -> None:
    """A local pool worker shares the user's terminal: TensorFlow's C++ start-up lines (written before its logging
    reads TF_CPP_MIN_LOG_LEVEL) must not reach it; only biasgrid's lines and its progress bar do."""
    path = tmp_path / "grid.toml"
    path.write_text(MLP_TINY)
    done = cli("run", "--config", str(path), "--executor", "local", "--workers", "1", "--out", str(tmp_path / "r"),
               "--no-report")
    assert done.returncode == 0, done.stderr
    lines = [line for line in re.split(r"[\r\n]", done.stderr) if line.strip()]
    assert lines and all(line.startswith("biasgrid:") or " jobs [" in line for line in lines), lines
    assert len(load(tmp_path / "r")["accuracy"]) == 3
