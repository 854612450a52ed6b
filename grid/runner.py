"""Run a grid: load the data, plan, skip stored jobs, dispatch the rest, store each result as it arrives."""

from __future__ import annotations

import socket
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from grid import experiment
from grid.axes import Axes, resolve_axes
from grid.config import resolve_config
from grid.dispatch import dispatch, say
from grid.executors import Executor, Shape, make_executor
from grid.plan import Job, count_jobs, make_plan
from grid.tracking import Tracker
from grid.splits import Protocol, Split, check_groups, make_split, train_group_ethnicities
from storage.errors import EnvironmentFailure, InputError
from storage.lock import FolderLock
from storage.results import ResultStore, check_results_out, job_state, jobs_from_columns, jobs_to_columns
from storage.table import EmbeddingTable, read_table, table_width
from storage.vocab import ALL
from tasks import kinds
from tasks.models import model_type
from tasks.runtime import Outcome

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
    if _is_table(path, fmt):
        return read_table(path)
    from storage.importers import import_embeddings

    return import_embeddings(path, fmt or None)


def _is_table(path: str, fmt: str) -> bool:
    """Whether the data the config names is read as an embedding table (else by an importer)."""
    return not fmt and str(path).endswith(".parquet") and Path(path).is_file()


def data_width(data_cfg: dict[str, Any]) -> int | None:
    """The width of the embeddings the config names, known before they are read: the synthetic data's, or what a
    Parquet table's schema declares; None otherwise (an importer's source, a ``list<float>`` column)."""
    path, fmt = data_cfg["path"], data_cfg["format"]
    if not path:
        from storage.synth import synth_params_from_dict

        return synth_params_from_dict(data_cfg["synth"], "[data.synth]").dim
    return table_width(path) if _is_table(path, fmt) else None


def warm_shapes(cfg: dict[str, Any]) -> list[Shape] | None:
    """The MLP trainer shapes (input width, hidden units, batch size) of the grid's fast-trained MLP models, which
    the workers compile as they start; None when the width is not known before the data is read (the workers
    then compile the study's shape, and each cell compiles its own before its timed fit)."""
    width = data_width(cfg["data"])
    if width is None:
        return None
    configs = [cfg["model"][m] for m in cfg["grid"]["models"] if model_type(m, cfg["model"].get(m)) == "mlp"]
    return list(dict.fromkeys((width, tuple(c["hidden_units"]), c["batch_size"]) for c in configs
                              if c["trainer"] == "fast"))


def shared_arrays(table: EmbeddingTable, axes: Axes | None = None) -> dict[str, np.ndarray]:
    """The arrays every job reads: the matrix, identities, image names and the axes' labels (``target``,
    ``group``, ``demographic`` and their ``*_names``: :meth:`grid.axes.Axes.arrays`; default: the default
    axes), and ``face_detected`` when the table has it; indices select rows per job."""
    axes = axes or resolve_axes(resolve_config(None), table)
    return {"X": table.embeddings, "identity_codes": table.identity_codes(),
            "identity": np.asarray(table.identity, dtype=object), "image": np.asarray(table.image, dtype=object),
            **axes.arrays(),
            **({} if table.face_detected is None else {"face_detected": np.asarray(table.face_detected, bool)})}


def table_records() -> dict[str, dict[str, Any]]:
    """The columns and partition key of every kind's table, for run.json (``storage.load`` reads them back)."""
    return {t.name: {"columns": t.columns, "partition": t.partition} for k in kinds.all_kinds() for t in k.tables}


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


def _needed_groups(cfg: dict[str, Any], present: list[str]) -> list[str]:
    groups = set(cfg["grid"]["test_groups"])
    for t in cfg["grid"]["train_groups"]:
        groups.update(train_group_ethnicities(t, present))
    return [e for e in present if e in groups]


@dataclass
class Prepared:
    """Everything a run needs, checked before anything is written."""

    cfg: dict[str, Any]            # the config as run: test groups include those the folder already holds
    table: EmbeddingTable
    fingerprint: str
    jobs: list[Job]
    splits: dict[int, Split]
    fixed: dict[str, Any]          # the folder's experiment after this run
    requested_grid: dict[str, Any]  # the grid as this run asked for it
    axes: Axes                     # the target, group axis and demographic groups on the data


