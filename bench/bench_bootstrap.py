"""Time of the identity bootstrap (tasks.bootstrap) per resample, one thread, at the grid's sizes.

Run from the repository root:

    PYTHONPATH=. .venv/bin/python bench/bench_bootstrap.py [--impostors 5000000] [--identities 1500] [--resamples 20]

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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--impostors", type=int, default=5_000_000)
    ap.add_argument("--identities", type=int, default=1500)
    ap.add_argument("--resamples", type=int, default=20)
    args = ap.parse_args()
    from grid.report import fairness
    from tasks import bootstrap

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
