"""Where the mlp's compiled training step is bound: memory traffic, the square root and division units, overhead.

Run from the repository root:  .venv/bin/python bench/bench_mlp_bound.py [--repeats 7] [--tiny]

``--tiny`` runs every part on a few iterations and steps (a smoke test of the bench, not figures to quote).

One thread. Prints, each as the minimum over --repeats runs (wall and CPU time, the machine is shared):

1. The machine, for the first layer's working set (the 2048 x 64 float32 kernel and its two Adam moments, 3 x
   512 KiB): numpy copy bandwidth; and XLA-compiled loops of 2000 iterations over 2048 x 64 arrays that stream
   the three arrays (read + write each: 3 MiB per iteration), or apply one sqrt, one divide, or sqrt + divide per
   element (the two operations Adam needs per weight; on AMD Zen both run on the same divider unit).
2. The compiled training step's own accounting, from XLA's optimised HLO of the trainer's loop body
   (tasks.models.mlp._trainer): its kernels (thunks), the bytes each reads and writes (operands + result, no cache reuse
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
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tasks.runtime import limit_threads  # noqa: E402

limit_threads(1)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

import tasks.models.mlp  # noqa: E402,F401  (sets XLA_FLAGS, read at XLA's first compilation: before any loop here)

D, H = 2048, 64           # the first layer's kernel as the trainer holds it (60 units padded to 64)
ITERS = 2000              # iterations of each compiled micro-loop
EPOCHS = 40               # epochs of the measured trainer steps (200 steps each)
MODEL_STEPS = 4000        # steps of the several-models loop
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

    cc = shutil.which("cc") or shutil.which("gcc")
    if cc:  # the hardware's own figure, without XLA (bench/divider.c)
        with tempfile.TemporaryDirectory() as tmp:
            exe = os.path.join(tmp, "divider")
            built = subprocess.run([cc, "-O3", "-march=native", str(Path(__file__).with_name("divider.c")), "-o", exe],
                                   capture_output=True)
            if built.returncode == 0:
                print("  C, hand-written (bench/divider.c): " + subprocess.run(
                    [exe], capture_output=True, text=True).stdout.strip(), flush=True)

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
        out[name + " cpu"] = cus
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

    import tasks.models.mlp as mlp

    run = mlp._trainer(hidden, batch)
    h1p, shapes = mlp._padded_shapes(hidden)
    n_small = sum(int(np.prod(s)) for s in shapes)
    rows = mlp._ROW_BLOCK
    z = [tf.zeros((D, h1p)), tf.zeros(n_small)]
    hlo = run.experimental_get_compiler_ir(
        tf.zeros((rows, D)), tf.zeros((rows, 2)), tf.zeros(1), tf.zeros((mlp._CHUNK_STEPS, batch), tf.int32),
        tf.ones(mlp._CHUNK_STEPS), tf.constant(1), z, z, z, tf.constant(0.0), tf.constant(1e-3))(stage="optimized_hlo")
    comps = {}
    for block in re.split(r"\n(?=%|ENTRY)", hlo):
        comps[block.split(" ", 1)[0].lstrip("%")] = block
    body_name = max((k for k in comps if "body" in k), key=lambda k: len(comps[k]))
    body = comps[body_name]
    inst = r"^\s*(?:ROOT )?%(\S+) = (.*?) ([a-z][a-z\-]*)\(([^)]*)\)(.*)$"
    shapes = {m.group(1): m.group(2) for m in re.finditer(inst, body, re.M)}
    big = D * h1p
    kernels, traffic, rows_out = 0, 0, []
    for m in re.finditer(inst, body, re.M):
        name, shape, op, operands, rest = m.groups()
        if op not in ("fusion", "dot", "copy", "gather", "custom-call"):
            continue
        called = re.search(r"calls=%([^,\s]+)", rest)
        inner = comps.get(called.group(1), "") if called else ""
        out_b = _shape_bytes(shape)
        ins = [_shape_bytes(shapes.get(o.split("*/")[-1].strip().lstrip("%"), "")) for o in operands.split(",")
               if o.strip()]
        if "gather(" in inner or "dynamic-slice(" in inner:  # reads only the rows it gathers
            ins = [min(b, out_b) for b in ins]
        in_b = sum(ins)
        kernels += 1
        traffic += out_b + in_b
        n_sqrt = n_div = 0
        for dims, opname in re.findall(r"= f32\[([0-9,]+)\]\S* (sqrt|divide)\(", inner):
            if int(np.prod([int(x) for x in dims.split(",")])) == big:
                n_sqrt += opname == "sqrt"
                n_div += opname == "divide"
        if out_b + in_b >= 100_000:
            rows_out.append((name, op, in_b, out_b, n_sqrt, n_div))
    print(f"  loop body {body_name}: {kernels} kernels (fusions, dots, copies) per step, "
          f"{traffic / 2**20:.2f} MiB read + written per step (sum over kernels)")
    for name, op, in_b, out_b, n_sqrt, n_div in rows_out:
        print(f"    {name:28s} {op:7s} reads {in_b / 2**10:7.1f} KiB, writes {out_b / 2**10:6.1f} KiB"
              f"{f', sqrt x{n_sqrt}' if n_sqrt else ''}{f', divide x{n_div}' if n_div else ''}")
    sqrt_elems = sum(r[4] for r in rows_out) * big
    div_elems = sum(r[5] for r in rows_out) * big
    return {"kernels": kernels, "bytes": traffic, "sqrt_elems": sqrt_elems, "div_elems": div_elems}


def steps(repeats: int) -> dict[str, float]:
    """Measured us per training step: the trainer, the first layer's Adam alone, the step without the big layer."""
    import tensorflow as tf

    import tasks.models.mlp as mlp

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_mlp import make_data

    out: dict[str, float] = {}
    for name, dim in [("trainer step, 2048-d input", D), ("trainer step, 16-d input", 16)]:
        X, y, _, _ = make_data(1000, 10, dim=dim)
        n_steps = EPOCHS * 200

        def train():
            model = mlp.build_keras_model(dim, (60, 60), seed=0)
            mlp.train_fast(model, X, y, epochs=EPOCHS, batch_size=5, learning_rate=1e-3, seed=0)

        w, c = best(train, repeats)
        out[name] = w / n_steps * 1e6
        out[name + " cpu"] = c / n_steps * 1e6
        print(f"  {name:34s} {w / n_steps * 1e6:7.1f} us per step (cpu {c / n_steps * 1e6:5.1f}); "
              f"{w:.2f} s per {n_steps} steps", flush=True)

    b1, b2, eps, lr = mlp.ADAM_BETA_1, mlp.ADAM_BETA_2, mlp.ADAM_EPSILON, 1e-3
    g = tf.constant(np.random.default_rng(1).standard_normal((D, H)).astype(np.float32) * 1e-3)

    def adam_loop(one_pass: bool):
        @tf.function(jit_compile=True)
        def adam(W, m, v):
            one = tf.sqrt(tf.constant(lr)) / tf.sqrt(tf.constant(lr))

            def body(i, W, m, v, t):
                t = t + 1.0
                alpha = lr * tf.sqrt(1.0 - tf.pow(b2, t)) / (1.0 - tf.pow(b1, t))
                gi = g * (1.0 + t * 1e-6)
                m_new = m + (gi - m) * (1.0 - b1)
                v_new = v + (tf.square(gi) - v) * (1.0 - b2)
                if one_pass:  # as tasks.models.mlp writes it: the weight update re-derives m, v from (g, m, v)
                    g1 = gi * one
                    m_w, v_w = m + (g1 - m) * (1.0 - b1), v + (tf.square(g1) - v) * (1.0 - b2)
                else:          # as Keras writes it: the weight update reads the new moments
                    m_w, v_w = m_new, v_new
                return i + 1, W - (m_w * alpha) / (tf.sqrt(v_w) + eps), m_new, v_new, t
            return tf.while_loop(lambda i, *_: i < ITERS, body, (0, W, m, v, 0.0))[1:4]
        return adam

    zeros = tf.zeros((D, H))
    for name, one_pass in [("Adam of W1 alone, Keras' form", False), ("Adam of W1 alone, one pass", True)]:
        adam = adam_loop(one_pass)
        w, c = best(lambda: [x.numpy() for x in adam(g, zeros, zeros)], repeats)
        out[name] = w / ITERS * 1e6
        out[name + " cpu"] = c / ITERS * 1e6
        print(f"  {name:34s} {w / ITERS * 1e6:7.1f} us per step (cpu {c / ITERS * 1e6:5.1f})", flush=True)
    return out


