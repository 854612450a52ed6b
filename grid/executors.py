"""Executors: run job payloads in parallel and yield each :class:`tasks.runtime.Outcome` as it finishes.

The runner calls ``start()`` first, before it loads the data and plans, so that Ray or the worker processes start
while the driver prepares; then ``run(payloads, data)``; then ``close()``, on every exit path.

- :class:`RayExecutor` (default): without an address it starts a Ray node of its own as a child process (``ray
  start --head --block`` on free ports, its own temporary folder, token authentication with a token made for
  this process, a parent-death signal so that it stops whenever the driver dies) and connects to it in ``run``
  from the main thread (Ray keeps its SIGTERM handling); with an address it attaches to that cluster and ships
  biasgrid's code (``runtime_env``). The shared arrays go into Ray's object store once (``ray.put``); results are
  collected with ``ray.wait`` as they finish; system failures (a dead worker or node) are retried
  ``max_retries`` times, a job's own exception is not (it comes back as a failed Outcome).
- :class:`LocalExecutor`: a pool of worker processes on this machine, no Ray, each with its own socket pair to
  the driver (so a worker that dies or is killed never leaves the driver waiting on a half-sent result, as
  ``concurrent.futures`` did). Its workers start (and import what the jobs need) in ``start()``; the arrays go
  once into a POSIX shared-memory segment that every worker maps (a temporary ``.npy`` that they memory-map
  where shared memory is unavailable). Workers exit by themselves when the driver is gone; ``close()`` kills
  them.

Both record a job that runs past its ``run.job_timeout`` (seconds, per kind) as failed and kill its worker (Ray,
or the pool, starts another); the other jobs go on. Both give each job what its kind asks for in
``[run.resources]`` (grid/resources.py: Ray schedules it there; the pool counts CPUs, GPUs and memory), keep the
jobs in flight within what the cluster or the pool offers in all, refuse an ask nothing can hold before any job
runs (``check``), and tell each job its ask (``payload["resources"]``: its threads, whether it has a GPU).

Leftovers: every segment is named ``biasgrid-<driver pid>-n<PID namespace>-<random>``, every temporary folder
``biasgrid-<driver pid>-<random>`` (under /tmp: Ray's socket paths must stay short); ``close()`` removes them
(also after SIGTERM and Ctrl-C); after a SIGKILL the next run's ``start()`` removes those of dead drivers of its own
PID namespace (:func:`remove_leftovers`; a container sharing /dev/shm keeps its own segments) and says so.

Over 400 lines, on purpose: both executors share the worker preparation, the leftover rules and the signal
handling, whose order matters at start and stop; kept in one module so that the lifecycle reads in one place.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import json
import logging
import math
import multiprocessing
import os
import pickle
import queue
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from grid import resources
from storage.errors import EnvironmentFailure
from tasks.kinds import JobKind
from tasks.runtime import Outcome, job_threads, node_name, run_job

# Quiet TensorFlow's C++ start-up chatter in workers (errors still show).
WORKER_ENV = {"TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONWARNINGS": "ignore::DeprecationWarning"}
PREFIX = "biasgrid-"          # segments: biasgrid-<driver pid>-n<PID namespace>-<random>; folders: no n<...>
SHM_DIR = Path("/dev/shm")    # where Linux shows POSIX shared-memory segments
PARENT_POLL_SECONDS = 0.5     # how often a pool worker checks that the driver still runs
PREPARE_ENV = "BIASGRID_PREPARE_WORKER"   # prepare_worker's arguments as JSON: for the workers of our own Ray node only
JOBS_ENV = "BIASGRID_RUNNING_JOBS"   # our own Ray node's folder of running jobs: a file <job id> holds its worker pid
DEFAULT_JOB_TIMEOUT = JobKind.timeout   # run.job_timeout of jobs the config names no kind for (embedding shards)
NODE_START_ATTEMPTS = 3        # a local Ray node that exits as it starts is started again, this many times in all


class Executor(Protocol):
    """Runs payloads on the shared data and yields outcomes in completion order."""

    def start(self) -> None: ...

    def check(self, kinds: Collection[str]) -> None: ...

    def run(self, payloads: Sequence[Mapping[str, Any]], data: Mapping[str, np.ndarray]) -> Iterator[Outcome]: ...

    def close(self) -> None: ...


def _say(text: str) -> None:
    print(f"biasgrid: {text}", file=sys.stderr, flush=True)


# -------------------------------------------------------------------------------------------- leftovers ---
def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _pid_namespace() -> str:
    """This process's PID namespace (the inode of /proc/self/ns/pid; "" where there is none): a pid names a
    process only within its namespace, and containers that share /dev/shm (``--ipc=host``) have their own."""
    try:
        return str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        return ""


def owner_prefix() -> str:
    """The name prefix of this driver's shared-memory segments: ``biasgrid-<pid>-n<namespace>-``."""
    namespace = _pid_namespace()
    return f"{PREFIX}{os.getpid()}-" + (f"n{namespace}-" if namespace else "")


