"""A full disk is exit 3, at once, on both executors: at whatever point of the run the space runs out, the driver
names the path, stops its workers and exits, leaving no process, no shared data and no half-written lock.
Real drivers (``python -m grid.cli run``) on a small tmpfs (skipped where it cannot be mounted); the full disk at
start runs its two commands in the test process (conftest.biasgrid)."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import REPO, biasgrid, descendants
from test_embed_cli import diveface
from test_executors import GRID, kill_leftover, ours, wait_gone
from test_results_folder import _mount_tmpfs

SIZE_KB = 512      # the tmpfs
NEEDS_KB = 200     # about what the grid writes (151 kB in 25 files, 192 kB in pages): free space is drawn below
RUNS = {"local": 8, "ray": 4}   # per executor (the hang was in the local pool; each Ray run starts a node)
HUNG = 120         # seconds after which a run counts as hung (a healthy one takes seconds)


@pytest.fixture
def mnt(tmp_path: Path):
    folder = tmp_path / "mnt"
    if not _mount_tmpfs(folder, f"size={SIZE_KB}k"):
        pytest.skip("cannot mount a tmpfs here (needs root and mount permission)")
    yield folder
    subprocess.run(["umount", str(folder)], capture_output=True)


def run_watched(args: list[str], env: dict[str, str]) -> tuple[subprocess.CompletedProcess, int, set[int]]:
    """Run a driver; also its process id and every process seen below it while it ran."""
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen: set[int] = set()

    def watch() -> None:
        while proc.poll() is None:
            seen.update(descendants(proc.pid))
            time.sleep(0.1)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        stdout, stderr = proc.communicate(timeout=HUNG)
    except subprocess.TimeoutExpired:
        left = descendants(proc.pid)
        proc.kill()
        proc.communicate()
        kill_leftover(left)
        raise AssertionError(f"the driver did not exit within {HUNG} s (hung): {args}") from None
    watcher.join()
    return subprocess.CompletedProcess(args, proc.returncode, stdout, stderr), proc.pid, seen


def fill(mnt: Path, free_kb: int) -> None:
    """Leave about ``free_kb`` kB free on the tmpfs."""
    filler = mnt / "filler"
    subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=1k", f"count={SIZE_KB - free_kb}"],
                   capture_output=True)


@pytest.mark.parametrize("executor", ["local", "ray"])
def test_a_disk_that_fills_up_at_any_point_of_a_run_is_exit_3_at_once(mnt: Path, tmp_path: Path,
                                                                        executor: str) -> None:
    """RUNS[executor] runs, each with a free space drawn at random (seeded) so that the disk runs out at another point:
    at the lock, among the first results, near the end, or not at all (exit 0)."""
    toml = tmp_path / "grid.toml"
    toml.write_text(GRID)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    draw = random.Random(21 if executor == "local" else 22)
    codes = []
    for attempt in range(RUNS[executor]):
        free_kb = draw.randint(0, NEEDS_KB)
        fill(mnt, free_kb)
        out = mnt / "r"
        args = [sys.executable, "-m", "grid.cli", "run", "--config", str(toml), "--executor", executor,
                "--out", str(out), "--quiet"]
        done, pid, seen = run_watched(args, env)
        codes.append(done.returncode)
        where = f"run {attempt} ({free_kb} kB free): {done.stderr[-2000:]}"
        assert done.returncode in (0, 3), where
        if done.returncode == 3:
            errors = [line for line in done.stderr.splitlines() if line.startswith("biasgrid: error:")]
            assert errors and str(out) in errors[0] and "No space left" in errors[0], where
            assert "Traceback" not in done.stderr, where
            assert not (out / ".lock.json").exists(), where   # the lock given back, or never half-written
        assert not list(mnt.rglob("*.tmp")), where
        left = wait_gone(sorted(seen), timeout=15)
        kill_leftover(left)
        assert left == [], f"{where}\nprocesses of the run still alive: {left}"
        assert ours(pid) == [], where                         # no shared-memory segment, no temporary folder
        subprocess.run(["rm", "-rf", str(out), str(mnt / "filler")], check=True)
    assert 3 in codes, codes   # the draws make the disk run out in most runs


def test_a_full_disk_at_start_names_the_path_and_leaves_nothing(mnt: Path, tmp_path: Path) -> None:
    """No space at all: ``run`` and ``data embed`` exit 3 naming the file they could not write, and leave no
    lock file, results folder or shards folder."""
    fill(mnt, 0)
    images = diveface(tmp_path / "DiveFace", identities=1)
    for argv, path in ((["run", "--out", str(mnt / "r"), "--executor", "local", "--models", "logreg", "--seeds", "1",
                         "--quiet", "--no-report"], mnt / "r" / ".lock.json"),
                       (["data", "embed", str(images), "--out", str(mnt / "t.parquet"), "--model", "dlib",
                         "--executor", "local", "--workers", "1", "--quiet"], mnt / "t.parquet.shards")):
        done = biasgrid(*argv)   # local executors: in this process (conftest.biasgrid)
        assert done.returncode == 3, done.stderr
        first = done.stderr.splitlines()[0]
        assert first.startswith(f"biasgrid: error: {path}") and "No space left on device" in first, first
        assert [p.name for p in mnt.iterdir()] == ["filler"], done.stderr