def several_models(repeats: int, ks: tuple[int, ...] = (1, 2, 4)) -> dict[int, float]:
    """us per model-step when K models (K cells of one shape) train in ONE compiled loop: every tensor gets a
    leading model axis, so each kernel of the step serves all K models (the trainer's arithmetic, per model;
    the 60 + 60 + 2 architecture, batch 5, 1000 x 2048 rows, each model its own batch order)."""
    import tensorflow as tf

    import tasks.models.mlp as mlp

    b1, b2, eps, lr = mlp.ADAM_BETA_1, mlp.ADAM_BETA_2, mlp.ADAM_EPSILON, 1e-3
    h1p, shapes = mlp._padded_shapes((60, 60))
    offsets = np.cumsum([0] + [int(np.prod(s)) for s in shapes])
    rng = np.random.default_rng(0)
    X = tf.constant(rng.random((mlp._ROW_BLOCK, D), dtype=np.float32) / 40)
    Y = tf.constant(np.eye(2, dtype=np.float32)[rng.integers(0, 2, mlp._ROW_BLOCK)])
    steps = MODEL_STEPS

    def adam(p, g, m, v, alpha, one):
        m_new = m + (g - m) * (1.0 - b1)
        v_new = v + (tf.square(g) - v) * (1.0 - b2)
        g1 = g * one
        m_w, v_w = m + (g1 - m) * (1.0 - b1), v + (tf.square(g1) - v) * (1.0 - b2)
        return p - (m_w * alpha) / (tf.sqrt(v_w) + eps), m_new, v_new

    @tf.function(jit_compile=True)
    def run(idx, W1, small, mW, ms, vW, vs):
        one = tf.sqrt(tf.constant(lr)) / tf.sqrt(tf.constant(lr))

        def body(i, W1, small, mW, ms, vW, vs, t):
            xb, yb = tf.gather(X, idx[i]), tf.gather(Y, idx[i])                       # (K, 5, D), (K, 5, 2)
            parts = [tf.reshape(small[:, offsets[j]:offsets[j + 1]], (-1, *s)) for j, s in enumerate(shapes)]
            kernels, biases = [W1] + parts[1::2], parts[0::2]
            acts, zs = [xb], []
            for k in range(3):
                zs.append(tf.matmul(acts[-1], kernels[k]) + biases[k][:, None, :])
                if k < 2:
                    acts.append(tf.nn.relu(zs[-1]))
            delta = (tf.nn.softmax(zs[-1]) - yb) / 5.0
            grads = []
            for k in range(2, 0, -1):
                grads[:0] = [tf.reshape(tf.matmul(acts[k], delta, transpose_a=True), (delta.shape[0], -1)),
                             tf.reduce_sum(delta, 1)]
                delta = tf.matmul(delta, kernels[k], transpose_b=True) * tf.cast(zs[k - 1] > 0, tf.float32)
            grads.insert(0, tf.reduce_sum(delta, 1))
            g1 = xb[:, 0, :, None] * delta[:, 0, None, :]
            for r in range(1, 5):
                g1 = g1 + xb[:, r, :, None] * delta[:, r, None, :]
            t = t + 1.0
            alpha = lr * tf.sqrt(1.0 - tf.pow(b2, t)) / (1.0 - tf.pow(b1, t))
            W1, mW, vW = adam(W1, g1, mW, vW, alpha, one)
            small, ms, vs = adam(small, tf.concat(grads, 1), ms, vs, alpha, one)
            return i + 1, W1, small, mW, ms, vW, vs, t

        return tf.while_loop(lambda i, *_: i < steps, body, (0, W1, small, mW, ms, vW, vs, 0.0))[1]

    out = {}
    for k in ks:
        idx = tf.constant(np.stack([rng.integers(0, 1000, (k, 5)) for _ in range(steps)]).astype(np.int32))
        W1 = tf.constant(rng.standard_normal((k, D, h1p)).astype(np.float32) * 0.03)
        small = tf.constant(rng.standard_normal((k, int(offsets[-1]))).astype(np.float32) * 0.1)
        z1, zs = tf.zeros_like(W1), tf.zeros_like(small)
        w, c = best(lambda: run(idx, W1, small, z1, zs, z1, zs).numpy(), repeats)
        out[k] = c / steps / k * 1e6
        print(f"  {k} model(s) in one loop: {w / steps / k * 1e6:6.1f} us per model-step (cpu "
              f"{c / steps / k * 1e6:5.1f})", flush=True)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--tiny", action="store_true", help="a few iterations and steps per part (smoke tests)")
    a = p.parse_args()
    if a.tiny:
        global ITERS, EPOCHS, MODEL_STEPS
        ITERS, EPOCHS, MODEL_STEPS = 20, 1, 20
    print(f"bench_mlp_bound, {time.strftime('%Y-%m-%d %H:%M:%S')}, {os.cpu_count()} cores, 1 thread, "
          f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print("1. the machine, on 2048 x 64 float32 arrays:")
    mach = machine(a.repeats)
    print("2. the compiled step's accounting (XLA's optimised HLO of the trainer's loop body):")
    acc = accounting()
    print("3. measured:")
    st = steps(a.repeats)
    print("4. several models in one compiled loop (a worker often runs several cells of one shape):")
    several_models(a.repeats)
    for kind, suffix in [("wall", ""), ("CPU", " cpu")]:
        bw = 3 * D * H * 8 / (mach["XLA stream W, m, v (3 x r+w)" + suffix] * 1e-6)
        mem_us = acc["bytes"] / bw * 1e6
        sd_us = mach["XLA sqrt + divide (1 x r+w)" + suffix] * max(acc["sqrt_elems"], acc["div_elems"]) / (D * H)
        rest = st["trainer step, 16-d input" + suffix]
        step = st["trainer step, 2048-d input" + suffix]
        floor = max(mem_us, sd_us) + rest
        print(f"floor of a step, from {kind} times:")
        print(f"  memory: {acc['bytes'] / 2**20:.2f} MiB per step at XLA's stream bandwidth {bw / 1e9:.1f} GB/s = "
              f"{mem_us:.1f} us")
        print(f"  sqrt + divide of the first layer ({acc['sqrt_elems']} elements): {sd_us:.1f} us")
        print(f"  everything but the first layer (the 16-d step): {rest:.1f} us")
        print(f"  => floor ~ max(memory, sqrt+divide) + rest = {floor:.1f} us per step; measured {step:.1f} us "
              f"({step / floor:.2f}x the floor); 40,000 steps: {floor * 0.04:.2f} s at the floor, {step * 0.04:.2f} s "
              f"measured")
    print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
