"""Embedding speed and memory: images per second per core for ``dlib`` (detection + alignment + embedding) on
real photographs (scikit-image's), and for a ResNet-50-sized Keras model (random weights, 224 px, 2048-d
``avg_pool``); the 2-worker rate against twice the 1-worker rate; peak memory per worker.

Each worker is a spawned process (as the local executor's) that opens the model, embeds a warm-up batch, waits
for the others, then runs :func:`tasks.embedders.embed_shard` on its own images (one thread). The rate is all
images over the wall time from the common start to the last worker's end.

    PYTHONPATH=. python bench/bench_embed.py [--dlib-images 64] [--keras-images 48] [--workers 1,2]
        [--skip dlib,keras] [--keras-model resnet50|small]

``--keras-model small`` swaps the ResNet-50 for a two-convolution 32 px model (a smoke test of the bench's
path, not a figure to quote).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import tempfile
import time
from pathlib import Path

import numpy as np


def photographs(folder: Path, n: int, size: int | None) -> list[str]:
    """``n`` distinct image files cut from scikit-image's photographs (faces and others), as PNG."""
    from PIL import Image
    from skimage import data

    sources = [data.astronaut(), data.chelsea(), data.coffee(), np.stack([data.camera()] * 3, axis=-1)]
    paths = []
    for k in range(n):
        img = sources[k % len(sources)]
        h, w = img.shape[:2]
        side = min(h, w) - 40
        crop = img[(k // 4) % 20:(k // 4) % 20 + side, (k // 4) % 20:(k // 4) % 20 + side]
        pil = Image.fromarray(np.ascontiguousarray(crop))
        if size:
            pil = pil.resize((size, size), Image.BILINEAR)
        path = folder / f"img{k:04d}.png"
        pil.save(path)
        paths.append(str(path))
    return paths


def _worker(spec_dict: dict, paths: list[str], barrier, queue) -> None:
    from tasks.embedders import EmbedSpec, embed_shard

    spec = EmbedSpec(**spec_dict)
    embed_shard(paths[:2], spec, threads=1)   # load the model, warm up
    barrier.wait()
    start, cpu = time.time(), time.process_time()
    result = embed_shard(paths, spec, threads=1)
    end, cpu = time.time(), time.process_time() - cpu
    queue.put((start, end, len(result.index), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, cpu))


def measure(spec, paths: list[str], workers: int) -> dict:
    """Every worker embeds all of ``paths`` (so each has the same work): rate = workers * len(paths) / wall;
    ``cpu_rate``: images per CPU second of the workers (what a core gives when nothing else runs on it)."""
    ctx = multiprocessing.get_context("spawn")
    barrier, queue = ctx.Barrier(workers), ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(spec.to_dict(), paths, barrier, queue)) for _ in range(workers)]
    for p in procs:
        p.start()
    results = [queue.get() for _ in procs]
    for p in procs:
        p.join()
    wall = max(r[1] for r in results) - min(r[0] for r in results)
    images = sum(r[2] for r in results)
    return {"workers": workers, "images": images, "seconds": wall, "rate": images / wall,
            "peak_mb": max(r[3] for r in results), "cpu_rate": images / sum(r[4] for r in results),
            "load": os.getloadavg()[0]}


def keras_model(kind: str):
    """The Keras model to embed with (random weights): ResNet-50 at 224 px, or a small 32 px stand-in; both end
    in a layer named ``avg_pool``."""
    import keras

    if kind == "resnet50":
        return keras.applications.ResNet50(weights=None, include_top=False, pooling="avg",
                                           input_shape=(224, 224, 3))
    return keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Conv2D(8, 3, strides=2, activation="relu"),
                             keras.layers.Conv2D(16, 3, strides=2, activation="relu"),
                             keras.layers.GlobalAveragePooling2D(name="avg_pool")])


def report(name: str, rows: list[dict]) -> None:
    one = next(r for r in rows if r["workers"] == 1)
    for r in rows:
        scale = r["rate"] / (r["workers"] * one["rate"])
        print(f"{name:28s} workers {r['workers']}: {r['images']:4d} images in {r['seconds']:6.1f} s = "
              f"{r['rate']:6.2f} images/s ({r['rate'] / r['workers']:.2f} per core; x{scale:.2f} of "
              f"{r['workers']} x 1 worker); {r['cpu_rate']:.2f} images per CPU second; peak RSS per worker "
              f"{r['peak_mb']:.0f} MB; load {r['load']:.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dlib-images", type=int, default=64)
    parser.add_argument("--keras-images", type=int, default=48)
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--skip", default="", help="comma list of benches to skip: dlib, keras")
    parser.add_argument("--keras-model", choices=["resnet50", "small"], default="resnet50",
                        help="small: a two-convolution 32 px model instead of ResNet-50 (smoke tests)")
    args = parser.parse_args()
    workers = [int(w) for w in args.workers.split(",")]
    skip = set(filter(None, args.skip.split(",")))
    from tasks.embedders import resolve_spec

    print(f"load average before: {os.getloadavg()[0]:.2f} (1 min) on {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory(prefix="bench-embed-") as tmp:
        root = Path(tmp)
        if "dlib" not in skip:
            (root / "dlib").mkdir()
            paths = photographs(root / "dlib", args.dlib_images, None)   # 472 x 472 .. 260 x 260 photographs
            spec = resolve_spec("dlib")
            report("dlib (detect+align+embed)", [measure(spec, paths, w) for w in workers])
        if "keras" not in skip:
            os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
            model = keras_model(args.keras_model)
            size, dim = model.input_shape[1], model.output_shape[-1]
            path = root / f"{args.keras_model}.keras"
            model.save(path)
            del model
            (root / "keras").mkdir()
            paths = photographs(root / "keras", args.keras_images, size)
            spec = resolve_spec(f"keras:{path}", {"preprocess": "imagenet", "layer": "avg_pool"})
            name = {"resnet50": "ResNet-50"}.get(args.keras_model, args.keras_model)
            report(f"keras {name} {size}px {dim}-d", [measure(spec, paths, w) for w in workers])
    print(f"load average after: {os.getloadavg()[0]:.2f} (1 min)")


if __name__ == "__main__":
    main()
