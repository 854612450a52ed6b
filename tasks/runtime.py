"""What every job needs in a worker: the one entry point executors call (:func:`run_job`), the thread budget
(:func:`limit_threads`), freed memory kept for the next job (:func:`keep_freed_memory`), the check of a payload's row
indices (:func:`check_rows`) and each row's group on one of the run's axes (:func:`row_groups`).

**run_job.** The one entry point executors call in a worker: run a job payload on the shared data, return its tables.

A payload is the plan's job (``kind``, ``seed``, ``params``), the row indices the driver computed from the
seed's split, and ``run``: the ``"module:function"`` of its kind's worker function (``tasks.kinds``), looked up
here. ``data`` holds the arrays shared by every job (put once in Ray's object store, or memory-mapped by local
workers). Errors raised by the job are returned as an :class:`Outcome`, never retried: Ray retries only system
failures (a lost worker or node).

**Threads.** Keep a job inside its thread budget, so that N jobs on N cores never oversubscribe them.

``limit_threads(n)`` covers every pool a job can use:

- BLAS/OpenMP libraries already loaded (OpenBLAS under numpy/scipy, libgomp under scikit-learn and XGBoost):
  through threadpoolctl; libraries loaded later read the ``*_NUM_THREADS`` environment variables set here.
- TensorFlow: intra-op pool = n threads, inter-op pool = 1 (a job runs one graph at a time). TensorFlow fixes
  its pools when its runtime starts, once per process. Before that, the limit is set (directly if TensorFlow is
  imported, else through ``TF_NUM_INTRAOP_THREADS``/``TF_NUM_INTEROP_THREADS``, which it reads at start-up).
  After that, asking again for the same n is a no-op and asking for another n keeps the pools it has and logs a
  warning once: a reused worker process keeps working.
- XGBoost: its ``n_jobs`` is set from the same budget by :func:`tasks.models.build_model`.

**Memory.** A worker runs job after job that allocate and free the same large arrays (pair indices, scores,
bootstrap counts). glibc's malloc gives large blocks back to the kernel as they are freed (its mmap'ed blocks,
and a free heap top beyond 128 KiB); numpy advises such arrays for transparent huge pages, and on virtual machines
with free page reporting (virtio-balloon, as on this project's machines) the host takes freed huge pages back
within seconds, so the next allocation faults them in afresh: 8-9 s per GiB measured here, against 0.7 s with
4 KiB pages. :func:`keep_freed_memory` makes the worker keep its freed blocks in the heap (bounded:
:func:`kept_bytes_bound`, :func:`release_excess_memory` after each job): the verification jobs run ~25% faster
at the same peak memory, as fast as with huge pages off (``NUMPY_MADVISE_HUGEPAGE=0``, which ``biasgrid`` sets
for its own process and the workers it starts, not for a cluster's; docs/PERFORMANCE.md).
"""

from __future__ import annotations

import ctypes
import importlib
import logging
import os
import socket
import sys
import time
import traceback as tb
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import cache
from typing import Any

import numpy as np
import pandas as pd

from storage.errors import InputError


@dataclass
class Outcome:
    """What a job sends back to the driver: its tables, or its error."""

    job_id: str
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    error: str | None = None
    traceback: str | None = None
    node: str = ""
    finished_at: str = ""
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    worker: str = ""        # the process that ran it: "<host>:<pid>"
    started: float = 0.0    # when it started, Unix time (for timelines: bench/bench_grid.py)


def node_name() -> str:
    """The host, plus the Ray node id when running inside Ray (several nodes can share a host)."""
    host = socket.gethostname()
    if "ray" not in sys.modules:   # not inside Ray (importing it here would cost a local worker ~1 s)
        return host
    try:
        import ray

        if ray.is_initialized():
            return f"{host}/{ray.get_runtime_context().get_node_id()[:12]}"
    except Exception:  # noqa: BLE001 - outside Ray the host name is enough
        pass
    return host


@cache
def worker_function(path: str) -> Callable[[Mapping[str, Any], Mapping[str, np.ndarray]], dict[str, pd.DataFrame]]:
    """The function named ``"package.module:function"``."""
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


def run_job(payload: Mapping[str, Any], data: Mapping[str, np.ndarray]) -> Outcome:
    """Run one job; its tables get ``job_id``, ``node`` and ``finished_at``. Exceptions become a failed Outcome."""
    started, start, cpu_start = time.time(), time.perf_counter(), time.process_time()
    node = node_name()
    job = payload["job_id"]
    where = {"node": node, "worker": f"{socket.gethostname()}:{os.getpid()}", "started": started}
    try:
        tables = worker_function(payload["run"])(payload, data)
    except Exception as exc:  # noqa: BLE001 - the job's own error is the result
        return Outcome(job, error=f"{type(exc).__name__}: {exc}", traceback=tb.format_exc(), finished_at=_now(),
                       seconds=time.perf_counter() - start, cpu_seconds=time.process_time() - cpu_start, **where)
    finally:
        release_excess_memory()
    finished = _now()
    tables = {name: df.assign(job_id=job, node=node, finished_at=finished) for name, df in tables.items()}
    return Outcome(job, tables=tables, finished_at=finished, seconds=time.perf_counter() - start,
                   cpu_seconds=time.process_time() - cpu_start, **where)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# -------------------------------------------------------------------------------------------------- threads ---
_ENV_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS",
             "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS", "TF_NUM_INTRAOP_THREADS")
_log = logging.getLogger(__name__)
_warned: set[int] = set()


