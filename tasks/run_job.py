"""The one entry point executors call in a worker: run a job payload on the shared data, return its tables.

A payload is the plan's job (``kind``, ``seed``, ``params``), the row indices the driver computed from the
seed's split, and ``run``: the ``"module:function"`` of its kind's worker function (``tasks.kinds``), looked up
here. ``data`` holds the arrays shared by every job (put once in Ray's object store, or memory-mapped by local
workers). Errors raised by the job are returned as an :class:`Outcome`, never retried: Ray retries only system
failures (a lost worker or node).
"""

from __future__ import annotations

import importlib
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
    finished = _now()
    tables = {name: df.assign(job_id=job, node=node, finished_at=finished) for name, df in tables.items()}
    return Outcome(job, tables=tables, finished_at=finished, seconds=time.perf_counter() - start,
                   cpu_seconds=time.process_time() - cpu_start, **where)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
