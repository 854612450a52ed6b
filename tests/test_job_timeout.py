"""run.job_timeout: a job whose worker stops responding (SIGSTOP) is recorded as failed after its timeout and the
worker is killed and replaced; the other jobs finish, and the same run again completes it. Both executors, in
process (so that the test can see which worker runs which job), a plug-in model slow enough to be caught."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import alive
from test_executors import SLOW

from grid.config import resolve_config
from grid.executors import LocalExecutor, RayExecutor, make_executor
from grid.runner import run_grid
from storage.errors import InputError
from storage.results import ResultStore

TIMEOUT = 15.0   # seconds: far above a job's 2 s here, even on a loaded machine


def config(out: Path, executor: str) -> dict:
    return resolve_config(None, {
        "data.synth": {"identities_per_group": 16, "dim": 8}, "grid.models": ["slowmodels:build"],
        "grid.seeds": "1", "grid.train_groups": ["asian", "black", "all"], "grid.test_groups": ["asian", "black"],
        "protocol.train_per_gender": 6, "protocol.test_per_gender": 4, "verification.enabled": False,
        "tsne.enabled": False, "run.executor": executor, "run.workers": 2, "run.report": False,
        "run.job_timeout": {"cell": TIMEOUT}, "run.out": str(out)})


@pytest.fixture
def slow_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "slowmodels").mkdir()
    (tmp_path / "slowmodels" / "__init__.py").write_text(SLOW)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("SLOW_SECONDS", "2")
    yield
    sys.modules.pop("slowmodels", None)


def stop_first_job(executor: LocalExecutor | RayExecutor, stopped: dict[str, int],
                   sig: signal.Signals = signal.SIGSTOP) -> None:
    """Send ``sig`` to the worker of the first job seen running; note it in ``stopped``."""
    deadline = time.time() + 300
    while time.time() < deadline:
        busy = executor.busy()
        if busy:
            job_id, pid = next(iter(busy.items()))
            os.kill(pid, sig)
            stopped[job_id] = pid
            return
        time.sleep(0.02)


def stopped_run(out: str, executor_name: str) -> dict:
    """The grid run with the worker of the first running job stopped (SIGSTOP), then run again with
    ``rerun_failed``: what the test checks. Runs in a process of its own (see the test)."""
    cfg = config(Path(out), executor_name)
    executor = make_executor(cfg["run"], cfg["grid"]["models"])
    stopped: dict[str, int] = {}
    stopper = threading.Thread(target=stop_first_job, args=(executor, stopped), daemon=True)
    stopper.start()
    try:
        summary = run_grid(cfg, progress=False, executor=executor)
        stopper.join()
        left_alive = [pid for pid in stopped.values() if alive(pid)]   # the executor must have killed it
    finally:
        for pid in stopped.values():   # a worker this test stopped, if the executor had not killed it
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
    failures = pd.read_parquet(Path(out) / "failures")
    before = {"failure_ids": list(failures["job_id"]), "failure_errors": list(failures["error"]),
              "ledger": sorted(r["status"] for r in ResultStore(out).ledger().values())}
    again = run_grid(config(Path(out), executor_name), rerun_failed=True, progress=False)
    return {"stopped": stopped, "left_alive": left_alive, "exit_code": summary.exit_code, "ran": summary.ran,
            "failed": summary.failed, **before, "again_exit_code": again.exit_code, "again_ran": again.ran}


@pytest.mark.parametrize("executor_name", ["local", "ray"])
def test_a_stopped_worker_is_replaced_after_the_job_timeout(tmp_path: Path, executor_name: str) -> None:
    """In a process of its own, as users run biasgrid (Ray, once imported by an earlier test of this process,
    would not take our node's token)."""
    (tmp_path / "slowmodels").mkdir()
    (tmp_path / "slowmodels" / "__init__.py").write_text(SLOW)
    out = tmp_path / "r"
    code = ("import json, test_job_timeout as t; "
            f"print('RESULT', json.dumps(t.stopped_run({str(out)!r}, {executor_name!r})))")
    path = os.pathsep.join(p for p in (str(tmp_path), str(Path(__file__).parent), os.environ.get("PYTHONPATH"))
                           if p)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": path, "SLOW_SECONDS": "2"},
                          cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.split("RESULT ", 1)[1])
    assert len(result["stopped"]) == 1, "no job was seen running"
    (job_id, pid), = result["stopped"].items()
    assert result["exit_code"] == 1 and result["ran"] == 3, result
    assert len(result["failed"]) == 1 and f"job exceeded run.job_timeout = {TIMEOUT:g} s" in result["failed"][0]
    assert result["left_alive"] == []                  # killed by the executor (a new worker took its place)
    assert result["failure_ids"] == [job_id] and "run.job_timeout" in result["failure_errors"][0]
    assert result["ledger"] == ["done", "done", "failed"]
    assert result["again_exit_code"] == 0 and result["again_ran"] == 1   # only the timed-out job ran again
    ledger = ResultStore(out).ledger()
    assert sorted(r["status"] for r in ledger.values()) == ["done", "done", "done"]
    assert len(pd.read_parquet(out / "accuracy")) == 3 * 2


