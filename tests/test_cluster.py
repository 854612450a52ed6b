"""Cluster: cluster.yaml passes Ray's own validation; a real two-node Ray cluster on this machine runs a grid
on both nodes; killing the worker node midway still completes the grid with every row once; and a Ray that is
not the suite's own survives everything the suite does with Ray."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from conftest import REPO, RayNode, alive, ray_env

from storage.results import load

# Under xdist this module's tests run on one worker: its class fixture (two_nodes) is built once.
pytestmark = pytest.mark.xdist_group("cluster")

GRID = """
[data.synth]
identities_per_group = 30
dim = 32
[grid]
seeds = 3
models = ["logreg", "mlp"]
[protocol]
train_per_gender = 10
test_per_gender = 8
[model.mlp]
epochs = 20
batch_size = 4
[verification]
max_impostor_pairs = 20000
bootstrap = 50
[tsne]
perplexity = 5.0
pca_dims = 10
subsets = ["all"]
[run]
report = false
max_retries = 5
"""


def test_cluster_yaml_passes_rays_validation() -> None:
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((REPO / "cluster.yaml").read_text())
    prepared = prepare_config(config)
    validate_config(prepared)
    head = " ".join(prepared["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head and "0.0.0.0" not in head
    setup = " ".join(prepared["setup_commands"])
    assert "pip install" in setup and "~/biasgrid" in setup
    assert prepared["file_mounts"] == {"~/biasgrid": ".", "~/.ray/auth_token": "~/.ray/auth_token"}
    workers = " ".join(prepared["worker_start_ray_commands"])
    assert "RAY_AUTH_MODE=token ray start --head" in head and "RAY_AUTH_MODE=token ray start --address" in workers


class TwoNodes:
    """Two Ray nodes of one CPU each, on two loopback addresses: the driver attaches to the head (127.0.0.1), so
    killing the worker node (127.0.0.2) takes only that node's jobs down."""

    def __init__(self) -> None:
        self.head = RayNode("127.0.0.1", env=ray_env(fast_failure_detection=True))
        self.head.wait_ready()
        self.address = self.head.address
        self.env = self.head.env
        self.worker = RayNode("127.0.0.2", head_address=self.address, env=self.env)
        self.worker.wait_ready()

    def stop(self) -> None:
        self.worker.stop()
        self.head.stop()


    def replace_worker(self) -> None:
        """Stop the worker node (what is left of it) and start a new one joined to the head."""
        self.worker.stop()
        self.worker = RayNode("127.0.0.2", head_address=self.address, env=self.env)
        self.worker.wait_ready()


@pytest.fixture(scope="class")
def two_nodes() -> Iterator[TwoNodes]:
    """One two-node cluster for the tests of TestTwoNodeCluster (started once, not once per test; stopped before the
    next test, so the test of an unrelated Ray never runs beside it)."""
    nodes = TwoNodes()
    try:
        yield nodes
    finally:
        nodes.stop()


@pytest.fixture
def cluster(two_nodes: TwoNodes) -> TwoNodes:
    """The class's cluster, both nodes up: a worker node that an earlier test killed is replaced first."""
    if two_nodes.worker.proc.poll() is not None or two_nodes.worker.raylet_pid() is None:
        two_nodes.replace_worker()
    return two_nodes


def grid_command(tmp_path, cluster: TwoNodes, out, seeds: int = 3, grid: str = GRID) -> list[str]:
    cfg = tmp_path / "grid.toml"
    cfg.write_text(grid)
    return [sys.executable, "-m", "grid.cli", "run", "--config", str(cfg), "--address", cluster.address,
            "--out", str(out), "--seeds", str(seeds)]


