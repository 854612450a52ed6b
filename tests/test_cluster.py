"""Cluster: cluster.yaml passes Ray's own validation; a real two-node Ray cluster on this machine runs a grid
on both nodes; killing the worker node midway still completes the grid with every row once."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from storage.results import load

REPO = Path(__file__).resolve().parents[1]
RAY = str(Path(sys.executable).parent / "ray")

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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ray_env() -> dict[str, str]:
    return {**os.environ, "RAY_AUTH_MODE": "token", "RAY_USAGE_STATS_ENABLED": "0",
            # notice a dead node within seconds rather than the default half minute
            "RAY_health_check_period_ms": "1000", "RAY_health_check_failure_threshold": "3",
            "RAY_health_check_timeout_ms": "1000",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}


class TwoNodes:
    def __init__(self) -> None:
        self.port = free_port()
        self.worker_port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.env = ray_env()

    def start(self) -> None:
        # Two nodes of one CPU each, on two loopback addresses: the driver attaches to the head (127.0.0.1),
        # so killing the worker node (127.0.0.2) takes only that node's jobs down.
        common = ["--num-cpus=1", "--disable-usage-stats"]
        subprocess.run([RAY, "start", "--head", f"--port={self.port}", "--include-dashboard=false",
                        "--node-ip-address=127.0.0.1", *common],
                       env=self.env, check=True, capture_output=True, timeout=120)
        subprocess.run([RAY, "start", f"--address={self.address}", f"--node-manager-port={self.worker_port}",
                        "--node-ip-address=127.0.0.2", *common],
                       env=self.env, check=True, capture_output=True, timeout=120)

    def worker_raylet_pid(self) -> int:
        out = subprocess.run(["pgrep", "-f", f"raylet.*node_manager_port={self.worker_port}"],
                             capture_output=True, text=True).stdout.split()
        assert out, "the worker node's raylet is not running"
        return int(out[0])

    def stop(self) -> None:
        subprocess.run([RAY, "stop", "--force"], env=self.env, capture_output=True, timeout=120)


@pytest.fixture
def cluster() -> Iterator[TwoNodes]:
    nodes = TwoNodes()
    nodes.stop()  # no Ray left over from an earlier test
    nodes.start()
    try:
        yield nodes
    finally:
        nodes.stop()


def grid_command(tmp_path: Path, cluster: TwoNodes, out: Path) -> list[str]:
    cfg = tmp_path / "grid.toml"
    cfg.write_text(GRID)
    return [sys.executable, "-m", "grid.cli", "run", "--config", str(cfg), "--address", cluster.address,
            "--out", str(out)]


def test_grid_on_a_two_node_cluster_uses_both_nodes(tmp_path: Path, cluster: TwoNodes) -> None:
    out = tmp_path / "r"
    result = subprocess.run(grid_command(tmp_path, cluster, out), env=cluster.env, capture_output=True,
                            text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    acc = load(out)["accuracy"]
    assert len(acc) == 2 * 4 * 3 * 3 and not acc.duplicated(["model", "train_group", "test_group", "seed"]).any()
    nodes = set(acc["node"])
    assert len(nodes) == 2, nodes  # both nodes ran cells, and each row says which


def test_killing_the_worker_node_midway_still_completes_the_grid(tmp_path: Path, cluster: TwoNodes) -> None:
    out = tmp_path / "r"
    proc = subprocess.Popen(grid_command(tmp_path, cluster, out), env=cluster.env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
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
    os.kill(cluster.worker_raylet_pid(), signal.SIGKILL)
    stdout, stderr = proc.communicate(timeout=900)
    assert proc.returncode == 0, stderr[-3000:]
    run = json.loads((out / "run.json").read_text())
    assert done_at_kill < len(run["jobs"])
    tables = load(out)
    acc = tables["accuracy"]
    assert len(acc) == 2 * 4 * 3 * 3
    assert not acc.duplicated(["model", "train_group", "test_group", "seed"]).any()
    assert len(tables["verification"]) == 3 * 3 and len(tables["failures"]) == 0
    ledger_records = [json.loads(p.read_text()) for p in ledger.glob("*.json")]
    assert len(ledger_records) == len(run["jobs"]) and all(r["status"] == "done" for r in ledger_records)