def limit_threads(n: int) -> None:
    """Make TensorFlow, XGBoost and BLAS/OpenMP in this process use at most ``n`` threads."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise InputError(f"threads must be a positive integer, got {n!r}")
    if "tensorflow" in sys.modules:
        limit_tensorflow_threads(n)
    for var in _ENV_VARS:
        os.environ[var] = str(n)
    os.environ["TF_NUM_INTEROP_THREADS"] = "1"
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=n)


_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_MAX = -1, -2, -4   # mallopt's parameters (malloc.h)
_kept: list[tuple[int, Any]] = []   # (bound, libc) once keep_freed_memory applied in this process


class _MallInfo2(ctypes.Structure):   # glibc's struct mallinfo2 (malloc.h): the heap's sizes, in bytes
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                     "fsmblks", "uordblks", "fordblks", "keepcost")]


def kept_bytes_bound() -> int:
    """How much freed memory a worker keeps: 2 GiB, or a quarter of the machine's memory per CPU if less."""
    per_cpu = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // (4 * (os.cpu_count() or 1))
    return min(2 << 30, per_cpu)


def keep_freed_memory() -> bool:
    """Make glibc's malloc in this process serve large blocks from its heap (no mmap) and keep up to
    :func:`kept_bytes_bound` of freed memory at the heap's top for later allocations instead of returning it to
    the kernel (:func:`release_excess_memory` bounds the rest). Returns False where the C library is not glibc
    (nothing changed)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    bound = kept_bytes_bound()
    if not all(mallopt(option, value) == 1 for option, value in
               ((_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, bound), (_M_TOP_PAD, 64 << 20))):
        return False
    if hasattr(libc, "mallinfo2"):   # glibc >= 2.33; older ones keep the top-of-heap bound only
        libc.mallinfo2.restype = _MallInfo2
        _kept[:] = [(bound, libc)]
    return True


def release_excess_memory() -> None:
    """After a job, where :func:`keep_freed_memory` applied: when the heap holds more than twice its bound free
    (a large job's blocks freed below live ones), give every free page back to the kernel (``malloc_trim``)."""
    if _kept:
        bound, libc = _kept[0]
        if libc.mallinfo2().fordblks > 2 * bound:
            libc.malloc_trim(ctypes.c_size_t(0))


def limit_tensorflow_threads(n: int) -> int:
    """Set TensorFlow's pools to ``n`` intra-op / 1 inter-op thread if it can still be done (call it before
    TensorFlow runs its first op). Return the intra-op thread count in force, 0 meaning all cores."""
    import tensorflow as tf

    threading = tf.config.threading
    try:
        threading.set_intra_op_parallelism_threads(n)
        threading.set_inter_op_parallelism_threads(1)
        return n
    except RuntimeError:  # the runtime has started in this process: its pools stay as they are
        current = threading.get_intra_op_parallelism_threads() or int(os.environ.get("TF_NUM_INTRAOP_THREADS", 0))
        if current != n and current not in _warned:
            _warned.add(current)
            _log.warning("TensorFlow already runs in this process with %s intra-op threads; keeping them "
                         "(asked for %d)", current or "all", n)
        return current


# ------------------------------------------------------------------------------------------------ resources ---
def job_threads(payload: Mapping[str, Any]) -> int:
    """The threads a job runs with: its kind's CPU ask (``payload["resources"]``, set by the executor from
    ``[run.resources]``), else its params' ``threads``, else 1."""
    return int((payload.get("resources") or {}).get("CPU", (payload.get("params") or {}).get("threads", 1)))


def job_gpus(payload: Mapping[str, Any]) -> float:
    """The GPUs a job asked for (``[run.resources]``; 0 = none: it runs on the CPU even where a GPU exists)."""
    return float((payload.get("resources") or {}).get("GPU", 0))


def tensorflow_device(gpu: bool) -> Any:
    """The TensorFlow device scope of a job: the first GPU when it asked for one (``gpu``) and TensorFlow sees one,
    else the CPU. TensorFloat-32 is turned off, so float32 products stay float32 on either."""
    import tensorflow as tf

    tf.config.experimental.enable_tensor_float_32_execution(False)
    return tf.device("/GPU:0" if gpu and tf.config.list_physical_devices("GPU") else "/CPU:0")


# ------------------------------------------------------------------------------------------------------ rows ---
def check_rows(rows: np.ndarray, n: int, what: str) -> np.ndarray:
    """``rows`` as a non-empty 1-D int64 array of row indices < n; InputError naming ``what`` otherwise."""
    rows = np.asarray(rows)
    if rows.ndim != 1 or rows.size == 0:
        raise InputError(f"{what} has no rows (expected a non-empty list of row indices)")
    if not np.issubdtype(rows.dtype, np.integer):
        raise InputError(f"{what}: row indices must be integers, got {rows.dtype}")
    if rows.min() < 0 or rows.max() >= n:
        raise InputError(f"{what}: row indices must lie in [0, {n}), got {rows.min()}..{rows.max()}")
    return rows.astype(np.int64, copy=False)


AXES = ("demographic", "group", "target")   # the label arrays of the shared data (grid.axes.Axes.arrays)


def row_groups(data: Mapping[str, np.ndarray], rows: np.ndarray | None = None, axis: str = "demographic") -> np.ndarray:
    """Each row's group name (of ``rows``, default every row) on one of the run's :data:`AXES`: ``demographic``
    (the verification's demographic groups, ``[verification] groups``, e.g. "asian_female"), ``group`` (the group
    axis) or ``target``; from the shared arrays ``data[axis]`` (codes) and ``data[axis + "_names"]``."""
    names = np.asarray(data[f"{axis}_names"], dtype=object).astype(str)
    codes = np.asarray(data[axis])
    return names[(codes if rows is None else codes[rows]).astype(np.intp)]
