"""Executors leave nothing behind: a driver killed by SIGKILL or SIGTERM leaves no process of its run alive
(pool workers watch their parent; a local Ray node gets a parent-death signal), its shared-memory segments and
temporary folders are gone after the next run (which says what it removed), and the local executor removes its
shared data after a normal run, a failed job and Ctrl-C. Real drivers (``python -m grid.cli run``), real
processes, tiny grids."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, alive, descendants

from grid.executors import PREFIX, SHM_DIR, LocalExecutor, leftovers, owner_prefix, remove_leftovers
from storage.results import load

GRID = """
[data.synth]
identities_per_group = 30
dim = 32
[grid]
seeds = 2
models = ["logreg"]
[protocol]
train_per_gender = 10
test_per_gender = 8
[verification]
enabled = false
[tsne]
enabled = false
[run]
workers = 2
report = false
"""

# A plug-in model that takes a while (so that a run can be interrupted midway) and fails for seed 1 when asked.
SLOW = '''
import os
import time


class Projection:
    """Projects on the difference of the class means, thresholded halfway."""

    def __init__(self, seed):
        self.seed = seed

    def fit(self, X, y):
        if self.seed == 1 and os.environ.get("SLOW_FAIL_SEED_1"):
            raise RuntimeError("planted failure for seed 1")
        time.sleep(float(os.environ.get("SLOW_SECONDS", "1")))
        female, male = X[y == 1].mean(axis=0), X[y == 0].mean(axis=0)
        self.w, self.b = female - male, (female + male) @ (female - male) / 2
        return self

    def predict(self, X):
        return (X @ self.w > self.b).astype(int)


def build(config, seed, threads):
    return Projection(seed)
'''


def ours(pid: int) -> list[Path]:
    """Segments and temporary folders named after driver ``pid``."""
    roots = [SHM_DIR, Path("/tmp"), Path(os.environ.get("TMPDIR", "/tmp"))]
    return sorted({p for root in roots if root.is_dir() for p in root.glob(f"{PREFIX}{pid}-*")})


def start_driver(tmp_path: Path, executor: str, *extra: str, env_extra: dict[str, str] | None = None,
                 seeds: int = 2, models: str = "slowmodels:build") -> tuple[subprocess.Popen, list[str], dict]:
    (tmp_path / "slowmodels").mkdir(exist_ok=True)
    (tmp_path / "slowmodels" / "__init__.py").write_text(SLOW)
    (tmp_path / "grid.toml").write_text(GRID)
    args = [sys.executable, "-m", "grid.cli", "run", "--config", str(tmp_path / "grid.toml"), "--executor",
            executor, "--out", str(tmp_path / "r"), "--seeds", str(seeds), "--models", models, "--quiet", *extra]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO)]), **(env_extra or {})}
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    return proc, args, env


def wait_for_jobs(proc: subprocess.Popen, out: Path, n: int = 1, timeout: float = 300) -> None:
    """Until ``n`` jobs are stored (the workers run), failing if the driver exits first."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, f"the run ended before it could be interrupted: {proc.communicate()[1][-2000:]}"
        if len(list((out / "_jobs").glob("*.json"))) >= n if (out / "_jobs").exists() else False:
            return
        time.sleep(0.05)
    raise AssertionError("no job finished in time")


def wait_gone(pids: list[int], timeout: float = 60) -> list[int]:
    """Poll until none of ``pids`` runs (or ``timeout``); the ones still running."""
    deadline = time.time() + timeout
    while time.time() < deadline and any(alive(p) for p in pids):
        time.sleep(0.2)
    return [p for p in pids if alive(p)]


