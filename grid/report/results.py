"""Loading a results folder for the report: its tables (rows of done jobs only), run.json, ledger and the order
of the grid (models, train groups with ``all`` last, test groups, seeds as configured).

    >>> from grid.report import load_results
    >>> res = load_results("results")
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from storage.errors import InputError
from storage.results import RUN_FILE, ResultStore, job_state, jobs_from_columns, register_recorded
from storage.schema import TABLES
from storage.attributes import order_names
from storage.vocab import ALL, ETHNICITIES, demographic_order
from tasks import kinds


@dataclass
class Results:
    """One loaded results folder: its tables (done jobs only), run.json, ledger and the grid's order."""

    path: str
    tables: dict[str, pd.DataFrame]
    run: dict[str, Any]
    ledger: dict[str, dict[str, Any]]
    models: list[str]
    train_groups: list[str]
    test_groups: list[str]
    seeds: list[int]
    notes: list[str] = field(default_factory=list)
    damaged: dict[str, str] = field(default_factory=dict)   # done jobs whose files are not as recorded: why

    @property
    def config(self) -> dict[str, Any]:
        return self.run.get("config") or {}

    @property
    def fingerprint(self) -> str | None:
        return self.run.get("data_fingerprint")

    @property
    def jobs(self) -> list[dict[str, Any]]:
        return jobs_from_columns(self.run.get("jobs"))

    def table(self, name: str) -> pd.DataFrame:
        return self.tables[name]


# ---------------------------------------------------------------------------------------------------- loading
def load_results(path: str | os.PathLike[str]) -> Results:
    """Load a results folder (local path or URI). Raises InputError when it is not a biasgrid results folder."""
    text = str(path)
    local = "://" not in text
    if local and not Path(text).is_dir():
        raise InputError(f"{text}: no such results folder (expected the folder written by `biasgrid run --out`)")
    store = ResultStore(text)
    run = store.run_info()
    _load_kinds(run)
    ledger = store.ledger()
    has_tables = local and any((Path(text) / name).is_dir() for name in TABLES)
    if run is None and not ledger and not has_tables:
        raise InputError(f"{text} is not a biasgrid results folder: it has no {RUN_FILE}, no job ledger (_jobs/) "
                         f"and no results tables (expected the folder written by `biasgrid run --out`)")
    run = run or {}
    damaged = store.damage(ledger, verify=True)   # the files are read anyway: checksums cost little more
    tables = {}
    for name in TABLES:
        tables[name], unreadable = store.read(name, skip_jobs=damaged)
        damaged.update(unreadable)
    notes: list[str] = []
    if not run:
        notes.append(f"{RUN_FILE} is missing: the grid's order, the config and the planned jobs are unknown")
    for job_id, reason in damaged.items():
        notes.append(f"damaged result of job {job_id} left out ({reason}); the next 'biasgrid run' recomputes it")
    tables = _keep_done(tables, run, ledger, notes, damaged)
    models, train_groups, test_groups, seeds = _order(run.get("config") or {}, tables)
    return Results(text, tables, run, ledger, models, train_groups, test_groups, seeds, notes, damaged)


def _load_kinds(run: dict[str, Any] | None) -> None:
    """Register the job kinds whose tables the folder may hold: the built-in ones, the user kinds its config
    names (``run.kinds``; one that cannot be imported is left out, its tables read from run.json's record)."""
    kinds.all_kinds()
    names = (((run or {}).get("config") or {}).get("run") or {}).get("kinds") or []
    for name in names if isinstance(names, list) else []:
        try:
            kinds.load([name])
        except InputError:
            continue
    register_recorded(run)


def _keep_done(tables: dict[str, pd.DataFrame], run: dict[str, Any], ledger: dict[str, dict[str, Any]],
               notes: list[str], damaged: dict[str, str]) -> dict[str, pd.DataFrame]:
    """Drop rows of jobs that are not in run.json's plan, or that the ledger does not mark done (or damaged)."""
    planned = {j.get("job_id") for j in jobs_from_columns(run.get("jobs"))} - {None}
    done = {k for k, r in ledger.items() if job_state(r, damaged.get(k)) == "done"}
    out = {}
    for name, frame in tables.items():
        if name == "failures" or frame.empty or "job_id" not in frame.columns:
            out[name] = frame
            continue
        keep = pd.Series(True, index=frame.index)
        if planned:
            keep &= frame["job_id"].isin(planned)
        if ledger:
            keep &= frame["job_id"].isin(done)
        keep &= ~frame["job_id"].isin(damaged)
        dropped = int((~keep).sum())
        if dropped:
            notes.append(f"{name}: ignored {dropped} row(s) of jobs that are not planned in {RUN_FILE} "
                         f"or not marked done in the ledger")
        out[name] = frame[keep].reset_index(drop=True)
    return out


def _grid_section(config: dict[str, Any]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for section in (config, config.get("protocol") or {}, config.get("grid") or {}):
        if isinstance(section, dict):
            merged.update({k: v for k, v in section.items()
                           if k in ("models", "seeds", "train_groups", "test_groups") and isinstance(v, list)})
            seeds = section.get("seeds")
            if isinstance(seeds, int) and not isinstance(seeds, bool) and seeds > 0:
                merged["seeds"] = list(range(seeds))          # a count N means seeds 0..N-1
    return merged


def _ordered(configured: list[Any], found: set[Any], known: tuple[str, ...] = ()) -> list[Any]:
    extra = sorted(found - set(configured), key=lambda v: (known.index(v) if v in known else len(known), str(v)))
    return [*configured, *extra]


def _order(config: dict[str, Any], tables: dict[str, pd.DataFrame]) -> tuple[list, list, list, list]:
    grid = _grid_section(config)

    def found(column: str) -> set[Any]:   # the values of a grid column in the tables of the folder's kinds
        return {v for name, frame in tables.items() if name != "failures" and column in frame.columns
                for v in frame[column].dropna()}

    models = _ordered([str(m) for m in grid.get("models", [])], found("model"))
    train = _ordered([str(g) for g in grid.get("train_groups", [])], found("train_group"), ETHNICITIES)
    train = [g for g in train if g != ALL] + ([ALL] if ALL in train else [])
    test = _ordered([str(g) for g in grid.get("test_groups", [])], found("test_group"), ETHNICITIES)
    seeds_found: set[int] = set()
    for frame in tables.values():
        if "seed" in frame.columns and not frame.empty:
            seeds_found |= {int(s) for s in frame["seed"].dropna()}
    seeds = [int(s) for s in grid["seeds"]] if "seeds" in grid else sorted(seeds_found)
    return models, train, test, seeds


def demographic_groups(res: Results) -> list[str]:
    """The demographic groups ("asian_male", ...) present in the verification tables, in the order run.json records
    (the product order of ``[verification] groups``; a folder written before: ethnicity x gender order)."""
    found = set(res.tables["demographic_rates"]["group"].dropna())
    imp = res.tables["impostor_matrix"]
    found |= set(imp["group_a"].dropna()) | set(imp["group_b"].dropna())
    recorded = axis_names(res, "demographic")
    return order_names(found, recorded) if recorded else demographic_order(found, res.test_groups)


def verification_only(res: Results) -> bool:
    """Whether the folder's study trains no classifier (``grid.models = []``)."""
    return (res.config.get("grid") or {}).get("models") == []


def axis_names(res: Results, axis: str) -> list[str]:
    """The ordered names of one of the run's axes (``target``, ``group``, ``demographic``) as run.json records
    them (grid.axes.Axes.record); [] for a folder written before."""
    return list(((res.run.get("axes") or {}).get(axis) or {}).get("names") or [])
