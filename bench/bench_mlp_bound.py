"""Where the mlp's compiled training step is bound: memory traffic, the square root and division units, overhead.

Run from the repository root:  .venv/bin/python bench/bench_mlp_bound.py [--repeats 7]

One thread. Prints, each as the minimum over --repeats runs (wall and CPU time, the machine is shared):

1. The machine, for the first layer's working set (the 2048 x 64 float32 kernel and its two Adam moments, 3 x
   512 KiB): numpy copy bandwidth; and XLA-compiled loops of 2000 iterations over 2048 x 64 arrays that stream
   the three arrays (read + write each: 3 MiB per iteration), or apply one sqrt, one divide, or sqrt + divide per
   element (the two operations Adam needs per weight; on AMD Zen both run on the same divider unit).
2. The compiled training step's own accounting, from XLA's optimised HLO of the trainer's loop body
   (tasks.mlp._trainer): its kernels (thunks), the bytes each reads and writes (operands + result, no cache reuse
   between kernels assumed) and the elements that go through sqrt and divide.
3. Measured steps: the trainer at the study's protocol (1000 x 2048, batch 5, 40 epochs here: 8000 steps), the
   Adam update of the first layer alone (the same three fused kernels XLA makes of it), and the whole step with a
   16-wide input (everything but the big first layer: loop, gathers, small layers, their Adam).

From these: the step's floor = max(bytes / stream bandwidth, sqrt+divide time of the first layer) + the rest.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tasks.threads import limit_threads  # noqa: E402

limit_threads(1)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

D, H = 2048, 64           # the first layer's kernel as the trainer holds it (60 units padded to 64)
ITERS = 2000              # iterations of each compiled micro-loop
_BYTES = {"f32": 4, "s32": 4, "pred": 1, "s64": 8, "f64": 8}


def best(fn, repeats: int) -> tuple[float, float]:
    """(min wall, min CPU) seconds of ``fn()`` over ``repeats`` runs (after one untimed run)."""
    fn()
    walls, cpus = [], []
    for _ in range(repeats):
        w, c = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
    return min(walls), min(cpus)


def machine(repeats: int) -> dict[str, float]:
    """Bandwidth and sqrt/divide throughput for 2048 x 64 float32 arrays: numpy and XLA loops (us per pass)."""
    import tensorflow as tf

    n = D * H
    a = np.random.default_rng(0).random(n, dtype=np.float32) + 1.0
    b = np.empty_like(a)
    big_a, big_b = np.tile(a, 3), np.tile(b, 3)
    out: dict[str, float] = {}
    for name, fn, inner in [("numpy copy 1.5 MiB -> 1.5 MiB", lambda: np.copyto(big_b, big_a), 3 * n * 8),
                            ("numpy sqrt", lambda: np.sqrt(a, out=b), None),
                            ("numpy divide", lambda: np.divide(a, a, out=b), None)]:
        w, _ = best(lambda: [fn() for _ in range(200)], repeats)
        us = w / 200 * 1e6
        out[name] = us
        extra = f", {inner / (us * 1e-6) / 1e9:.1f} GB/s" if inner else f", {n / us / 1e3:.2f} Gelem/s"
        print(f"  {name:34s} {us:7.1f} us per 2048 x 64{extra}", flush=True)

    c1 = np.float32(0.999)

    def loop(body, k):
        @tf.function(jit_compile=True)
        def f(*xs):
            return tf.while_loop(lambda i, *_: i < ITERS, lambda i, *s: (i + 1, *body(*s)), (0, *xs))[1:]
        xs = [tf.constant(a.reshape(D, H) + j) for j in range(k)]
        return lambda: [x.numpy() for x in f(*xs)]

    kernels = [
        ("XLA stream W, m, v (3 x r+w)", loop(lambda w, m, v: (w * c1, m * c1 + 1e-3, v * c1 + 2e-3), 3), 3 * n * 8),
        ("XLA sqrt (1 x r+w)", loop(lambda w: (tf.sqrt(w) * c1 + 0.5,), 1), None),
        ("XLA divide (1 x r+w)", loop(lambda w: (1.0 / (w + 0.5) + 0.5,), 1), None),
        ("XLA sqrt + divide (1 x r+w)", loop(lambda w: (1.0 / (tf.sqrt(w) + 1e-7) + 0.5,), 1), None),
    ]
    for name, fn, traffic in kernels:
        w, c = best(fn, repeats)
        us, cus = w / ITERS * 1e6, c / ITERS * 1e6
        out[name] = us
        extra = f", {traffic / (us * 1e-6) / 1e9:.1f} GB/s" if traffic else f", {n / us / 1e3:.2f} Gelem/s"
        print(f"  {name:34s} {us:7.1f} us per iteration (cpu {cus:5.1f}){extra}", flush=True)
    return out


def _shape_bytes(shape: str) -> int:
    total = 0
    for dtype, dims in re.findall(r"(f32|s32|pred|s64|f64)\[([0-9,]*)\]", shape):
        total += _BYTES[dtype] * int(np.prod([int(x) for x in dims.split(",") if x] or [1]))
    return total


def accounting(hidden: tuple[int, ...] = (60, 60), batch: int = 5) -> dict[str, float]:
    """Kernels, bytes and sqrt/divide elements of the trainer's compiled loop body (from XLA's optimised HLO)."""
    import tensorflow as tf

    import tasks.mlp as mlp

    run = mlp._trainer(hidden, batch)
    h1p, shapes = mlp._padded_shapes(hidden)
    n_small = sum(int(np.prod(s)) for s in shapes)
    rows = mlp._ROW_BLOCK
    z = [tf.zeros((D, h1p)), tf.zeros(n_small)]
    hlo = run.experimental_get_compiler_ir(
        tf.zeros((rows, D)), tf.zeros((rows, 2)), tf.zeros((mlp._CHUNK_STEPS, batch), tf.int32),
        tf.ones(mlp._CHUNK_STEPS), tf.constant(1), z, z, z, tf.constant(0.0), tf.constant(1e-3))(stage="optimized_hlo")
    comps = {}
    for block in re.split(r"\n(?=%|ENTRY)", hlo):
        head = block.split(" ", 1)[0].lstrip("%")
        comps[head] = block
    body_name = max((k for k in comps if "body" in k), key=lambda k: len(comps[k]))
    body = comps[body_name]
    shapes = {m.group(1): m.group(2) for m in re.finditer(r"^\s*%(\S+) = (\S+(?: \S+)*?) [a-z\-]+\(", body, re.M)}
    kernels, traffic, rows_out = 0, 0, []
    for m in re.finditer(r"^\s*(?:ROOT )?%(\S+) = (\S+) (fusion|dot|copy|gather|custom-call)\(([^)]*)\)(.*)$", body, re.M):
        name, shape, op, operands, rest = m.groups()
        out_b = _shape_bytes(shape)
        in_b = sum(_shape_bytes(shapes.get(o.strip().lstrip("%"), "")) for o in operands.split(",") if o.strip())
        kernels += 1
        traffic += out_b + in_b
        if out_b + in_b >= 100_000:
            called = re.search(r"calls=%(\S+?),", rest + ",")
            inner = comps.get(called.group(1), "") if called else ""
            n_sqrt = len(re.findall(rf"f32\[{D},{h1p}\]\S* sqrt\(", inner))
            n_div = len(re.findall(rf"f32\[{D},{h1p}\]\S* divide\(", inner))
            rows_out.append((name, op, in_b, out_b, n_sqrt, n_div))
    print(f"  loop body {body_name}: {kernels} kernels (fusions, dots, copies) per step, "
          f"{traffic / 2**20:.2f} MiB read + written per step (sum over kernels)")
    for name, op, in_b, out_b, n_sqrt, n_div in rows_out:
        print(f"    {name:28s} {op:7s} reads {in_b / 2**10:7.1f} KiB, writes {out_b / 2**10:6.1f} KiB"
              f"{f', sqrt x{n_sqrt}' if n_sqrt else ''}{f', divide x{n_div}' if n_div else ''}")
    sqrt_elems = sum(r[4] for r in rows_out) * D * h1p
    div_elems = sum(r[5] for r in rows_out) * D * h1p
    return {"kernels": kernels, "bytes": traffic, "sqrt_elems": sqrt_elems, "div_elems": div_elems}


def steps(repeats: int) -> dict[str, float]:
    """Measured us per training step: the trainer, the first layer's Adam alone, the step without the big layer."""
    import tensorflow as tf

    import tasks.mlp as mlp

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_mlp import make_data

    out: dict[str, float] = {}
    epochs = 40
    for name, dim in [("trainer step, 2048-d input", D), ("trainer step, 16-d input", 16)]:
        X, y, _, _ = make_data(1000, 10, dim=dim)
        n_steps = epochs * 200

        def train():
            model = mlp.build_keras_model(dim, (60, 60), seed=0)
            mlp.train_fast(model, X, y, epochs=epochs, batch_size=5, learning_rate=1e-3, seed=0)

        w, c = best(train, repeats)
        out[name] = w / n_steps * 1e6
        print(f"  {name:34s} {w / n_steps * 1e6:7.1f} us per step (cpu {c / n_steps * 1e6:5.1f}); "
              f"{w:.2f} s per 8000 steps", flush=True)

    b1, b2, eps, lr = mlp.ADAM_BETA_1, mlp.ADAM_BETA_2, mlp.ADAM_EPSILON, 1e-3
    g = tf.constant(np.random.default_rng(1).standard_normal((D, H)).astype(np.float32) * 1e-3)

    @tf.function(jit_compile=True)
    def adam(W, m, v):
        def body(i, W, m, v, t):
            t = t + 1.0
            alpha = lr * tf.sqrt(1.0 - tf.pow(b2, t)) / (1.0 - tf.pow(b1, t))
            gi = g * (1.0 + t * 1e-6)
            m = m + (gi - m) * (1.0 - b1)
            v = v + (tf.square(gi) - v) * (1.0 - b2)
            return i + 1, W - (m * alpha) / (tf.sqrt(v) + eps), m, v, t
        return tf.while_loop(lambda i, *_: i < ITERS, body, (0, W, m, v, 0.0))[1:4]

    zeros = tf.zeros((D, H))
    w, c = best(lambda: [x.numpy() for x in adam(g, zeros, zeros)], repeats)
    out["adam"] = w / ITERS * 1e6
    print(f"  {'Adam update of W1 alone (3 kernels)':34s} {w / ITERS * 1e6:7.1f} us per step (cpu "
          f"{c / ITERS * 1e6:5.1f})", flush=True)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=7)
    a = p.parse_args()
    print(f"bench_mlp_bound, {time.strftime('%Y-%m-%d %H:%M:%S')}, {os.cpu_count()} cores, 1 thread, "
          f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print("1. the machine, on 2048 x 64 float32 arrays:")
    mach = machine(a.repeats)
    print("2. the compiled step's accounting (XLA's optimised HLO of the trainer's loop body):")
    acc = accounting()
    print("3. measured:")
    st = steps(a.repeats)
    bw = 3 * D * H * 8 / (mach["XLA stream W, m, v (3 x r+w)"] * 1e-6)
    mem_us = acc["bytes"] / bw * 1e6
    sd_us = mach["XLA sqrt + divide (1 x r+w)"] * max(acc["sqrt_elems"], acc["div_elems"]) / (D * H)
    rest = st["trainer step, 16-d input"]
    print("floor of a step:")
    print(f"  memory: {acc['bytes'] / 2**20:.2f} MiB per step at XLA's stream bandwidth {bw / 1e9:.1f} GB/s = "
          f"{mem_us:.1f} us")
    print(f"  sqrt + divide of the first layer ({acc['sqrt_elems']} elements): {sd_us:.1f} us")
    print(f"  everything but the first layer (the 16-d step): {rest:.1f} us")
    print(f"  => floor ~ max(memory, sqrt+divide) + rest = {max(mem_us, sd_us) + rest:.1f} us per step; "
          f"measured {st['trainer step, 2048-d input']:.1f} us; 40,000 steps at the floor: "
          f"{(max(mem_us, sd_us) + rest) * 0.04:.2f} s")
    print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
