"""The one entry point executors call in a worker: run a job payload on the shared data, return its tables.

A payload is the plan's job (``kind``, ``seed``, ``params``) plus the row indices the driver computed from the
seed's split. ``data`` holds the arrays shared by every job (put once in Ray's object store, or memory-mapped
by local workers). Errors raised by the job are returned as an :class:`Outcome`, never retried: Ray retries
only system failures (a lost worker or node).
"""

from __future__ import annotations

import os
import socket
import time
import traceback as tb
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pandas as pd

ETHNICITIES = ("asian", "caucasian", "black")
GENDERS = ("male", "female")


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
    try:
        import ray

        if ray.is_initialized():
            return f"{host}/{ray.get_runtime_context().get_node_id()[:12]}"
    except Exception:  # noqa: BLE001 - outside Ray the host name is enough
        pass
    return host


def _demographic(data: Mapping[str, np.ndarray], rows: np.ndarray) -> np.ndarray:
    eth = np.asarray(ETHNICITIES, dtype=object)[data["ethnicity"][rows]]
    gen = np.asarray(GENDERS, dtype=object)[data["gender"][rows]]
    return (eth + "_" + gen).astype(object)


def _run(payload: Mapping[str, Any], data: Mapping[str, np.ndarray]) -> dict[str, pd.DataFrame]:
    kind, seed, p = payload["kind"], payload["seed"], payload["params"]
    X = data["X"]
    if kind == "cell":
        from tasks.cell import run_cell

        rows = run_cell(X, data["gender"], payload["train_idx"], payload["test_sets"], model=p["model"],
                        model_config=p["model_config"], train_group=p["train_group"], seed=seed,
                        threads=p["threads"])
        return {"accuracy": rows}
    if kind == "scores":
        from tasks.verification import score_group

        out = score_group(X, data["identity_codes"], payload["rows"], seed=seed,
                          max_impostor_pairs=p["max_impostor_pairs"])
        return {name: df.assign(test_group=p["test_group"], seed=seed) for name, df in out.items()}
    if kind == "impostor":
        from tasks.verification import impostor_matrix

        rows = payload["rows"]
        demographic = np.empty(len(X), dtype=object)
        demographic[rows] = _demographic(data, rows)
        out = impostor_matrix(X, data["identity_codes"], demographic, rows, seed=seed,
                              target_fmr=p["target_fmr"], max_impostor_pairs=p["max_impostor_pairs"])
        return {name: df.assign(seed=seed) for name, df in out.items()}
    if kind == "tsne":
        from tasks.tsne import tsne_job

        eth = np.asarray(ETHNICITIES, dtype=object)[data["ethnicity"]]
        gen = np.asarray(GENDERS, dtype=object)[data["gender"]]
        df = tsne_job(X, payload["rows"], eth, gen, data["identity"], subset=p["subset"], seed=seed,
                      perplexity=p["perplexity"], pca_dims=p["pca_dims"], threads=p["threads"])
        return {"tsne": df.assign(seed=seed)}
    raise ValueError(f"unknown job kind {kind!r}")


def run_job(payload: Mapping[str, Any], data: Mapping[str, np.ndarray]) -> Outcome:
    """Run one job; its tables get ``job_id``, ``node`` and ``finished_at``. Exceptions become a failed Outcome."""
    started, start, cpu_start = time.time(), time.perf_counter(), time.process_time()
    node = node_name()
    job = payload["job_id"]
    where = {"node": node, "worker": f"{socket.gethostname()}:{os.getpid()}", "started": started}
    try:
        tables = _run(payload, data)
    except Exception as exc:  # noqa: BLE001 - the job's own error is the result
        return Outcome(job, error=f"{type(exc).__name__}: {exc}", traceback=tb.format_exc(), finished_at=_now(),
                       seconds=time.perf_counter() - start, cpu_seconds=time.process_time() - cpu_start, **where)
    finished = _now()
    tables = {name: df.assign(job_id=job, node=node, finished_at=finished) for name, df in tables.items()}
    return Outcome(job, tables=tables, finished_at=finished, seconds=time.perf_counter() - start,
                   cpu_seconds=time.process_time() - cpu_start, **where)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