def test_a_local_worker_that_dies_fails_its_job_only(tmp_path: Path, slow_model: None) -> None:
    """A pool worker killed (SIGKILL) midway: its job fails naming the death, a new worker runs the others."""
    out = tmp_path / "r"
    cfg = config(out, "local")
    executor = make_executor(cfg["run"], cfg["grid"]["models"])
    killed: dict[str, int] = {}
    killer = threading.Thread(target=stop_first_job, args=(executor, killed, signal.SIGKILL), daemon=True)
    killer.start()
    summary = run_grid(cfg, progress=False, executor=executor)
    killer.join()
    (job_id, pid), = killed.items()
    assert summary.exit_code == 1 and summary.ran == 3 and len(summary.failed) == 1, summary
    assert "the worker process running it died (exit code -9)" in summary.failed[0]
    assert list(pd.read_parquet(out / "failures")["job_id"]) == [job_id]
    assert sorted(r["status"] for r in ResultStore(out).ledger().values()) == ["done", "done", "failed"]


@pytest.mark.parametrize("value, named", [
    (0, "'run.job_timeout' must be a positive number"), (float("inf"), "'run.job_timeout' must be a positive"),
    ({"cell": -1}, "'run.job_timeout.cell' must be a positive"),
    ({"cel": 9}, "'run.job_timeout.cel' names no job kind"),
    ("soon", "'run.job_timeout' must be a positive"),
])
def test_a_bad_job_timeout_is_refused_naming_it(tmp_path: Path, value, named: str) -> None:
    toml = tmp_path / "c.toml"
    text = (f"job_timeout = {{{', '.join(f'{k} = {v}' for k, v in value.items())}}}" if isinstance(value, dict)
            else f"job_timeout = {value!r}".replace("'", '"') if isinstance(value, str)
            else f"job_timeout = {'inf' if value == float('inf') else value}")
    toml.write_text(f"[run]\n{text}\n")
    with pytest.raises(InputError, match=named):
        resolve_config(toml, {"run.out": str(tmp_path / "r")})
    assert not (tmp_path / "r").exists()


def test_job_timeout_is_one_number_or_a_table_per_kind(tmp_path: Path) -> None:
    toml = tmp_path / "c.toml"
    toml.write_text("[run]\njob_timeout = 90\n")
    assert set(resolve_config(toml)["run"]["job_timeout"].values()) == {90.0}
    toml.write_text("[run]\njob_timeout = {allpairs = 7200}\n")
    timeouts = resolve_config(toml)["run"]["job_timeout"]
    assert timeouts["allpairs"] == 7200.0 and timeouts["cell"] == 3600.0
