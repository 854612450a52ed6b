"""Benchmark: write and read a DiveFace-sized embedding table (about 150K x 2048).

    PYTHONPATH=. .venv/bin/python bench/bench_table.py [--identities-per-group 4000] [--keep]

Generates the synthetic data at DiveFace's size (6 groups x 4000 identities, images per identity from DiveFace's
distribution), writes it with write_table, then reads it back with read_table in a fresh process and reports
the time and the peak resident memory of that process above its baseline (after imports), compared with the
size of one copy of the matrix. Timings depend on the machine and on other load: run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_READER = r"""
import json, resource, sys, time
import numpy as np, pyarrow as pa, pandas
from storage.table import read_table
def rss_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
base = rss_mb()
t = time.perf_counter()
table = read_table(sys.argv[1])
seconds = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
t = time.perf_counter()
fp = table.fingerprint()
fp_seconds = time.perf_counter() - t
print(json.dumps({"seconds": seconds, "baseline_mb": base, "peak_mb": peak, "rows": len(table), "dim": table.dim,
                  "matrix_mb": table.embeddings.nbytes / 2**20, "arrow_pool_max_mb": pa.total_allocated_bytes() / 2**20,
                  "fingerprint_seconds": fp_seconds}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--identities-per-group", type=int, default=4000)
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--keep", action="store_true", help="keep the Parquet file (printed)")
    args = parser.parse_args()

    from storage.synth import SynthParams, generate
    from storage.table import write_table

    t = time.perf_counter()
    table = generate(SynthParams(identities_per_group=args.identities_per_group, dim=args.dim))
    gen_s = time.perf_counter() - t
    folder = Path(tempfile.mkdtemp(prefix="bench_table_"))
    path = folder / "diveface_size.parquet"
    t = time.perf_counter()
    write_table(table, path)
    write_s = time.perf_counter() - t
    n, d = table.embeddings.shape
    del table

    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    runs = []
    for _ in range(2):  # the first read may pay for a cold page cache
        out = subprocess.run([sys.executable, "-c", _READER, str(path)], env=env, capture_output=True, text=True,
                             check=True)
        runs.append(json.loads(out.stdout))
    r = runs[-1]
    print(f"table: {n} rows x {d} dim, matrix {r['matrix_mb']:.0f} MiB, file {path.stat().st_size / 2**20:.0f} MiB")
    print(f"generate (synthetic, DiveFace size): {gen_s:.1f} s")
    print(f"write_table: {write_s:.1f} s")
    for i, run in enumerate(runs, 1):
        extra = run["peak_mb"] - run["baseline_mb"]
        print(f"read_table run {i}: {run['seconds']:.2f} s; peak RSS {run['peak_mb']:.0f} MiB = baseline "
              f"{run['baseline_mb']:.0f} + {extra:.0f} MiB ({extra / run['matrix_mb']:.2f} x the matrix)")
    print(f"fingerprint: {r['fingerprint_seconds']:.2f} s")
    if args.keep:
        print(f"kept {path}")
    else:
        path.unlink()
        folder.rmdir()


if __name__ == "__main__":
    main()
