"""Time and peak memory of one verification-scores job (tasks.kinds.scores.score_group) on one core.

Run from the repository root:  .venv/bin/python bench/bench_scores.py [--group Group3_Female] [--identities 4000]

A synthetic group is drawn with DiveFace's images-per-identity distribution of --group (storage/data/
diveface_images_per_identity.csv; Group3_Female is the largest, ~28K images for 4000 identities): non-negative,
L2-normalised 2048-d rows, images of one identity clustered around it. It is generated in a child process and
saved as .npy, which a second child memory-maps as the local executor's workers do and scores, so the peak RSS
printed is the job's own (Python + libraries + the pages of X it reads + the scoring). Also times the grid's
usual jobs: scores of the test identities of one ethnicity (--small-identities 500 = 250 per gender,
--small-group distribution, ~2850 images), and the impostor matrix of the three ethnicities' test identities
(--impostor-identities 1500, ~8500 images, 6 demographic groups).
"""

from __future__ import annotations

import argparse
import csv
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def make_group(path: str, group: str, identities: int, dim: int, seed: int) -> None:
    """Write X (n, dim) float32 and identity codes (n,) to path + '.X.npy' / '.ids.npy'."""
    import numpy as np

    with open(ROOT / "storage" / "data" / "diveface_images_per_identity.csv") as f:
        dist = [(int(r["images_per_identity"]), int(r["identities"])) for r in csv.DictReader(f) if r["group"] == group]
    if not dist:
        raise SystemExit(f"unknown group {group!r}")
    k, c = np.array(dist).T
    rng = np.random.default_rng(seed)
    per_id = rng.choice(k, size=identities, p=c / c.sum())
    ids = np.repeat(np.arange(identities), per_id)
    base = np.abs(rng.standard_normal(dim)).astype(np.float32)
    X = np.empty((len(ids), dim), np.float32)
    centre = rng.standard_normal((identities, dim), dtype=np.float32)
    for s in range(0, len(ids), 4096):
        block = base + 0.25 * centre[ids[s:s + 4096]] + 0.8 * rng.standard_normal((len(ids[s:s + 4096]), dim),
                                                                                  dtype=np.float32)
        np.maximum(block, 0, out=block)
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        X[s:s + 4096] = block
    np.save(path + ".X.npy", X)
    np.save(path + ".ids.npy", ids)


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


def measure(path: str, max_pairs: int, job: str) -> None:
    """Run the job on the saved images in this (fresh) process and print time and peak memory."""
    from tasks.runtime import limit_threads

    limit_threads(1)
    import numpy as np

    from tasks.kinds.impostor import impostor_matrix
    from tasks.kinds.scores import score_group

    X = np.load(path + ".X.npy", mmap_mode="r")
    ids = np.load(path + ".ids.npy")
    score_group(X[:50], ids[:50], np.arange(50), seed=0)  # first-call imports outside the timing
    before = rss_mb()
    t, c = time.perf_counter(), time.process_time()
    if job == "impostor":  # 6 demographic groups, each identity in one
        groups = np.array([f"{e}_{g}" for e in ("asian", "caucasian", "black") for g in ("male", "female")])
        out = impostor_matrix(X, ids, groups[ids % 6], np.arange(len(ids)), seed=0, max_impostor_pairs=max_pairs)
    else:
        out = score_group(X, ids, np.arange(len(ids)), seed=0, max_impostor_pairs=max_pairs)
    wall, cpu = time.perf_counter() - t, time.process_time() - c
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if job == "impostor":
        r = out["demographic_rates"]
        print(f"  impostor_matrix: {len(ids)} images x {X.shape[1]}, {len(np.unique(ids))} identities in 6 groups, "
              f"{int(out['impostor_matrix'].query('group_a <= group_b')['n_pairs'].sum())} impostor pairs; "
              f"wall {wall:.1f} s, cpu {cpu:.1f} s; RSS before {before:.0f} MB, peak RSS {peak:.0f} MB; "
              f"FMR per group at the global threshold {r['fmr'].min():.4f}..{r['fmr'].max():.4f}", flush=True)
        return
    v = out["verification"].iloc[0]
    print(f"  {len(ids)} images x {X.shape[1]}, {len(np.unique(ids))} identities: {v.n_genuine} genuine, "
          f"{v.n_impostor} impostor pairs (sampled={v.impostor_sampled}); wall {wall:.1f} s, cpu {cpu:.1f} s; "
          f"RSS before {before:.0f} MB, peak RSS {peak:.0f} MB; EER {v.eer:.4f}, "
          f"FNMR@FMR=1e-3 {v.fnmr_at_fmr_1e_3:.4f}", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--group", default="Group3_Female")
    p.add_argument("--identities", type=int, default=4000)
    p.add_argument("--small-group", default="Group1_Female")
    p.add_argument("--small-identities", type=int, default=500)
    p.add_argument("--dim", type=int, default=2048)
    p.add_argument("--max-impostor-pairs", type=int, default=5_000_000)
    p.add_argument("--make", nargs=4, metavar=("PATH", "GROUP", "IDENTITIES", "DIM"), help=argparse.SUPPRESS)
    p.add_argument("--impostor-identities", type=int, default=1500)
    p.add_argument("--measure", nargs=2, metavar=("PATH", "JOB"), help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.make:
        make_group(a.make[0], a.make[1], int(a.make[2]), int(a.make[3]), seed=0)
        return
    if a.measure:
        measure(a.measure[0], a.max_impostor_pairs, a.measure[1])
        return
    print(f"bench_scores: score_group on one thread, max_impostor_pairs={a.max_impostor_pairs}, "
          f"{time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory() as tmp:
        for label, group, identities, job in (
                ("full-size DiveFace group", a.group, a.identities, "scores"),
                ("grid scores job (one ethnicity's test identities)", a.small_group, a.small_identities, "scores"),
                ("grid impostor-matrix job (three ethnicities' test identities)", a.small_group,
                 a.impostor_identities, "impostor")):
            print(f"{label}, {group} images-per-identity distribution:", flush=True)
            path = os.path.join(tmp, f"{group}-{identities}")
            subprocess.run([sys.executable, __file__, "--make", path, group, str(identities), str(a.dim)],
                           check=True)
            subprocess.run([sys.executable, __file__, "--measure", path, job,
                            "--max-impostor-pairs", str(a.max_impostor_pairs)], check=True)


if __name__ == "__main__":
    main()
