"""Loading a results folder for the report: its tables (rows of done jobs only), run.json, ledger and the order
of the grid (models, train groups with ``all`` last, test groups, seeds as configured).

    >>> from grid.report import load_results
    >>> res = load_results("results")
"""

from __future__ import annotations

import os
from collections.abc import Iterator, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from storage.errors import InputError
from storage.results import RUN_FILE, ResultStore, Stored, job_state, jobs_from_columns, register_recorded
from storage.schema import TABLES
from storage.attributes import order_names
from storage.vocab import ALL, ETHNICITIES, demographic_order
from tasks import kinds


class Tables(MutableMapping):
    """The tables of a results folder by name, each read when a section first asks for it (then kept): rows of
    the kept jobs only (planned, done, not damaged), so that memory holds only what the report shows.
    :meth:`columns` reads some columns of a table without keeping them."""

    def __init__(self, store: ResultStore | None = None, keep: set[str] | None = None,
                 damaged: dict[str, str] | None = None, notes: list[str] | None = None,
                 listing: list[Stored] | None = None, frames: dict[str, pd.DataFrame] | None = None) -> None:
        self.store, self.keep, self.listing = store, keep, listing
        self.damaged = {} if damaged is None else damaged
        self.notes = [] if notes is None else notes
        self._frames: dict[str, pd.DataFrame] = dict(frames or {})

    def _jobs(self, name: str) -> set[str] | None:
        return None if name == "failures" or self.keep is None else self.keep

    def _read(self, name: str, columns: list[str] | None = None) -> pd.DataFrame:
        if self.store is None:
            return TABLES[name].empty(columns)
        frame, unreadable = self.store.read(name, skip_jobs=self.damaged, jobs=self._jobs(name), columns=columns,
                                            listing=self.listing)
        for job_id, reason in unreadable.items():
            self.damaged[job_id] = reason
            self.notes.append(f"damaged result of job {job_id} left out ({reason}); the next 'biasgrid run' "
                              f"recomputes it")
        return frame

    @property
    def loaded(self) -> list[str]:
        """The tables read (or set) so far."""
        return list(self._frames)

    def columns(self, name: str, columns: list[str]) -> pd.DataFrame:
        """``columns`` of table ``name`` (rows of the kept jobs), read now and not kept."""
        if name in self._frames:
            return self._frames[name][columns]
        return self._read(name, columns)

    def __getitem__(self, name: str) -> pd.DataFrame:
        if name not in self._frames:
            if name not in TABLES:
                raise KeyError(name)
            self._frames[name] = self._read(name)
        return self._frames[name]

    def __setitem__(self, name: str, frame: pd.DataFrame) -> None:
        self._frames[name] = frame

    def __delitem__(self, name: str) -> None:
        del self._frames[name]

    def __iter__(self) -> Iterator[str]:
        return iter(dict.fromkeys([*TABLES, *self._frames]))

    def __len__(self) -> int:
        return len(dict.fromkeys([*TABLES, *self._frames]))


@dataclass
class Results:
    """One loaded results folder: its tables (done jobs only, each read when first used), run.json, ledger and
    the grid's order."""

    path: str
    tables: MutableMapping[str, pd.DataFrame]
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

    def columns(self, name: str, columns: list[str]) -> pd.DataFrame:
        """``columns`` of table ``name`` only (rows of done jobs), read without keeping the table."""
        if isinstance(self.tables, Tables):
            return self.tables.columns(name, columns)
        return self.tables[name][columns]


# ---------------------------------------------------------------------------------------------------- loading
def load_results(path: str | os.PathLike[str]) -> Results:
    """Load a results folder (local path or URI): run.json, the ledger, which jobs' rows count; the tables are
    read when first used, by column where a section needs only some. Raises InputError when it is not a biasgrid
    results folder."""
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
    damaged = store.damage(ledger, verify=True)   # every file is read once, streamed: checksums cost little
    notes: list[str] = []
    if not run:
        notes.append(f"{RUN_FILE} is missing: the grid's order, the config and the planned jobs are unknown")
    for job_id, reason in damaged.items():
        notes.append(f"damaged result of job {job_id} left out ({reason}); the next 'biasgrid run' recomputes it")
    listing = store.listing()
    tables = Tables(store, _kept_jobs(store, listing, run, ledger, notes, damaged), damaged, notes, listing)
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


def _kept_jobs(store: ResultStore, listing: list[Stored], run: dict[str, Any], ledger: dict[str, dict[str, Any]],
               notes: list[str], damaged: dict[str, str]) -> set[str] | None:
    """The jobs whose rows the tables show: planned in run.json (when it lists jobs), marked done in the ledger
    (when there is one), not damaged; None when neither is known (every file counts). Notes how many rows of
    the others are ignored, per table (counted from the files' footers)."""
    planned = {j.get("job_id") for j in jobs_from_columns(run.get("jobs"))} - {None}
    done = {k for k, r in ledger.items() if job_state(r, damaged.get(k)) == "done"}
    if not planned and not ledger:
        return None
    stored = {job for name in TABLES if name != "failures" for job, _ in store.files(name, listing)}
    keep = (planned or stored) & (done if ledger else stored)
    for name in TABLES:
        if name == "failures":
            continue
        others = {job for job, _ in store.files(name, listing)} - keep - set(damaged)
        dropped = store.rows(name, others, listing) if others else 0
        if dropped:
            notes.append(f"{name}: ignored {dropped} row(s) of jobs that are not planned in {RUN_FILE} "
                         f"or not marked done in the ledger")
    return keep - set(damaged)


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


def _order(config: dict[str, Any], tables: Tables) -> tuple[list, list, list, list]:
    grid = _grid_section(config)

    def found(column: str) -> set[Any]:   # the values of a grid column in the tables of the folder's kinds
        return {v for name in tables if name != "failures" and column in TABLES[name].columns
                for v in tables.columns(name, [column])[column].dropna().unique()}

    models = _ordered([str(m) for m in grid.get("models", [])], found("model"))
    train = _ordered([str(g) for g in grid.get("train_groups", [])], found("train_group"), ETHNICITIES)
    train = [g for g in train if g != ALL] + ([ALL] if ALL in train else [])
    test = _ordered([str(g) for g in grid.get("test_groups", [])], found("test_group"), ETHNICITIES)
    seeds = [int(s) for s in grid["seeds"]] if "seeds" in grid else sorted(int(s) for s in found("seed"))
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