def load_checked_data(cfg: dict[str, Any]) -> tuple[dict[str, Any], EmbeddingTable, str]:
    """The config with its groups resolved against the data (no train or test groups given = every group of the
    group axis in the data, plus ``all`` for training when the data have several; no training groups without
    models), checked; the data; its fingerprint."""
    table = load_data(cfg["data"])
    present = resolve_axes(cfg, table).group.present()
    grid = dict(cfg["grid"])
    grid["test_groups"] = grid["test_groups"] or list(present)
    if grid["models"]:
        grid["train_groups"] = grid["train_groups"] or [*present, *([ALL] if len(present) > 1 else [])]  # 1: no "all"
    else:   # a verification-only study trains nothing
        grid["train_groups"] = []
    check_groups(grid["train_groups"], grid["test_groups"], present, need_train=bool(grid["models"]))
    return {**cfg, "grid": grid}, table, table.fingerprint()


def prepare(cfg: dict[str, Any], table: EmbeddingTable, fingerprint: str,
            stored: dict[str, Any] | None = None) -> Prepared:
    """Plan the run against the folder's stored record (None for a new folder) and check everything it needs:
    the experiment is the folder's (InputError naming each difference), the grid is the folder's grid extended
    by this run's (grid/experiment.py), the job bound, the splits, each kind's check (genuine pairs, a pair
    protocol's file, t-SNE's perplexity). Writes nothing."""
    stored = stored or {}
    requested_grid = dict(cfg["grid"])
    stored_fixed = stored.get("experiment") or (experiment.fixed_part(stored["config"], stored["data_fingerprint"])
                                                if stored.get("config") and stored.get("data_fingerprint") else None)
    fixed = experiment.merge_fixed(stored_fixed, experiment.fixed_part(cfg, fingerprint), cfg["run"]["out"])
    cfg = experiment.merged_config(stored.get("config"), cfg, fixed)
    check_job_bound(cfg)
    jobs = make_plan(cfg, fingerprint)
    protocol = Protocol(cfg["protocol"]["train_per_gender"], cfg["protocol"]["test_per_gender"])
    axes = resolve_axes(cfg, table)
    groups = _needed_groups(cfg, axes.group.present())
    seeds = sorted({j.seed for j in jobs})
    splits = {seed: make_split(table, seed, protocol, groups, group=axes.group, target=axes.target) for seed in seeds}
    for kind in kinds.all_kinds():   # each kind's own checks, on the data and its planned jobs
        if kind.check is not None:
            kind.check(cfg, table, splits, [j for j in jobs if j.kind == kind.name])
    return Prepared(cfg, table, fingerprint, jobs, splits, fixed, requested_grid, axes)


def check_job_bound(cfg: dict[str, Any]) -> None:
    """InputError when the grid plans more jobs than ``run.max_jobs`` (counted without building them)."""
    count = count_jobs(cfg)
    if count > cfg["run"]["max_jobs"]:
        raise InputError(f"the grid plans {count:,} jobs, more than the limit of {cfg['run']['max_jobs']:,} "
                         f"(run.max_jobs); check --seeds and the groups, or raise the limit with --max-jobs")


def probe_address(address: str, timeout: float) -> None:
    """EnvironmentFailure when a Ray cluster address (host:port or ray://host:port) does not accept a connection
    within ``timeout`` seconds ("auto" and "local" are left to Ray)."""
    if not address or address in ("auto", "local"):
        return
    host, _, port = address.split("://", 1)[-1].rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout):
            return
    except ValueError:
        raise InputError(f"--address {address}: expected host:port, ray://host:port or auto") from None
    except OSError as exc:
        raise EnvironmentFailure(f"--address {address}: no Ray cluster answers there within {timeout:g} s "
                                 f"({exc.strerror or exc}); check the address and that the cluster is up "
                                 f"(run.connect_timeout sets the wait)") from None


def check_resources(executor: Executor, jobs: list[Job], store: ResultStore) -> None:
    """The executor's check of the ``[run.resources]`` asks of the kinds with jobs not stored yet (InputError
    before the folder is touched when nothing can hold one)."""
    ledger = store.ledger() if store.exists() else {}
    kinds = sorted({j.kind for j in jobs if job_state(ledger.get(j.job_id)) != "done"})
    if kinds and hasattr(executor, "check"):
        executor.check(kinds)


