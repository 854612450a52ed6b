"""The README's cluster recipe, rehearsed: `ray up` of cluster.yaml (its provider section swapped for Ray's local
provider, nothing else) on SSH servers in network namespaces of this machine, `biasgrid run` on the head, the
results brought back, `ray down` (bench/bench_ray_up.py does the work; its docstring says how). The nodes' image
already has biasgrid's libraries except Ray and biasgrid, so setup creates the venv and installs those two into
it in seconds rather than every library in minutes (the bench's default image does that). Skipped, with the
reason, where the machine does not allow it (root, sshd, network namespaces)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

import bench_ray_up  # noqa: E402


def test_the_local_variant_differs_from_cluster_yaml_only_in_provider_and_auth() -> None:
    cluster = yaml.safe_load((REPO / "cluster.yaml").read_text())
    local = bench_ray_up.local_cluster(cluster, "10.0.0.1", ["10.0.0.2", "10.0.0.3"], "me", "/k")
    bench_ray_up.checked(local)   # Ray's own validation
    changed = {k for k in cluster.keys() | local.keys() if cluster.get(k) != local.get(k)}
    assert changed == {"provider", "auth", "available_node_types", "head_node_type", "max_workers"}
    assert local["provider"] == {"type": "local", "head_ip": "10.0.0.1", "worker_ips": ["10.0.0.2", "10.0.0.3"]}
    assert local["max_workers"] == 2 and "available_node_types" not in local
    setup = " ".join(cluster["setup_commands"])
    assert "--user" not in setup and "python3 -m venv" in setup and "biasgrid-venv/bin/python -m pip install" in setup


def test_ray_up_rehearsal_runs_the_grid_on_every_node_and_leaves_nothing() -> None:
    reason = bench_ray_up.unavailable("prebuilt")
    if reason:
        pytest.skip(f"no `ray up` rehearsal on this machine: {reason}")
    try:
        report = bench_ray_up.rehearse(workers=1, image="prebuilt", seeds=2, linger=0, report_too=False)
    except bench_ray_up.Unavailable as exc:
        pytest.skip(str(exc))
    nodes = {"bgup-head", "bgup-worker1"}
    assert set(report["jobs_per_node"]) == nodes, report          # jobs ran on both machines ...
    assert set(report["accuracy_rows_per_node"]) == nodes, report
    assert sum(report["accuracy_rows_per_node"].values()) == 4 * 3 * 2   # ... and every row came back once
    assert report["venv_has_ray_and_biasgrid"] == {n: True for n in nodes}, report
    assert report["old_recipe_refused_pep668"], "the nodes' python3 should refuse pip --user (PEP 668)"
    stages = report["ray_up_stages_s"]
    assert any(s.startswith("[6/7] Running setup commands") for s in stages), stages
    assert any(s.startswith("[7/7] Starting the Ray runtime") for s in stages), stages
    assert report["left_after_ray_down"]["bgup-head"] == 0, report   # `ray down` stops the head's Ray ...
    assert report["left_after_ending_workers_ray"] == {}, report     # ... and the worker's, ended by pid
    assert report["teardown_problems"] == [], report
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()
    assert not [n for n in namespaces if n.startswith(report["sandbox"]["namespaces"].rstrip("*"))], namespaces
    assert not Path(report["sandbox"]["folder"]).exists(), "the rehearsal's folder was not removed"