def _temp_roots() -> list[Path]:
    return list(dict.fromkeys([Path(tempfile.gettempdir()), Path("/tmp")]))


def leftovers() -> list[Path]:
    """Shared-memory segments and temporary folders named ``biasgrid-<pid>-*`` whose driver process is dead: of
    drivers of this PID namespace only (another namespace's pid cannot be looked up from here)."""
    pattern = re.compile(re.escape(PREFIX) + r"(\d+)-(?:n(\d+)-)?")
    namespace = _pid_namespace()
    found = []
    for root in [SHM_DIR, *_temp_roots()]:
        try:
            entries = list(root.iterdir())
        except OSError:
            continue
        for entry in entries:
            match = pattern.match(entry.name)
            if not match or (match.group(2) or namespace) != namespace:
                continue
            if int(match.group(1)) != os.getpid() and not _pid_alive(int(match.group(1))):
                found.append(entry)
    return found


def remove_leftovers(quiet: bool = False) -> list[Path]:
    """Remove what :func:`leftovers` finds (left by drivers that were killed) and say so; return it."""
    removed = []
    for path in leftovers():
        try:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
            removed.append(path)
        except OSError:
            continue
    if removed and not quiet:
        _say(f"removed {len(removed)} leftover(s) of earlier runs whose driver died: "
             + ", ".join(str(p) for p in removed))
    return removed


def _temp_folder() -> str:
    """A new temporary folder ``biasgrid-<pid>-<random>`` under a short path (Ray's sockets live in it)."""
    root = "/tmp" if os.path.isdir("/tmp") else tempfile.gettempdir()
    return tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-", dir=root)   # short: no namespace (Ray's socket paths)


# ------------------------------------------------------------------------------------ worker preparation ---
# Modules a worker imports before its first job, per model type (the job kinds' own modules always).
MODEL_IMPORTS = {"mlp": ("tensorflow", "tasks.models.mlp"), "xgboost": ("xgboost",),
                 "logreg": ("sklearn.linear_model",)}
_prepared: list[int] = []


def worker_modules(models: Collection[str] = ()) -> list[str]:
    """The modules a worker running jobs of ``models`` imports before its first job."""
    from tasks import kinds

    names = ["grid.executors"]
    for kind in kinds.all_kinds():   # each kind's worker module and what it preloads
        names += [kind.run.partition(":")[0], *kind.preload]
    for model in models:
        names += MODEL_IMPORTS.get(model, (model.partition(":")[0],) if ":" in model else ())
    return list(dict.fromkeys(names))


Shape = tuple[int, tuple[int, ...], int]   # a compiled MLP trainer's: input width, hidden units, batch size


def prepare_worker(threads: int, models: Collection[str] = (), warm: Collection[Shape] | None = None) -> None:
    """Once per worker process, before its first job: keep freed memory for the next job, set its thread budget,
    import what its jobs need (the job kinds' modules and the libraries of ``models``; TensorFlow only when an
    ``mlp`` model is run) and compile the MLP trainer for each shape of ``warm`` (None: the study's shape when
    ``mlp`` is in ``models``). Later calls in the same process do nothing."""
    if _prepared:
        return
    _prepared.append(os.getpid())
    os.environ.update(WORKER_ENV)
    from tasks.runtime import keep_freed_memory, limit_threads

    keep_freed_memory()
    limit_threads(threads)
    with _native_stderr_silenced():
        for name in worker_modules(models):
            try:
                importlib.import_module(name)
            except Exception:  # noqa: BLE001 - the job that needs it reports the error
                continue
        if warm is None:
            warm = [()] if "mlp" in models else []   # (): warm_up's defaults, the study's shape
        for shape in warm:   # compiled now, not inside the first cell
            try:
                from tasks.models.mlp import warm_up

                warm_up(*shape, threads=threads)
            except Exception:  # noqa: BLE001 - the first MLP cell reports the error
                pass
    limit_threads(threads)   # again: TensorFlow, when just imported, takes its thread limits now


@contextlib.contextmanager
def _native_stderr_silenced() -> Iterator[None]:
    """File descriptor 2 on /dev/null meanwhile: TensorFlow's C++ start-up lines ("Could not find cuda
    drivers", "All log messages before absl::InitializeLog()", cuInit) are written before its logging reads
    TF_CPP_MIN_LOG_LEVEL, and a local pool worker shares the user's terminal. Python's sys.stderr is the same
    descriptor: the imports' own errors are reported by the jobs that need them."""
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


# ------------------------------------------------------------------------------------------------ local ---
_WORKER_DATA: dict[str, Any] = {"key": None}


def _watch_parent(parent: int) -> None:
    """Exit this worker process as soon as the driver ``parent`` is gone (it never outlives its driver)."""
    while os.getppid() == parent:
        time.sleep(PARENT_POLL_SECONDS)
    os._exit(1)


