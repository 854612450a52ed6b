"""The mlp's compiled trainer vs plain Keras model.fit, side by side, at the study's protocol; and cell timings.

Run from the repository root:  .venv/bin/python bench/bench_mlp.py [--seeds 5] [--epochs 200] [--cells]

Same data for both trainers (synthetic, gender-separable, 1000 x 2048 training rows and 500 test rows,
non-negative, L2-normalised, like ResNet-50 avg_pool embeddings), same model, same initial weights per seed,
batch 5, one thread. Prints each model's training time with both trainers, the ratio, and the mean test accuracy
over the seeds. The first fast run of a process includes XLA's compilation (once per data shape per worker
process); it is shown apart. --op-determinism turns on TensorFlow's op determinism first (to measure its cost;
the compiled trainer is deterministic without it). --cells also times whole grid cells (tasks.cell.run_cell, the
default config of each model type) on 1000 and 3000 training rows (one ethnicity / "all") with 3 test groups of
500 rows: wall and CPU time.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tasks.threads import limit_threads  # noqa: E402

limit_threads(1)

import numpy as np  # noqa: E402


def make_data(n_train: int, n_test: int, dim: int = 2048, seed: int = 0, shift: float = 0.05):
    """Rows = relu(base + noise +- shift * direction), L2-normalised; gender alternates."""
    rng = np.random.default_rng(seed)
    base = np.abs(rng.standard_normal(dim)).astype(np.float32)
    direction = rng.standard_normal(dim).astype(np.float32)

    def rows(n, r):
        g = np.arange(n) % 2
        x = base + r.standard_normal((n, dim), dtype=np.float32) + shift * np.where(g[:, None] == 1, 1, -1) * direction
        x = np.maximum(x, 0)
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), g

    return (*rows(n_train, np.random.default_rng(seed + 1)), *rows(n_test, np.random.default_rng(seed + 2)))


def timed(fn):
    t, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - t, time.process_time() - c


def compare(seeds: int, epochs: int) -> None:
    from tasks.models import build_model, resolve_model_config

    X, y, X_test, y_test = make_data(1000, 500)
    print(f"data: train {X.shape}, test {X_test.shape}; epochs {epochs}, batch 5, hidden [60, 60], 1 thread")
    timed(lambda: build_model("mlp", {"epochs": 1}, seed=0).fit(X[:10], y[:10]))  # import TensorFlow/Keras
    rows = []
    for seed in range(seeds):
        res = {}
        for trainer in ("fit", "fast"):
            clf = build_model("mlp", resolve_model_config("mlp", {"trainer": trainer, "epochs": epochs}), seed=seed)
            _, wall, cpu = timed(lambda: clf.fit(X, y))
            res[trainer] = (wall, cpu, float((clf.predict(X_test) == y_test).mean()))
        rows.append(res)
        f, q = res["fit"], res["fast"]
        print(f"seed {seed}: fit {f[0]:6.1f} s (cpu {f[1]:6.1f}) acc {f[2]:.3f} | fast {q[0]:5.2f} s (cpu {q[1]:5.2f})"
              f" acc {q[2]:.3f}{' (incl. XLA compile)' if seed == 0 else ''} | ratio {f[0] / q[0]:5.1f}x", flush=True)
    fit_t = np.array([r["fit"][0] for r in rows])
    fast_t = np.array([r["fast"][0] for r in rows])
    later = fast_t[1:] if len(fast_t) > 1 else fast_t
    print(f"mean fit {fit_t.mean():.1f} s; mean fast {fast_t.mean():.2f} s (all seeds), {later.mean():.2f} s "
          f"(after the first, compiled); ratio of means {fit_t.mean() / fast_t.mean():.1f}x (all), "
          f"{fit_t.mean() / later.mean():.1f}x (compiled)")
    acc_fit = np.mean([r["fit"][2] for r in rows])
    acc_fast = np.mean([r["fast"][2] for r in rows])
    print(f"mean test accuracy over {seeds} seeds: fit {acc_fit:.4f}, fast {acc_fast:.4f}, "
          f"difference {acc_fast - acc_fit:+.4f}")


def cells() -> None:
    from tasks.cell import run_cell

    X, y, X_test, y_test = make_data(3000, 1500, seed=1)
    data = np.vstack([X, X_test])
    gender = np.r_[y, y_test]
    tests = {name: 3000 + np.arange(i * 500, (i + 1) * 500) for i, name in enumerate(("asian", "caucasian", "black"))}
    print("grid cells (run_cell, default config, 1 thread, 3 test groups of 500):")
    for model in ("mlp", "xgboost", "logreg"):
        for n in (1000, 3000, 1000):
            train = np.arange(n)
            out, wall, cpu = timed(lambda: run_cell(data, gender, train, tests, model=model, model_config={},
                                                     train_group=str(n), seed=0)["accuracy"])
            print(f"  {model:8s} train {n:5d} rows: wall {wall:6.2f} s, cpu {cpu:6.2f} s, train_seconds "
                  f"{out['train_seconds'].iloc[0]:6.2f}, mean accuracy {out['accuracy'].mean():.3f}", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--epochs", type=int, default=200)
    p.add_argument("--cells", action="store_true", help="time whole grid cells instead of the trainer comparison")
    p.add_argument("--op-determinism", action="store_true")
    a = p.parse_args()
    print(f"bench_mlp, {time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores (the jobs use 1 thread)")
    if a.op_determinism:
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
        print("TensorFlow op determinism: on")
    if a.cells:
        cells()
    else:
        compare(a.seeds, a.epochs)


if __name__ == "__main__":
    main()
