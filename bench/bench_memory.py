"""What freshly touched memory costs on this machine, and what a worker gains by keeping the memory it frees.

    .venv/bin/python bench/bench_memory.py [--repeat 2] [--kinds scores,impostor] [--config GRID.toml]
                                           [--mib 512] [--waits 0,1,3,10,30]

1. First touch: a 512 MiB array (``--mib``) written in a fresh process, then again after it was freed and 0, 1,
   3, 10 and 30 s (``--waits``) passed; with numpy's transparent huge pages (its default) and without
   (``NUMPY_MADVISE_HUGEPAGE=0``, what ``biasgrid`` sets for its processes). On a VM with free page reporting
   (virtio-balloon) the host takes freed huge pages back within seconds, and a huge-page fault costs ~10x the
   4 KiB pages it holds.
2. The default grid's verification jobs (``--kinds``), run one after the other in one process as a worker runs
   them (``tasks.runtime.run_job``, one thread), in a fresh process each time: plain glibc malloc, then with
   ``tasks.runtime.keep_freed_memory()`` as ``prepare_worker`` applies it (both with huge pages), then plain
   malloc without huge pages; ``--repeat`` times. The default grid on the built-in data, or ``--config``'s.
   Prints each process's wall and CPU time and its peak resident memory (VmHWM).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

TOUCH = """
import json, sys, time
import numpy as np
out = []
for wait in [None, *json.loads(sys.argv[2])]:
    if wait:
        time.sleep(wait)
    start = time.perf_counter()
    block = np.ones(int(sys.argv[1]) << 17)   # MiB of float64, every page written
    out.append([wait, time.perf_counter() - start])
    del block
print(json.dumps(out))
"""

JOBS = """
import json, sys, time
from tasks.runtime import keep_freed_memory, limit_threads, run_job
if sys.argv[2] == "kept":
    keep_freed_memory()
limit_threads(1)
from grid.config import resolve_config
from grid.runner import load_checked_data, prepare, shared_arrays
cfg, table, fingerprint = load_checked_data(resolve_config(sys.argv[4] or None, {"run.out": sys.argv[3]}))
plan = prepare(cfg, table, fingerprint)
data = shared_arrays(table, plan.axes)
jobs = [j for j in plan.jobs if j.kind in sys.argv[1].split(",")]
wall, cpu = time.perf_counter(), time.process_time()
for job in jobs:
    outcome = run_job(job.payload(plan.splits[job.seed]), data)
    assert outcome.error is None, outcome.error
peak = [line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM")][0]
print(json.dumps({"jobs": len(jobs), "wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu,
                  "peak_mib": int(peak) / 1024}))
"""


PAGES = {True: "huge pages", False: "4 KiB pages"}   # numpy's transparent huge pages on / off


def child(code: str, *args: str, huge_pages: bool) -> dict | list:
    """Run ``code`` in a fresh process, numpy's transparent huge pages on (its default) or off."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3",
           "NUMPY_MADVISE_HUGEPAGE": "1" if huge_pages else "0"}
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=REPO, env=env,
                          check=False)
    if done.returncode:
        raise SystemExit(done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--kinds", default="scores,impostor")
    p.add_argument("--config", default="", help="grid config (default: the default grid, built-in data)")
    p.add_argument("--mib", type=int, default=512)
    p.add_argument("--waits", default="0,1,3,10,30", help="seconds after the free, comma list")
    args = p.parse_args()
    print(f"bench_memory, {time.strftime('%Y-%m-%d %H:%M:%S')}, load average {os.getloadavg()[0]:.2f}")
    waits = [float(w) for w in args.waits.split(",") if w]
    for huge, pages in PAGES.items():
        for wait, seconds in child(TOUCH, str(args.mib), json.dumps(waits), huge_pages=huge):
            what = "first touch" if wait is None else f"again, {wait:>4g} s after the free"
            print(f"  {args.mib} MiB written, {pages:<11}, {what:<26} {seconds:6.3f} s "
                  f"({seconds / args.mib * 1024:.2f} s per GiB)")
    out = "/tmp/bench-memory-unused"   # the config needs a results folder; nothing is written to it
    for _ in range(args.repeat):
        for mode, huge in (("plain", True), ("kept", True), ("plain", False)):
            x = child(JOBS, args.kinds, mode, out, args.config, huge_pages=huge)
            print(f"  {args.kinds} jobs ({x['jobs']}), malloc {mode:<5}, {PAGES[huge]:<11}: wall {x['wall']:6.1f} s, "
                  f"cpu {x['cpu']:6.1f} s, peak {x['peak_mib']:6.0f} MiB")
    print(f"load average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
