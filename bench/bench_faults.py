"""Fault injection: kill the driver of a small grid at random moments, run it again, and count the damage.

    .venv/bin/python bench/bench_faults.py [--kills 20] [--seed 0] [--executors local,ray] [--max-delay 25]
                                           [--seeds 2] [--models logreg,mlp]

Each round starts `biasgrid run` on a fresh results folder, kills the driver (SIGKILL or SIGTERM, alternating)
after a random delay, waits 5 s, counts the run's processes still alive, ends them (so rounds do not pile up),
then runs the same command to completion and counts rows lost (expected minus stored), rows duplicated (on the
table's keys, read with pandas as a user would), and temporary files left (.tmp in the folder, biasgrid-*
temporary folders and shared-memory segments). Every count should be 0. Figures: docs/RELIABILITY.md.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from conftest import alive, descendants  # noqa: E402  (the tests' /proc helpers)

GRID = """
[data.synth]
identities_per_group = 30
dim = 32
[grid]
seeds = {seeds}
models = {models}
[protocol]
train_per_gender = 10
test_per_gender = 8
{mlp}[verification]
max_impostor_pairs = 20000
[tsne]
perplexity = 5.0
pca_dims = 10
subsets = ["all"]
[run]
workers = 2
report = false
"""
KEYS = {"accuracy": ["model", "train_group", "test_group", "seed"], "verification": ["test_group", "seed"],
        "impostor_matrix": ["seed", "group_a", "group_b"], "tsne": ["seed", "subset", "identity"]}


def expected_rows(seeds: int, models: list[str]) -> dict[str, int]:
    """Rows a complete run of GRID stores: 4 train groups x 3 test groups per model, 3 test groups, 6 x 6 pairs."""
    return {"accuracy": len(models) * 4 * 3 * seeds, "verification": 3 * seeds, "impostor_matrix": 36 * seeds}


def leftovers(out: Path, pids: list[int]) -> list[str]:
    """Temporary files the round's drivers (``pids``) may leave: .tmp in the results folder, and their
    biasgrid-<pid>-* temporary folders and shared-memory segments (other programs' are not counted)."""
    found = [str(p) for p in out.rglob("*.tmp")]
    for folder in (Path(tempfile.gettempdir()), Path("/dev/shm")):
        if folder.is_dir():
            found += [str(p) for pid in pids for p in folder.glob(f"biasgrid-{pid}-*")]
    return found


def one_round(k: int, executor: str, delay: float, sig: int, work: Path, expected: dict[str, int]) -> dict:
    out = work / f"r{k}"
    cfg = work / "grid.toml"
    command = [sys.executable, "-m", "grid.cli", "run", "--config", str(cfg), "--executor", executor,
               "--out", str(out), "--quiet"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    seen: set[int] = set()
    deadline = time.time() + delay
    while time.time() < deadline and proc.poll() is None:
        seen |= set(descendants(proc.pid))
        time.sleep(0.05)
    finished_first = proc.poll() is not None
    if not finished_first:
        seen |= set(descendants(proc.pid))
        os.kill(proc.pid, sig)
    proc.wait()
    time.sleep(5.0)
    left = [p for p in seen if alive(p)]
    for p in left:               # end them, so that later rounds are not disturbed (counted above)
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass
    rerun = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rerun.wait(timeout=900)
    lost = duplicated = 0
    for table, keys in KEYS.items():
        frame = pd.read_parquet(out / table) if (out / table).exists() else pd.DataFrame(columns=keys)
        duplicated += int(frame.duplicated(keys).sum())
        if table in expected:
            lost += max(0, expected[table] - len(frame.drop_duplicates(keys)))
    return {"round": k, "executor": executor, "signal": signal.Signals(sig).name, "delay_s": round(delay, 2),
            "killed": not finished_first, "rerun_exit": rerun.returncode, "rows_lost": lost,
            "rows_duplicated": duplicated, "processes_left": len(left),
            "temp_files_left": len(leftovers(out, [proc.pid, rerun.pid]))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--executors", default="local,ray")
    parser.add_argument("--max-delay", type=float, default=25.0, help="latest kill, seconds after the start")
    parser.add_argument("--seeds", type=int, default=2, help="seeds of the small grid")
    parser.add_argument("--models", default="logreg,mlp", help="models of the small grid")
    args = parser.parse_args()
    models = args.models.split(",")
    rng = random.Random(args.seed)
    executors = args.executors.split(",")
    start = time.time()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bgfault-") as tmp:
        work = Path(tmp)
        mlp = "[model.mlp]\nepochs = 5\nbatch_size = 8\n" if "mlp" in models else ""   # only a model in the grid
        (work / "grid.toml").write_text(GRID.format(seeds=args.seeds, models=json.dumps(models), mlp=mlp))
        os.environ.setdefault("RAY_TMPDIR", str(work))
        for k in range(args.kills):
            sig = signal.SIGKILL if k % 2 == 0 else signal.SIGTERM
            row = one_round(k, executors[(k // 2) % len(executors)], rng.uniform(1.0, args.max_delay), sig, work,
                            expected_rows(args.seeds, models))
            rows.append(row)
            print(row, flush=True)
    table = pd.DataFrame(rows)
    print()
    print(table.to_string(index=False))
    totals = table[["rows_lost", "rows_duplicated", "processes_left", "temp_files_left"]].sum()
    print(f"\n{len(table)} kills ({int(table['killed'].sum())} before the run ended), reruns exiting 0: "
          f"{int((table['rerun_exit'] == 0).sum())}; totals: {totals.to_dict()}; total time {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