def _exit_now() -> None:
    """Last at-exit step of a pool worker: skip tearing down its modules (TensorFlow's takes seconds)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _init_local_worker(parent: int, threads: int, models: tuple[str, ...], warm: tuple[Shape, ...] | None) -> None:
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True, name="biasgrid-parent-watch").start()
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # Ctrl-C is the driver's to handle: it ends the workers
    atexit.register(_exit_now)   # registered first, so it runs after every other at-exit handler
    prepare_worker(threads, models, warm)


def _attach_segment(name: str) -> Any:
    """Attach the driver's shared-memory segment without registering it with the resource tracker (which
    would unlink it, or warn, when this worker exits; the driver owns it)."""
    from multiprocessing import resource_tracker, shared_memory

    if sys.version_info >= (3, 13):
        return shared_memory.SharedMemory(name=name, track=False)
    register = resource_tracker.register
    resource_tracker.register = lambda *args, **kwargs: None
    try:
        return shared_memory.SharedMemory(name=name)
    finally:
        resource_tracker.register = register


def _worker_data(where: Mapping[str, Any]) -> dict[str, Any]:
    """The shared arrays described by ``where`` (mapped once per worker process and run)."""
    if _WORKER_DATA["key"] == where["key"]:
        return _WORKER_DATA
    _WORKER_DATA.clear()
    if "shm" in where:
        segment = _attach_segment(where["shm"])
        X = np.ndarray(where["shape"], dtype=where["dtype"], buffer=segment.buf)
        labels = pickle.loads(segment.buf[where["labels_at"]:where["labels_at"] + where["labels_size"]])
        _WORKER_DATA["segment"] = segment   # keeps the mapping open
    else:
        X = np.load(where["npy"], mmap_mode="r", allow_pickle=False)
        labels = pickle.loads(Path(where["labels"]).read_bytes())
    X.flags.writeable = False
    _WORKER_DATA.update(labels, X=X, key=where["key"])
    return _WORKER_DATA


def _run_local(payload: Mapping[str, Any], where: Mapping[str, Any]) -> Outcome:
    from tasks.runtime import limit_threads

    limit_threads(job_threads(payload))
    return run_job(payload, _worker_data(where))


def _local_worker(conn: Any, parent: int, threads: int, models: tuple[str, ...],
                  warm: tuple[Shape, ...] | None) -> None:
    """A pool worker: prepare, say it is ready (``None``), then run each ``(payload, where)`` it receives and send
    back its Outcome, until the driver's end of ``conn`` closes (or says ``None``)."""
    _init_local_worker(parent, threads, models, warm)
    conn.send(None)
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            message = None
        if message is None:
            os._exit(0)
        payload, where = message
        try:
            outcome = _run_local(payload, where)
        except Exception as exc:  # noqa: BLE001 - e.g. the shared data cannot be mapped: the job's failure
            outcome = Outcome(payload["job_id"], error=f"{type(exc).__name__}: {exc}", traceback="",
                              node=node_name())
        try:
            conn.send(outcome)
        except (pickle.PicklingError, TypeError, AttributeError) as exc:   # pickled whole before anything is sent
            conn.send(Outcome(payload["job_id"], error=f"its result cannot be sent back ({type(exc).__name__}: "
                                                       f"{exc})", traceback="", node=node_name()))


_DIED = object()   # what a worker's reader thread reports when the worker's connection ends


