"""The Python API (re-exported by the ``biasgrid`` package): run a grid or load a results folder, and get
:class:`Results`, whose views are DataFrames.

    >>> import biasgrid
    >>> res = biasgrid.run("grid.toml", **{"grid.seeds": 2, "run.out": "results"})
    >>> res.matrix("mlp")                            # train group x test group, mean accuracy over seeds
    >>> res.sql("SELECT model, avg(accuracy) FROM accuracy GROUP BY model")
    >>> biasgrid.load("results").report()

``run`` does what ``biasgrid run`` does, with the same checks and messages: bad input raises
:class:`~storage.errors.InputError` (the command's exit 2), a failed environment
:class:`~storage.errors.EnvironmentFailure` (exit 3), failed jobs :class:`~storage.errors.JobsFailed` (exit 1;
its ``results`` holds every other result); bad input is refused before anything is written.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from functools import cached_property
from pathlib import Path
from typing import Any

import pandas as pd

from grid.report import stats
from grid.report.document import all_summaries, write_report
from grid.report.results import Results as LoadedResults, load_results
from grid.executors import Executor
from grid.runner import RunSummary, run_grid
from grid.tracking import open_tracker
from storage.errors import JobsFailed


@dataclasses.dataclass
class Results(LoadedResults):
    """A loaded results folder (rows of jobs the ledger marks done) with its tables, matrices and the report's
    summaries as DataFrames; every ``grid.report.stats`` function takes it too. ``summary``: what
    :func:`run` did (None for :func:`load`)."""

    summary: RunSummary | None = None

    @property
    def accuracy(self) -> pd.DataFrame:
        """The accuracy table: one row per model x train group x test group x seed."""
        return self.tables["accuracy"]

    @property
    def predictions(self) -> pd.DataFrame:
        """Per-image predictions of every cell."""
        return self.tables["predictions"]

    @property
    def verification(self) -> pd.DataFrame:
        """The verification table: EER and FNMR at FMR per test group x seed."""
        return self.tables["verification"]

    @property
    def status(self) -> pd.DataFrame:
        """Every planned job: done, failed, missing or damaged."""
        return stats.job_status(self)

    def matrix(self, model: str, metric: str = "accuracy", value: str = "mean") -> pd.DataFrame:
        """One model's train group x test group matrix of ``metric`` (value "mean", "std" or "n" over seeds)."""
        return stats.accuracy_matrix(self, model, metric, value)

    def matrix_text(self, model: str, metric: str = "accuracy") -> pd.DataFrame:
        """The matrix as the report prints it ("0.951 ± 0.004", † for cells with fewer seeds)."""
        return stats.matrix_text(self, model, metric)

    @cached_property
    def summaries(self) -> dict[str, pd.DataFrame]:
        """The report's summary tables by CSV name (accuracy, row_spread, paired_differences, verification, ...)."""
        return all_summaries(self)

    def sql(self, query: str) -> pd.DataFrame:
        """A DuckDB query over the tables (each a view named by its table: ``accuracy``, ``verification``, ...);
        only the tables the query names are read."""
        import duckdb

        with duckdb.connect() as con:
            for name in self.tables:
                if re.search(rf"\b{re.escape(name)}\b", query, re.IGNORECASE):
                    con.register(name, self.tables[name])
            return con.sql(query).df()

    def report(self, out: str | os.PathLike[str] | None = None) -> Path | str:
        """Write the report (by default into the results folder's ``report/``); returns its report.html."""
        return write_report(self, out)


def _with(loaded: LoadedResults, summary: RunSummary | None = None) -> Results:
    """The API's view of results loaded by ``grid.report.load_results`` (the one loader)."""
    fields = {f.name: getattr(loaded, f.name) for f in dataclasses.fields(loaded) if f.init}
    return Results(**fields, summary=summary)


def load(path: str | os.PathLike[str]) -> Results:
    """Load a results folder (a local path or a pyarrow URI); InputError when it is not one."""
    return _with(load_results(path))


def execute(cfg: dict[str, Any], *, rerun_failed: bool = False, progress: bool = True, wait: bool = False,
            executor: Executor | None = None) -> tuple[RunSummary, LoadedResults, Path | str | None]:
    """Run the grid of a resolved config, load its results and write the report (``run.report``); with
    ``tracking.mlflow``, track it (the tracker is checked before anything runs, finished after the report).
    ``executor``: one already started (``grid.runner.open_executor``), closed here on every path."""
    try:
        tracker = open_tracker(cfg, progress)
    except BaseException:
        if executor is not None:
            executor.close()
        raise
    try:
        summary = run_grid(cfg, rerun_failed=rerun_failed, progress=progress, wait=wait, tracker=tracker,
                           executor=executor)
        results = load_results(cfg["run"]["out"])
        report = write_report(results) if cfg["run"]["report"] else None
    except BaseException as exc:
        if tracker is not None:
            tracker.close("KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
        raise
    if tracker is not None:
        tracker.finish(summary, report)
    return summary, results, report


def run(config: str | os.PathLike[str] | Mapping[str, Any] | None = None, *,
        overrides: Mapping[str, Any] | None = None, progress: bool = True, rerun_failed: bool = False,
        wait: bool = False, check: bool = True, **dotted: Any) -> Results:
    """Run a grid as ``biasgrid run`` does and return its results.

    ``config``: a TOML file, a dict shaped like one (``{"grid": {"seeds": 2}}``) or None (the defaults);
    ``overrides`` and keyword arguments: config keys in dotted form, as the command's options set them
    (``run(**{"grid.seeds": 2, "run.out": "r"})``; keyword arguments win). Progress goes to stderr as on the
    command line unless ``progress`` is false. Raises InputError, EnvironmentFailure, and JobsFailed when a
    job failed (unless ``check`` is false; every other result is stored and in its ``results``).
    """
    from grid.config import resolve_config

    cfg = resolve_config(config, {**(overrides or {}), **dotted})
    summary, loaded, _ = execute(cfg, rerun_failed=rerun_failed, progress=progress, wait=wait)
    results = _with(loaded, summary)
    if check and summary.exit_code:
        lines = summary.failed + [f"{d} (failed in an earlier run; rerun_failed=True retries it)"
                                  for d in summary.failed_before]
        raise JobsFailed(f"{len(lines)} job(s) failed: " + "; ".join(lines[:3]) + (" ..." if len(lines) > 3 else ""),
                         results, lines)
    return results
