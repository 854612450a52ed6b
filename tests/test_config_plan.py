"""The config (defaults, file, options, refusals) and the plan (job ids)."""

from __future__ import annotations

from pathlib import Path

import pytest

from grid.config import DEFAULTS, parse_seeds, resolve_config
from storage.errors import InputError
from grid.plan import make_plan


# The study's groups, as the runner resolves the default (every group of the data) on the built-in data.
STUDY = {"grid.train_groups": ["asian", "caucasian", "black", "all"],
         "grid.test_groups": ["asian", "caucasian", "black"]}


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "grid.toml"
    path.write_text(text)
    return path


def test_defaults_are_the_study_grid() -> None:
    cfg = resolve_config()
    assert cfg["grid"]["train_groups"] == [] and cfg["grid"]["test_groups"] == []   # = the data's groups
    assert cfg["grid"]["seeds"] == [0, 1, 2, 3, 4]
    assert cfg["grid"]["models"] == ["mlp", "xgboost"]
    assert cfg["model"]["mlp"]["epochs"] == 200 and cfg["model"]["mlp"]["batch_size"] == 5
    assert cfg["verification"]["enabled"] and cfg["tsne"]["enabled"]
    assert cfg["run"]["executor"] == "ray" and cfg["run"]["out"] == "results"
    assert cfg["tsne"]["seeds"] == [0]
    assert DEFAULTS["grid"]["seeds"] == 5  # resolving does not change the defaults


def test_file_then_options_override(tmp_path: Path) -> None:
    path = write(tmp_path, """
[grid]
seeds = [3, 7]
models = ["logreg"]
train_groups = ["all", "asian+black", "asian"]
[model.logreg]
C = 0.5
[run]
out = "from-file"
""")
    cfg = resolve_config(path, {"run.out": "from-option", "grid.seeds": "2"})
    assert cfg["run"]["out"] == "from-option"
    assert cfg["grid"]["seeds"] == [0, 1]
    assert cfg["model"]["logreg"]["C"] == 0.5
    assert cfg["grid"]["train_groups"] == ["asian+black", "asian", "all"]  # "all" goes last


@pytest.mark.parametrize("text, words", [
    ("[grid]\nmodel = ['mlp']\n", ["grid.model", "models"]),
    ("[grid]\nseeds = 0\n", ["seeds", "at least 1"]),
    ("[grid]\ntrain_groups = ['asian+']\n", ["asian+", "joined by '+'"]),
    ("[grid]\ntest_groups = ['all']\n", ["'all'", "single ethnicity groups"]),
    ("[run]\nexecutor = 'slurm'\n", ["run.executor", "ray, local"]),
    ("[run]\nworkers = 'two'\n", ["run.workers", "integer"]),
    ("[protocol]\ntrain_per_gender = 0\n", ["protocol.train_per_gender"]),
    ("[grid]\nmodels = ['mlp']\n[model.xgboost]\nmax_depth = 3\n", ["model.xgboost", "grid.models"]),
    ("[grid]\nmodels = ['nosuchmodel']\n", ["nosuchmodel"]),
    ("[tsne]\nsubsets = ['children']\n", ["children", "male"]),
    ("[verification]\ntarget_fmr = 2.0\n", ["target_fmr"]),
    ("not toml = = =\n", ["not valid TOML"]),
    ("[data]\npath = 'x.parquet'\nformat = 'hdf5'\n", ["data.format", "'hdf5'", "diveface, npy"]),
    ("[data]\nformat = 'npy'\n", ["data.format", "names no data"]),
    ("[data]\npath = 'x.parquet'\n[data.synth]\nseed = 3\n", ["[data.synth]", "data.path", "x.parquet"]),
    # issue 21: infinities, integers beyond int64, repeats and unbounded counts (the issue's own five: test below)
    ("[verification]\ntarget_fmr = inf\n", ["'verification.target_fmr' must be a finite number"]),
    ("[tsne]\nperplexity = -inf\n", ["'tsne.perplexity' must be a finite number"]),
    ("[run]\nconnect_timeout = nan\n", ["'run.connect_timeout' must be a finite number"]),
    ("[verification]\ntail_fmr_factor = 1" + "0" * 400 + "\n", ["'verification.tail_fmr_factor' must be a finite"]),
    ("[verification]\nmax_impostor_pairs = 99999999999999999999\n", ["'verification.max_impostor_pairs'",
                                                                     "at most 9,223,372,036,854,775,807"]),
    ("[tsne]\nsubsets = ['all', 'all']\n", ["'tsne.subsets' repeats a name"]),
    ("[tsne]\nseeds = [4294967296]\n", ["'tsne.seeds'", "from 0 to 2**32 - 1"]),
    ("[grid]\nseeds = 100001\n", ["'grid.seeds'", "at most 100,000"]),
    ("[verification]\nbootstrap = 1000001\n", ["'verification.bootstrap'", "to 1,000,000"]),
    ("[run]\nworkers = 5000\n", ["'run.workers' must be from 0"]),
    ("[run]\nthreads_per_job = 5000\n", ["'run.threads_per_job' must be from 1 to 4,096"]),
    ("[run]\nmax_retries = 1000\n", ["'run.max_retries' must be from 0 to 100"]),
])
def test_bad_config_is_refused_naming_the_key(tmp_path: Path, text: str, words: list[str]) -> None:
    with pytest.raises(InputError) as err:
        resolve_config(write(tmp_path, text))
    for word in words:
        assert word in str(err.value)


