"""Time of the identity bootstrap (tasks.stats.bootstrap) per resample, one thread, at the grid's sizes.

Run from the repository root:

    PYTHONPATH=. .venv/bin/python bench/bench_bootstrap.py [--impostors 5000000] [--identities 1500] [--resamples 20]
    PYTHONPATH=. .venv/bin/python bench/bench_bootstrap.py --job 0,200   # the default grid's impostor-matrix job

With ``--job R1,R2,...``: one impostor-matrix job of the default grid (built-in data, seed 0, every test group) and
its first scores job (one test group), run in-process with each bootstrap setting, wall and CPU time of each;
``--config FILE`` takes the grid (data, protocol, verification settings) from FILE instead.

Synthetic comparisons: --identities identities in 6 groups with 2-8 images each, all their genuine comparisons,
and --impostors random impostor comparisons (the impostor-matrix job's default cap is 5M). Prints the set-up time
(one sort) and the mean time per resample, with the 1000-resample extrapolation.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def impostor_job(settings: list[int], config: str | None = None) -> None:
    """Time the grid's (default: the default grid's) impostor-matrix job and its first scores job (seed 0) at
    each bootstrap setting."""
    from grid.config import resolve_config
    from grid.runner import load_data, shared_arrays
    from grid.splits import Protocol, make_split
    from tasks.kinds.impostor import run as run_impostor
    from tasks.kinds.scores import run as run_scores

    cfg = resolve_config(config)
    table = load_data(cfg["data"])
    groups = cfg["grid"]["test_groups"] or list(table.present_ethnicities())
    protocol = Protocol(cfg["protocol"]["train_per_gender"], cfg["protocol"]["test_per_gender"])
    split = make_split(table, 0, protocol, groups)
    rows = np.concatenate([split.verification[g] for g in groups])
    data = shared_arrays(table)
    v = cfg["verification"]
    for r in settings:
        for kind, run, params, job_rows in (
                ("impostor", run_impostor, {"target_fmr": v["target_fmr"],
                                            "max_impostor_pairs": v["max_impostor_pairs"],
                                            "target_fmrs": v["target_fmrs"], "bootstrap": r,
                                            "sampling": v["sampling"]}, rows),
                ("scores", run_scores, {"test_group": groups[0], "max_impostor_pairs": v["max_impostor_pairs"],
                                        "bootstrap": r}, split.verification[groups[0]])):
            t, c = time.perf_counter(), time.process_time()
            out = run({"params": params, "seed": 0, "rows": job_rows}, data)
            print(json.dumps({"job": kind, "bootstrap": r, "wall_s": round(time.perf_counter() - t, 1),
                              "cpu_s": round(time.process_time() - c, 1), "rows": int(job_rows.size),
                              "tables": {k: len(f) for k, f in out.items()}, "load": os.getloadavg()}), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--impostors", type=int, default=5_000_000)
    ap.add_argument("--identities", type=int, default=1500)
    ap.add_argument("--resamples", type=int, default=20)
    ap.add_argument("--job", default="", help="comma-separated bootstrap settings of a default impostor job")
    ap.add_argument("--config", default=None, help="with --job: the grid's config file (default: the default grid)")
    args = ap.parse_args()
    if args.job:
        return impostor_job([int(r) for r in args.job.split(",")], args.config)
    from tasks.stats import fairness
    from tasks.stats import bootstrap

    rng = np.random.default_rng(0)
    per = rng.integers(2, 9, args.identities)
    img = np.repeat(np.arange(args.identities), per)
    group = np.arange(args.identities) % 6
    a, b = rng.integers(0, img.size, args.impostors), rng.integers(0, img.size, args.impostors)
    ia, ib = img[a], img[b]
    keep = ia != ib
    gen = np.repeat(np.arange(args.identities), per * (per - 1) // 2)
    s = np.r_[rng.normal(size=int(keep.sum())), rng.normal(2, 1, gen.size)].astype(np.float32)
    ia, ib = np.r_[ia[keep], gen], np.r_[ib[keep], gen]
    t = time.perf_counter()
    st = bootstrap.VerificationStatistics(s, ia, ib, group, [f"g{k}" for k in range(6)], (1e-2, 1e-3), 1e-3,
                                          fairness.summaries)
    setup = time.perf_counter() - t
    mult = bootstrap.identity_multiplicities(group, args.resamples, 0)
    t = time.perf_counter()
    for m in mult:
        st.evaluate(m)
    per_resample = (time.perf_counter() - t) / args.resamples
    print(json.dumps({"comparisons": int(s.size), "genuine": int(gen.size), "setup_s": round(setup, 2),
                      "per_resample_s": round(per_resample, 3),
                      "extrapolated_1000_resamples_s": round(setup + 1000 * per_resample, 1),
                      "load": os.getloadavg()}))


if __name__ == "__main__":
    main()
