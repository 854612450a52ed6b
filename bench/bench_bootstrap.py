"""Time of the identity bootstrap (tasks.stats.bootstrap) per resample, one thread, at the grid's sizes.

Run from the repository root:

    PYTHONPATH=. .venv/bin/python bench/bench_bootstrap.py --floors      # issue 22's floors, both forms
    PYTHONPATH=. .venv/bin/python bench/bench_bootstrap.py [--impostors 5000000] [--identities 1500] [--resamples 20]
    PYTHONPATH=. .venv/bin/python bench/bench_bootstrap.py --job 0,200   # the default grid's impostor-matrix job

With ``--floors``: the bootstrap inputs of the default grid's impostor-matrix job and first scores job (seed 0;
``--config FILE`` for another grid), recorded by running each job once, then ``--resamples`` (default 1000)
resamples of each with the one-resample-at-a-time ``VerificationStatistics`` (``--old-resamples`` of them, default
all) and with ``BatchedVerificationStatistics`` (what the jobs use): set-up, resamples and total time (wall and
CPU), the floor (1000 resamples: scores job under 1 s, impostor-matrix job under 3 s) and the largest difference
between the two forms' values over the resamples both ran.

With ``--job R1,R2,...``: one impostor-matrix job of the default grid (built-in data, seed 0, every test group) and
its first scores job (one test group), run in-process with each bootstrap setting, wall and CPU time of each;
``--config FILE`` takes the grid (data, protocol, verification settings) from FILE instead.

Synthetic comparisons: --identities identities in 6 groups with 2-8 images each, all their genuine comparisons,
and --impostors random impostor comparisons (the impostor-matrix job's default cap is 5M). Prints the set-up time
(one sort) and the mean time per resample, with the 1000-resample extrapolation.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):   # one thread, before numpy loads
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def grid_jobs(config: str | None, bootstrap: int):
    """(shared data, [(kind, run function, payload)]): the grid's impostor-matrix and first scores job, seed 0."""
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
    return data, [
        ("impostor", run_impostor, {"params": {"target_fmr": v["target_fmr"], "target_fmrs": v["target_fmrs"],
                                               "max_impostor_pairs": v["max_impostor_pairs"],
                                               "bootstrap": bootstrap, "sampling": v["sampling"]},
                                    "seed": 0, "rows": rows}),
        ("scores", run_scores, {"params": {"test_group": groups[0], "max_impostor_pairs": v["max_impostor_pairs"],
                                           "bootstrap": bootstrap},
                                "seed": 0, "rows": split.verification[groups[0]]})]


def impostor_job(settings: list[int], config: str | None = None) -> None:
    """Time the grid's (default: the default grid's) impostor-matrix job and its first scores job (seed 0) at
    each bootstrap setting."""
    for r in settings:
        data, jobs = grid_jobs(config, r)
        for kind, run, payload in jobs:
            job_rows = payload["rows"]
            t, c = time.perf_counter(), time.process_time()
            out = run(payload, data)
            print(json.dumps({"job": kind, "bootstrap": r, "wall_s": round(time.perf_counter() - t, 1),
                              "cpu_s": round(time.process_time() - c, 1), "rows": int(job_rows.size),
                              "tables": {k: len(f) for k, f in out.items()}, "load": os.getloadavg()}), flush=True)


def floors(config: str | None, resamples: int, old_resamples: int | None) -> None:
    """Both forms of the bootstrap on the inputs of the grid's impostor-matrix and first scores jobs."""
    from tasks.stats import bootstrap

    recorded = []
    original = bootstrap.bootstrap_verification

    def record(*args, **kw):                         # the job's call, kept; the job itself runs 1 resample
        recorded.append((args, kw))
        return original(*args, **{**kw, "n_resamples": 1})

    data, jobs = grid_jobs(config, 1)
    bootstrap.bootstrap_verification = record
    try:
        for _, run, payload in jobs:
            run(payload, data)
    finally:
        bootstrap.bootstrap_verification = original
    for (kind, *_), (args, kw) in zip(jobs, recorded):
        st_args = (*args, kw.get("target_fmrs", (1e-2, 1e-3)), kw.get("global_target_fmr", 1e-3),
                   kw.get("summarize"), kw.get("pooled"), kw.get("stratum"))
        mult = bootstrap.identity_multiplicities(args[3], resamples, kw.get("seed", 0))
        values = {}
        for form, cls, n in (("one at a time", bootstrap.VerificationStatistics, old_resamples or resamples),
                             ("batched", bootstrap.BatchedVerificationStatistics, resamples)):
            t, c = time.perf_counter(), time.process_time()
            st = cls(*st_args)
            setup, setup_cpu = time.perf_counter() - t, time.process_time() - c
            t, c = time.perf_counter(), time.process_time()
            _, values[form] = st.replicates(mult[:n])
            wall, cpu = time.perf_counter() - t, time.process_time() - c
            total = setup + wall * resamples / n
            floor = 3.0 if kind == "impostor" else 1.0
            print(json.dumps({"job": kind, "form": form, "comparisons": int(st.n), "identities": int(st.n_id),
                              "setup_s": round(setup, 2), "resamples": n, "resamples_s": round(wall, 2),
                              "per_resample_ms": round(1000 * wall / n, 3), "cpu_s": round(setup_cpu + cpu, 2),
                              f"total_{resamples}_s": round(total, 2), "floor_s": floor,
                              "under_floor": bool(total < floor), "load": os.getloadavg()}), flush=True)
        both = min(len(v) for v in values.values())
        a, b = values["one at a time"][:both], values["batched"][:both]
        ok = ~np.isnan(a)
        print(json.dumps({"job": kind, "resamples_compared": both,
                          "same_nan": bool(np.array_equal(ok, ~np.isnan(b))),
                          "max_abs_difference": float(np.abs(a[ok] - b[ok]).max(initial=0.0))}), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--impostors", type=int, default=5_000_000)
    ap.add_argument("--identities", type=int, default=1500)
    ap.add_argument("--resamples", type=int, default=None, help="default: 20 (synthetic), 1000 (--floors)")
    ap.add_argument("--floors", action="store_true", help="issue 22's floors, both forms side by side")
    ap.add_argument("--old-resamples", type=int, default=None,
                    help="with --floors: resamples of the one-at-a-time form (default: --resamples; its total is "
                         "extrapolated to --resamples)")
    ap.add_argument("--job", default="", help="comma-separated bootstrap settings of a default impostor job")
    ap.add_argument("--config", default=None,
                    help="with --job or --floors: the grid's config file (default: the default grid)")
    args = ap.parse_args()
    if args.floors:
        return floors(args.config, args.resamples or 1000, args.old_resamples)
    args.resamples = args.resamples or 20
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
    st = bootstrap.BatchedVerificationStatistics(s, ia, ib, group, [f"g{k}" for k in range(6)], (1e-2, 1e-3),
                                                 1e-3, fairness.summaries)
    setup = time.perf_counter() - t
    mult = bootstrap.identity_multiplicities(group, args.resamples, 0)
    t = time.perf_counter()
    st.replicates(mult)
    per_resample = (time.perf_counter() - t) / args.resamples
    print(json.dumps({"comparisons": int(s.size), "genuine": int(gen.size), "setup_s": round(setup, 2),
                      "per_resample_s": round(per_resample, 3),
                      "extrapolated_1000_resamples_s": round(setup + 1000 * per_resample, 1),
                      "load": os.getloadavg()}))


if __name__ == "__main__":
    main()
