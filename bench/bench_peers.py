"""The same job payloads through biasgrid's executors and its peers: wall time of each, and the ratio to joblib.

    .venv/bin/python bench/bench_peers.py [--seeds 3] [--workers 2] [--models xgboost,logreg] [--repeat 1]
                                          [--peers local,ray,joblib,tune] [--config FILE] [--no-hidden]

Payloads: the default grid's cells for ``--models`` (4 train groups x seeds; 24 for 2 models x 3 seeds, no scores,
impostor or t-SNE jobs), built by ``grid.plan.Job.payload`` on the built-in data (or the data and protocol of
``--config``), run by the project's own job function (``tasks.runtime.run_job``), ``--workers`` at a time, one
thread per job. Each peer runs in a fresh Python process (no warm pool or Ray from an earlier peer), which prepares
the data untimed, then times from the start of its machinery (pool or Ray) to the last result in hand, start-up
included (the shutdown after it is printed apart):

- ``local``, ``ray``: biasgrid's :class:`grid.executors.LocalExecutor` / :class:`~grid.executors.RayExecutor`
  (``start()``, ``run()``, ``close()``); results arrive one by one as jobs finish (biasgrid writes each then).
  Also printed: "after prep", the wall time counted from when the data is ready when ``start()`` is called
  before the data is prepared, as ``biasgrid run`` does (the start-up then overlaps the preparation; not run
  with ``--no-hidden``).
- ``joblib``: ``joblib.Parallel(n_jobs=workers, backend="loky")`` over ``run_job(payload, data)`` (large arrays
  memory-mapped by joblib); results come back as one list at the end.
- ``tune``: Ray Tune, ``Tuner`` with a ``grid_search`` over the payload index, 1 CPU per trial, the data and
  payloads through ``tune.with_parameters``; results come back at the end (``ResultGrid``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
PEERS = ("local", "ray", "joblib", "tune")


def _payloads(seeds: str, models: list[str], config: str | None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    from grid.config import resolve_config
    from grid.runner import load_checked_data, prepare, shared_arrays

    cfg = resolve_config(config, {"grid.seeds": seeds, "grid.models": models, "verification.enabled": False,
                                "tsne.enabled": False, "run.report": False})
    cfg, table, fingerprint = load_checked_data(cfg)
    plan = prepare(cfg, table, fingerprint)
    return [j.payload(plan.splits[j.seed]) for j in plan.jobs], shared_arrays(table)


def _job(payload: dict[str, Any], data: dict[str, Any]) -> Any:
    from tasks.runtime import run_job

    return run_job(payload, data)


def _tune_trial(config: dict[str, Any], payloads: list[dict[str, Any]], data: dict[str, Any]) -> None:
    from ray import tune

    outcome = _job(payloads[config["i"]], data)
    tune.report({"ok": outcome.error is None, "seconds": outcome.seconds})


def run_one(peer: str, seeds: str, workers: int, models: list[str], hidden: bool,
            config: str | None = None) -> dict[str, Any]:
    """Time one peer in this process; ``hidden``: biasgrid's ``start()`` before the data is prepared."""
    executor = None
    if hidden and peer in ("local", "ray"):
        from grid.executors import LocalExecutor, RayExecutor

        executor = (LocalExecutor(workers, 1, models) if peer == "local" else RayExecutor(workers=workers,
                                                                                           ship=models))
        executor.start()
    payloads, data = _payloads(seeds, models, config)
    start = time.perf_counter()
    seconds: list[float] = []
    last = start
    if peer in ("local", "ray"):
        from grid.executors import LocalExecutor, RayExecutor

        if executor is None:
            executor = (LocalExecutor(workers, 1, models) if peer == "local" else RayExecutor(workers=workers,
                                                                                               ship=models))
            executor.start()
        try:
            seconds = [o.seconds for o in executor.run(payloads, data) if o.error is None]
            last = time.perf_counter()
        finally:
            executor.close()
    elif peer == "joblib":
        from joblib import Parallel, delayed

        outcomes = Parallel(n_jobs=workers, backend="loky")(delayed(_job)(p, data) for p in payloads)
        seconds = [o.seconds for o in outcomes if o.error is None]
        last = time.perf_counter()   # loky keeps its workers for reuse: no shutdown to time
    elif peer == "tune":
        import ray
        from ray import tune

        ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False, address="local")
        try:
            trainable = tune.with_resources(tune.with_parameters(_tune_trial, payloads=payloads, data=data),
                                            {"cpu": 1})
            with tempfile.TemporaryDirectory(prefix="bench-tune-") as storage:
                results = tune.Tuner(trainable, param_space={"i": tune.grid_search(list(range(len(payloads))))},
                                     run_config=tune.RunConfig(storage_path=storage, verbose=0)).fit()
                seconds = [r.metrics["seconds"] for r in results if r.metrics and r.metrics.get("ok")]
                last = time.perf_counter()
        finally:
            ray.shutdown()
    closed = time.perf_counter()
    return {"peer": peer, "wall": last - start, "close": closed - last, "jobs": len(payloads), "ok": len(seconds),
            "job_seconds": sum(seconds), "hidden": hidden}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", default="3")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--models", default="xgboost,logreg")
    ap.add_argument("--peers", default=",".join(PEERS))
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--config", default=None, help="a grid config whose data and protocol to use (default: built-in)")
    ap.add_argument("--no-hidden", action="store_true", help="skip the local and ray runs started before the prep")
    ap.add_argument("--one", help=argparse.SUPPRESS)          # internal: time this peer in this process
    ap.add_argument("--hidden", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    models = args.models.split(",")
    if args.one:
        print("RESULT " + json.dumps(run_one(args.one, args.seeds, args.workers, models, args.hidden, args.config)),
              flush=True)
        return
    runs = [(p, False) for p in args.peers.split(",")] + [(p, True) for p in args.peers.split(",")
                                                           if p in ("local", "ray") and not args.no_hidden]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
           "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONWARNINGS": "ignore"}
    found: dict[tuple[str, bool], list[dict[str, Any]]] = {}
    for rep in range(args.repeat):
        for peer, hidden in runs:
            command = [sys.executable, __file__, "--one", peer, "--seeds", args.seeds, "--workers",
                       str(args.workers), "--models", args.models, *(["--hidden"] if hidden else []),
                       *(["--config", args.config] if args.config else [])]
            done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1800)
            line = next((x for x in done.stdout.splitlines() if x.startswith("RESULT ")), None)
            if line is None:
                print(f"{peer}: failed\n{done.stderr[-3000:]}", file=sys.stderr)
                continue
            result = json.loads(line[len("RESULT "):])
            load = os.getloadavg()[0]
            result["load"] = load
            found.setdefault((peer, hidden), []).append(result)
            print(f"  run {rep + 1}: {peer}{' (start before prep)' if hidden else ''}: {result['wall']:.1f} s "
                  f"+ close {result['close']:.1f} s "
                  f"(jobs {result['ok']}/{result['jobs']}, sum of job times {result['job_seconds']:.1f} s, "
                  f"load {load:.2f})", flush=True)
    base = found.get(("joblib", False))
    base_wall = statistics.median(r["wall"] for r in base) if base else None
    jobs = next(iter(found.values()))[0]["jobs"] if found else 0
    print(f"\n{jobs} jobs ({args.models}, seeds {args.seeds}), {args.workers} workers; median of {args.repeat} "
          f"run(s); wall = machinery start to last result")
    print(f"{'peer':38s} {'wall s':>7s} {'/ joblib':>9s} {'job s':>7s} {'close s':>8s}  results as they arrive")
    for (peer, hidden), results in found.items():
        wall = statistics.median(r["wall"] for r in results)
        label = {"local": "biasgrid local", "ray": "biasgrid ray", "joblib": "joblib (loky)",
                 "tune": "Ray Tune"}[peer] + (", after prep (start hidden)" if hidden else "")
        ratio = f"{wall / base_wall:9.2f}" if base_wall else f"{'-':>9s}"
        job = statistics.median(r["job_seconds"] for r in results)
        close = statistics.median(r["close"] for r in results)
        print(f"{label:38s} {wall:7.1f} {ratio} {job:7.1f} {close:8.1f}  "
              f"{'yes' if peer in ('local', 'ray') else 'no'}")


if __name__ == "__main__":
    main()
