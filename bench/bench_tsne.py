"""scikit-learn's TSNE vs openTSNE on one thread, after PCA to 50 dimensions, at the study's sizes.

Run from the repository root:  .venv/bin/python bench/bench_tsne.py [--sizes 1500 3000] [--iterations 1000]

1500 rows = one gender of the three ethnicities' training sets, 3000 = everyone. Synthetic gender- and
ethnicity-structured rows (2048-d, non-negative, L2-normalised). Same settings for both: perplexity 30, PCA
initialisation, 1000 iterations in all (--iterations; 250 of them early exaggeration), seed 0. Prints wall and CPU
time, and two quality figures so that speed is not bought with a worse map: trustworthiness (10 neighbours, PCA
space vs map) and the silhouette of the 6 planted groups in the map. Also times one whole job
(tasks.kinds.tsne.tsne_job).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402


def make_data(n: int, dim: int = 2048, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n rows in 6 groups (3 ethnicities x 2 genders), each group shifted along its own direction."""
    rng = np.random.default_rng(seed)
    group = np.arange(n) % 6
    base = np.abs(rng.standard_normal(dim)).astype(np.float32)
    directions = rng.standard_normal((6, dim)).astype(np.float32)
    X = np.maximum(base + rng.standard_normal((n, dim), dtype=np.float32) + 0.15 * directions[group], 0)
    return (X / np.linalg.norm(X, axis=1, keepdims=True)).astype(np.float32), group


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[1500, 3000])
    p.add_argument("--iterations", type=int, default=1000,
                   help="iterations in all, 250 of them early exaggeration (scikit-learn's fixed share): >= 251")
    a = p.parse_args()
    if a.iterations <= 250:
        p.error("--iterations must be over 250 (the early exaggeration's 250 are part of them)")
    later = a.iterations - 250   # openTSNE's n_iter: the iterations after the early exaggeration

    try:
        import openTSNE
    except ImportError:
        raise SystemExit("bench_tsne.py compares with openTSNE: pip install -e '.[bench]'") from None
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE, trustworthiness
    from sklearn.metrics import silhouette_score

    from tasks.runtime import limit_threads
    from tasks.kinds.tsne import tsne_job

    limit_threads(1)  # after the imports: threadpoolctl then also limits scikit-learn's OpenMP
    print(f"bench_tsne, {time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores (1 thread used)")
    for n in a.sizes:
        X, group = make_data(n)
        t = time.perf_counter()
        P = PCA(50, svd_solver="randomized", random_state=0).fit_transform(X)
        print(f"{n} x {X.shape[1]}: PCA to 50 dims {time.perf_counter() - t:.2f} s", flush=True)
        runs = {
            "scikit-learn TSNE (Barnes-Hut)": lambda: TSNE(2, perplexity=30, init="pca", learning_rate="auto",
                                                           max_iter=a.iterations, random_state=0,
                                                           n_jobs=1).fit_transform(P),
            "openTSNE (Barnes-Hut)": lambda: np.asarray(openTSNE.TSNE(
                perplexity=30, n_jobs=1, random_state=0, negative_gradient_method="bh", n_iter=later).fit(P)),
            "openTSNE (FFT)": lambda: np.asarray(openTSNE.TSNE(
                perplexity=30, n_jobs=1, random_state=0, negative_gradient_method="fft", n_iter=later).fit(P)),
        }
        for name, run in runs.items():
            t, c = time.perf_counter(), time.process_time()
            xy = run()
            wall, cpu = time.perf_counter() - t, time.process_time() - c
            print(f"  {name:32s} wall {wall:5.1f} s, cpu {cpu:5.1f} s; trustworthiness "
                  f"{trustworthiness(P, xy, n_neighbors=10):.3f}, silhouette of the 6 groups "
                  f"{silhouette_score(xy, group):.3f}", flush=True)
        eth, gen = (group % 3).astype(np.int8), (group // 3).astype(np.int8)
        ident = np.array([f"id{i}" for i in range(n)], dtype=object)
        t, c = time.perf_counter(), time.process_time()
        tsne_job(X, np.arange(n), eth, gen, ident, ethnicities=("asian", "caucasian", "black"), subset="all", seed=0)
        print(f"  tasks.kinds.tsne.tsne_job (subset all)  wall {time.perf_counter() - t:5.1f} s, "
              f"cpu {time.process_time() - c:5.1f} s", flush=True)


if __name__ == "__main__":
    main()
