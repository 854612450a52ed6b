"""[run.resources]: each kind's ask is checked (a bad key or value names it, exit 2), Ray schedules each kind's
jobs by it on a real two-node cluster with a custom resource (jobs land only on the node offering it), the local
pool runs a two-CPU kind one job at a time with two threads and refuses what it cannot offer before anything is
written. The GPU paths (the embedders and the all-pairs block product on a GPU) run where a GPU exists and are
reported as skipped otherwise; their TensorFlow product is compared with numpy's on the CPU in
tests/test_allpairs.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, RayNode, ray_env
from test_executors import GRID   # their tiny grid: logreg cells only, 2 seeds, 2 workers, no report

from grid import resources
from grid.config import resolve_config
from storage.errors import InputError
from storage.results import load

# A plug-in model that fails unless its cell runs with the threads its kind asked for.
THREADS_MODEL = '''
import os


class Mean:
    def fit(self, X, y):
        self.w = X[y == 1].mean(axis=0) - X[y == 0].mean(axis=0)
        self.b = float(((X[y == 1].mean(axis=0) + X[y == 0].mean(axis=0)) / 2) @ self.w)
        return self

    def predict(self, X):
        return (X @ self.w > self.b).astype(int)


def build(config, seed, threads):
    want = int(os.environ["WANT_THREADS"])
    if threads != want or os.environ.get("OMP_NUM_THREADS") != str(want):
        raise RuntimeError(f"cell runs with {threads} threads (OMP {os.environ.get('OMP_NUM_THREADS')}), "
                           f"asked for {want}")
    return Mean()
'''


def write_config(tmp_path: Path, extra: str = "", grid: str = GRID) -> Path:
    path = tmp_path / "grid.toml"
    path.write_text(grid + ("\n[run.resources]\n" + extra if extra else ""))
    return path


def biasgrid(*args: str, env: dict[str, str] | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "grid.cli", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


# ------------------------------------------------------------------------------------------------- config ---
def test_each_kinds_ask_is_normalised_and_unnamed_kinds_ask_threads_per_job(tmp_path: Path) -> None:
    cfg = resolve_config(write_config(tmp_path, 'embed = {GPU = 1}\nallpairs = {CPU = 2, memory = "4GiB"}\n'
                                                'cell = {custom_x = 0.5}\n'), {"run.threads_per_job": 3})
    r = cfg["run"]["resources"]
    assert r["embed"] == {"CPU": 3, "GPU": 1.0}
    assert r["allpairs"] == {"CPU": 2, "memory": 4 * 2**30}
    assert r["cell"] == {"CPU": 3, "custom_x": 0.5}
    assert set(r) == {*resources.job_kinds()} and r["scores"] == {"CPU": 3}
    assert resources.ray_options(r["allpairs"]) == {"num_cpus": 2, "num_gpus": 0, "memory": 4 * 2**30,
                                                    "resources": {}}
    assert resources.ray_options(r["cell"])["resources"] == {"custom_x": 0.5}
    assert resources.parse_memory("500MB", "m") == 500_000_000 and resources.parse_memory(1024, "m") == 1024


@pytest.mark.parametrize("table,named", [
    ("foo = {CPU = 1}", "'run.resources.foo' names no job kind"),
    ("cell = 2", "'run.resources.cell' must be a table"),
    ("cell = {cpu = 1}", "'run.resources.cell.cpu' is not a resource name; did you mean CPU?"),
    ("cell = {CPU = 0}", "'run.resources.cell.CPU' must be a whole number"),
    ("cell = {CPU = 1.5}", "'run.resources.cell.CPU' must be a whole number"),
    ("embed = {GPU = 1.5}", "'run.resources.embed.GPU' must be a number >= 0 that is a fraction below 1"),
    ("embed = {GPU = -1}", "'run.resources.embed.GPU' must be a number >= 0"),
    ('allpairs = {memory = "lots"}', "'run.resources.allpairs.memory' must be a positive number of bytes"),
    ("allpairs = {memory = 0}", "'run.resources.allpairs.memory' must be a positive number of bytes"),
    ('cell = {"node:127.0.0.1" = 1}', "'run.resources.cell.node:127.0.0.1' is not a resource a job can ask for"),
    ("cell = {object_store_memory = 1}", "'run.resources.cell.object_store_memory' is not a resource"),
])
def test_a_bad_kind_key_or_value_is_refused_naming_it(tmp_path: Path, table: str, named: str) -> None:
    with pytest.raises(InputError, match="grid.toml: " + named.replace("?", r"\?").replace(".", r"\.")):
        resolve_config(write_config(tmp_path, table + "\n"))


def test_the_queue_hands_out_the_first_job_whose_ask_fits_and_the_budget_gives_it_back() -> None:
    asks = {"allpairs": {"CPU": 2}, "cell": {"CPU": 1}, "embed": {"CPU": 1, "GPU": 1.0}}
    payloads = [{"kind": "allpairs", "job_id": "a1"}, {"kind": "allpairs", "job_id": "a2"},
                {"kind": "embed", "job_id": "e1"}, {"kind": "cell", "job_id": "c1"}, {"kind": "cell", "job_id": "c2"}]
    queue, budget = resources.JobQueue(payloads, asks), resources.Budget({"CPU": 3, "GPU": 0})
    taken = [queue.take(budget)["job_id"], queue.take(budget)["job_id"]]   # a1 (2 CPUs), then c1: a2 does not fit
    assert taken == ["a1", "c1"] and queue.take(budget) is None and len(queue) == 3   # embed never fits: no GPU
    budget.give(asks["allpairs"])
    assert queue.take(budget)["job_id"] == "a2"
    budget.give(asks["cell"])
    assert queue.take(budget)["job_id"] == "c2" and budget.free == {"CPU": 0, "GPU": 0}


# ------------------------------------------------------------------------------------------- local pool ---
@pytest.mark.parametrize("ask,named", [
    ("cell = {GPU = 1}", "'run.resources.cell.GPU' = 1 is more than the local executor"),
    ("cell = {custom_x = 1}", "'run.resources.cell.custom_x' = 1 is more than the local executor"),
    ("cell = {CPU = 3}", "'run.resources.cell.CPU' = 3 is more than the local executor"),
])
def test_the_local_pool_refuses_what_it_cannot_offer_before_anything_is_written(tmp_path: Path, ask: str,
                                                                                named: str) -> None:
    if "GPU" in ask and resources.local_gpus():
        pytest.skip("this machine has a GPU: the local pool can give it")
    out = tmp_path / "r"
    result = biasgrid("run", "--config", str(write_config(tmp_path, ask + "\n")), "--executor", "local",
                      "--out", str(out), "--quiet")
    assert result.returncode == 2, result.stderr[-2000:]
    assert named in result.stderr and "Traceback" not in result.stderr
    assert not out.exists()


def test_a_kind_asking_two_cpus_runs_one_job_at_a_time_with_two_threads(tmp_path: Path) -> None:
    (tmp_path / "threadmodel.py").write_text(THREADS_MODEL)
    env = {**os.environ, "WANT_THREADS": "2", "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO)])}
    out = tmp_path / "r"
    result = biasgrid("run", "--config", str(write_config(tmp_path, "cell = {CPU = 2}\n")), "--executor", "local",
                      "--models", "threadmodel:build", "--out", str(out), "--quiet", env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = sorted((json.loads(p.read_text()) for p in (out / "_jobs").glob("*.json")), key=lambda r: r["started"])
    assert len(jobs) == 4 * 2 and all(r["status"] == "done" for r in jobs)
    for before, after in zip(jobs, jobs[1:]):   # 2 workers x 1 thread = 2 CPUs: never two cells at once
        assert before["started"] + before["seconds"] <= after["started"] + 0.01, (before, after)


def test_embedding_shards_are_kind_embed_and_a_gpu_ask_is_refused_without_a_gpu(tmp_path: Path, capsys) -> None:
    """``data embed --config FILE`` takes the file's [run] section: its shard jobs are of kind "embed", and a GPU ask
    the local pool cannot give is refused before any image is embedded (no table, no shard folder)."""
    if resources.local_gpus():
        pytest.skip("this machine has a GPU: the local pool can give it")
    from test_embed_cli import diveface, written

    from grid.cli import main

    root = diveface(tmp_path / "DiveFace" / "4K_120")
    (tmp_path / "out").mkdir()
    config = tmp_path / "gpu.toml"
    config.write_text("[run.resources]\nembed = {GPU = 1}\n")
    code = main(["data", "embed", str(root.parent), "--out", str(tmp_path / "out" / "t.parquet"), "--model", "dlib",
                 "--config", str(config), "--executor", "local", "--workers", "1", "--quiet"])
    assert code == 2 and "'run.resources.embed.GPU' = 1 is more than the local executor" in capsys.readouterr().err
    assert written(tmp_path / "out") == []


# ------------------------------------------------------------------------------------ two-node Ray cluster ---
def node_ids(address: str, env: dict[str, str]) -> dict[str, str]:
    """Each node's IP -> the first 12 characters of its Ray node id (as the results' ``node`` column has it)."""
    code = ("import json, ray; ray.init(address=%r, log_to_driver=False); "
            "print(json.dumps({n['NodeManagerAddress']: n['NodeID'][:12] for n in ray.nodes() if n['Alive']})); "
            "ray.shutdown()" % address)
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_kinds_land_only_on_the_nodes_offering_what_they_ask_for(tmp_path: Path) -> None:
    """Head (127.0.0.1): 1 CPU. Worker (127.0.0.2): 1 CPU and custom_x = 1. Cells ask for custom_x, so every cell
    runs on the worker; the scores jobs ask for the default CPU and may run on either. An ask no node offers is
    refused (exit 2) before anything is written."""
    head = RayNode("127.0.0.1", env=ray_env())
    worker = None
    try:
        head.wait_ready()
        worker = RayNode("127.0.0.2", head_address=head.address, env=head.env, resources={"custom_x": 1})
        worker.wait_ready()
        grid = GRID.replace("[verification]\nenabled = false", "[verification]\nmax_impostor_pairs = 2000\n"
                                                                "bootstrap = 0")
        out = tmp_path / "r"
        cfg = write_config(tmp_path, 'cell = {custom_x = 1}\nscores = {memory = "1MiB"}\n', grid)
        result = biasgrid("run", "--config", str(cfg), "--address", head.address, "--out", str(out), "--quiet",
                          env=head.env)
        assert result.returncode == 0, result.stderr[-3000:]
        ids = node_ids(head.address, head.env)
        tables = load(out)
        cell_nodes = {n.rpartition("/")[2] for n in tables["accuracy"]["node"]}
        assert cell_nodes == {ids["127.0.0.2"]}, (cell_nodes, ids)
        assert len(tables["accuracy"]) == 4 * 2 * 3 and len(tables["verification"]) == 3 * 2

        refused = tmp_path / "refused"
        cfg = write_config(tmp_path, "cell = {custom_y = 1}\n")
        result = biasgrid("run", "--config", str(cfg), "--address", head.address, "--out", str(refused), "--quiet",
                          env=head.env)
        assert result.returncode == 2, result.stderr[-3000:]
        assert "'run.resources.cell.custom_y' = 1 is more than any node of the Ray cluster offers" in result.stderr
        assert not refused.exists()
    finally:
        if worker is not None:
            worker.stop()
        head.stop()


# ------------------------------------------------------------------------------------------------- GPU ---
needs_gpu = pytest.mark.skipif(resources.local_gpus() == 0, reason="no GPU on this machine: the GPU paths are "
                                                                   "exercised where one exists")


@needs_gpu
def test_the_all_pairs_block_product_on_the_gpu_agrees_with_numpy() -> None:
    from tasks.runtime import tensorflow_device
    from tasks.stats import allpairs

    rng = np.random.default_rng(0)
    X = rng.standard_normal((3000, 512)).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    ids, grp = np.arange(3000) // 3, (np.arange(3000) // 3) % 4
    tasks = allpairs.block_tasks(len(X), 1024)
    cpu = allpairs.shard_counts(X, ids, grp, 4, tasks)
    with tensorflow_device(True):
        import tensorflow as tf

        assert tf.config.list_physical_devices("GPU")
        gpu = allpairs.shard_counts(X, ids, grp, 4, tasks, binner=allpairs.tensorflow_bins)
    assert np.array_equal(cpu.genuine.sum(-1), gpu.genuine.sum(-1))
    assert np.array_equal(cpu.impostor.sum(-1), gpu.impostor.sum(-1))
    moved = np.abs(np.cumsum(cpu.impostor - gpu.impostor, axis=-1)).max()   # pairs across one edge, at most
    assert moved <= 1e-4 * cpu.n_impostor, moved


@needs_gpu
def test_a_keras_embedder_on_the_gpu_agrees_with_the_cpu(tmp_path: Path) -> None:
    import keras

    from tasks.embedders.keras import KerasEmbedder

    model = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Conv2D(8, 3), keras.layers.Flatten(),
                              keras.layers.Dense(16)])
    path = tmp_path / "m.keras"
    model.save(path)
    images = [np.random.default_rng(i).integers(0, 255, (40, 40, 3), dtype=np.uint8) for i in range(4)]
    cpu, _ = KerasEmbedder(str(path), {"preprocess": "none"}, 1, gpu=False).embed(images)
    gpu, _ = KerasEmbedder(str(path), {"preprocess": "none"}, 1, gpu=True).embed(images)
    assert np.allclose(cpu, gpu, rtol=1e-4, atol=1e-5)


@needs_gpu
def test_an_onnx_embedder_uses_the_cuda_provider_when_asked_and_agrees_with_the_cpu(tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("onnxruntime's CUDA provider is not installed (pip install onnxruntime-gpu)")
    from onnx import TensorProto, helper, numpy_helper
    from test_embed_onnx import W, save_model   # the ArcFace-shaped model of those tests

    from tasks.embedders.onnx import OnnxEmbedder

    path = save_model(tmp_path / "arcface.onnx",
                      [helper.make_node("GlobalAveragePool", ["data"], ["pooled"]),
                       helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
                       helper.make_node("MatMul", ["flat", "W"], ["fc1"])],
                      [helper.make_tensor_value_info("data", TensorProto.FLOAT, ["N", 3, 112, 112])],
                      [helper.make_tensor_value_info("fc1", TensorProto.FLOAT, ["N", 16])],
                      [numpy_helper.from_array(W, "W")])
    images = [np.random.default_rng(i).integers(0, 255, (120, 120, 3), dtype=np.uint8) for i in range(3)]
    cpu = OnnxEmbedder(path, {"align": "none"}, 1, gpu=False)
    gpu = OnnxEmbedder(path, {"align": "none"}, 1, gpu=True)
    assert gpu.session.get_providers()[0] == "CUDAExecutionProvider"
    assert cpu.session.get_providers() == ["CPUExecutionProvider"]
    assert np.allclose(cpu.embed(images)[0], gpu.embed(images)[0], rtol=1e-4, atol=1e-5)