@pytest.mark.parametrize("text, words", [
    ("[grid]\nseeds = [99999999999999999999]\n", ["'grid.seeds'", "from 0 to 2**32 - 1"]),
    ("[grid]\nseeds = [4294967296]\n", ["'grid.seeds'", "from 0 to 2**32 - 1 (4294967295), got 4294967296"]),
    ("[verification]\nallpairs_shards = 99999999999999999999\n", ["'verification.allpairs_shards'"]),
    ("[verification]\nidentities = \"all\"\nallpairs_shards = 100001\n",
     ["'verification.allpairs_shards' must be from 1 to run.max_jobs"]),
    ("[verification]\ntail_fmr_factor = inf\n", ["'verification.tail_fmr_factor' must be a finite number"]),
    ("[verification]\ntarget_fmrs = [1e-2, 1e-2]\n", ["'verification.target_fmrs' repeats a value"]),
])
def test_issue_21_values_are_refused_before_anything_is_written(tmp_path: Path, text: str, words: list[str]) -> None:
    """Issue 21 item 5: these ran (exit 4 after creating run.json, _jobs/ and failures/; every cell failing; minutes
    of CPU; duplicate operating points). Now: exit 2 naming the key, and the results folder is never created."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "grid.cli", "run", "--config", str(write(tmp_path, text)), "--out",
                           str(tmp_path / "r"), "--executor", "local", "--models", "logreg", "--no-report"],
                          capture_output=True, text=True, timeout=300, cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("biasgrid: error: ") and all(w in line for w in words), line
    assert not (tmp_path / "r").exists()


def test_the_largest_seed_runs(tmp_path: Path) -> None:
    """2**32 - 1, the top of the documented seed range, is a seed every job kind takes (scikit-learn's
    random_state, the splits, the bootstrap, t-SNE)."""
    from grid.runner import run_grid

    cfg = resolve_config(None, {"data.synth": {"identities_per_group": 16, "dim": 8}, "grid.models": ["logreg"],
                                "grid.seeds": [2 ** 32 - 1], "grid.train_groups": ["asian"],
                                "protocol.train_per_gender": 5, "protocol.test_per_gender": 5,
                                "verification.bootstrap": 10, "tsne.subsets": ["all"], "tsne.perplexity": 5.0,
                                "run.executor": "local", "run.workers": 1, "run.report": False,
                                "run.out": str(tmp_path / "r")})
    summary = run_grid(cfg, progress=False)
    assert summary.exit_code == 0 and summary.failed == []


def test_unknown_model_key_names_the_allowed_keys(tmp_path: Path) -> None:
    with pytest.raises(InputError) as err:
        resolve_config(write(tmp_path, "[model.mlp]\nepoch = 3\n"))
    assert "epoch" in str(err.value) and "epochs" in str(err.value)


def test_models_option_narrows_a_file_that_configures_other_models(tmp_path: Path) -> None:
    path = write(tmp_path, "[grid]\nmodels = ['mlp', 'xgboost']\n[model.mlp]\nepochs = 3\n")
    cfg = resolve_config(path, {"grid.models": ["xgboost"]})
    assert cfg["grid"]["models"] == ["xgboost"] and set(cfg["model"]) == {"xgboost"}
    # the left-out section is still checked
    bad = write(tmp_path, "[model.mlp]\nepoch = 3\n")
    with pytest.raises(InputError, match="epoch"):
        resolve_config(bad, {"grid.models": ["xgboost"]})


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        resolve_config(tmp_path / "nope.toml")


def test_seed_forms() -> None:
    assert parse_seeds(3, "x") == [0, 1, 2]
    assert parse_seeds("3,7,9", "x") == [3, 7, 9]
    assert parse_seeds([4], "x") == [4]
    for bad in ("a,b", [], [1, 1], -2, True):
        with pytest.raises(InputError):
            parse_seeds(bad, "x")


def test_plan_counts_and_stable_ids() -> None:
    cfg = resolve_config(None, STUDY)
    jobs = make_plan(cfg, "fp")
    kinds = [j.kind for j in jobs]
    assert kinds.count("cell") == 2 * 4 * 5
    assert kinds.count("scores") == 3 * 5
    assert kinds.count("impostor") == 5
    assert kinds.count("tsne") == 3
    assert len({j.job_id for j in jobs}) == len(jobs)
    assert [j.job_id for j in make_plan(resolve_config(None, STUDY), "fp")] == [j.job_id for j in jobs]


def test_adding_seeds_keeps_ids_and_model_config_changes_them(tmp_path: Path) -> None:
    base = {j.job_id for j in make_plan(resolve_config(None, {**STUDY, "grid.seeds": "2"}), "fp")}
    more = {j.job_id for j in make_plan(resolve_config(None, {**STUDY, "grid.seeds": "3"}), "fp")}
    assert base < more
    changed = make_plan(resolve_config(write(tmp_path, "[grid]\nseeds = 2\n[model.mlp]\nepochs = 20\n"), STUDY), "fp")
    changed_cells = {j.job_id for j in changed if j.kind == "cell" and j.params["model"] == "mlp"}
    assert changed_cells.isdisjoint(base)
    other_data = {j.job_id for j in make_plan(resolve_config(None, {**STUDY, "grid.seeds": "2"}), "other")}
    assert other_data.isdisjoint(base)
