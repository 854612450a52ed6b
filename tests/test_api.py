"""The Python API: ``biasgrid.run`` stores what ``biasgrid run`` stores and refuses what it refuses with the same
message; ``Results`` views; failed jobs as ``JobsFailed``; the README's Python examples run as written."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

import biasgrid
from grid.report import load_results, stats
from storage.results import load

from conftest import biasgrid as biasgrid_command   # `biasgrid` is the package here
from test_grid import FLAKY, KEYS, stable

REPO = Path(__file__).resolve().parents[1]

GRID = """
[data.synth]
identities_per_group = 20
dim = 16
[grid]
models = ["logreg"]
seeds = 2
train_groups = ["asian", "all"]
[protocol]
train_per_gender = 8
test_per_gender = 6
[verification]
max_impostor_pairs = 5000
bootstrap = 20
[tsne]
enabled = false
[run]
executor = "local"
workers = 1
report = false
"""


def test_run_from_python_stores_the_numbers_the_command_stores(tmp_path: Path) -> None:
    config = tmp_path / "grid.toml"
    config.write_text(GRID)
    done = biasgrid_command("run", "--config", str(config), "--out", str(tmp_path / "cli"), "--quiet")   # local
    assert done.returncode == 0, done.stderr[-3000:]
    res = biasgrid.run(config, progress=False, **{"run.out": str(tmp_path / "api")})
    assert isinstance(res, biasgrid.Results) and res.summary.ran == res.summary.planned == 2 * 2 + 3 * 2 + 2
    by_cli = load(tmp_path / "cli")
    for table, keys in KEYS.items():
        if table == "tsne":
            continue
        assert len(res.tables[table]) > 0, table
        pd.testing.assert_frame_equal(stable(res.tables[table], keys), stable(by_cli[table], keys), check_dtype=False)
    assert {j["job_id"] for j in res.jobs} == {j["job_id"] for j in load_results(tmp_path / "cli").jobs}

    # the views are the report's numbers
    cli_res = load_results(tmp_path / "cli")
    pd.testing.assert_frame_equal(res.matrix("logreg"), stats.accuracy_matrix(cli_res, "logreg"))
    pd.testing.assert_frame_equal(res.matrix_text("logreg"), stats.matrix_text(cli_res, "logreg"))
    pd.testing.assert_frame_equal(res.summaries["row_spread"], stats.row_spread(cli_res))
    assert res.accuracy is res.tables["accuracy"] and res.verification is res.tables["verification"]
    assert set(res.status["status"]) == {"done"}
    by_sql = res.sql("SELECT train_group, test_group, avg(accuracy) AS mean FROM accuracy GROUP BY ALL")
    by_pandas = res.accuracy.groupby(["train_group", "test_group"], observed=True)["accuracy"].mean()
    for row in by_sql.itertuples():
        assert row.mean == pytest.approx(by_pandas[(row.train_group, row.test_group)])
    assert res.sql("SELECT count(*) AS n FROM verification")["n"].iat[0] == 3 * 2
    again = biasgrid.load(tmp_path / "api")
    assert again.sql("SELECT count(*) AS n FROM verification")["n"].iat[0] == 3 * 2
    assert again.tables.loaded == ["verification"]   # a query reads only the tables it names
    pd.testing.assert_frame_equal(again.matrix("logreg"), res.matrix("logreg"))
    assert again.summary is None
    assert Path(again.report()).read_text().startswith("<!DOCTYPE html>")


@pytest.mark.parametrize("options, overrides", [
    (["--seeds", "0"], {"grid.seeds": "0"}),
    (["--data", "/nonexistent/table.parquet"], {"data.path": "/nonexistent/table.parquet"}),
    (["--models", "svm"], {"grid.models": ["svm"]}),
])
def test_bad_input_raises_input_error_with_the_commands_message(tmp_path: Path, options, overrides) -> None:
    config = tmp_path / "grid.toml"
    config.write_text(GRID)
    done = biasgrid_command("run", "--config", str(config), "--out", str(tmp_path / "cli"), *options)
    assert done.returncode == 2
    with pytest.raises(biasgrid.InputError) as err:
        biasgrid.run(config, overrides={**overrides, "run.out": str(tmp_path / "api")}, progress=False)
    assert f"biasgrid: error: {err.value}" in done.stderr
    assert not (tmp_path / "api").exists() and not (tmp_path / "cli").exists()


def test_a_dict_config_is_checked_like_a_file() -> None:
    with pytest.raises(biasgrid.InputError, match=r"config: unknown key 'grid\.seedz'; allowed keys here: .*seeds"):
        biasgrid.run({"grid": {"seedz": 2}})
    with pytest.raises(biasgrid.InputError, match="must be at least 1"):
        biasgrid.run({"grid": {"seeds": 2}}, **{"grid.seeds": 0})   # keyword arguments win


def test_failed_jobs_raise_jobs_failed_holding_every_other_result(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "flakymodels").mkdir()
    (tmp_path / "flakymodels" / "__init__.py").write_text(FLAKY)
    monkeypatch.syspath_prepend(str(tmp_path))
    config = tmp_path / "grid.toml"
    config.write_text(GRID)
    over = {"run.out": str(tmp_path / "r"), "grid.models": ["flakymodels:build"], "verification.enabled": False}
    with pytest.raises(biasgrid.JobsFailed, match="2 job\\(s\\) failed: cell flakymodels:build") as err:
        biasgrid.run(config, overrides=over, progress=False)
    assert err.value.exit_code == 1 and len(err.value.failed) == 2   # 2 train groups, seed 1
    assert set(err.value.results.accuracy["seed"]) == {0} and len(err.value.results.accuracy) == 2 * 3
    res = biasgrid.run(config, overrides=over, progress=False, check=False)
    assert res.summary.exit_code == 1 and len(res.summary.failed_before) == 2
    assert list(res.status["status"]).count("failed") == 2


def readme_python(*headings: str) -> list[str]:
    """The ```python blocks of the README sections under ``headings``."""
    text = (REPO / "README.md").read_text()
    blocks = []
    for heading in headings:
        start = text.index(heading)
        section = text[start:text.index("\n#", start + len(heading))]
        blocks += re.findall(r"```python\n(.*?)```", section, re.S)
    return blocks


def test_the_readme_python_examples_run_as_written(tmp_path: Path, monkeypatch, capsys) -> None:
    """Every Python block of *The results folder*, *Python API for notebooks* and *Tracking runs in MLflow*, in
    order, in a folder holding a small grid.toml (the first block runs it, with the MLflow store)."""
    blocks = readme_python("## The results folder", "### Python API for notebooks", "### Tracking runs in MLflow")
    assert len(blocks) == 5 and "biasgrid.run(" in blocks[2]
    (tmp_path / "grid.toml").write_text(GRID.replace('models = ["logreg"]', 'models = ["mlp"]')
                                        + '[model.mlp]\nepochs = 2\nbatch_size = 8\n[tracking]\nmlflow = "local"\n')
    monkeypatch.chdir(tmp_path)
    blocks = [blocks[2], blocks[0], blocks[1], blocks[3], blocks[4]]   # the run first: the others read its folder
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, "README.md", "exec"), namespace)   # noqa: S102 - the README's own examples
    assert "must be at least 1" in capsys.readouterr().out        # the InputError example printed its message
    assert (tmp_path / "results" / "report" / "report.html").exists()
    assert len(namespace["runs"]) == 1 + 2 * 3 + 3 * 3 + 3       # the parent and a child per job (3 seeds)