def _slot(record: dict[str, Any]) -> tuple[Any, ...]:
    """What a job's rows are about: two jobs of one slot would store the same rows (kind, seed and the kind's
    ``record`` parameters; a kind no longer registered: every recorded key but the id and description)."""
    try:
        keys: tuple[str, ...] = kinds.get(record.get("kind", "")).record
    except KeyError:
        keys = tuple(sorted(k for k in record if k not in ("job_id", "description", "kind", "seed")))
    return (record.get("kind"), record.get("seed"), *((k, record.get(k)) for k in keys))


def _run_record(cfg: dict[str, Any], planned: int, to_run: int) -> dict[str, Any]:
    return {"started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "host": socket.gethostname(),
            "command": " ".join(sys.argv)[:500], "config": cfg, "versions": versions(), "planned": planned,
            "to_run": to_run}


def open_executor(cfg: dict[str, Any]) -> Executor:
    """The config's executor, started: Ray's node or the pool come up while the data loads. First the checks that
    refuse at once: the results folder, and a cluster address that answers."""
    check_results_out(cfg["run"]["out"])
    if cfg["run"]["executor"] == "ray":   # an unreachable cluster fails here, within the timeout
        probe_address(cfg["run"]["address"], cfg["run"]["connect_timeout"])
    types = list(dict.fromkeys(model_type(m, cfg["model"].get(m)) for m in cfg["grid"]["models"]))
    executor = make_executor(cfg["run"], types, warm_shapes(cfg))
    if hasattr(executor, "start"):
        executor.start()
    return executor


def run_grid(cfg: dict[str, Any], *, rerun_failed: bool = False, progress: bool = True,
             executor: Executor | None = None, wait: bool = False, tracker: Tracker | None = None) -> RunSummary:
    """Run every job of ``cfg`` that is not stored yet; write each result the moment it arrives.

    The executor starts first (:func:`open_executor`: Ray or the worker pool come up while the data loads and the
    plan is made; ``executor``: one made, or already started, by the caller) and is closed on every exit path.
    Everything is checked before the results folder is touched; the folder is then locked for this run (another
    run refuses, or waits with ``wait``), damaged results and leftovers are removed, and run.json records the
    folder's experiment and this run next to the earlier ones. A ``tracker`` (grid/tracking.py) gets the folder's
    MLflow parent run then, and each job's child run as it finishes; the caller finishes it.
    """
    if executor is None:
        executor = open_executor(cfg)
    elif hasattr(executor, "start"):   # started already, or made by the caller
        executor.start()
    try:
        return _run_grid(cfg, executor, rerun_failed=rerun_failed, progress=progress, wait=wait, tracker=tracker)
    finally:
        executor.close()


def _run_grid(cfg: dict[str, Any], executor: Executor, *, rerun_failed: bool, progress: bool,
              wait: bool, tracker: Tracker | None) -> RunSummary:
    start = time.perf_counter()
    out = cfg["run"]["out"]
    cfg, table, fingerprint = load_checked_data(cfg)
    store = ResultStore(out)
    plan = prepare(cfg, table, fingerprint, store.run_info() if store.exists() else None)
    check_resources(executor, plan.jobs, store)
    lock = FolderLock(store.fs, store.root)
    notes = lock.acquire(wait)
    try:
        stored = store.run_info() or {}
        if stored:   # re-plan under the lock: another run may have written the folder meanwhile
            plan = prepare(cfg, table, fingerprint, stored)
        return _run_locked(plan, store, stored, notes, rerun_failed, progress, executor, start, tracker)
    finally:
        lock.release()


