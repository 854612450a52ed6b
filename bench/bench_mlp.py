"""The mlp's compiled trainer vs plain Keras model.fit, side by side, at the study's protocol; and cell timings.

Run from the repository root:  .venv/bin/python bench/bench_mlp.py [--seeds 5] [--epochs 200] [--cells]
                                [--fit-epochs E] [--repeats R]

Same data for both trainers (synthetic, gender-separable, 1000 x 2048 training rows and 500 test rows,
non-negative, L2-normalised, like ResNet-50 avg_pool embeddings), same model, same initial weights per seed,
batch 5, one thread. Prints each model's training time (wall and CPU: the machine is shared, and the load average
is printed with each line) with both trainers, the ratio, and the mean test accuracy over the seeds. The
process's one-time warm-up (TensorFlow import, XLA compilation: ``tasks.models.mlp.warm_up``) is timed apart, before
the first model. The fast trainer's time is the minimum of --repeats runs per seed (same numbers every run).
--fit-epochs E times ``fit`` on E epochs only and scales its time per step to --epochs (its accuracy is then
not comparable, and is not printed). --op-determinism turns on TensorFlow's op determinism first (to measure its cost;
the compiled trainer is deterministic without it). --cells also times whole grid cells (tasks.kinds.cell.run_cell, the
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

from tasks.runtime import limit_threads  # noqa: E402

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


def load() -> str:
    return "load " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def compare(seeds: int, epochs: int, fit_epochs: int, repeats: int) -> None:
    from tasks.models.mlp import warm_up
    from tasks.models import build_model, resolve_model_config

    X, y, X_test, y_test = make_data(1000, 500)
    steps = epochs * 200
    print(f"data: train {X.shape}, test {X_test.shape}; epochs {epochs} ({steps} steps), batch 5, hidden [60, 60], "
          f"1 thread; fit timed on {fit_epochs} epochs{' and scaled per step' if fit_epochs != epochs else ''}")
    from tasks.models.mlp import _tensorflow

    _, w_imp, c_imp = timed(lambda: _tensorflow(1))
    _, wall, cpu = timed(lambda: build_model("mlp", {}, seed=0).prepare(X.shape[1]))  # warm_up, once per process
    print(f"TensorFlow import: {w_imp:.2f} s (cpu {c_imp:.2f}); first MLPClassifier().prepare of the process (warm_up: "
          f"Keras model, trace, XLA compile, predict): {wall:.2f} s (cpu {cpu:.2f}); warm_up again: {warm_up():.2f} s",
          flush=True)
    rows = []
    for seed in range(seeds):
        res = {}
        clf = build_model("mlp", resolve_model_config("mlp", {"trainer": "fit", "epochs": fit_epochs}), seed=seed)
        _, wall, cpu = timed(lambda: clf.fit(X, y))
        scale = epochs / fit_epochs
        res["fit"] = (wall * scale, cpu * scale, float((clf.predict(X_test) == y_test).mean()))
        fast = []
        for _ in range(repeats):
            clf = build_model("mlp", resolve_model_config("mlp", {"epochs": epochs}), seed=seed)
            _, wall, cpu = timed(lambda: clf.fit(X, y))
            fast.append((wall, cpu))
        res["fast"] = (min(w for w, _ in fast), min(c for _, c in fast), float((clf.predict(X_test) == y_test).mean()))
        rows.append(res)
        f, q = res["fit"], res["fast"]
        acc = f" acc {f[2]:.3f}" if fit_epochs == epochs else ""
        print(f"seed {seed}: fit {f[0]:6.1f} s (cpu {f[1]:6.1f}){acc} | fast {q[0]:5.2f} s (cpu {q[1]:5.2f}, "
              f"{q[0] / steps * 1e6:.0f} us/step) acc {q[2]:.3f} | ratio {f[0] / q[0]:5.1f}x (cpu {f[1] / q[1]:5.1f}x)"
              f" | {load()}", flush=True)
    fit_t, fit_c = (np.array([r["fit"][i] for r in rows]) for i in (0, 1))
    fast_t, fast_c = (np.array([r["fast"][i] for r in rows]) for i in (0, 1))
    print(f"mean fit {fit_t.mean():.1f} s (cpu {fit_c.mean():.1f}); mean fast {fast_t.mean():.2f} s (cpu "
          f"{fast_c.mean():.2f}); ratio of means {fit_t.mean() / fast_t.mean():.1f}x (cpu "
          f"{fit_c.mean() / fast_c.mean():.1f}x)")
    acc_fast = np.mean([r["fast"][2] for r in rows])
    if fit_epochs == epochs:
        acc_fit = np.mean([r["fit"][2] for r in rows])
        print(f"mean test accuracy over {seeds} seeds: fit {acc_fit:.4f}, fast {acc_fast:.4f}, "
              f"difference {acc_fast - acc_fit:+.4f}")
    else:
        print(f"mean test accuracy over {seeds} seeds: fast {acc_fast:.4f}")


def cells() -> None:
    import tasks.models.mlp
    from tasks.kinds.cell import run_cell

    fit_cpu = []
    plain_fit = tasks.models.mlp.MLPClassifier.fit

    def fit(self, X, y):  # the CPU time of MLPClassifier.fit, the part of the cell train_seconds times
        c = time.process_time()
        out = plain_fit(self, X, y)
        fit_cpu.append(time.process_time() - c)
        return out

    tasks.models.mlp.MLPClassifier.fit = fit

    X, y, X_test, y_test = make_data(3000, 1500, seed=1)
    data = np.vstack([X, X_test])
    gender = np.r_[y, y_test]
    tests = {name: 3000 + np.arange(i * 500, (i + 1) * 500) for i, name in enumerate(("asian", "caucasian", "black"))}
    print("grid cells (run_cell, default config, 1 thread, 3 test groups of 500; the process's first cell pays the "
          "TensorFlow import and warm_up, outside train_seconds):")
    for model in ("mlp", "xgboost", "logreg"):
        for n in (1000, 3000, 1000):
            train = np.arange(n)
            out, wall, cpu = timed(lambda: run_cell(data, gender, train, tests, model=model, model_config={},
                                                     train_group=str(n), seed=0)["accuracy"])
            fit_c = f" (fit cpu {fit_cpu.pop():5.2f})" if fit_cpu else ""
            print(f"  {model:8s} train {n:5d} rows: wall {wall:6.2f} s, cpu {cpu:6.2f} s, train_seconds "
                  f"{out['train_seconds'].iloc[0]:6.2f}{fit_c}, mean accuracy {out['accuracy'].mean():.3f} | "
                  f"{load()}", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--epochs", type=int, default=200)
    p.add_argument("--fit-epochs", type=int, default=0, help="time fit on this many epochs (default: --epochs)")
    p.add_argument("--repeats", type=int, default=3, help="fast-trainer runs per seed (the minimum is shown)")
    p.add_argument("--cells", action="store_true", help="time whole grid cells instead of the trainer comparison")
    p.add_argument("--op-determinism", action="store_true")
    a = p.parse_args()
    print(f"bench_mlp, {time.strftime('%Y-%m-%d %H:%M:%S')}, {os.cpu_count()} cores (the jobs use 1 thread), {load()}")
    if a.op_determinism:
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
        print("TensorFlow op determinism: on")
    if a.cells:
        cells()
    else:
        compare(a.seeds, a.epochs, a.fit_epochs or a.epochs, a.repeats)


if __name__ == "__main__":
    main()
