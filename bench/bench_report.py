"""The report over every pair at DiveFace size: the run's stages, then `biasgrid report` alone (time, peak memory).

Run from the repository root:

    PYTHONPATH=. .venv/bin/python bench/bench_report.py [--identities-per-group 4000] [--dim 512]
        [--resamples 1000] [--shards 8] [--bootstrap-jobs 8] [--workers 2] [--executor local|ray]
        [--protocol 500,250] [--out DIR] [--keep] [--check]

The grid: the built-in synthetic data at ``--identities-per-group`` (6 groups, DiveFace's images per identity:
141,866 rows for 4000) and ``--dim``, one seed, logreg cells, no t-SNE, the study's protocol (``--protocol``:
training and test identities per gender), ``[verification] identities = "all"`` with ``--resamples`` resamples
(``--shards`` allpairs jobs, then ``--bootstrap-jobs`` allpairs_bootstrap jobs). ``biasgrid run`` (no report)
runs first, unless ``--out`` already holds the done run; then ``biasgrid report`` runs in a fresh process,
alone, measured: wall time and peak resident memory (VmHWM of that process, read when it ends). Prints JSON
lines: the run (wall, the peak of its largest process, driver or worker, job seconds per kind from the ledger),
the stored tables' rows and bytes, the report (seconds, peak MiB), and with ``--check`` the largest difference
between the report's intervals and ``tasks.stats.allpairs_rates.tail_bootstrap`` computed here, in one process,
from the same stored tails and seed (it should be 0).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CONFIG = """
[data.synth]
identities_per_group = {ipg}
dim = {dim}
[grid]
seeds = [0]
models = ["logreg"]
[protocol]
train_per_gender = {train}
test_per_gender = {test}
[verification]
identities = "all"
bootstrap = {resamples}
allpairs_shards = {shards}
tail_bootstrap_jobs = {blocks}
[tsne]
enabled = false
[run]
executor = "{executor}"
workers = {workers}
report = false
"""

MEASURE = """
import json, sys, time
t = time.perf_counter()
from grid.report import load_results, write_report
res = load_results(sys.argv[1])
write_report(res, sys.argv[2]) if sys.argv[2] else write_report(res)
peak = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:"))
print(json.dumps({"report_s": round(time.perf_counter() - t, 2), "report_peak_mib": round(peak / 1024, 1)}))
"""


def child_peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def stored(out: Path) -> dict:
    """Rows (from the Parquet footers) and bytes of each table of the results folder."""
    import pyarrow.parquet as pq

    tables: dict[str, dict[str, int]] = defaultdict(lambda: {"rows": 0, "bytes": 0})
    for path in out.glob("*/*=*/*.parquet"):
        t = tables[path.parts[-3]]
        t["rows"] += pq.ParquetFile(path).metadata.num_rows
        t["bytes"] += path.stat().st_size
    return dict(sorted(tables.items()))


def job_seconds(out: Path) -> dict:
    per: dict[str, list[float]] = defaultdict(list)
    for record in (out / "_jobs").glob("*.json"):
        r = json.loads(record.read_text())
        per[r["kind"]].append(r.get("seconds", 0.0))
    return {k: {"jobs": len(v), "sum_s": round(sum(v), 1), "max_s": round(max(v), 1)} for k, v in sorted(per.items())}


def check(out: Path, report: Path) -> float:
    """The largest |difference| between the report's allpairs_intervals.csv and tail_bootstrap in this process."""
    import numpy as np
    import pandas as pd

    from grid.report import load_results
    from storage.results import ResultStore
    from tasks.kinds import allpairs_bootstrap as kind
    from tasks.stats import bootstrap

    res = load_results(out)
    store = ResultStore(out)
    done = {j for j, r in res.ledger.items() if r.get("status") == "done"}
    data = kind.inputs(res.config, lambda table, columns: store.scan(table, columns, jobs=done))
    v = res.config["verification"]
    st = kind.tail_statistics(data, float(v["target_fmr"]))
    want = bootstrap.run(st, data["tail_identity_group"], int(v["bootstrap"]), int(res.seeds[0]), 0.95)
    got = pd.read_csv(report / "allpairs_intervals.csv")
    worst = 0.0
    for col in ("estimate", "ci_low", "ci_high"):
        a, b = got[col].to_numpy(float), want[col].to_numpy(float)
        if not np.array_equal(np.isnan(a), np.isnan(b)):
            return float("inf")
        worst = max(worst, float(np.nanmax(np.abs(a - b), initial=0.0)))
    return worst


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--identities-per-group", type=int, default=4000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--resamples", type=int, default=1000)
    ap.add_argument("--shards", type=int, default=8)
    ap.add_argument("--bootstrap-jobs", type=int, default=8)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--executor", default="local", choices=["local", "ray"])
    ap.add_argument("--protocol", default="500,250", help="train_per_gender,test_per_gender")
    ap.add_argument("--out", default=None, help="results folder (default: a temporary one, removed after)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary results folder")
    ap.add_argument("--check", action="store_true", help="compare the intervals with one process's (slow)")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-report-"))
    out = Path(args.out) if args.out else tmp / "results"
    try:
        config = tmp / "grid.toml"
        config.write_text(CONFIG.format(ipg=args.identities_per_group, dim=args.dim, resamples=args.resamples,
                                        shards=args.shards, blocks=args.bootstrap_jobs, executor=args.executor,
                                        workers=args.workers, train=args.protocol.split(",")[0],
                                        test=args.protocol.split(",")[1]))
        biasgrid = [sys.executable, "-m", "grid.cli"]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
        if not (out / "run.json").exists():
            t = time.perf_counter()
            done = subprocess.run([*biasgrid, "run", "--config", str(config), "--out", str(out), "--quiet"],
                                  env=env, capture_output=True, text=True)
            if done.returncode != 0:
                sys.exit(f"biasgrid run failed ({done.returncode}):\n{done.stderr[-3000:]}")
            print(json.dumps({"run_s": round(time.perf_counter() - t, 1), "run_largest_process_peak_mib":
                              round(child_peak_mib(), 1), "jobs": job_seconds(out)}), flush=True)
        print(json.dumps({"tables": stored(out)}), flush=True)
        report = tmp / "report"
        done = subprocess.run([sys.executable, "-c", MEASURE, str(out), str(report)], env=env, capture_output=True,
                              text=True)
        if done.returncode != 0:
            sys.exit(f"the report failed ({done.returncode}):\n{done.stderr[-3000:]}")
        print(done.stdout.strip().splitlines()[-1], flush=True)
        if args.check:
            print(json.dumps({"max_abs_difference_vs_one_process": check(out, report)}), flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