class _Worker:
    """One pool process and the driver's end of its own socket pair. The driver holds no copy of the worker's
    end, so when the worker dies (killed, crashed) its socket ends at once: a receive gets EOF, a send an error;
    nothing can wait forever on a half-sent message. Receives and sends run in daemon threads (a stopped worker
    blocks neither the driver's loop nor its exit); what arrives goes to ``events``."""

    def __init__(self, context: Any, args: tuple[Any, ...], events: queue.SimpleQueue) -> None:
        self.conn, theirs = context.Pipe(duplex=True)
        # not daemonic: a job may start processes of its own (as ProcessPoolExecutor's workers may)
        self.process = context.Process(target=_local_worker, args=(theirs, *args), name="biasgrid-worker")
        self.process.start()
        theirs.close()
        self.ready = False
        self.payload: Mapping[str, Any] | None = None    # the job it runs
        self.deadline = math.inf                       # when that job exceeds run.job_timeout (monotonic)
        self._threads = [threading.Thread(target=self._receive, args=(events,), daemon=True,
                                          name="biasgrid-worker-reader")]
        self._threads[0].start()

    def _receive(self, events: queue.SimpleQueue) -> None:
        while True:
            try:
                events.put((self, self.conn.recv()))
            except (EOFError, OSError, pickle.UnpicklingError):   # the worker ended (its end of the socket closed)
                events.put((self, _DIED))
                return

    def start_job(self, payload: Mapping[str, Any], where: Mapping[str, Any], timeout: float) -> None:
        self.payload, self.deadline = payload, time.monotonic() + timeout
        sender = threading.Thread(target=self._send, args=((payload, where),), daemon=True,
                                  name="biasgrid-worker-sender")
        self._threads.append(sender)
        sender.start()

    def _send(self, message: Any) -> None:
        try:
            self.conn.send(message)
        except (OSError, ValueError):   # the worker is gone: its reader reports it
            pass

    def kill(self) -> None:
        """SIGKILL the process (a stopped one too), reap it, let its threads end, close the socket."""
        if self.process.pid is not None and self.process.exitcode is None:
            try:
                os.kill(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.process.join()
        for thread in self._threads:   # each ends now that the worker's end is closed
            thread.join(timeout=10)
        self.conn.close()


class LocalExecutor:
    """A pool of ``workers`` processes on this machine (spawned, so TensorFlow starts clean in each), started by
    ``start()``, each running one job at a time. A job past its ``job_timeout`` (seconds, per kind) or whose
    worker dies comes back as a failed Outcome, and its worker is replaced; ``close()`` kills the workers, so a
    driver that stops early (an error, Ctrl-C) ends at once."""

    def __init__(self, workers: int, threads_per_job: int = 1, models: Sequence[str] = (),
                 job_timeout: Mapping[str, float] | None = None,
                 resources: Mapping[str, Mapping[str, Any]] | None = None,
                 warm: Sequence[Shape] | None = None) -> None:
        self.workers = max(1, workers)
        self.threads = threads_per_job
        self.models = tuple(models)
        self.warm = None if warm is None else tuple(warm)   # prepare_worker's
        self.job_timeout = dict(job_timeout or {})
        self.resources = dict(resources or {})
        self._context = multiprocessing.get_context("spawn")
        self._events: queue.SimpleQueue = queue.SimpleQueue()
        self._pool: list[_Worker] = []
        self._segment: Any = None
        self._tmp: str | None = None
        self._old_sigterm: Any = None

    def start(self) -> None:
        """Remove leftovers of killed runs, then start the worker processes (they import what jobs need)."""
        if self._pool:
            return
        remove_leftovers()
        _raise_on_sigterm(self)
        self._pool = [self._new_worker() for _ in range(self.workers)]
        # registered after multiprocessing's at-exit join of child processes (at the first start), so it runs first
        atexit.register(self.close)

    def _new_worker(self) -> _Worker:
        return _Worker(self._context, (os.getpid(), self.threads, self.models, self.warm), self._events)

    def _replace(self, worker: _Worker) -> None:
        worker.kill()
        self._pool[self._pool.index(worker)] = self._new_worker()

    def busy(self) -> dict[str, int]:
        """The id of each job running now, and the process id of the worker running it."""
        return {p["job_id"]: w.process.pid for w in list(self._pool) if (p := w.payload) is not None}

    def offer(self) -> dict[str, float]:
        """What the pool offers in all: run.workers x run.threads_per_job CPUs, this machine's GPUs and memory."""
        return resources.local_offer(self.workers, self.threads)

    def check(self, kinds: Collection[str]) -> None:
        """InputError when a kind asks for more than the pool offers (more CPUs than it runs, a GPU on a machine
        without one, a custom resource: those are Ray's), before any job runs."""
        resources.check_fits(resources.asks_of(self.resources, kinds, self.threads), [self.offer()],
                             "the local executor (run.workers x run.threads_per_job CPUs, this machine's GPUs and "
                             "memory; custom resources are Ray's)",
                             "lower the ask, or use --executor ray on a cluster that offers it")

    def share(self, data: Mapping[str, np.ndarray]) -> dict[str, Any]:
        """Put ``data`` where the workers read it: one shared-memory segment (the matrix, then the pickled label
        arrays), or, where shared memory is unavailable or too small, a temporary ``.npy`` and a pickle file.
        Returns its description for the workers; the data of an earlier ``run`` (a run's earlier stage) is
        removed first."""
        self._unshare()
        # jobs without a shared matrix (data embed) get an empty one
        X = np.ascontiguousarray(data["X"]) if "X" in data else np.zeros((0, 0), dtype=np.float32)
        blob = pickle.dumps({k: v for k, v in data.items() if k != "X"}, protocol=pickle.HIGHEST_PROTOCOL)
        name = f"{owner_prefix()}{secrets.token_hex(4)}"
        where: dict[str, Any] = {"key": name, "shape": X.shape, "dtype": X.dtype.str}
        try:
            from multiprocessing import shared_memory

            if SHM_DIR.is_dir():   # a too-small /dev/shm (containers: 64 MB) would SIGBUS on write
                free = os.statvfs(SHM_DIR)
                if free.f_bavail * free.f_frsize < X.nbytes + len(blob) + (64 << 20):
                    raise OSError(f"{SHM_DIR} has too little free space")
            self._segment = shared_memory.SharedMemory(name=name, create=True, size=max(1, X.nbytes + len(blob)))
        except (ImportError, OSError):
            self._tmp = _temp_folder()
            np.save(Path(self._tmp) / "X.npy", X, allow_pickle=False)
            (Path(self._tmp) / "labels.pickle").write_bytes(blob)
            where.update(npy=str(Path(self._tmp) / "X.npy"), labels=str(Path(self._tmp) / "labels.pickle"))
            return where
        buf = self._segment.buf
        np.ndarray(X.shape, dtype=X.dtype, buffer=buf)[...] = X
        buf[X.nbytes:X.nbytes + len(blob)] = blob
        where.update(shm=name, labels_at=X.nbytes, labels_size=len(blob))
        return where

    def run(self, payloads: Sequence[Mapping[str, Any]], data: Mapping[str, np.ndarray]) -> Iterator[Outcome]:
        kinds = resources.kinds_of(payloads)
        self.check(kinds)
        self.start()
        where = self.share(data)
        asks = resources.asks_of(self.resources, kinds, self.threads)
        todo, budget = resources.JobQueue(payloads, asks), resources.Budget(self.offer())
        early_deaths = 0

        def ended(worker: _Worker) -> Mapping[str, Any] | None:   # its job's payload; its ask given back
            payload = worker.payload
            if payload is not None:
                budget.give(payload["resources"])
            return payload

        while todo or any(w.payload is not None for w in self._pool):
            for worker in self._pool:
                if worker.ready and worker.payload is None and (payload := todo.take(budget)) is not None:
                    payload = {**payload, "resources": asks[payload.get("kind", "")]}
                    worker.start_job(payload, where, job_timeout(self.job_timeout, payload.get("kind", "")))
            deadline = min(w.deadline for w in self._pool)
            try:
                worker, message = self._events.get(
                    timeout=None if deadline == math.inf else max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                worker, message = None, None
            if worker in self._pool:   # not a worker replaced before
                payload = ended(worker) if message is not None else None
                if message is _DIED:
                    early_deaths += not worker.ready
                    if early_deaths > 3 * self.workers:
                        raise EnvironmentFailure(f"the local pool's worker processes exit as they start (exit code "
                                                 f"{worker.process.exitcode}); run again, or use --executor ray")
                    self._replace(worker)
                    if payload is not None:
                        yield Outcome(payload["job_id"], error=f"the worker process running it died (exit code "
                                                               f"{worker.process.exitcode})", node=node_name())
                elif message is None:
                    worker.ready = True
                else:
                    worker.payload, worker.deadline = None, math.inf
                    yield message
            now = time.monotonic()
            for worker in [w for w in self._pool if w.deadline <= now]:
                payload = ended(worker)
                self._replace(worker)
                yield timed_out(payload, self.job_timeout, f"{socket.gethostname()}:{worker.process.pid}")

    def close(self) -> None:
        """Kill the workers (idle ones, or running jobs when the run stops early) and remove the shared data."""
        atexit.unregister(self.close)
        for worker in self._pool:
            worker.kill()
        self._pool = []
        self._unshare()
        _restore_sigterm(self)

    def _unshare(self) -> None:
        """Remove the shared data (the workers that mapped it keep their mapping until they map the next)."""
        if self._segment is not None:
            self._segment.close()
            try:
                self._segment.unlink()
            except FileNotFoundError:
                pass
            self._segment = None
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None


def job_timeout(timeouts: Mapping[str, float], kind: str) -> float:
    """The ``run.job_timeout`` of jobs of ``kind``, in seconds."""
    return timeouts.get(kind, DEFAULT_JOB_TIMEOUT)


def timed_out(payload: Mapping[str, Any], timeouts: Mapping[str, float], worker: str = "") -> Outcome:
    """The failed Outcome of a job that ran past its ``run.job_timeout``."""
    seconds = job_timeout(timeouts, payload.get("kind", ""))
    return Outcome(payload["job_id"], error=f"job exceeded run.job_timeout = {seconds:g} s (its worker was killed and "
                                            f"replaced)", node=node_name(), worker=worker)


def _raise_on_sigterm(owner: Any) -> None:
    """While ``owner`` runs, SIGTERM raises KeyboardInterrupt in the main thread (Python's default would end the
    process at once, skipping ``close()``)."""
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        owner._old_sigterm = signal.signal(signal.SIGTERM, _exit_on_signal)


def _restore_sigterm(owner: Any) -> None:
    if owner._old_sigterm is not None and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, owner._old_sigterm)
        owner._old_sigterm = None


def _exit_on_signal(signum: int, frame: Any) -> None:
    """SIGTERM is handled as Ctrl-C: KeyboardInterrupt, which Ray passes through its waits (a SystemExit raised
    inside ``ray.wait``/``ray.get`` comes back as a RayError and would be taken for a failed job)."""
    if hasattr(signal, "alarm"):
        signal.alarm(0)
    raise KeyboardInterrupt(f"signal {signum}")


# -------------------------------------------------------------------------------------------------- ray ---
def _ray_job(payload: Mapping[str, Any], data: Mapping[str, np.ndarray], models: tuple[str, ...] = (),
             warm: tuple[Shape, ...] | None = None) -> Outcome:
    prepare_worker(job_threads(payload), models, warm)
    from tasks.runtime import limit_threads

    limit_threads(job_threads(payload))
    # On our own node, the job's worker process is known while it runs (the driver kills it past run.job_timeout).
    running = Path(os.environ[JOBS_ENV], payload["job_id"]) if os.environ.get(JOBS_ENV) else None
    if running is not None:
        running.write_text(str(os.getpid()))
    try:
        return run_job(payload, data)
    finally:
        if running is not None:
            running.unlink(missing_ok=True)


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


def free_port() -> int:
    """A TCP port free on this machine right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _parent_death_signal() -> None:
    """In the child, before exec: SIGTERM it when the process that started it dies (Linux)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):
        pass