class TestTwoNodeCluster:
    """A real two-node Ray cluster on this machine (one for both tests)."""

    def test_grid_on_a_two_node_cluster_uses_both_nodes(self, tmp_path, cluster: TwoNodes) -> None:
        out = tmp_path / "r"
        # 5 MLP epochs, not 20: the long cells are the kill test's business (it must find the grid midway)
        command = grid_command(tmp_path, cluster, out, grid=GRID.replace("epochs = 20", "epochs = 5"))
        result = subprocess.run(command, env=cluster.env, capture_output=True, text=True, timeout=900)
        assert result.returncode == 0, result.stderr[-3000:]
        acc = load(out)["accuracy"]
        assert len(acc) == 2 * 4 * 3 * 3
        assert not acc.duplicated(["model", "train_group", "test_group", "seed"]).any()
        nodes = set(acc["node"])
        assert len(nodes) == 2, nodes  # both nodes ran cells, and each row says which

    def test_killing_the_worker_node_midway_still_completes_the_grid(self, tmp_path, cluster: TwoNodes) -> None:
        out = tmp_path / "r"
        proc = subprocess.Popen(grid_command(tmp_path, cluster, out, seeds=6), env=cluster.env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        ledger = out / "_jobs"
        deadline = time.time() + 600
        nodes: set[str] = set()
        while time.time() < deadline and proc.poll() is None and len(nodes) < 2:
            time.sleep(0.2)
            if ledger.exists():
                for record in ledger.glob("*.json"):
                    try:
                        nodes.add(json.loads(record.read_text())["node"])
                    except (json.JSONDecodeError, KeyError, FileNotFoundError):
                        pass
        assert proc.poll() is None and len(nodes) == 2, "both nodes should have finished jobs before the kill"
        done_at_kill = len(list(ledger.glob("*.json")))
        raylet = cluster.worker.raylet_pid()
        assert raylet is not None, "the worker node's raylet is not running"
        os.kill(raylet, signal.SIGKILL)
        stdout, stderr = proc.communicate(timeout=900)
        assert proc.returncode == 0, stderr[-3000:]
        run = json.loads((out / "run.json").read_text())
        assert done_at_kill < len(run["jobs"]["job_id"])
        tables = load(out)
        acc = tables["accuracy"]
        assert len(acc) == 2 * 4 * 6 * 3
        assert not acc.duplicated(["model", "train_group", "test_group", "seed"]).any()
        assert len(tables["verification"]) == 6 * 3 and len(tables["failures"]) == 0
        ledger_records = [json.loads(p.read_text()) for p in ledger.glob("*.json")]
        assert len(ledger_records) == len(run["jobs"]["job_id"])
        assert all(r["status"] == "done" for r in ledger_records)


def test_an_unrelated_ray_survives_the_suites_ray_runs(tmp_path) -> None:
    """A user's Ray running beside the suite: the suite's Ray runs (a grid on a local Ray started by biasgrid,
    a two-node cluster started and stopped) neither attach to it nor stop it."""
    bystander = RayNode("127.0.0.1")
    bystander.wait_ready()
    theirs = bystander.core_pids()
    try:
        cfg = tmp_path / "grid.toml"
        cfg.write_text(GRID.replace("seeds = 3", "seeds = 1"))
        # with RAY_ADDRESS pointing at the bystander, as a user's shell might: biasgrid still starts its own Ray
        env = {**bystander.env, "RAY_ADDRESS": bystander.address}
        out = tmp_path / "r"
        result = subprocess.run([sys.executable, "-m", "grid.cli", "run", "--config", str(cfg), "--out", str(out),
                                 "--workers", "1", "--models", "logreg"], env=env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
        assert bystander.raylet_pid() is not None
        their_node = subprocess.run([sys.executable, "-c", "import ray; ray.init(); "
                                     "print(ray.get_runtime_context().get_node_id()[:12]); ray.shutdown()"],
                                    env=env, capture_output=True, text=True, timeout=120).stdout.strip()
        assert their_node and all(not n.endswith(their_node) for n in load(out)["accuracy"]["node"])
        TwoNodes().stop()
        assert all(alive(p) for p in theirs), "the suite ended a process of a Ray it did not start"
    finally:
        bystander.stop()
    assert not any(alive(p) for p in theirs)
    # no address file left in Ray's default folder (this session's RAY_TMPDIR) for a later `ray.init()` to join
    assert not (Path(os.environ["RAY_TMPDIR"]) / "ray" / "ray_current_cluster").exists()
    assert not Path(bystander.temp_dir).exists()
