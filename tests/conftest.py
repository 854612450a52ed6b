"""Shared test helpers. Tests leave the machine as they found it: every Ray a test starts lives in the test
session's own temporary folder (``RAY_TMPDIR``) on its own ports, and is ended through the processes the test
started (never a machine-wide stop or kill), so a user's own Ray cluster beside the suite is untouched.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

import browser

REPO = Path(__file__).resolve().parents[1]
# Tests that render a report in Qt WebEngine (tests/browser.py): a developer's run without it skips; CI installs the
# test extra, so there a missing engine fails instead.
needs_browser = pytest.mark.skipif(not browser.available() and not os.environ.get("CI"),
                                   reason="Qt WebEngine (PySide6-WebEngine) is not installed: pip install -e '.[test]'")
RAY = str(Path(sys.executable).parent / "ray")


# ------------------------------------------------------------------------------------------ serial tests ---
# Under pytest-xdist (pyproject's addopts: 2 workers) tests run two at a time. A test marked ``serial`` runs with
# no other test of the session beside it: every biasgrid driver removes the leftovers of drivers that died (any
# driver of the machine, by design), so a test that kills a driver and checks that *its* next run removes and
# names what was left, or that plants a dead driver's leftovers, cannot share the machine with another run.
# Every test holds a shared lock for its whole protocol (module fixtures included), a serial test the exclusive
# one; a second lock (the turnstile) keeps the other worker's next tests from starving a waiting serial test.
def _lock_files(config: pytest.Config) -> tuple[Path, Path] | None:
    """The two lock files, in the session's temporary folder that its workers share (a worker's basetemp is a
    folder in it, removed by pytest like every session's); None without workers (one process: nothing beside)."""
    if not hasattr(config, "workerinput"):
        return None
    shared = Path(config.option.basetemp).parent
    return shared / "serial.turnstile", shared / "serial.lock"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None):
    files = _lock_files(item.config)
    if files is None:
        return (yield)
    serial = item.get_closest_marker("serial") is not None
    with open(files[0], "a") as turnstile, open(files[1], "a") as lock:
        fcntl.flock(turnstile, fcntl.LOCK_EX)
        fcntl.flock(lock, fcntl.LOCK_EX if serial else fcntl.LOCK_SH)
        fcntl.flock(turnstile, fcntl.LOCK_UN)
        try:
            return (yield)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@pytest.fixture(scope="session", autouse=True)
def private_ray_folder() -> Iterator[str]:
    """A short temporary folder for every Ray this session starts (Unix socket paths must stay short), set as
    RAY_TMPDIR for the tests and the processes they spawn; removed at the end."""
    folder = tempfile.mkdtemp(prefix="bgray-", dir="/tmp")
    before = os.environ.get("RAY_TMPDIR")
    os.environ["RAY_TMPDIR"] = folder
    try:
        yield folder
    finally:
        if before is None:
            os.environ.pop("RAY_TMPDIR", None)
        else:
            os.environ["RAY_TMPDIR"] = before
        shutil.rmtree(folder, ignore_errors=True)


