"""Executors: run job payloads in parallel and yield each :class:`tasks.run_job.Outcome` as it finishes.

- :class:`RayExecutor` (default): the shared arrays go into Ray's object store once (``ray.put``); tasks declare
  ``num_cpus``; results are collected with ``ray.wait`` as they finish; system failures (a dead worker or node)
  are retried ``max_retries`` times, a job's own exception is not (it comes back as a failed Outcome).
- :class:`LocalExecutor`: a process pool on this machine, no Ray. The embedding matrix is saved once to a
  temporary ``.npy`` that every worker memory-maps (the page cache holds one copy for all of them).
"""

from __future__ import annotations

import importlib
import logging
import multiprocessing
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from tasks.run_job import Outcome, node_name, run_job

# Quiet TensorFlow's C++ start-up chatter in workers (errors still show).
WORKER_ENV = {"TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONWARNINGS": "ignore::DeprecationWarning"}


class Executor(Protocol):
    """Runs payloads on the shared data and yields outcomes in completion order."""

    def run(self, payloads: Sequence[Mapping[str, Any]], data: Mapping[str, np.ndarray]) -> Iterator[Outcome]: ...

    def close(self) -> None: ...


# ------------------------------------------------------------------------------------------------ local ---
_WORKER_DATA: dict[str, np.ndarray] = {}


def _init_local_worker(matrix_path: str, labels: dict[str, np.ndarray], threads: int) -> None:
    os.environ.update(WORKER_ENV)
    from tasks.threads import limit_threads

    limit_threads(threads)
    _WORKER_DATA.clear()
    _WORKER_DATA.update(labels)
    if matrix_path:   # jobs without a shared matrix (data embed) get only the labels
        _WORKER_DATA["X"] = np.load(matrix_path, mmap_mode="r", allow_pickle=False)


def _run_local(payload: Mapping[str, Any]) -> Outcome:
    return run_job(payload, _WORKER_DATA)


class LocalExecutor:
    """A pool of ``workers`` processes (spawned, so TensorFlow starts clean in each)."""

    def __init__(self, workers: int, threads_per_job: int = 1) -> None:
        self.workers = max(1, workers)
        self.threads = threads_per_job
        self._tmp: str | None = None
        self._pool: ProcessPoolExecutor | None = None

    def run(self, payloads: Sequence[Mapping[str, Any]], data: Mapping[str, np.ndarray]) -> Iterator[Outcome]:
        self._tmp = tempfile.mkdtemp(prefix="biasgrid-")
        matrix_path = str(Path(self._tmp) / "X.npy") if "X" in data else ""
        if matrix_path:
            np.save(matrix_path, np.ascontiguousarray(data["X"]), allow_pickle=False)
        labels = {k: v for k, v in data.items() if k != "X"}
        self._pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                         initializer=_init_local_worker,
                                         initargs=(matrix_path, labels, self.threads))
        futures = {self._pool.submit(_run_local, p): p for p in payloads}
        pending = set(futures)
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                payload = futures.pop(fut)
                try:
                    yield fut.result()
                except Exception as exc:  # noqa: BLE001 - a crashed worker process
                    yield Outcome(payload["job_id"], error=f"{type(exc).__name__}: {exc}",
                                  traceback="", node=node_name())

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None


# -------------------------------------------------------------------------------------------------- ray ---
def _ray_job(payload: Mapping[str, Any], data: Mapping[str, np.ndarray]) -> Outcome:
    from tasks.threads import limit_threads

    limit_threads(payload["params"].get("threads", 1))
    return run_job(payload, data)


def shipped_modules(extra: Sequence[str] = ()) -> list[Any]:
    """The packages a Ray worker runs: biasgrid's worker and data layers (``tasks``, ``storage``; never the
    driver's ``grid``), plus the packages of ``extra`` ``"package.module:name"`` references (user models, the
    worker functions of job kinds from outside biasgrid)."""
    import storage
    import tasks

    modules: list[Any] = [tasks, storage]
    for name in extra:
        if ":" not in name:
            continue
        top = name.split(":", 1)[0].split(".")[0]
        if top in {"grid", "tasks", "storage"} or top in sys.stdlib_module_names:
            continue
        module = importlib.import_module(top)
        if hasattr(module, "__path__") and module not in modules:
            modules.append(module)   # a package folder: Ray ships it; a single-file module must be installed
    return modules


class RayExecutor:
    """Runs payloads as Ray tasks on a local Ray (started here) or an existing cluster (``address``)."""

    def __init__(self, address: str = "", workers: int = 0, threads_per_job: int = 1, max_retries: int = 3,
                 ship: Sequence[str] = ()) -> None:
        self.address = address
        self.workers = workers
        self.threads = threads_per_job
        self.max_retries = max_retries
        self.ship = list(ship)

    def run(self, payloads: Sequence[Mapping[str, Any]], data: Mapping[str, np.ndarray]) -> Iterator[Outcome]:
        import ray

        extra = [*self.ship, *{p["run"] for p in payloads}]
        runtime_env = {"py_modules": shipped_modules(extra), "env_vars": dict(WORKER_ENV)}
        init_args: dict[str, Any] = {"runtime_env": runtime_env, "log_to_driver": False,
                                     "logging_level": logging.WARNING, "configure_logging": True}
        if self.address:
            init_args["address"] = self.address
        else:   # "local": a Ray of our own, even when RAY_ADDRESS or a running `ray start` would be found
            init_args.update(address="local", num_cpus=self.workers or None, include_dashboard=False)
        ray.init(**init_args)
        data_ref = ray.put(dict(data))
        remote = ray.remote(_ray_job).options(num_cpus=self.threads, max_retries=self.max_retries,
                                               retry_exceptions=False)
        pending = {remote.remote(p, data_ref): p for p in payloads}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                payload = pending.pop(ref)
                try:
                    yield ray.get(ref)
                except ray.exceptions.RayError as exc:  # lost beyond its retries, or the worker crashed
                    yield Outcome(payload["job_id"], error=f"{type(exc).__name__}: {exc}", traceback="",
                                  node="")

    def close(self) -> None:
        import ray

        if ray.is_initialized():
            ray.shutdown()


EXECUTORS: dict[str, Callable[[Mapping[str, Any], Sequence[str]], Executor]] = {
    "ray": lambda run, ship: RayExecutor(run["address"], run["workers"], run["threads_per_job"], run["max_retries"],
                                         ship),
    "local": lambda run, ship: LocalExecutor(run["workers"], run["threads_per_job"]),
}


def make_executor(run_cfg: Mapping[str, Any], ship: Sequence[str] = ()) -> Executor:
    """The executor named in the ``[run]`` section of a resolved config (``ship``: user packages, e.g. models)."""
    return EXECUTORS[run_cfg["executor"]](run_cfg, ship)
