"""Time the Ray executor's own start and stop, step by step, as `biasgrid run` goes through them.

    .venv/bin/python bench/bench_ray_start.py [--repeat 3] [--workers 2] [--mlp]

Each repetition, in a fresh process: ``LocalRayNode(workers).wait_ready()`` (``ray start --head --block`` until
the node is up), ``ray.init`` to it, one trivial task per worker (the prestarted workers: their start and their
imports, TensorFlow and the MLP warm-up with ``--mlp``), ``ray.shutdown`` and ``LocalRayNode.stop()`` (every
process of the node exited). Prints each step's wall time.
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


def _pid() -> int:
    return os.getpid()


def one(workers: int, mlp: bool) -> dict[str, float]:
    from grid.executors import LocalRayNode

    times: dict[str, float] = {}
    t = time.perf_counter()
    node = LocalRayNode(workers, 1, ("mlp",) if mlp else ())
    node.wait_ready()
    times["node_start_s"] = time.perf_counter() - t
    import ray   # after the node: Ray reads the node's token on import

    t = time.perf_counter()
    ray.init(address=node.address, log_to_driver=False)
    times["connect_s"] = time.perf_counter() - t
    t = time.perf_counter()
    ray.get([ray.remote(_pid).options(num_cpus=1).remote() for _ in range(workers)])
    times["first_tasks_s"] = time.perf_counter() - t
    t = time.perf_counter()
    ray.shutdown()
    node.stop()
    times["shutdown_and_stop_s"] = time.perf_counter() - t
    return {k: round(v, 2) for k, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--mlp", action="store_true", help="workers prepare for mlp cells (TensorFlow, warm-up)")
    ap.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print("RESULT " + json.dumps(one(args.workers, args.mlp)), flush=True)
        return
    print(f"load {os.getloadavg()[0]:.2f}; workers {args.workers}; mlp {args.mlp}", flush=True)
    for _ in range(args.repeat):
        done = subprocess.run([sys.executable, __file__, "--one", "--workers", str(args.workers)]
                              + (["--mlp"] if args.mlp else []), capture_output=True, text=True,
                              env={**os.environ, "PYTHONPATH": str(REPO)}, cwd=REPO)
        line = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")]
        print(line[0][7:] if line else f"failed: {done.stderr[-500:]}", f"load {os.getloadavg()[0]:.2f}",
              flush=True)


if __name__ == "__main__":
    main()
