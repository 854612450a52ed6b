"""Run a grid: load the data, plan, skip stored jobs, dispatch the rest, store each result as it arrives."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from storage.errors import InputError
from grid.executors import Executor, make_executor
from grid.plan import Job, make_plan
from grid.splits import Protocol, Split, check_groups, make_split, train_group_ethnicities
from storage.results import ResultStore, job_state
from storage.table import EmbeddingTable, read_table
from storage.vocab import ETHNICITIES

VERSIONED = ("biasgrid", "numpy", "ray", "tensorflow", "keras", "xgboost", "scikit-learn", "pyarrow", "pandas")


@dataclass
class RunSummary:
    """What a run did: how many jobs were planned, already stored, run, and failed."""

    out: str
    planned: int = 0
    stored_before: int = 0
    ran: int = 0
    failed: list[str] = field(default_factory=list)          # descriptions of jobs that failed in this run
    failed_before: list[str] = field(default_factory=list)   # failed earlier and not retried (no --rerun-failed)
    seconds: float = 0.0
    prepare_seconds: float = 0.0   # loading the data, planning, splits
    write_seconds: float = 0.0     # storing results
    job_seconds: float = 0.0       # sum of the jobs' own wall times (in the workers)

    @property
    def exit_code(self) -> int:
        return 1 if (self.failed or self.failed_before) else 0


def load_data(data_cfg: dict[str, Any]) -> EmbeddingTable:
    """The embedding table the config names, or the built-in synthetic data when it names none."""
    path, fmt = data_cfg["path"], data_cfg["format"]
    if not path:
        from storage.synth import generate, synth_params_from_dict

        return generate(synth_params_from_dict(data_cfg["synth"], "[data.synth]"))
    if not Path(path).exists():
        raise InputError(f"data: {path} does not exist (expected an embedding table or an importer source; "
                         f"leave data empty for the built-in synthetic data)")
    if not fmt and str(path).endswith(".parquet") and Path(path).is_file():
        return read_table(path)
    from storage.importers import import_embeddings

    return import_embeddings(path, fmt or None)


def shared_arrays(table: EmbeddingTable) -> dict[str, np.ndarray]:
    """The arrays every job reads: the matrix and the label columns (indices select rows per job)."""
    return {"X": table.embeddings, "gender": table.gender, "ethnicity": table.ethnicity,
            "identity_codes": table.identity_codes(), "identity": np.asarray(table.identity, dtype=object)}


def versions() -> dict[str, str]:
    """Installed versions of biasgrid and the libraries that determine its numbers."""
    found = {}
    for name in VERSIONED:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    found["python"] = sys.version.split()[0]
    return found


def _needed_ethnicities(cfg: dict[str, Any]) -> list[str]:
    groups = set(cfg["grid"]["test_groups"])
    for t in cfg["grid"]["train_groups"]:
        groups.update(train_group_ethnicities(t))
    return [e for e in ETHNICITIES if e in groups]


def prepare(cfg: dict[str, Any]) -> tuple[EmbeddingTable, str, list[Job], dict[int, Split]]:
    """Load and check everything a run needs, before anything is written (bad input -> InputError)."""
    table = load_data(cfg["data"])
    present = sorted({ETHNICITIES[c] for c in np.unique(table.ethnicity)}, key=ETHNICITIES.index)
    check_groups(cfg["grid"]["train_groups"], cfg["grid"]["test_groups"], present)
    fingerprint = table.fingerprint()
    jobs = make_plan(cfg, fingerprint)
    protocol = Protocol(cfg["protocol"]["train_per_gender"], cfg["protocol"]["test_per_gender"])
    ethnicities = _needed_ethnicities(cfg)
    seeds = sorted({j.seed for j in jobs})
    splits = {seed: make_split(table, seed, protocol, ethnicities) for seed in seeds}
    if cfg["verification"]["enabled"]:
        _check_genuine_pairs(table, splits, cfg["grid"]["test_groups"])
    return table, fingerprint, jobs, splits


def _check_genuine_pairs(table: EmbeddingTable, splits: dict[int, Split], test_groups: list[str]) -> None:
    """Verification needs genuine pairs: some test identity of every group with two or more images."""
    codes = table.identity_codes()
    for seed, split in splits.items():
        for group in test_groups:
            if np.bincount(codes[split.verification[group]]).max(initial=0) < 2:
                raise InputError(f"data: no {group} test identity has two or more images (seed {seed}), so there "
                                 f"are no genuine pairs for verification scores; give identities several images "
                                 f"or set [verification] enabled = false")


def run_grid(cfg: dict[str, Any], *, rerun_failed: bool = False, progress: bool = True,
             executor: Executor | None = None) -> RunSummary:
    """Run every job of ``cfg`` that is not stored yet; write each result the moment it arrives."""
    # --- executor start-up hook (wip/exec): Ray / the worker pool start while the data loads and the plan is
    # made; closed on every exit path (bad input included).
    executor = executor or make_executor(cfg["run"], cfg["grid"]["models"])
    if hasattr(executor, "start"):
        executor.start()
    try:
        return _run_grid(cfg, executor, rerun_failed=rerun_failed, progress=progress)
    finally:
        executor.close()


def _run_grid(cfg: dict[str, Any], executor: Executor, *, rerun_failed: bool, progress: bool) -> RunSummary:
    start = time.perf_counter()
    table, fingerprint, jobs, splits = prepare(cfg)
    store = ResultStore(cfg["run"]["out"])
    ledger = store.ledger()
    summary = RunSummary(out=cfg["run"]["out"], planned=len(jobs))
    todo: list[Job] = []
    for job in jobs:
        status = job_state(ledger.get(job.job_id))
        if status == "done":
            summary.stored_before += 1
        elif status == "failed" and not rerun_failed:
            summary.failed_before.append(job.description)
        else:
            todo.append(job)
    store.write_run({
        "config": cfg, "data_fingerprint": fingerprint, "versions": versions(),
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "data": {"rows": len(table), "dim": table.dim},
        "jobs": [j.record() for j in jobs],
    })
    summary.prepare_seconds = time.perf_counter() - start
    by_id = {j.job_id: j for j in todo}
    _say(progress, f"biasgrid: {len(jobs)} jobs planned, {summary.stored_before} already stored, "
                   f"{len(summary.failed_before)} failed before (not retried), {len(todo)} to run on "
                   f"{cfg['run']['executor']} -> {cfg['run']['out']}")
    if todo:
        data = shared_arrays(table)
        payloads = [j.payload(splits[j.seed]) for j in todo]
        bar = _progress_bar(len(todo), progress)
        try:
            for outcome in executor.run(payloads, data):
                job = by_id[outcome.job_id]
                record = {**job.record(), "node": outcome.node, "finished_at": outcome.finished_at,
                          "seconds": round(outcome.seconds, 3), "cpu_seconds": round(outcome.cpu_seconds, 3),
                          "worker": outcome.worker, "started": round(outcome.started, 3)}
                written = time.perf_counter()
                if outcome.error is None:
                    store.write_job(job.job_id, outcome.tables, record)
                else:
                    store.write_failure(job.job_id, record, outcome.error, outcome.traceback or "")
                    summary.failed.append(f"{job.description}: {outcome.error}")
                summary.write_seconds += time.perf_counter() - written
                summary.job_seconds += outcome.seconds
                summary.ran += 1
                bar.update(1)
                bar.set_postfix(failed=len(summary.failed), refresh=False)
        finally:
            bar.close()
    summary.seconds = time.perf_counter() - start
    return summary


def _say(enabled: bool, text: str) -> None:
    if enabled:
        print(text, file=sys.stderr, flush=True)


def _progress_bar(total: int, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, unit="job", file=sys.stderr, disable=not enabled, dynamic_ncols=True,
                bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} jobs [{elapsed}<{remaining}{postfix}]")
