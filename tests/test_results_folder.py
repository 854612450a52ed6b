"""A results folder you can trust: one experiment per folder, one writer at a time, damaged results found and
recomputed, every failure its exit code and one sentence, bounded plans."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from grid.config import resolve_config
from grid.runner import run_grid
from storage.errors import InputError
from storage.lock import LOCK_FILE, FolderLock, Holder
from storage.results import ResultStore, load

from conftest import biasgrid

# Under xdist this module's tests run on one worker: its module fixture (stored_once) is built once.
pytestmark = pytest.mark.xdist_group("results_folder")

REPO = Path(__file__).resolve().parents[1]
TINY = {"data.synth": {"identities_per_group": 16, "dim": 8}, "grid.models": ["logreg"], "grid.seeds": "1",
        "grid.train_groups": ["asian", "all"], "grid.test_groups": ["asian", "black"],
        "protocol.train_per_gender": 6, "protocol.test_per_gender": 4, "verification.enabled": False,
        "tsne.enabled": False, "run.executor": "local", "run.workers": 1, "run.report": False}
KEYS = ["model", "train_group", "test_group", "seed"]


def config(out: Path, **changes) -> dict:
    return resolve_config(None, {**TINY, "run.out": str(out), **changes})


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """``biasgrid ARGS`` in this process (conftest.biasgrid): exit code, stdout and stderr."""
    return biasgrid(*args, cwd=cwd)


def cli_process(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """``python -m grid.cli ARGS`` in a process of its own."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-m", "grid.cli", *args], capture_output=True, text=True, env=env,
                          timeout=timeout)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def stored_once(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One run of the TINY grid, made once per module; tests get a copy of it (``stored``)."""
    out = tmp_path_factory.mktemp("stored") / "r"
    assert run_grid(config(out), progress=False).exit_code == 0
    return out


@pytest.fixture
def stored(stored_once: Path, tmp_path: Path) -> Path:
    """A results folder of its own holding one finished run of the TINY grid (a copy of the module's run: the
    same files, byte for byte, as a run into this folder writes; nothing in a results folder names its path)."""
    out = tmp_path / "r"
    shutil.copytree(stored_once, out)
    return out


# ------------------------------------------------------------------------------------------- one experiment ---
@pytest.mark.parametrize("change, named", [
    ({"protocol.train_per_gender": 5}, "protocol.train_per_gender: stored 6, new 5"),
    ({"data.synth": {"identities_per_group": 16, "dim": 8, "seed": 1}}, "data: stored"),
    ({"model": None}, "model.logreg.C: stored 1.0, new 0.5"),
])
def test_a_run_that_would_change_the_experiment_is_refused(stored: Path, tmp_path: Path, change, named) -> None:
    before = snapshot(stored)
    if "model" in change:
        toml = tmp_path / "c.toml"
        toml.write_text("[model.logreg]\nC = 0.5\n")
        cfg = resolve_config(toml, {**TINY, "run.out": str(stored)})
    else:
        cfg = config(stored, **change)
    with pytest.raises(InputError, match="holds another experiment") as err:
        run_grid(cfg, progress=False)
    assert named in str(err.value) and "another --out" in str(err.value)
    assert snapshot(stored) == before                     # nothing written, the lock given back


def test_seeds_models_and_groups_may_be_added_without_duplicates(stored: Path) -> None:
    for change in ({"grid.seeds": "2"}, {"grid.models": ["logreg", "xgboost"], "grid.seeds": "2"},
                   {"grid.train_groups": ["black"]}, {"grid.test_groups": ["caucasian"]}):
        assert run_grid(config(stored, **change), progress=False).exit_code == 0
    acc = pd.read_parquet(stored / "accuracy")            # the README's recipe: one experiment, no duplicates
    assert not acc.duplicated(KEYS).any()
    # the folder's grid is the union of the runs': 2 models x 3 train groups x 3 test groups x 2 seeds, every
    # cell evaluated on every test group the folder holds (caucasian, added last, too)
    assert len(acc) == 2 * 3 * 3 * 2
    assert set(acc["test_group"]) == {"asian", "black", "caucasian"}
    run = json.loads((stored / "run.json").read_text())
    assert len(run["runs"]) == 5                          # every run's record kept
    assert run["config"]["grid"]["test_groups"] == ["asian", "black", "caucasian"]
    assert len(run["jobs"]["job_id"]) == len(set(run["jobs"]["job_id"])) == 2 * 3 * 2


# -------------------------------------------------------------------------------------------- one writer ---
def test_a_second_run_on_a_locked_folder_refuses_at_once_or_waits(stored: Path) -> None:
    store = ResultStore(stored)
    lock = FolderLock(store.fs, store.root)
    assert lock.acquire() == []
    before = snapshot(stored)
    with pytest.raises(InputError, match=f"being written by process {os.getpid()} on host"):
        run_grid(config(stored, **{"grid.seeds": "2"}), progress=False)
    assert snapshot(stored) == before
    threading.Timer(1.5, lock.release).start()            # the holder finishes while the second run waits
    assert run_grid(config(stored, **{"grid.seeds": "2"}), progress=False, wait=True).ran == 2   # seed 1
    assert not (stored / LOCK_FILE).exists()


def test_a_lock_left_by_a_dead_process_is_taken_over_with_a_note(stored: Path, capsys) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    holder = {**Holder.me().__dict__, "pid": int(dead), "process_start": "1"}
    (stored / LOCK_FILE).write_text(json.dumps(holder))
    assert run_grid(config(stored, **{"grid.seeds": "2"}), progress=True).exit_code == 0
    assert f"took over the lock of process {dead}" in capsys.readouterr().err


def test_two_concurrent_command_line_runs(tmp_path: Path) -> None:
    """The second of two runs started together on one folder refuses (exit 2) naming the first."""
    out = tmp_path / "r"
    toml = tmp_path / "c.toml"
    toml.write_text("[data.synth]\nidentities_per_group = 20\ndim = 8\n[grid]\nmodels = ['mlp']\nseeds = 2\n"
                    "[model.mlp]\nepochs = 100\nbatch_size = 2\n"
                    "[protocol]\ntrain_per_gender = 6\ntest_per_gender = 4\n[verification]\nenabled = false\n"
                    "[tsne]\nenabled = false\n[run]\nexecutor = 'local'\nworkers = 1\nreport = false\n")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    first = subprocess.Popen([sys.executable, "-m", "grid.cli", "run", "--config", str(toml), "--out", str(out),
                              "--quiet"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (out / LOCK_FILE).exists() and time.time() < deadline and first.poll() is None:
        time.sleep(0.05)
    second = cli("run", "--config", str(toml), "--out", str(out), "--seeds", "3", "--quiet")
    first_out, first_err = first.communicate(timeout=300)
    assert first.returncode == 0, first_err
    assert second.returncode == 2, second.stderr
    assert f"being written by process {first.pid}" in second.stderr and "--wait" in second.stderr
    assert len(load(out)["accuracy"]) == 4 * 3 * 2       # only the first run's rows (mlp: 4 x 3 x 2 seeds)


# ------------------------------------------------------------------------------------------ damaged files ---
def one_file(out: Path) -> Path:
    return sorted((out / "accuracy").rglob("*.parquet"))[0]


@pytest.mark.parametrize("damage", ["truncate", "delete", "flip"])
def test_damaged_result_files_are_found_reported_and_recomputed(stored: Path, damage: str) -> None:
    victim = one_file(stored)
    job = victim.stem
    data = victim.read_bytes()
    if damage == "truncate":
        victim.write_bytes(data[: len(data) // 2])
    elif damage == "delete":
        victim.unlink()
    else:   # same size, bytes changed in the middle: only checksums (or reading) can tell
        middle = len(data) // 2
        victim.write_bytes(data[:middle] + bytes(b ^ 0xFF for b in data[middle:middle + 16]) + data[middle + 16:])
    (stored / "accuracy" / ".leftover.parquet.123.tmp").write_bytes(b"half")
    status = cli("status", str(stored), "--verify")
    assert status.returncode == 1 and "1 damaged" in status.stdout and job in status.stdout
    report = cli("report", str(stored))
    assert report.returncode == 0, report.stderr
    assert job in (stored / "report" / "jobs.csv").read_text() and "damaged" in (stored / "report" / "jobs.csv").read_text()
    rerun = run_grid(config(stored), progress=False)
    assert rerun.ran == 1 and rerun.exit_code == 0        # exactly the damaged job, recomputed
    acc = pd.read_parquet(stored / "accuracy")
    assert len(acc) == 2 * 2 and not acc.duplicated(KEYS).any()
    assert cli("status", str(stored), "--verify").returncode == 0
    assert not list(stored.rglob("*.tmp"))


def test_an_unreadable_ledger_record_counts_as_damaged(stored: Path) -> None:
    record = sorted((stored / "_jobs").glob("*.json"))[0]
    record.write_text("{not json")
    status = cli("status", str(stored))
    assert status.returncode == 1 and "damaged" in status.stdout and "not a readable ledger record" in status.stdout
    assert run_grid(config(stored), progress=False).ran == 1


# --------------------------------------------------------------------------------------------- exit codes ---
def test_bad_input_and_environment_failures_each_get_their_exit_code(tmp_path: Path) -> None:
    afile = tmp_path / "file"
    afile.write_text("x")
    r = cli("run", "--out", str(afile), "--executor", "local")
    assert r.returncode == 2 and "is a file" in r.stderr and "Traceback" not in r.stderr
    latin = tmp_path / "latin.toml"
    latin.write_bytes("[grid]\n# caf\xe9\n".encode("latin-1"))
    r = cli("run", "--config", str(latin), "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "not UTF-8" in r.stderr and not (tmp_path / "o").exists()
    bad_run = tmp_path / "badrun"
    bad_run.mkdir()
    (bad_run / "run.json").write_text("{oops")
    r = cli("status", str(bad_run))
    assert r.returncode == 2 and "run.json: not valid JSON" in r.stderr and "Traceback" not in r.stderr
    started = time.time()
    r = cli_process("run", "--address", "127.0.0.1:1", "--out", str(tmp_path / "never"), "--quiet")
    assert r.returncode == 3 and "127.0.0.1:1" in r.stderr and "Traceback" not in r.stderr
    assert time.time() - started < 120 and not (tmp_path / "never").exists()


def _mount_tmpfs(folder: Path, options: str) -> bool:
    folder.mkdir()
    return subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)],
                          capture_output=True).returncode == 0


@pytest.mark.parametrize("options, words", [("ro,size=1m", "read-only"), ("size=48k", "space")])
def test_read_only_or_full_file_system_is_exit_3(tmp_path: Path, options: str, words: str) -> None:
    mnt = tmp_path / "mnt"
    if not _mount_tmpfs(mnt, options):
        pytest.skip("cannot mount a tmpfs here (needs root and mount permission)")
    try:
        r = cli("run", "--out", str(mnt / "r"), "--executor", "local", "--models", "logreg", "--seeds", "1",
                "--quiet", "--no-report")
        assert r.returncode == 3, r.stderr
        assert words in r.stderr and str(mnt) in r.stderr and "Traceback" not in r.stderr
        assert not list(mnt.rglob("*.tmp"))
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)


def test_a_full_disk_while_writing_the_report_keeps_the_previous_report(stored: Path, tmp_path: Path) -> None:
    mnt = tmp_path / "mnt"
    if not _mount_tmpfs(mnt, "size=2m"):
        pytest.skip("cannot mount a tmpfs here (needs root and mount permission)")
    try:
        report = mnt / "report"
        report.mkdir()
        (report / "report.html").write_text("previous report")
        filler = mnt / "filler"
        subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=1k", "count=1900"], capture_output=True)
        r = cli("report", str(stored), "--out", str(report))
        assert r.returncode == 3 and "previous report" in r.stderr, r.stderr
        assert (report / "report.html").read_text() == "previous report"
        assert sorted(p.name for p in mnt.iterdir()) == ["filler", "report"]
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)


# ------------------------------------------------------------------------------------------------ bounds ---
def test_a_huge_grid_is_refused_before_anything_runs(tmp_path: Path) -> None:
    started = time.time()
    r = cli("run", "--seeds", "100000", "--out", str(tmp_path / "r"), "--executor", "local")
    planned = 100_000 * (2 * 4 + 3 + 1) + 3     # cells, scores, impostor matrix per seed; t-SNE for one seed
    assert r.returncode == 2 and f"plans {planned:,} jobs" in r.stderr and "--max-jobs" in r.stderr
    assert not (tmp_path / "r").exists() and time.time() - started < 120
    with pytest.raises(InputError, match="more than the limit of 5"):
        run_grid(config(tmp_path / "r2", **{"run.max_jobs": 5, "grid.seeds": "3"}), progress=False)


# ---------------------------------------------------------------------------------------------- messages ---
def test_option_errors_name_the_option(tmp_path: Path) -> None:
    toml = tmp_path / "base.toml"
    toml.write_text("[grid]\nseeds = 2\n")
    r = cli("run", "--config", str(toml), "--seeds", "five", "--out", str(tmp_path / "r"))
    assert r.returncode == 2 and "option --seeds" in r.stderr and "base.toml" not in r.stderr
    r = cli("run", "--models", "", "--out", str(tmp_path / "r"))
    assert r.returncode == 2 and "option --models" in r.stderr
    assert not (tmp_path / "r").exists()


def test_uri_results_get_their_report_inside_the_results_folder(tmp_path: Path) -> None:
    uri = (tmp_path / "r").as_uri()
    here = tmp_path / "cwd"
    here.mkdir()
    (here / "report").mkdir()
    (here / "report" / "mine.txt").write_text("keep")
    r = cli("run", "--out", uri, "--executor", "local", "--models", "logreg", "--seeds", "1", "--quiet",
            "--config", str(_tiny_toml(tmp_path)), cwd=here)
    assert r.returncode == 0, r.stderr
    assert f"report: {uri}/report/report.html" in r.stdout
    assert (tmp_path / "r" / "report" / "report.html").exists()
    assert [p.name for p in (here / "report").iterdir()] == ["mine.txt"]


def _tiny_toml(tmp_path: Path) -> Path:
    toml = tmp_path / "tiny.toml"
    toml.write_text("[data.synth]\nidentities_per_group = 16\ndim = 8\n[protocol]\ntrain_per_gender = 6\n"
                    "test_per_gender = 4\n[verification]\nenabled = false\n[tsne]\nenabled = false\n")
    return toml


def test_a_semicolon_csv_is_named_with_its_delimiter(tmp_path: Path) -> None:
    csv_file = tmp_path / "emb.csv"
    csv_file.write_text("identity;image;ethnicity;gender;e0;e1\n" + "a;1;asian;male;0.1;0.2\n" * 3)
    r = cli("data", "import", str(csv_file), "--format", "table", "--out", str(tmp_path / "t.parquet"))
    assert r.returncode == 2 and "';'" in r.stderr and "comma-separated" in r.stderr and len(r.stderr) < 500
    assert not (tmp_path / "t.parquet").exists()