def kill_leftover(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.mark.serial   # the next run must be the one that finds and names what the killed driver left
@pytest.mark.parametrize("executor,sig", [("local", signal.SIGKILL), ("local", signal.SIGTERM),
                                          ("ray", signal.SIGKILL), ("ray", signal.SIGTERM)])
def test_a_killed_driver_leaves_no_process_and_the_next_run_cleans_up(tmp_path: Path, executor: str,
                                                                        sig: signal.Signals) -> None:
    out = tmp_path / "r"
    proc, args, env = start_driver(tmp_path, executor, env_extra={"SLOW_SECONDS": "2"}, seeds=3)
    wait_for_jobs(proc, out)
    below = descendants(proc.pid)
    assert len(below) >= 2, below   # the workers (and for Ray, its node) run below the driver
    segments = ours(proc.pid)
    assert segments, "the run's shared data (segment or temporary folder) should exist while it runs"
    os.kill(proc.pid, sig)          # the driver only, not its process group
    _, stderr = proc.communicate(timeout=120)
    left = wait_gone(below)
    kill_leftover(left)
    assert left == [], f"processes of the killed run still running: {left}"
    if sig == signal.SIGTERM:       # the driver cleaned up after itself
        assert proc.returncode == 130 and "interrupted" in stderr, stderr[-3000:]   # handled as Ctrl-C
        assert ours(proc.pid) == [], stderr[-3000:]
        return
    # after a SIGKILL, the next run (resuming, on the local executor) removes what is left and says so
    result = subprocess.run([*args[:args.index("--executor") + 1], "local", *args[args.index("--executor") + 2:]],
                            env={**env, "SLOW_SECONDS": "0"}, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert ours(proc.pid) == []
    if executor == "ray":           # the node's folder was left: the next run names it
        assert any(str(p) in result.stderr for p in segments), result.stderr[-2000:]
    assert len(load(out)["accuracy"]) == 4 * 3 * 3


def test_local_executor_removes_its_shared_data_after_a_run_a_failed_job_and_ctrl_c(tmp_path: Path) -> None:
    out = tmp_path / "r"
    # a run with a failed job (seed 1 of the plug-in model): exit 1, nothing of it left
    proc, args, env = start_driver(tmp_path, "local", env_extra={"SLOW_SECONDS": "0", "SLOW_FAIL_SEED_1": "1"},
                                   models="logreg,slowmodels:build")
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 1 and "planted failure for seed 1" in stderr, stderr[-3000:]
    assert ours(proc.pid) == []
    # Ctrl-C midway (SIGINT to the driver only): exit 130, no worker left, no shared data left
    proc, args, env = start_driver(tmp_path, "local", "--rerun-failed", env_extra={"SLOW_SECONDS": "2"}, seeds=4)
    wait_for_jobs(proc, out, n=len(list((out / "_jobs").glob("*.json"))) + 1)
    below = descendants(proc.pid)
    assert ours(proc.pid), "the run's shared-memory segment should exist while it runs"
    os.kill(proc.pid, signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr[-3000:]
    left = wait_gone(below, timeout=10)
    kill_leftover(left)
    assert left == [] and ours(proc.pid) == []
    # a normal run (in a new results folder): exit 0, nothing left
    clean = args.copy()
    clean[clean.index("--out") + 1] = str(tmp_path / "clean")
    result = subprocess.Popen(clean, env={**env, "SLOW_SECONDS": "0"}, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    _, stderr = result.communicate(timeout=300)
    assert result.returncode == 0, stderr[-3000:]
    assert ours(result.pid) == []
    assert len(load(tmp_path / "clean")["accuracy"]) == 4 * 4 * 3


def test_local_executor_shares_the_matrix_through_shared_memory(tmp_path: Path) -> None:
    """In-process: the workers read the driver's matrix from one segment, which close() removes."""
    rng = np.random.default_rng(0)
    data = {"X": rng.normal(size=(50, 8)).astype(np.float32), "gender": rng.integers(0, 2, 50),
            "identity": np.asarray([f"id{i}" for i in range(50)], dtype=object)}
    executor = LocalExecutor(workers=1)
    executor.start()
    try:
        where = executor.share(data)
        assert "shm" in where and (SHM_DIR / where["shm"]).exists()
        from grid.executors import _worker_data

        seen = _worker_data(where)
        np.testing.assert_array_equal(seen["X"], data["X"])
        assert list(seen["identity"]) == list(data["identity"]) and not seen["X"].flags.writeable
    finally:
        executor.close()
    assert not (SHM_DIR / where["shm"]).exists()


@pytest.mark.serial   # another run beside would remove the planted leftovers (and this test its real ones)
def test_leftovers_of_dead_drivers_are_found_and_those_of_live_ones_kept(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    stale_dir = Path(f"/tmp/{PREFIX}{dead}-test")
    stale_dir.mkdir()
    stale_segment = SHM_DIR / f"{PREFIX}{dead}-test"
    stale_segment.write_bytes(b"x")
    tagged = SHM_DIR / f"{owner_prefix().replace(str(os.getpid()), dead, 1)}test"   # as a dead driver names it
    tagged.write_bytes(b"x")
    foreign = SHM_DIR / f"{PREFIX}{dead}-n1-test"   # of a driver in another PID namespace: not ours to judge
    foreign.write_bytes(b"x")
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    live_dir = Path(f"/tmp/{PREFIX}{live.pid}-test")
    live_dir.mkdir()
    try:
        assert {stale_dir, stale_segment, tagged} <= set(leftovers()) and live_dir not in leftovers()
        assert foreign not in leftovers()
        removed = remove_leftovers(quiet=True)
        assert {stale_dir, stale_segment, tagged} <= set(removed)
        assert not stale_dir.exists() and not stale_segment.exists() and live_dir.exists() and foreign.exists()
    finally:
        live.kill()
        live.wait()
        live_dir.rmdir()
        for path in (stale_segment, tagged, foreign):
            path.unlink(missing_ok=True)
        if stale_dir.exists():
            stale_dir.rmdir()


def test_a_driver_in_another_pid_namespace_keeps_our_live_segments() -> None:
    """A container sharing /dev/shm (its own PID namespace: our pids invisible there) must not take this driver's
    live segment for a dead driver's (tested where unshare --pid works: root)."""
    probe = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip("unshare --pid is not available here (needs root)")
    segment = SHM_DIR / f"{owner_prefix()}live-test"
    segment.write_bytes(b"x")
    try:
        code = ("from grid.executors import leftovers; import sys; "
                f"sys.exit(3 if any(p.name == {segment.name!r} for p in leftovers()) else 0)")
        inside = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", sys.executable, "-c", code],
                                capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
        assert inside.returncode == 0, inside.stderr[-2000:] or "the other namespace took our live segment"
        assert segment.exists()
    finally:
        segment.unlink(missing_ok=True)


# A local Ray node whose first ``sys.argv[1]`` launches are a process that exits at once (as `ray start` does when
# a port it was given is taken by then), then the real `ray start`.
FLAKY_NODE = '''
import sys
from grid import executors


class Flaky(executors.LocalRayNode):
    failures = int(sys.argv[1])

    def _launch(self):
        if Flaky.failures:
            Flaky.failures -= 1
            self.proc = executors.subprocess.Popen([sys.executable, "-c", "raise SystemExit(7)"])
            return
        super()._launch()


node = Flaky(num_cpus=1)
try:
    node.wait_ready(timeout=120)
    print("READY", node.address, flush=True)
except executors.EnvironmentFailure as exc:
    print("FAILED", exc, flush=True)
finally:
    node.stop()
'''


@pytest.mark.parametrize("failures", [2, 3])
def test_a_local_ray_node_that_exits_as_it_starts_is_started_again(tmp_path: Path, failures: int) -> None:
    """Two early exits: the third start comes up (on ports Ray chose); three: exit-3 failure naming the attempts."""
    script = tmp_path / "flaky.py"
    script.write_text(FLAKY_NODE)
    done = subprocess.run([sys.executable, str(script), str(failures)], cwd=REPO, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr[-2000:]
    if failures < 3:
        assert "READY 127.0.0.1:" in done.stdout and int(done.stdout.split(":")[-1]) > 0
        assert done.stderr.count("starting it again") == failures
    else:
        assert "FAILED the local Ray node could not start (3 attempts; ray start exited with 7)" in done.stdout


# A program that imported Ray, or connected to it, before it runs a grid: a notebook's `import ray` / `ray.init()`.
BEFORE_RAY = '''
import json, sys
import ray
if sys.argv[2] == "init":
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
from grid.config import resolve_config
from grid.runner import run_grid

cfg = resolve_config(sys.argv[3], {"run.out": sys.argv[1], "run.executor": "ray"})
summary = run_grid(cfg, progress=False)
print(json.dumps({"ran": summary.ran, "failed": len(summary.failed), "connected": ray.is_initialized(),
                  "node": ray.get_runtime_context().get_node_id() if ray.is_initialized() else ""}))
'''


@pytest.mark.parametrize("before", ["import", "init"])
def test_a_program_that_imported_or_connected_ray_first_runs_its_grid(tmp_path: Path, before: str) -> None:
    """`import ray` first: Ray has read its settings without our node's token, and must still connect to that
    node (it was refused until the token settings were read again). `ray.init()` first: the grid runs on that
    connection (its node), which stays open after the run; no node of our own is started."""
    (tmp_path / "grid.toml").write_text(GRID)
    script = tmp_path / "before.py"
    script.write_text(BEFORE_RAY)
    done = subprocess.run([sys.executable, str(script), str(tmp_path / "r"), before, str(tmp_path / "grid.toml")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["failed"] == 0 and result["ran"] == len(list((tmp_path / "r" / "_jobs").glob("*.json"))) > 0
    nodes = set(load(tmp_path / "r")["accuracy"]["node"])
    assert "InvalidAuthToken" not in done.stderr
    if before == "init":
        assert result["connected"] and "running on the Ray cluster this program is connected to" in done.stderr
        assert {n.split("/")[-1] for n in nodes} == {result["node"][:12]}   # the jobs ran on the program's node
    else:
        assert not result["connected"] and "connected to" not in done.stderr


def test_the_workers_compile_the_mlp_shapes_of_the_grid(tmp_path: Path) -> None:
    """The shapes come from the config (the synthetic data's width, or what a table's schema declares; the
    grid's fast-trained MLP models and variants), and a worker of our own Ray node compiles exactly those as it
    starts (the setting it reads from its environment)."""
    from grid.config import resolve_config
    from grid.executors import PREPARE_ENV
    from grid.runner import warm_shapes
    from storage.synth import SynthParams, generate
    from storage.table import write_table

    cfg = {"run.out": str(tmp_path / "r")}
    assert warm_shapes(resolve_config(None, cfg)) == [(2048, (60, 60), 5)]
    grid = tmp_path / "grid.toml"
    grid.write_text('[data.synth]\ndim = 24\n[grid]\nmodels = ["mlp", "wide", "slow", "xgboost"]\n'
                    '[model.wide]\nbase = "mlp"\nhidden_units = [8]\nbatch_size = 3\n'
                    '[model.slow]\nbase = "mlp"\ntrainer = "fit"\n')
    assert warm_shapes(resolve_config(str(grid), cfg)) == [(24, (60, 60), 5), (24, (8,), 3)]
    write_table(generate(SynthParams(identities_per_group=4, dim=12)), tmp_path / "t.parquet")
    assert warm_shapes(resolve_config(None, {**cfg, "data.path": str(tmp_path / "t.parquet")}))[0][0] == 12
    (tmp_path / "e.csv").write_text("identity,embedding\n")
    assert warm_shapes(resolve_config(None, {**cfg, "data.path": str(tmp_path / "e.csv")})) is None

    show = "import json, grid.executors; from tasks.models import mlp; print(json.dumps(sorted(mlp._WARM)))"
    env = {**os.environ, "PYTHONPATH": str(REPO), PREPARE_ENV: json.dumps([1, ["mlp"], [[19, [6], 3]]])}
    done = subprocess.run([sys.executable, "-c", show], cwd=REPO, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == [[19, [6], 3]]