_RAY_TOKEN: list[str] = []   # one token per driver process (Ray caches the token it has loaded)


class LocalRayNode:
    """A Ray head node owned by this process: ``ray start --head --block`` as a child, on free ports, in its
    own temporary folder, with token authentication (a token made for this driver process, set in the node's
    environment and ours). It receives SIGTERM when the driver dies by any signal (and then stops every process
    of the node); :meth:`stop` ends it."""

    def __init__(self, num_cpus: int = 0, threads: int = 1, models: Collection[str] = (),
                 warm: Collection[Shape] | None = None) -> None:
        if not _RAY_TOKEN:
            _RAY_TOKEN.append(secrets.token_hex(16))
        os.environ.update({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": _RAY_TOKEN[0]})
        os.environ.pop("RAY_AUTH_TOKEN_PATH", None)
        self.temp_dir = _temp_folder()
        self.jobs_dir = os.path.join(self.temp_dir, "jobs")
        os.mkdir(self.jobs_dir)
        self.address = ""   # known once the node is up (wait_ready): Ray picks its ports itself
        paths = [p for p in dict.fromkeys(os.path.abspath(p or os.curdir) for p in sys.path) if os.path.isdir(p)]
        self._env = {**os.environ, **WORKER_ENV, "RAY_USAGE_STATS_ENABLED": "0",
                     "PYTHONPATH": os.pathsep.join(paths),   # workers import what the driver imports
                     # one worker per CPU starts with the node and imports what the jobs need, while the driver
                     # prepares the data (Ray's raylet settings, passed as RAY_<name>)
                     "RAY_enable_worker_prestart": "1", "RAY_preload_python_modules": "grid.executors",
                     PREPARE_ENV: json.dumps([threads, list(models), warm if warm is None else list(warm)]),
                     JOBS_ENV: self.jobs_dir,
                     **{var: str(threads) for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                                                      "TF_NUM_INTRAOP_THREADS")}, "TF_NUM_INTEROP_THREADS": "1"}
        self._env.pop("RAY_ADDRESS", None)
        self._num_cpus = num_cpus
        self._log = open(Path(self.temp_dir) / "ray-start.log", "ab")  # noqa: SIM115 - closed in stop()
        self._launch()

    def _launch(self) -> None:
        # Port 0: Ray binds the GCS, the dashboard agent and the rest to ports the kernel gives it (no race with
        # other programs); the client server has no "any port" setting, so it gets one free a moment ago. No
        # autoscaler monitor (a Python process that imports Ray as the node starts): a one-machine node never scales.
        command = [str(Path(sys.executable).parent / "ray"), "start", "--head", "--block", "--port=0",
                   "--dashboard-agent-listen-port=0", f"--ray-client-server-port={free_port()}", "--no-monitor",
                   "--node-ip-address=127.0.0.1", f"--temp-dir={self.temp_dir}", "--include-dashboard=false",
                   "--include-log-monitor=false", "--disable-usage-stats"]
        if self._num_cpus:
            command.append(f"--num-cpus={self._num_cpus}")
        self.proc = subprocess.Popen(command, env=self._env, stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, preexec_fn=_parent_death_signal,
                                     start_new_session=True)   # a Ctrl-C goes to the driver, which stops it

    def wait_ready(self, timeout: float = 180.0, attempts: int = NODE_START_ATTEMPTS) -> None:
        """Until the node is up (``ray start`` has written its address file and said "Ray runtime started", after
        its raylet registered). A ``ray start`` that exits first is started again, ``attempts`` times in all
        (a port taken in the moment between choosing and binding it); then :class:`EnvironmentFailure`."""
        address_file = Path(self.temp_dir) / "ray_current_cluster"
        log = Path(self.temp_dir) / "ray-start.log"
        deadline = time.monotonic() + timeout
        attempt = 1

        def port() -> str:   # the file may exist before its port is written: "" until it has one
            try:
                found = address_file.read_text().strip().rpartition(":")[2]
            except OSError:
                return ""
            return found if found.isdigit() and int(found) > 0 else ""

        while not (port() and "Ray runtime started" in log.read_text(errors="replace")):
            if self.proc.poll() is not None:
                if attempt < attempts:
                    attempt += 1
                    _say(f"the local Ray node exited as it started (code {self.proc.returncode}); starting it again "
                         f"(attempt {attempt} of {attempts})")
                    self._launch()
                    continue
                raise EnvironmentFailure(f"the local Ray node could not start ({attempts} attempts; ray start exited "
                                         f"with {self.proc.returncode}); run again, or use --executor local. "
                                         f"The end of its log:\n{log.read_text(errors='replace')[-2000:]}")
            if time.monotonic() > deadline:
                raise EnvironmentFailure(f"the local Ray node did not start within {timeout:.0f} s; run again, or use "
                                         f"--executor local")
            time.sleep(0.05)
        self.address = f"127.0.0.1:{port()}"

    def stop(self, grace: float = 60.0) -> None:
        """SIGTERM ``ray start`` (it stops every process of the node) and wait; then remove its folder."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        for _ in range(40):   # the node's last processes may still be writing their logs as they exit
            shutil.rmtree(self.temp_dir, ignore_errors=True)
            if not os.path.exists(self.temp_dir):
                break
            time.sleep(0.25)


def _read_token_settings() -> None:
    """Make this process's Ray use the token of our own node. Ray reads ``RAY_AUTH_MODE`` into its C++ config
    once, when it is imported: a program that imported Ray before (a notebook's ``import ray``) would connect
    without the token and be refused. Its config is read again from the environment, and its token cache
    emptied."""
    from ray._raylet import AuthenticationMode, AuthenticationTokenLoader, Config, get_authentication_mode

    if get_authentication_mode() != AuthenticationMode.TOKEN:
        Config.initialize("{}")
        AuthenticationTokenLoader.instance().reset_cache()


class RayExecutor:
    """Runs payloads as Ray tasks on a Ray node of its own (started by ``start()``) or an existing cluster
    (``address``)."""

    def __init__(self, address: str = "", workers: int = 0, threads_per_job: int = 1, max_retries: int = 3,
                 ship: Sequence[str] = (), job_timeout: Mapping[str, float] | None = None,
                 resources: Mapping[str, Mapping[str, Any]] | None = None, warm: Sequence[Shape] | None = None) -> None:
        self.address = address
        self.warm = None if warm is None else tuple(warm)   # prepare_worker's
        self.job_timeout = dict(job_timeout or {})
        self.resources = dict(resources or {})
        self.workers = workers
        self.threads = threads_per_job
        self.max_retries = max_retries
        self.ship = list(ship)
        self._node: LocalRayNode | None = None
        self._connected = False
        self._started = False
        self._borrowed = False   # this program had called ray.init itself: run on that connection, leave it open
        self._old_sigterm: Any = None

    def start(self) -> None:
        """Remove leftovers of killed runs; without an address, start the local Ray node (not waiting), unless
        this program is connected to Ray already (its own ``ray.init``: a notebook), whose cluster is then used."""
        if self._started:
            return
        self._started = True
        remove_leftovers()
        if not self.address and "ray" in sys.modules and sys.modules["ray"].is_initialized():
            self._borrowed = True
            _say("running on the Ray cluster this program is connected to (its ray.init); it stays connected after "
                 "the run")
        elif not self.address:
            _raise_on_sigterm(self)   # until ray.init installs Ray's own handler
            self._node = LocalRayNode(self.workers, self.threads, self.ship, self.warm)

    def _connect(self, ray: Any, init_args: dict[str, Any], patience: float = 60.0) -> None:
        """``ray.init``; our own node may still be registering its raylet: retry while it runs, up to ``patience`` s."""
        deadline = time.monotonic() + patience
        while True:
            try:
                ray.init(**init_args)
                return
            except ConnectionError:
                node_running = self._node is not None and self._node.proc.poll() is None
                if self.address or not node_running or time.monotonic() > deadline:
                    raise
                ray.shutdown()
                time.sleep(1.0)

    def connect(self) -> Any:
        """Start (our own node) and connect, once; return the ``ray`` module. A cluster of others gets the
        packages of the user models and of every registered kind's worker function with the jobs."""
        self.start()   # before Ray is imported: Ray reads the node's token from the environment once, on import
        import ray

        if self._connected:
            return ray
        if self._borrowed:
            self._connected = True
            return ray
        init_args: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.WARNING,
                                     "configure_logging": True}
        if self.address:
            from tasks import kinds

            extra = [*self.ship, *(k.run for k in kinds.all_kinds())]
            init_args.update(address=self.address, runtime_env={"py_modules": shipped_modules(extra),
                                                                 "env_vars": dict(WORKER_ENV)})
        else:   # our own node, even when RAY_ADDRESS or a running `ray start` would be found
            self.start()
            assert self._node is not None
            self._node.wait_ready()
            init_args["address"] = self._node.address
            _read_token_settings()
        self._connect(ray, init_args)
        self._connected = True
        if threading.current_thread() is threading.main_thread():
            # Ray's SIGTERM handling arms a 3 s abort alarm (its C++ failure-signal handler) before its Python
            # handler exits: ours cancels it, so that close() can stop the node however long that takes.
            signal.signal(signal.SIGTERM, _exit_on_signal)
        return ray

    def check(self, kinds: Collection[str]) -> None:
        """InputError when a kind asks for what no node of the cluster offers (its nodes as they are now), before
        any job runs."""
        ray = self.connect()
        offers = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
        resources.check_fits(resources.asks_of(self.resources, kinds, self.threads), offers,
                             "any node of the Ray cluster", "lower the ask, or add a node that offers it (ray start "
                             "--resources, cluster.yaml's node types)")

    def run(self, payloads: Sequence[Mapping[str, Any]], data: Mapping[str, np.ndarray]) -> Iterator[Outcome]:
        ray = self.connect()
        kinds = resources.kinds_of(payloads)
        self.check(kinds)
        data_ref = ray.put(dict(data))
        models = tuple(self.ship)
        asks = resources.asks_of(self.resources, kinds, self.threads)
        remote = ray.remote(_ray_job)
        remotes = {kind: remote.options(max_retries=self.max_retries, retry_exceptions=False,
                                        **resources.ray_options(ask)) for kind, ask in asks.items()}
        # As many jobs in flight as the cluster holds at once (each kind's ask counted), so that each starts when
        # it is handed over and its run.job_timeout counts from then.
        todo, budget = resources.JobQueue(payloads, asks), resources.Budget(ray.cluster_resources())
        pending: dict[Any, tuple[Mapping[str, Any], float]] = {}
        while todo or pending:
            while (payload := todo.take(budget)) is not None:
                kind = payload.get("kind", "")
                payload = {**payload, "resources": asks[kind]}
                pending[remotes[kind].remote(payload, data_ref, models, self.warm)] = (
                    payload, time.monotonic() + job_timeout(self.job_timeout, kind))
            deadline = min(d for _, d in pending.values())
            done, _ = ray.wait(list(pending), num_returns=1, timeout=max(0.0, deadline - time.monotonic()))
            for ref in done:
                payload, _ = pending.pop(ref)
                budget.give(payload["resources"])
                try:
                    yield ray.get(ref)
                except ray.exceptions.RayError as exc:  # lost beyond its retries, or the worker crashed
                    yield Outcome(payload["job_id"], error=f"{type(exc).__name__}: {exc}", traceback="",
                                  node="")
            now = time.monotonic()
            for ref in [r for r, (_, d) in pending.items() if d <= now]:
                payload, _ = pending.pop(ref)
                budget.give(payload["resources"])
                yield timed_out(payload, self.job_timeout, self._kill(ray, ref, payload["job_id"]))

    def busy(self) -> dict[str, int]:
        """The id of each job running now on this executor's own node, and the process id of its worker."""
        if self._node is None:
            return {}
        found = {}
        for path in Path(self._node.jobs_dir).iterdir():
            try:
                found[path.name] = int(path.read_text())
            except (OSError, ValueError):
                continue
        return found

    def _kill(self, ray: Any, ref: Any, job_id: str) -> str:
        """Cancel a job's task and kill its worker process (Ray starts another); returns "host:pid" when known.
        On a cluster of others, the force-cancel alone (Ray kills the worker when it answers)."""
        ray.cancel(ref, force=True, recursive=False)
        pid = self.busy().get(job_id)
        if pid is None:
            return ""
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        Path(self._node.jobs_dir, job_id).unlink(missing_ok=True)
        return f"{socket.gethostname()}:{pid}"

    def close(self) -> None:
        """Disconnect (not from a connection the program made itself); stop the node this executor started
        (nothing of it remains)."""
        if self._connected:
            import ray

            if ray.is_initialized() and not self._borrowed:
                ray.shutdown()
            self._connected = False
        if self._node is not None:
            self._node.stop()
            self._node = None
        self._started = self._borrowed = False
        _restore_sigterm(self)


EXECUTORS: dict[str, Callable[[Mapping[str, Any], Sequence[str], Sequence[Shape] | None], Executor]] = {
    "ray": lambda run, ship, warm: RayExecutor(run["address"], run["workers"], run["threads_per_job"],
                                               run["max_retries"], ship, run.get("job_timeout"), run.get("resources"),
                                               warm),
    "local": lambda run, ship, warm: LocalExecutor(run["workers"], run["threads_per_job"], ship,
                                                   run.get("job_timeout"), run.get("resources"), warm),
}


def make_executor(run_cfg: Mapping[str, Any], ship: Sequence[str] = (),
                  warm: Sequence[Shape] | None = None) -> Executor:
    """The executor named in the ``[run]`` section of a resolved config (``ship``: user packages, e.g. models;
    ``warm``: the MLP trainer shapes its workers compile as they start, see :func:`prepare_worker`)."""
    return EXECUTORS[run_cfg["executor"]](run_cfg, ship, warm)


if os.environ.get(PREPARE_ENV):   # a worker of our own Ray node preloads this module as it starts: prepare it now
    prepare_worker(*json.loads(os.environ[PREPARE_ENV]))
