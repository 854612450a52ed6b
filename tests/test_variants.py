"""Model variants and sweeps: each variant is a model of the grid (its own job ids, rows, matrices and report
rows), a sweep adds variants to a folder like models, a variant's options are fixed by its folder, and the job ids
of the models that are no variants are those they always had."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd
import pytest

from grid.config import resolve_config
from grid.plan import make_plan
from grid.report import load_results
from grid.report.document import report_files
from grid.runner import run_grid
from storage.errors import InputError
from tasks.models import build_model, model_type, resolve_model_config

TINY = {"data.synth": {"identities_per_group": 16, "dim": 8}, "grid.seeds": "1",
        "grid.train_groups": ["asian", "all"], "grid.test_groups": ["asian", "black"],
        "protocol.train_per_gender": 6, "protocol.test_per_gender": 4, "verification.enabled": False,
        "tsne.enabled": False, "run.executor": "local", "run.workers": 1, "run.report": False}
STUDY = {"run.executor": "local", "grid.train_groups": ["asian", "caucasian", "black", "all"],
         "grid.test_groups": ["asian", "caucasian", "black"]}


def toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "grid.toml"
    path.write_text(text)
    return path


def sweep_of(values: str) -> str:
    return f'[grid]\nmodels = ["logreg"]\n[model.logreg]\nmax_iter = 200\n[sweep]\n"logreg.C" = [{values}]\n'


def test_the_default_grids_job_ids_are_those_before_variants() -> None:
    """The 63 jobs of the default grid keep their ids (the README's default run and every resume rely on them)."""
    ids = sorted(j.job_id for j in make_plan(resolve_config(None, STUDY), "fp"))
    assert len(ids) == 63
    assert hashlib.sha256(" ".join(ids).encode()).hexdigest()[:16] == "32bab60e927bc0b4"


def test_a_sweep_is_one_folder_of_variants_and_a_third_setting_runs_only_its_jobs(tmp_path: Path) -> None:
    out = tmp_path / "r"
    first = run_grid(resolve_config(toml(tmp_path, sweep_of("0.001, 10.0")), {**TINY, "run.out": str(out)}),
                     progress=False)
    assert first.exit_code == 0 and first.ran == first.planned == 2 * 2   # 2 variants x 2 train groups x 1 seed
    res = load_results(out)
    assert res.models == ["logreg-C=0.001", "logreg-C=10.0"]
    cells = [j for j in res.jobs if j["kind"] == "cell"]
    assert {j["model"] for j in cells} == set(res.models) and len({j["job_id"] for j in cells}) == 4
    acc = res.tables["accuracy"]
    assert acc.groupby("model", observed=True).size().to_dict() == {"logreg-C=0.001": 4, "logreg-C=10.0": 4}

    # each variant's numbers are its options': the same as the model type run with them in a folder of its own
    for c in ("0.001", "10.0"):
        plain = tmp_path / f"plain-{c}"
        run_grid(resolve_config(toml(tmp_path, f"[grid]\nmodels = ['logreg']\n[model.logreg]\nmax_iter = 200\n"
                                               f"C = {c}\n"), {**TINY, "run.out": str(plain)}), progress=False)
        keys = ["train_group", "test_group", "seed"]
        mine = acc[acc["model"] == f"logreg-C={c}"].sort_values(keys).reset_index(drop=True)
        theirs = load_results(plain).tables["accuracy"].sort_values(keys).reset_index(drop=True)
        pd.testing.assert_series_equal(mine["accuracy"], theirs["accuracy"])

    # the report compares the variants as models: a matrix each, a row each in the summaries
    files = report_files(res)
    text = files["report.md"].decode()
    assert "Model: logreg-C=0.001" in text and "Model: logreg-C=10.0" in text
    for csv in ("accuracy.csv", "row_spread.csv", "best_train_group.csv"):
        frame = pd.read_csv(pd.io.common.BytesIO(files[csv]))
        assert set(frame["model"]) == set(res.models), csv

    third = run_grid(resolve_config(toml(tmp_path, sweep_of("0.001, 10.0, 1000.0")), {**TINY, "run.out": str(out)}),
                     progress=False)
    assert third.ran == 2 and third.stored_before == 4    # only the new variant's cells ran
    res = load_results(out)
    assert res.models == ["logreg-C=0.001", "logreg-C=10.0", "logreg-C=1000.0"]
    assert not res.tables["accuracy"].duplicated(["model", "train_group", "test_group", "seed"]).any()


def test_a_named_variant_is_a_model_and_its_folder_fixes_its_options(tmp_path: Path) -> None:
    out = tmp_path / "r"
    text = '[grid]\nmodels = ["logreg", "logreg-weak"]\n[model."logreg-weak"]\nbase = "logreg"\nC = 0.01\n'
    cfg = resolve_config(toml(tmp_path, text), {**TINY, "run.out": str(out)})
    assert cfg["model"]["logreg-weak"] == {"base": "logreg", **resolve_model_config("logreg", {"C": 0.01})}
    plain = {j.job_id for j in make_plan(resolve_config(None, {**TINY, "grid.models": ["logreg"]}), "fp")}
    assert plain < {j.job_id for j in make_plan(cfg, "fp")}   # the plain model's jobs are unchanged
    assert run_grid(cfg, progress=False).exit_code == 0
    with pytest.raises(InputError, match=r"model\.logreg-weak\.C: stored 0\.01, new 0\.02"):
        run_grid(resolve_config(toml(tmp_path, text.replace("0.01", "0.02")), {**TINY, "run.out": str(out)}),
                 progress=False)


def test_a_variant_builds_its_base_model_with_its_options() -> None:
    config = resolve_model_config("mlp-8", {"base": "mlp", "hidden_units": [8], "epochs": 2})
    assert model_type("mlp-8", config) == "mlp" and model_type("mlp", resolve_model_config("mlp", {})) == "mlp"
    assert build_model("logreg-strong", {"base": "logreg", "C": 50.0}, seed=0).get_params()["C"] == 50.0
    mlp = build_model("mlp-8", config, seed=0)
    assert type(mlp).__name__ == "MLPClassifier" and list(mlp.hidden_units) == [8]


@pytest.mark.parametrize("text, words", [
    ('[grid]\nmodels = ["v"]\n[model.v]\nbase = "svm"\n', ["model 'v'", "'base' must name a model type"]),
    ('[grid]\nmodels = ["logreg"]\n[model.logreg]\nbase = "xgboost"\n', ["is a model type", "name of its own"]),
    ('[grid]\nmodels = ["v"]\n[model.v]\nbase = "logreg"\nCC = 1\n', ["a variant of 'logreg'", "'CC'"]),
    ('[grid]\nmodels = ["logreg"]\n[model.v]\nbase = "logreg"\n', ["[model.v]", "not in 'grid.models'"]),
    ('[grid]\nmodels = ["logreg"]\n[sweep]\nC = [1]\n', ["[sweep] 'C'", "MODEL.KEY"]),
    ('[grid]\nmodels = ["logreg"]\n[sweep]\n"logreg.C" = 1\n', ["'logreg.C'", "non-empty list"]),
    ('[grid]\nmodels = ["logreg"]\n[sweep]\n"logreg.C" = [1, 1]\n', ["'logreg.C'", "repeats a value"]),
    ('[grid]\nmodels = ["logreg"]\n[sweep]\n"xgboost.max_depth" = [3]\n', ["sweeps model 'xgboost'", "grid.models"]),
    ('[grid]\nmodels = ["logreg"]\n[sweep]\n"logreg.base" = ["mlp"]\n', ["'base' is not swept"]),
    ('[grid]\nmodels = ["logreg"]\n[sweep]\n"logreg.CC" = [1]\n', ["logreg-CC=1", "'CC'"]),
    ('[grid]\nmodels = ["logreg", "logreg-C=1"]\n[model."logreg-C=1"]\nbase = "logreg"\n[sweep]\n"logreg.C" = [1]\n',
     ["gives model 'logreg-C=1'", "already names"]),
    ('[run]\nmax_jobs = 10\n[sweep]\n"xgboost.max_depth" = [1,2,3,4]\n"xgboost.max_bin" = [2,3,4]\n',
     ["gives 13 models", "run.max_jobs"]),
])
def test_bad_variants_and_sweeps_are_refused_naming_them(tmp_path: Path, text: str, words: list[str]) -> None:
    with pytest.raises(InputError) as err:
        resolve_config(toml(tmp_path, text))
    assert all(w in str(err.value) for w in words), str(err.value)
