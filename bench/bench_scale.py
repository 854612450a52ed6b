"""How the driver, the all-pairs jobs and the tail tables grow with the data: measured at given sizes, projected.

Run from the repository root:

    PYTHONPATH=. .venv/bin/python bench/bench_scale.py [--points 4000x512,4000x2048,8000x512,8000x2048]
        [--blocks 40] [--resamples 5] [--project 1300000] [--cores 64]

Each point ``NxD`` is the built-in generator's table at N identities per group (6 groups, DiveFace's images per
identity: 141,866 rows at N = 4000, ~284,000 at 8000) and D dimensions, written once as Parquet (and as a .npy
for the all-pairs worker to memory-map, as the local pool's workers map the shared matrix). Then, each in a fresh
process (peak = VmHWM of /proc/self/status, after each stage; RSS includes the shared-memory pages it touches):

- **driver**: what ``biasgrid run`` does before its first job, with ``[verification] identities = "all"`` on the
  default grid: read the table (``grid.runner.load_data``), its fingerprint, the plan and the splits of every seed
  (``grid.runner.prepare``: the kinds' checks included), then the shared arrays into the object store of a Ray
  node of its own (``RayExecutor.connect`` + ``ray.put``, as ``RayExecutor.run`` does);
- **allpairs**: one allpairs job as the grid runs it (``tasks.runtime.run_job`` on the plan's payload, the default
  tail rule of ``bootstrap`` > 0) on shard 0 of S, S chosen so that the shard holds ``--blocks`` of the 2048 x 2048
  block tasks, evenly spread over the score matrix: wall and CPU seconds per 10^9 comparisons, the worker's peak
  RSS; its tables written by ``storage.results.ResultStore`` (the stored bytes per tail row), read back with
  pandas (bytes per row in memory), summed (``tail_from_rows``) and resampled (``TailStatistics.evaluate``, the
  report's bootstrap today, ``--resamples`` times): seconds per resample per million rows of the shard's tail
  (a small tail's fixed cost per resample inflates it: not projected). The tail grows with the comparisons above
  its lower score, so its rows are extrapolated from the shard's share of the pairs.

Then, per dimension, the growth from the smallest to the largest N (exponent = log(ratio of values) / log(ratio
of rows)) projects each quantity to ``--project`` rows, and the all-pairs time to ``--cores`` cores.
``--smoke`` runs tiny points (tests/test_bench.py). Keep an eye on ``free -g``: the 8000x2048 point peaks at
~6 GiB in the driver process.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_COMMON = r"""
import json, os, resource, sys, time
def status(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
def peak():
    return status("VmHWM")
"""

_GENERATE = _COMMON + r"""
import numpy as np
from storage.synth import SynthParams, generate
from storage.table import write_table
n_id, dim, path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
t = time.perf_counter()
table = generate(SynthParams(identities_per_group=n_id, dim=dim))
gen_s = time.perf_counter() - t
write_table(table, path)
np.save(path + ".X.npy", table.embeddings)
from grid.runner import shared_arrays
arrays = shared_arrays(table)   # the default axes' labels, as the jobs read them
np.savez(path + ".labels.npz", identity_codes=arrays["identity_codes"], demographic=arrays["demographic"],
         demographic_names=np.asarray(arrays["demographic_names"], dtype=str))
print(json.dumps({"rows": len(table), "dim": table.dim, "generate_s": gen_s, "peak_mb": peak(),
                  "file_mb": os.path.getsize(path) / 2**20}))
"""

_DRIVER = _COMMON + r"""
import numpy as np
from grid.config import resolve_config
from grid.executors import RayExecutor
from grid.runner import load_data, prepare, shared_arrays
out = {}
def stage(name, f):
    t = time.perf_counter()
    value = f()
    out[name] = {"seconds": round(time.perf_counter() - t, 3), "peak_mb": round(peak(), 1),
                 "rss_mb": round(status("VmRSS"), 1)}
    return value
base = peak()
cfg = resolve_config(None, {"data.path": sys.argv[1], "run.out": sys.argv[2], "verification.identities": "all",
                            "run.workers": 1, **json.loads(sys.argv[3])})
table = stage("read", lambda: load_data(cfg["data"]))
cfg["grid"]["test_groups"] = list(table.present_ethnicities())
cfg["grid"]["train_groups"] = [*table.present_ethnicities(), "all"]
fingerprint = stage("fingerprint", table.fingerprint)
plan = stage("plan_and_splits", lambda: prepare(cfg, table, fingerprint))
executor = RayExecutor(workers=1)
executor.start()
try:
    ray = executor.connect()
    ref = stage("object_store", lambda: ray.put(dict(shared_arrays(table))))
    del ref
finally:
    executor.close()
out.update(baseline_mb=round(base, 1), jobs=len(plan.jobs), matrix_mb=round(table.embeddings.nbytes / 2**20, 1))
print(json.dumps(out))
"""

_ALLPAIRS = _COMMON + r"""
import numpy as np, pandas as pd
from pathlib import Path
from grid.config import resolve_config
from grid.plan import make_plan
from storage.results import ResultStore
from tasks.runtime import run_job
from tasks.stats import allpairs, allpairs_rates
path, out_dir, blocks, resamples = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
X = np.load(path + ".X.npy", mmap_mode="r")
labels = dict(np.load(path + ".labels.npz"))
labels["demographic_names"] = labels["demographic_names"].astype(object)
n = len(X)
tasks = allpairs.block_tasks(n)
shards = max(1, len(tasks) // blocks)
cfg = resolve_config(None, {"verification.identities": "all", "verification.allpairs_shards": shards})
job = next(j for j in make_plan(cfg, "bench") if j.kind == "allpairs" and j.params["shard"] == 0)
payload = {**job.payload(None), "resources": {"CPU": 1}}
mine = tasks[0::shards]
comparisons = sum((i1 - i0) * (i1 - i0 - 1) // 2 if i0 == j0 else (i1 - i0) * (j1 - j0) for i0, i1, j0, j1 in mine)
base = peak()
t, cpu = time.perf_counter(), time.process_time()
outcome = run_job(payload, {"X": X, **labels})
wall, cpu = time.perf_counter() - t, time.process_time() - cpu
assert outcome.error is None, outcome.error
tail = outcome.tables["allpairs_tail"]
result = {"shards": shards, "blocks": len(mine), "comparisons": comparisons,
          "share_of_pairs": comparisons / (n * (n - 1) / 2), "wall_s": wall, "cpu_s": cpu,
          "s_per_1e9": wall / comparisons * 1e9, "cpu_s_per_1e9": cpu / comparisons * 1e9,
          "worker_peak_mb": peak(), "worker_baseline_mb": base, "tail_rows": len(tail),
          "tail_impostor_rows": int((tail["kind"] == "impostor").sum()),
          "counts_rows": len(outcome.tables["allpairs_counts"])}
store = ResultStore(out_dir)
store.write_job(outcome.job_id, outcome.tables, {"kind": "allpairs"})
files = {name: sum(p.stat().st_size for p in Path(out_dir, name).rglob("*.parquet")) for name in outcome.tables}
result["tail_parquet_bytes_per_row"] = files["allpairs_tail"] / max(len(tail), 1)
read = pd.read_parquet(Path(out_dir, "allpairs_tail"))
result["tail_pandas_bytes_per_row"] = int(read.memory_usage(deep=True).sum()) / max(len(read), 1)
t = time.perf_counter()
summed, group, images, names, _ = allpairs_rates.tail_from_rows(read, outcome.tables["allpairs_identities"])
stats = allpairs_rates.TailStatistics(summed, group, images, names)
result["tail_setup_s_per_1e6_rows"] = (time.perf_counter() - t) / max(len(tail), 1) * 1e6
rng = np.random.default_rng(0)
times = []
for _ in range(resamples):
    m = rng.multinomial(len(images), np.full(len(images), 1 / len(images)))
    t = time.perf_counter()
    stats.evaluate(m)
    times.append(time.perf_counter() - t)
result["resample_s_per_1e6_rows"] = float(np.median(times)) / max(len(tail), 1) * 1e6
print(json.dumps(result))
"""


def run(script: str, *args: object) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
           "TF_CPP_MIN_LOG_LEVEL": "3", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", script, *map(str, args)], env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"a bench stage failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(n_id: int, dim: int, blocks: int, resamples: int, folder: Path, protocol: dict) -> dict:
    path = folder / f"table_{n_id}x{dim}.parquet"
    gen = run(_GENERATE, n_id, dim, path)
    try:
        driver = run(_DRIVER, path, folder / f"results_{n_id}x{dim}", json.dumps(protocol))
        pairs = run(_ALLPAIRS, path, folder / f"allpairs_{n_id}x{dim}", blocks, resamples)
    finally:
        for p in folder.glob(path.name + "*"):
            p.unlink()
    n = gen["rows"]
    pairs["tail_rows_all_pairs"] = pairs["tail_rows"] / pairs["share_of_pairs"]
    return {"point": f"{n_id}x{dim}", "rows": n, "dim": dim, "pairs": n * (n - 1) // 2, "generate": gen,
            "driver": driver, "allpairs": pairs}


def growth(small: dict, large: dict, value) -> tuple[float, float]:
    """(exponent of the growth with the rows, projected value function's base) from two points."""
    a, b = value(small), value(large)
    exponent = math.log(b / a) / math.log(large["rows"] / small["rows"]) if a > 0 and b > 0 else 1.0
    return exponent, a


QUANTITIES = {   # name: (value of a point, unit)
    "driver peak above its baseline (read, fingerprint, splits, object store)":
        (lambda p: (p["driver"]["object_store"]["peak_mb"] - p["driver"]["baseline_mb"]) / 1024, "GiB"),
    "driver peak above its baseline after read + fingerprint + splits":
        (lambda p: (p["driver"]["plan_and_splits"]["peak_mb"] - p["driver"]["baseline_mb"]) / 1024, "GiB"),
    "driver: read": (lambda p: p["driver"]["read"]["seconds"], "s"),
    "driver: plan and splits": (lambda p: p["driver"]["plan_and_splits"]["seconds"], "s"),
    "driver: object store put": (lambda p: p["driver"]["object_store"]["seconds"], "s"),
    "allpairs: CPU s per 1e9 comparisons": (lambda p: p["allpairs"]["cpu_s_per_1e9"], "s"),
    "allpairs: worker peak above its baseline": (lambda p: (p["allpairs"]["worker_peak_mb"]
                                                            - p["allpairs"]["worker_baseline_mb"]) / 1024, "GiB"),
    "tail rows (all pairs)": (lambda p: p["allpairs"]["tail_rows_all_pairs"], "rows"),
    "tail table, Parquet": (lambda p: p["allpairs"]["tail_rows_all_pairs"]
                            * p["allpairs"]["tail_parquet_bytes_per_row"] / 2**30, "GiB"),
    "tail table, in pandas": (lambda p: p["allpairs"]["tail_rows_all_pairs"]
                              * p["allpairs"]["tail_pandas_bytes_per_row"] / 2**30, "GiB"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", default="4000x512,4000x2048,8000x512,8000x2048")
    parser.add_argument("--blocks", type=int, default=40, help="block tasks in the measured allpairs shard")
    parser.add_argument("--resamples", type=int, default=5)
    parser.add_argument("--project", type=int, default=1_300_000, help="rows to project to")
    parser.add_argument("--cores", type=int, default=64, help="cores the projected all-pairs jobs share")
    parser.add_argument("--smoke", action="store_true", help="tiny points (tests)")
    args = parser.parse_args()
    protocol = {}
    if args.smoke:
        args.points, args.blocks = "30x16,60x16", 1
        protocol = {"protocol.train_per_gender": 10, "protocol.test_per_gender": 8, "tsne.perplexity": 5.0}
    points = [tuple(int(v) for v in p.split("x")) for p in args.points.split(",")]
    results = []
    with tempfile.TemporaryDirectory(prefix="bench_scale_") as tmp:
        for n_id, dim in points:
            r = measure(n_id, dim, args.blocks, args.resamples, Path(tmp), protocol)
            results.append(r)
            print(json.dumps(r), flush=True)
    for dim in sorted({r["dim"] for r in results}):
        mine = sorted((r for r in results if r["dim"] == dim), key=lambda r: r["rows"])
        if len(mine) < 2:
            continue
        small, large = mine[0], mine[-1]
        print(f"d = {dim}: {small['rows']:,} -> {large['rows']:,} rows, projected to {args.project:,}:")
        for name, (value, unit) in QUANTITIES.items():
            exponent, base = growth(small, large, value)
            projected = base * (args.project / small["rows"]) ** exponent
            print(f"  {name}: {value(small):.4g} -> {value(large):.4g} {unit} (growth n^{exponent:.2f}); "
                  f"at {args.project:,}: {projected:.4g} {unit}")
        per_1e9 = large["allpairs"]["cpu_s_per_1e9"]
        comparisons = args.project * (args.project - 1) / 2
        print(f"  allpairs at {args.project:,}: {comparisons:.3g} comparisons x {per_1e9:.3g} CPU s per 1e9 / "
              f"{args.cores} cores = {comparisons / 1e9 * per_1e9 / args.cores / 3600:.3g} h")


if __name__ == "__main__":
    main()
