"""Time the whole default grid and the grid machinery's share of it.

    .venv/bin/python bench/bench_grid.py [--executor ray|local] [--workers 2] [--out DIR] [--seeds 5]

Prints: per kind (and model, mitigation) the jobs' mean wall and CPU seconds (measured inside the workers; with
``[grid] mitigations`` in --config the cost of each mitigation per cell and per verification job), wall time (Ray
start-up included), the sum of the jobs' own times (measured inside the workers), the
ratio wall / (sum / workers) (1.0 = perfect packing), the driver's own costs (data + plan, writing results),
and from each worker process's timeline (when each job started and ended): start-up (run start to the
worker's first job: Ray/pool start, data transfer), gaps between its jobs (scheduling, payload and result
transfer, the driver's writing) and idle time at the tail (no job left for it: packing, not machinery).
The executor starts (Ray's node, the pool's workers) while the driver prepares the data, so start-up is also
given counted from when the data was ready: "start-up + machinery" = that + the gaps, as % of job time.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from grid.config import resolve_config
from grid.runner import run_grid


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--executor", default="ray", choices=["ray", "local"])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seeds", default="5")
    ap.add_argument("--config", default=None)
    ap.add_argument("--out", default=None, help="results folder (default: a temporary one, removed after)")
    args = ap.parse_args()
    out = args.out or tempfile.mkdtemp(prefix="bench-grid-")
    if Path(out).exists() and args.out:
        shutil.rmtree(out)
    cfg = resolve_config(args.config, {"run.executor": args.executor, "run.workers": args.workers,
                                       "run.out": out, "grid.seeds": args.seeds, "run.report": False})
    t0, start = time.time(), time.perf_counter()
    summary = run_grid(cfg, progress=True)
    wall = time.perf_counter() - start
    t_end = t0 + wall

    by_kind: dict[str, list[float]] = defaultdict(list)
    cpu_by_kind: dict[str, float] = defaultdict(float)
    timeline: dict[str, list[tuple[float, float]]] = defaultdict(list)
    cpu = 0.0
    for record in (Path(out) / "_jobs").glob("*.json"):
        r = json.loads(record.read_text())
        key = " ".join(str(r[k]) for k in ("kind", "model", "mitigation") if r.get(k))
        by_kind[key].append(r["seconds"])
        cpu_by_kind[key] += r.get("cpu_seconds", 0.0)
        cpu += r.get("cpu_seconds", 0.0)
        timeline[r["worker"]].append((r["started"], r["started"] + r["seconds"]))
    startup = gaps = tail = beyond_prep = 0.0
    ready = t0 + summary.prepare_seconds   # the data, plan and splits are ready: jobs could start from here
    for spans in timeline.values():
        spans.sort()
        startup += spans[0][0] - t0
        beyond_prep += max(0.0, spans[0][0] - ready)
        gaps += sum(max(0.0, b[0] - a[1]) for a, b in zip(spans, spans[1:]))
        tail += t_end - spans[-1][1]
    jobs = summary.job_seconds
    ideal = jobs / args.workers
    print(f"\nexecutor={args.executor} workers={args.workers} jobs={summary.ran} failed={len(summary.failed)}")
    for key, secs in sorted(by_kind.items()):
        print(f"  {key:14s} n={len(secs):3d}  mean {sum(secs) / len(secs):7.2f} s  total {sum(secs):8.1f} s  "
              f"CPU mean {cpu_by_kind[key] / len(secs):7.2f} s")
    print(f"wall time (incl. Ray start-up):   {wall:8.1f} s")
    print(f"sum of job times (in workers):    {jobs:8.1f} s   (job CPU time {cpu:.1f} s)")
    print(f"wall / (sum / workers):           {wall / ideal:8.3f}")
    print(f"driver: data + plan + splits      {summary.prepare_seconds:8.2f} s "
          f"({100 * summary.prepare_seconds / jobs:.2f}% of job time)")
    print(f"driver: writing results           {summary.write_seconds:8.2f} s "
          f"({100 * summary.write_seconds / jobs:.2f}% of job time)")
    print(f"worker processes: {len(timeline)}  (per-process timelines, summed over processes)")
    print(f"  start-up (run start -> first job) {startup:8.1f} s ({100 * startup / jobs:.1f}% of job time)")
    print(f"    of which after the data was ready {beyond_prep:6.1f} s ({100 * beyond_prep / jobs:.2f}% of job time: "
          f"the executor's start-up not hidden behind the preparation)")
    print(f"  gaps between jobs                 {gaps:8.1f} s ({100 * gaps / jobs:.1f}% of job time)")
    print(f"  idle at the tail (nothing left)   {tail:8.1f} s ({100 * tail / jobs:.1f}% of job time)")
    print(f"start-up + machinery (start-up after the data was ready + gaps): {beyond_prep + gaps:.1f} s = "
          f"{100 * (beyond_prep + gaps) / jobs:.2f}% of job time; counting the preparation as start-up too: "
          f"{startup + gaps:.1f} s = {100 * (startup + gaps) / jobs:.2f}%")
    machinery = wall * args.workers - jobs
    print(f"workers x wall - job time           {machinery:8.1f} s "
          f"({100 * machinery / jobs:.1f}% of job time; = start-up + gaps + tail)")
    if not args.out:
        shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