def _run_locked(plan: Prepared, store: ResultStore, stored: dict[str, Any], notes: list[str], rerun_failed: bool,
                progress: bool, executor: Executor, start: float, tracker: Tracker | None) -> RunSummary:
    cfg, jobs = plan.cfg, plan.jobs
    ledger = store.ledger()
    for job_id, reason in store.damage(ledger, verify=True).items():
        notes.append(f"damaged result of job {job_id} removed, to be recomputed: {reason}")
        store.discard_job(job_id, ledger.pop(job_id, None))
    removed = store.clean(ledger)
    if removed:
        notes.append(f"removed {len(removed)} leftover file(s) of interrupted writes or unfinished jobs")
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
    planned = {j.job_id for j in jobs}
    slots = {_slot(j.record()) for j in jobs}
    earlier = [r for r in jobs_from_columns(stored.get("jobs")) if r.get("job_id") not in planned]
    superseded = [r["job_id"] for r in earlier if _slot(r) in slots]
    for job_id in superseded:   # the same rows from a job with fewer test groups: its replacement runs now
        store.discard_job(job_id, ledger.pop(job_id, None))
    if superseded:
        notes.append(f"{len(superseded)} earlier job(s) run again to include the added test groups")
    if cfg["grid"] != plan.requested_grid:
        notes.append("the results folder's grid (the union of every run's) is completed: "
                     + ", ".join(f"{k} {', '.join(map(str, cfg['grid'][k]))}" for k in experiment.GRID_LISTS))
    kept = [r for r in earlier if _slot(r) not in slots]
    store.write_run({
        "experiment": plan.fixed,
        "config": cfg,
        "data_fingerprint": plan.fingerprint,
        "data": {"rows": len(plan.table), "dim": plan.table.dim, "source": cfg["data"]["path"] or "built-in synthetic"},
        "axes": plan.axes.record(),
        "versions": versions(),
        "created_at": stored.get("created_at") or datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "runs": [*(stored.get("runs") or []), _run_record(cfg, len(jobs), len(todo))],
        "jobs": jobs_to_columns([*kept, *(j.record() for j in jobs)]),
        "tables": {**(stored.get("tables") or {}), **table_records()},   # earlier runs' kinds' tables too
    })
    summary.prepare_seconds = time.perf_counter() - start
    for note in notes:
        say(progress, f"biasgrid: {note}")
    if tracker is not None:
        tracker.start(store, ledger)
    by_id = {j.job_id: j for j in todo}
    say(progress, f"biasgrid: {len(jobs)} jobs planned, {summary.stored_before} already stored, "
                  f"{len(summary.failed_before)} failed before (not retried), {len(todo)} to run on "
                  f"{cfg['run']['executor']} -> {cfg['run']['out']}")
    if not todo:
        summary.seconds = time.perf_counter() - start
        return summary
    done = {j.job_id for j in jobs if job_state(ledger.get(j.job_id)) == "done"}

    def save(outcome: Outcome) -> bool:
        job = by_id[outcome.job_id]
        record = {**job.record(), "node": outcome.node, "finished_at": outcome.finished_at,
                  "seconds": round(outcome.seconds, 3), "cpu_seconds": round(outcome.cpu_seconds, 3),
                  "worker": outcome.worker, "started": round(outcome.started, 3)}
        if tracker is not None:   # before the result is stored: a job run again replaces its child run
            tracker.job(job.description, job.kind, job.seed, job.params, outcome)
        written = time.perf_counter()
        if outcome.error is None:
            store.write_job(job.job_id, outcome.tables, record)
            done.add(job.job_id)
        else:
            store.write_failure(job.job_id, record, outcome.error, outcome.traceback or "")
            summary.failed.append(f"{job.description}: {outcome.error}")
        summary.write_seconds += time.perf_counter() - written
        summary.job_seconds += outcome.seconds
        summary.ran += 1
        return outcome.error is not None

    for stage in kinds.stages({j.kind for j in jobs}):   # kinds that follow others run once those are done
        ready = []
        for kind in stage:
            if not any(j.kind == kind.name for j in todo):
                continue
            if any(j.kind in kind.after and j.job_id not in done for j in jobs):
                say(progress, f"biasgrid: the {kind.name} jobs do not run: they follow the "
                              f"{', '.join(kind.after)} jobs, which are not all done")
            else:
                ready.append(kind)
        stage_jobs = [j for j in todo if j.kind in {k.name for k in ready}]
        if not stage_jobs:
            continue
        try:
            data = stage_data(ready, plan, store, done)
        except InputError as exc:   # what the earlier kinds stored cannot give these jobs their inputs
            for job in stage_jobs:
                save(Outcome(job.job_id, error=str(exc), node=""))
            continue
        dispatch(executor, [j.payload(plan.splits[j.seed]) for j in stage_jobs], data, save, progress=progress)
    summary.seconds = time.perf_counter() - start
    return summary


def stage_data(stage: list[kinds.JobKind], plan: Prepared, store: ResultStore, done: set[str]) -> dict[str, Any]:
    """The arrays a stage's jobs read: the data's (:func:`shared_arrays`) where a kind of the stage has no
    ``inputs``, and each kind's ``inputs`` built from the stored rows of done jobs (read by column)."""
    data = shared_arrays(plan.table, plan.axes) if any(k.inputs is None for k in stage) else {}
    listing = store.listing()
    for kind in stage:
        if kind.inputs is not None:
            data.update(kind.inputs(plan.cfg, lambda table, columns: store.scan(table, columns, jobs=done,
                                                                                listing=listing)))
    return data
