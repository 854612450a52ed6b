"""Where results may be written: a results folder is never written inside another one (nor an embedding table
or a report inside one), results are never written among other files, and ``status`` names any foreign file
in a table's folder. Each refusal is exit 2 with one sentence naming the folder, and writes nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from grid.cli import main
from storage.lock import LOCK_FILE, Holder

from conftest import biasgrid

REPO = Path(__file__).resolve().parents[1]
TINY = ("[data.synth]\nidentities_per_group = 16\ndim = 8\n[grid]\nmodels = ['logreg']\nseeds = 1\n"
        "train_groups = ['asian']\ntest_groups = ['asian', 'black']\n[protocol]\ntrain_per_gender = 6\n"
        "test_per_gender = 4\n[verification]\nenabled = false\n[tsne]\nenabled = false\n[run]\nworkers = 1\n"
        "report = false\n")


def cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-m", "grid.cli", *args], capture_output=True, text=True, env=env,
                          timeout=600)


def snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every file (with its bytes) and folder under ``folder``."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() if p.is_file() else None for p in folder.rglob("*")}


def error(result: subprocess.CompletedProcess) -> str:
    return result.stderr.strip().splitlines()[-1]


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(TINY)
    return path


@pytest.fixture
def stored(tmp_path: Path, tiny: Path) -> Path:
    out = tmp_path / "r0"
    assert main(["run", "--config", str(tiny), "--out", str(out), "--executor", "local", "--quiet"]) == 0
    return out


@pytest.mark.parametrize("executor", ["local", "ray"])
def test_run_out_inside_a_results_folder_or_among_other_files_is_refused(tmp_path, tiny, executor):
    empty = tmp_path / "empty"
    empty.mkdir()
    # The runs: the local ones in this process; Ray in a process of its own (conftest.biasgrid). The refusals
    # come before the executor starts (grid.runner.check_results_out), so they are made in this process.
    run = biasgrid if executor == "local" else cli
    first = run("run", "--config", str(tiny), "--out", str(empty), "--executor", executor, "--quiet")
    assert first.returncode == 0, first.stderr[-3000:]                   # an empty folder is fine
    again = run("run", "--config", str(tiny), "--out", str(empty), "--executor", executor, "--quiet")
    assert again.returncode == 0 and "0 jobs run, 1 were already stored" in again.stdout   # resume is fine
    before = snapshot(empty)
    for inside in (empty / "accuracy", empty / "accuracy" / "model=logreg" / "r1", empty / "new"):
        refused = biasgrid("run", "--config", str(tiny), "--out", str(inside), "--executor", executor, "--quiet")
        assert refused.returncode == 2, refused.stderr[-3000:]
        assert error(refused) == (f"biasgrid: error: --out {inside}: is inside the results folder {empty} (it holds "
                                  f"run.json), which holds only what 'biasgrid run' writes; name a place outside it")
    assert snapshot(empty) == before                                     # nothing written
    assert len(pd.read_parquet(empty / "accuracy")) == 2                 # the README's reading still works

    thesis = tmp_path / "thesis"
    (thesis / "sub").mkdir(parents=True)
    (thesis / "thesis.tex").write_text("\\chapter{Results}\n")
    before = snapshot(thesis)
    refused = biasgrid("run", "--config", str(tiny), "--out", str(thesis), "--executor", executor, "--quiet")
    assert refused.returncode == 2
    assert error(refused) == (f"biasgrid: error: --out {thesis}: is a folder holding other files (sub, thesis.tex) "
                              f"and no results (no run.json); expected a new or empty folder, or an existing "
                              f"results folder to add to")
    assert snapshot(thesis) == before


def test_a_folder_left_with_only_a_stale_lock_is_a_results_folder(tmp_path, tiny):
    """A first run killed before it wrote run.json leaves its lock: the folder is resumed, not refused."""
    out = tmp_path / "r"
    out.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    (out / LOCK_FILE).write_text(json.dumps({**Holder.me().__dict__, "pid": int(dead), "process_start": "1"}))
    assert main(["run", "--config", str(tiny), "--out", str(out), "--executor", "local", "--quiet"]) == 0
    assert (out / "run.json").exists()


def test_embedding_tables_are_not_written_inside_a_results_folder(stored, tmp_path, capsys):
    before = snapshot(stored)
    for command in (["data", "synth"], ["data", "import", str(tmp_path)],
                    ["data", "embed", str(tmp_path), "--model", "dlib", "--executor", "local"]):
        for out in (stored / "accuracy" / "t.parquet", stored / "t.parquet"):
            assert main([*command, "--out", str(out)]) == 2
            assert capsys.readouterr().err.strip() == (
                f"biasgrid: error: --out {out}: is inside the results folder {stored} (it holds run.json), which "
                f"holds only what 'biasgrid run' writes; name a place outside it")
    assert snapshot(stored) == before


def test_report_out_is_refused_inside_a_results_folder_or_over_other_files(stored, tmp_path, tiny, capsys):
    other = tmp_path / "r1"
    assert main(["run", "--config", str(tiny), "--out", str(other), "--executor", "local", "--quiet"]) == 0
    assert main(["report", str(other)]) == 0                  # r1's own report/ (the default) is fine
    thesis = tmp_path / "thesis"
    (thesis / "figures").mkdir(parents=True)
    (thesis / "thesis.tex").write_text("\\chapter{Results}\n")
    capsys.readouterr()
    before = {p: snapshot(p) for p in (stored, other, thesis)}
    inside = "(it holds run.json), which holds only what 'biasgrid run' writes; name a place outside it"
    over = ("and no report; the report folder is replaced as a whole, so name a new or empty folder, or an earlier "
            "report's")
    for out, message in ((stored / "accuracy" / "rep", f"is inside the results folder {stored} {inside}"),
                         (other / "report", f"is inside the results folder {other} {inside}"),
                         (thesis, f"is a folder holding other files (figures, thesis.tex) {over}"),
                         (stored, f"is a folder holding other files (_jobs, accuracy, predictions ...) {over}")):
        assert main(["report", str(stored), "--out", str(out)]) == 2
        captured = capsys.readouterr()
        assert captured.err.strip() == f"biasgrid: error: --out {out}: {message}"
        assert captured.out == ""                              # refused before any work
    assert {p: snapshot(p) for p in before} == before
    report = tmp_path / "report-r0"
    for _ in range(2):                                         # a new folder, then the earlier report: replaced
        assert main(["report", str(stored), "--out", str(report)]) == 0
    assert (report / "report.html").exists()
    assert main(["report", str(stored), "--out", str(stored / "report")]) == 0   # its own report/


def test_status_names_foreign_entries_in_table_folders(stored, tmp_path, capsys):
    assert main(["status", str(stored), "--verify"]) == 0
    capsys.readouterr()
    partition = next((stored / "accuracy").iterdir())
    (stored / "accuracy" / "notes.txt").write_text("mine\n")
    (partition / "sub").mkdir()
    (partition / "sub" / "x.parquet").write_bytes(b"PAR1")
    (stored / "predictions" / "run.json").write_text("{}")        # a second results tree written into a table
    (stored / "predictions" / "accuracy" / "model=logreg").mkdir(parents=True)
    (stored / "accuracy" / "model=logreg" / ".x.parquet.1234.tmp").write_bytes(b"")   # an interrupted write: ok
    with pytest.raises(Exception):
        pd.read_parquet(stored / "accuracy")                       # what the foreign files break
    for verify in (["--verify"], []):
        assert main(["status", str(stored), *verify]) == 1
        out = capsys.readouterr().out
        for path in ("accuracy/notes.txt", f"accuracy/{partition.name}/sub", "predictions/accuracy",
                     "predictions/run.json"):
            assert f"  damaged  {path}: not a file of the results store, inside a table's folder" in out
        assert f"accuracy/{partition.name}/sub/x.parquet" not in out and ".tmp" not in out
        assert "4 foreign entries in table folders" in out