def biasgrid(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """``biasgrid ARGS`` run in this process (grid.cli.main, the console script's entry point), for a test that
    needs no process of its own: its exit code and what it prints, as a CompletedProcess. Saves the 3-5 s import
    of the whole stack that each ``python -m grid.cli`` pays. What it prints is what a process of its own would
    print, in the same order: sys.stdout and sys.stderr write to file descriptors 1 and 2, which are files of this
    call meanwhile (what its worker processes write lands there too); Python warnings are shown as Python shows
    them (its default filters, once per place; not recorded by pytest), logged warnings too (Python's last-resort
    handler: pytest's handlers are set aside meanwhile); an argparse error's SystemExit is its exit code.
    A command that gets as far as starting Ray is refused (AssertionError): Ray in the test process would keep the
    token of the node it first joined, and a later Ray run of this process could not connect; such a command runs
    in a process of its own."""
    import logging
    import warnings

    from grid.cli import main

    before = os.getcwd()
    ray_before = ("ray" in sys.modules, os.environ.get("RAY_AUTH_TOKEN"))
    with tempfile.TemporaryFile() as fd_out, tempfile.TemporaryFile() as fd_err, contextlib.ExitStack() as stack:
        sys.stdout.flush()
        sys.stderr.flush()
        saved = os.dup(1), os.dup(2)
        # sys.stdout and sys.stderr write straight to fds 1 and 2, which are files of this call: what the command
        # and its worker processes print lands in order, as in the pipes of a process of its own
        out = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), "utf-8", write_through=True)
        err = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), "utf-8", "backslashreplace",
                               write_through=True)
        try:
            os.dup2(fd_out.fileno(), 1)
            os.dup2(fd_err.fileno(), 2)
            if cwd is not None:
                os.chdir(cwd)
            root = logging.getLogger()
            handlers, root.handlers = root.handlers, []   # pytest's: without them, as in a process of its own,
            stack.callback(setattr, root, "handlers", handlers)   # a warning logged goes to sys.stderr
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), warnings.catch_warnings():
                warnings.resetwarnings()   # Python's default filters (python -m grid.cli, no -W)
                warnings.filterwarnings("default", category=DeprecationWarning, module="__main__")
                for category in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
                    warnings.filterwarnings("ignore", category=category)
                warnings.showwarning = warnings._showwarning_orig   # to sys.stderr, not pytest's record
                try:
                    code = main(list(args))
                except SystemExit as exc:
                    code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
                    if isinstance(exc.code, str):
                        print(exc.code, file=sys.stderr)   # as Python does when a process exits so
        finally:
            out.flush()
            err.flush()
            os.chdir(before)
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
        fd_out.seek(0)
        fd_err.seek(0)
        stdout = fd_out.read().decode("utf-8", errors="replace")
        stderr = fd_err.read().decode("utf-8", errors="replace")
    assert ray_before == ("ray" in sys.modules or ray_before[0], os.environ.get("RAY_AUTH_TOKEN")), (
        f"biasgrid {' '.join(args)} started Ray in the test process: run it in a process of its own")
    return subprocess.CompletedProcess(["biasgrid", *args], code, stdout, stderr)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (children, their children, ...), read from /proc."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parents.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return [p for p in found if alive(p)]


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def end_processes(pids: list[int], grace: float = 30.0) -> None:
    """SIGTERM each of ``pids`` (processes this test started), then SIGKILL what is left after ``grace`` s."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            if alive(pid):
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
        deadline = time.time() + grace
        while time.time() < deadline and any(alive(p) for p in pids):
            time.sleep(0.2)


def ray_env(fast_failure_detection: bool = False) -> dict[str, str]:
    """Environment for Ray processes of a test: token authentication with a token of this session, no usage
    stats, biasgrid importable; with ``fast_failure_detection`` a dead node is noticed within about 10 s
    (Ray's default is about 30 s; much shorter settings misfire on a loaded machine)."""
    token = os.environ.get("BIASGRID_TEST_RAY_TOKEN") or secrets.token_hex(16)
    os.environ["BIASGRID_TEST_RAY_TOKEN"] = token
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token, "RAY_USAGE_STATS_ENABLED": "0",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    if fast_failure_detection:
        env.update({"RAY_health_check_period_ms": "1000", "RAY_health_check_failure_threshold": "10",
                    "RAY_health_check_timeout_ms": "2000"})
    return env


class RayNode:
    """One Ray node this test starts with ``ray start --block`` on free ports; ended by signalling that process
    (which drains and stops every process of the node) and, if need be, killing what it left. A head node has a
    temporary folder of its own (its worker nodes use it too), removed when it stops: ``ray start`` writes the
    node's address to ``ray_current_cluster`` in its folder and leaves it there when it ends, and a later
    ``ray.init()`` in Ray's default folder would try to join that node, live or gone."""

    def __init__(self, ip: str, head_address: str | None = None, env: dict[str, str] | None = None,
                 resources: dict[str, float] | None = None) -> None:
        self.ip = ip
        self.port = free_port()
        self.node_manager_port = free_port()
        self.address = head_address or f"{ip}:{self.port}"
        self.env = env or ray_env()
        self.temp_dir = None if head_address else tempfile.mkdtemp(prefix="node-", dir=os.environ.get("RAY_TMPDIR"))
        role = ["--head", f"--port={self.port}", "--include-dashboard=false", f"--temp-dir={self.temp_dir}",
                f"--ray-client-server-port={free_port()}"] if head_address is None else [f"--address={head_address}"]
        ports = [f"--node-manager-port={self.node_manager_port}", f"--object-manager-port={free_port()}",
                 f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}",
                 f"--metrics-export-port={free_port()}", f"--runtime-env-agent-port={free_port()}"]
        self.proc = subprocess.Popen([RAY, "start", "--block", *role, *ports, f"--node-ip-address={ip}",
                                      "--num-cpus=1", "--disable-usage-stats",
                                      *([f"--resources={json.dumps(resources)}"] if resources else [])], env=self.env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)

    def wait_ready(self, timeout: float = 120.0) -> None:
        """Until the node's raylet runs (RuntimeError if ``ray start`` exits first)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ray start on {self.ip} exited with {self.proc.returncode}")
            if self.raylet_pid() is not None:
                return
            time.sleep(0.3)
        raise RuntimeError(f"the Ray node on {self.ip} did not start within {timeout:.0f} s")

    def _named(self, names: set[str]) -> list[int]:
        found = []
        for pid in descendants(self.proc.pid):
            try:
                if Path(f"/proc/{pid}/comm").read_text().strip() in names:
                    found.append(pid)
            except OSError:
                continue
        return found

    def raylet_pid(self) -> int | None:
        found = self._named({"raylet"})
        return found[0] if found else None

    def core_pids(self) -> list[int]:
        """``ray start`` and the node's GCS server and raylet (the processes that live as long as the node)."""
        return [self.proc.pid, *self._named({"raylet", "gcs_server"})]

    def pids(self) -> list[int]:
        """The processes of this node: ``ray start`` and everything below it."""
        return [self.proc.pid, *descendants(self.proc.pid)]

    def stop(self) -> None:
        started = self.pids()
        end_processes([self.proc.pid])
        self.proc.wait(timeout=60)
        end_processes(started, grace=10.0)   # anything the node left behind; only this node's own processes
        for _ in range(40) if self.temp_dir else ():   # its last processes may still be writing logs as they exit
            shutil.rmtree(self.temp_dir, ignore_errors=True)
            if not os.path.exists(self.temp_dir):
                break
            time.sleep(0.25)


def kill_midway(argv: list[str], ready: Callable[[], bool], timeout: float = 300.0) -> None:
    """Run ``biasgrid ARGV`` until ``ready()`` holds, then SIGKILL the driver at that arbitrary instant, as `kill -9
    <pid>` does. Its workers and helper processes (which this test started) must then end by themselves, as
    biasgrid promises: AssertionError if any is alive 15 s later (it is ended first). AssertionError also when the
    command ends before ``ready()`` holds (give it more work)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.Popen([sys.executable, "-m", "grid.cli", *argv], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None and not ready():
        time.sleep(0.05)
    assert proc.poll() is None, f"the command ended (exit {proc.returncode}) before it was killed: give it more work"
    below = descendants(proc.pid)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 15
    while time.time() < deadline and any(alive(p) for p in below):
        time.sleep(0.2)
    left = [p for p in below if alive(p)]
    end_processes(left)
    assert not left, f"processes of the killed run still alive 15 s after the kill: {left}"


def eer_from_roc(fpr: np.ndarray, fnr: np.ndarray, thresholds: np.ndarray) -> tuple[float, float]:
    """An independent EER: where FMR - FNMR changes sign on scikit-learn's ROC, interpolated linearly."""
    d = fpr - fnr
    k = int(np.flatnonzero(d >= 0)[0])
    w = d[k - 1] / (d[k - 1] - d[k])
    t0, t1 = thresholds[k - 1], thresholds[k]
    return float(fpr[k - 1] + w * (fpr[k] - fpr[k - 1])), float(t1 if not np.isfinite(t0) else t0 + w * (t1 - t0))


def eer_sklearn(genuine: np.ndarray, impostor: np.ndarray) -> float:
    """The EER of scikit-learn's ROC of these scores (:func:`eer_from_roc`)."""
    from sklearn.metrics import roc_curve
    fpr, tpr, thr = roc_curve(np.r_[np.ones(len(genuine)), np.zeros(len(impostor))], np.r_[genuine, impostor],
                              drop_intermediate=False)
    return eer_from_roc(fpr, 1.0 - tpr, thr)[0]


def convention_threshold(imp: np.ndarray, x: float) -> float:
    """Smallest impostor score v with #{imp >= v} <= floor(x n) (exact rational x); +inf if none."""
    m = int(Fraction(str(x)) * len(imp))
    values = np.unique(imp)
    at_least = len(imp) - np.searchsorted(np.sort(imp), values, side="left")   # #{imp >= v} for each value v
    ok = values[at_least <= m]
    return float(ok.min()) if len(ok) else np.inf


def accepted(scores: np.ndarray, t: float, eps: float = 1e-5) -> range:
    """The possible #{scores >= t} for a threshold read back from the store: the job scores in float32, the test
    in float64, so a score within ``eps`` of t may fall either side (the range is a handful wide, not more)."""
    lo, hi = int((scores >= t + eps).sum()), int((scores >= t - eps).sum())
    assert hi - lo <= 8, "test data has too many scores at the threshold to compare float32 with float64"
    return range(lo, hi + 1)
