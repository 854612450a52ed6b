"""MLflow tracking of runs, on the driver (optional: ``pip install 'biasgrid[mlflow]'``; ``[tracking] mlflow = URI``
or ``--mlflow [URI]``; off by default).

One *parent* MLflow run per results folder, which every run on the folder continues (a resumed run, added seeds or
models): its id is kept in the folder's ``tracking.json``, by tracking URI and experiment. One *child* run per job, logged as the
job finishes and before its result is stored: its parameters, the numbers of its first table as metrics (when that
has at most :data:`MAX_ROWS` rows: a cell's accuracy per test group, a scores job's EER and FNMR, an impostor job's
cross-group FMRs), its id and kind as tags, FINISHED or FAILED. A job run again replaces its child, and a run starts
by deleting the children of jobs the folder does not hold, so the parent holds each stored job once, also after a
``kill -9`` and a resume. At the end the report folder (report.html, its CSVs and figures) and run.json are the
parent's artifacts. ``local`` is a SQLite store inside the results folder (``mlflow/``: nothing to start).

Tracking reads results and never changes them: an unreachable server is refused before anything runs (exit 3), and a
tracking error during a run is reported once, after which the run goes on untracked.
"""

from __future__ import annotations

import json
import logging
import math
import re
import socket
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pandas as pd

from grid.dispatch import say
from storage.errors import EnvironmentFailure, InputError
from storage.results import RUN_FILE, ResultStore
from tasks import kinds

LOCAL = "local"            # tracking.mlflow value: the SQLite store in the results folder
STORE_DIR = "mlflow"       # that store's folder in the results folder (database and artifacts)
RECORD = "tracking.json"   # the parent run's id, by tracking URI and experiment
MAX_ROWS = 64              # a job's first table is logged as metrics when it has at most this many rows
PARENT_TAG, JOB_TAG, KIND_TAG = "mlflow.parentRunId", "biasgrid.job_id", "biasgrid.kind"
_QUIET = ("mlflow", "alembic", "sqlalchemy", "urllib3", "git")


def _import_mlflow() -> None:
    """Import MLflow with its logging and warnings kept off the terminal (InputError when the optional extra is not
    installed)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            import mlflow  # noqa: F401
            from mlflow.tracking import MlflowClient  # noqa: F401
        except ImportError as exc:
            raise InputError(f"tracking.mlflow needs MLflow ({exc}): pip install -e '.[mlflow]'") from None
    for name in _QUIET:
        logging.getLogger(name).setLevel(logging.ERROR)


def store_uri(setting: str, out: str) -> str:
    """The tracking URI of ``tracking.mlflow``: ``local`` = the SQLite database in the results folder ``out``."""
    if setting != LOCAL:
        return setting
    if "://" in out:
        raise InputError(f"tracking.mlflow = '{LOCAL}' keeps the MLflow store in the results folder, which must then "
                         f"be a local folder (run.out is {out}); name a tracking URI instead")
    return f"sqlite:///{Path(out).resolve() / STORE_DIR / 'mlflow.db'}"


def _probe(uri: str, timeout: float) -> None:
    """EnvironmentFailure when an http(s) tracking server does not accept a connection within ``timeout`` s."""
    parsed = urlparse(uri)
    if parsed.scheme not in ("http", "https"):
        return
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((parsed.hostname or "127.0.0.1", port), timeout=timeout):
            return
    except OSError as exc:
        raise EnvironmentFailure(f"tracking.mlflow {uri}: no MLflow server answers there within {timeout:g} s "
                                 f"({exc.strerror or exc}); start it, or check the URI") from None


def _key(text: str) -> str:
    """``text`` as an MLflow metric or parameter name (letters, digits, ``_ - . / :`` and spaces)."""
    key = re.sub(r"[^\w.\-/: ]", "_", text).strip("/ ")
    return re.sub(r"/+", "/", key)[:250] or "_"


def job_params(params: Mapping[str, Any], seed: int) -> dict[str, str]:
    """A job's parameters as MLflow params (one level of tables flattened: ``model_config.epochs``)."""
    out = {"seed": str(seed)}
    for name, value in params.items():
        if name in kinds.RUNTIME_PARAMS:
            continue
        items = value.items() if isinstance(value, Mapping) else [("", value)]
        for sub, v in items:
            text = v if isinstance(v, str) else json.dumps(v, default=str)
            out[_key(f"{name}.{sub}" if sub else name)] = text[:6000]
    return out


def _labels(frame: pd.DataFrame) -> list[str]:
    """The first text columns (in column order) that vary and together tell the rows apart."""
    text = [c for c in frame.columns if frame[c].dtype == object or isinstance(frame[c].dtype, pd.StringDtype)
            or isinstance(frame[c].dtype, pd.CategoricalDtype)]
    chosen: list[str] = []
    for column in text:
        if chosen and not frame.duplicated(chosen).any():
            break
        if frame[column].nunique(dropna=False) > 1:
            chosen.append(column)
    return chosen


def job_metrics(tables: Mapping[str, pd.DataFrame], kind: str) -> dict[str, float]:
    """The numbers of a job's first table (its kind's first that it returned) with at most :data:`MAX_ROWS` rows:
    ``column`` for one row, ``column.label`` for several (label: the row's values of :func:`_labels`)."""
    names = [t.name for t in kinds.get(kind).tables if t.name in tables] if kind in kinds.KINDS else list(tables)
    frame = tables[names[0]] if names else None
    if frame is None or frame.empty or len(frame) > MAX_ROWS:
        return {}
    numeric = [c for c in frame.columns if pd.api.types.is_numeric_dtype(frame[c])
               and not pd.api.types.is_bool_dtype(frame[c]) and c != "seed"]
    labels = _labels(frame)
    out = {}
    for _, row in frame.iterrows():
        suffix = ".".join(str(row[c]) for c in labels)
        for column in numeric:
            value = float(row[column])
            if math.isfinite(value):
                out[_key(f"{column}.{suffix}" if suffix else column)] = value
    return out


class Tracker:
    """The MLflow parent run of one results folder during one run, and its children (see the module docstring)."""

    def __init__(self, cfg: Mapping[str, Any], progress: bool = True) -> None:
        """Check the setting before anything runs: MLflow installed (InputError), the server reachable
        (EnvironmentFailure). Writes nothing."""
        tracking, run = cfg["tracking"], cfg["run"]
        self.setting, self.out, self.progress = tracking["mlflow"], run["out"], progress
        self.experiment_name = tracking["experiment"]
        self.uri = store_uri(self.setting, self.out)
        _import_mlflow()
        _probe(self.uri, run["connect_timeout"])
        self.client: Any = None
        self.experiment = ""
        self.parent: str | None = None
        self.children: dict[str, list[str]] = {}   # job id -> its child runs
        if self.setting != LOCAL:
            self._call(self._open_client)   # a server that answers but is not MLflow (or refuses): exit 3 now

    # -- MLflow calls ----------------------------------------------------------------------------------------
    def _call(self, action: Any, *args: Any) -> Any:
        """Run an MLflow call with its warnings kept off the terminal; its errors as EnvironmentFailure."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                return action(*args)
            except EnvironmentFailure:
                raise
            except Exception as exc:  # noqa: BLE001 - MLflow's, requests' and SQLAlchemy's errors alike
                raise EnvironmentFailure(f"tracking.mlflow {self.uri}: {type(exc).__name__}: "
                                         f"{str(exc).splitlines()[0] if str(exc) else ''}") from None

    def _open_client(self) -> str:
        from mlflow.tracking import MlflowClient

        if self.client is None:
            if self.setting == LOCAL:
                (Path(self.out).resolve() / STORE_DIR).mkdir(parents=True, exist_ok=True)
            self.client = MlflowClient(self.uri)
        found = self.client.get_experiment_by_name(self.experiment_name)
        if found is not None:
            return found.experiment_id
        artifacts = (Path(self.out).resolve() / STORE_DIR / "artifacts").as_uri() if self.setting == LOCAL else None
        return self.client.create_experiment(self.experiment_name, artifact_location=artifacts)

    def _safely(self, action: Any, *args: Any) -> None:
        """During the run: a tracking error is said once and tracking stops; the results go on being stored."""
        if self.parent is None:
            return
        try:
            self._call(action, *args)
        except EnvironmentFailure as exc:
            say(True, f"biasgrid: MLflow tracking stopped ({exc}); the results are stored as usual")
            self.parent = None

    # -- the run ---------------------------------------------------------------------------------------------
    def start(self, store: ResultStore, ledger: Mapping[str, Any]) -> None:
        """Continue the folder's parent run (or create it, its id kept in ``tracking.json``), and delete the
        children of jobs the ledger does not hold and all but the latest child of a job. Under the folder's lock."""
        self._call(self._start, store, ledger)

    def _start(self, store: ResultStore, ledger: Mapping[str, Any]) -> None:
        self.experiment = self._open_client()
        record = _read_record(store)
        parent = record.get(self.setting, {}).get(self.experiment_name)
        try:
            alive = parent is not None and self.client.get_run(parent).info.lifecycle_stage == "active"
        except Exception:  # noqa: BLE001 - the stored run is gone (another server, deleted): a new parent
            alive = False
        if not alive:
            name = Path(str(self.out).rstrip("/")).name or "results"
            parent = self.client.create_run(self.experiment, run_name=name,
                                            tags={"biasgrid.results": str(self.out)}).info.run_id
            record.setdefault(self.setting, {})[self.experiment_name] = parent
            store.write_bytes(RECORD, json.dumps(record, indent=1).encode())
        self.client.update_run(parent, status="RUNNING")
        self.parent = parent
        self.children = {}
        page = None
        while True:   # newest first: the latest child of a job is the one kept
            found = self.client.search_runs([self.experiment], f"tags.`{PARENT_TAG}` = '{parent}'", page_token=page,
                                            order_by=["attributes.start_time DESC"])
            for run in found:
                self.children.setdefault(run.data.tags.get(JOB_TAG, ""), []).append(run.info.run_id)
            page = found.token
            if not page:
                break
        for job_id, ids in self.children.items():
            for run_id in ids if job_id not in ledger else ids[1:]:
                self.client.delete_run(run_id)
            ids[:] = ids[:1] if job_id in ledger else []
        say(self.progress, f"biasgrid: MLflow run {parent} at {self.uri} (experiment {self.experiment_name!r}; "
                           f"{sum(map(len, self.children.values()))} job runs logged before)")

    def job(self, description: str, kind: str, seed: int, params: Mapping[str, Any], outcome: Any) -> None:
        """Log one finished job as a child run (replacing an earlier child of the same job)."""
        self._safely(self._job, description, kind, seed, params, outcome)

    def _job(self, description: str, kind: str, seed: int, params: Mapping[str, Any], outcome: Any) -> None:
        from mlflow.entities import Metric, Param

        for run_id in self.children.pop(outcome.job_id, []):
            self.client.delete_run(run_id)
        now = int(time.time() * 1000)
        tags = {PARENT_TAG: self.parent, JOB_TAG: outcome.job_id, KIND_TAG: kind}
        if outcome.error is not None:
            tags["biasgrid.error"] = str(outcome.error)[:5000]
        run_id = self.client.create_run(self.experiment, start_time=now - int(outcome.seconds * 1000), tags=tags,
                                        run_name=description).info.run_id
        self.children[outcome.job_id] = [run_id]
        metrics = [Metric(k, v, now, 0) for k, v in
                   (job_metrics(outcome.tables, kind) if outcome.error is None else {}).items()]
        metrics.append(Metric("seconds", float(outcome.seconds), now, 0))
        params_list = [Param(k, v) for k, v in job_params(params, seed).items()]
        while metrics or params_list:   # MLflow's limits per request: 1000 entities, of them 100 params
            batch, params_list = params_list[:100], params_list[100:]
            self.client.log_batch(run_id, metrics=metrics[:1000 - len(batch)], params=batch)
            metrics = metrics[1000 - len(batch):]
        self.client.set_terminated(run_id, "FINISHED" if outcome.error is None else "FAILED")

    def finish(self, summary: Any, report: str | Path | None) -> None:
        """At the end of a run: the run's counts as metrics (step: the folder's run number), run.json and the
        report folder as artifacts, the parent FINISHED (FAILED when a job failed)."""
        self._safely(self._finish, summary, report)

    def _finish(self, summary: Any, report: str | Path | None) -> None:
        from mlflow.entities import Metric

        store = ResultStore(self.out)
        info = store.run_info() or {}
        step, now = len(info.get("runs") or []), int(time.time() * 1000)
        counts = {"jobs_planned": summary.planned, "jobs_run": summary.ran, "jobs_stored_before": summary.stored_before,
                  "jobs_failed": len(summary.failed) + len(summary.failed_before), "seconds": summary.seconds}
        self.client.log_batch(self.parent, metrics=[Metric(k, float(v), now, step) for k, v in counts.items()])
        self.client.set_tag(self.parent, "biasgrid.models", ", ".join(info.get("config", {}).get("grid", {})
                                                                    .get("models", [])))
        self.client.log_dict(self.parent, info, RUN_FILE)
        if report is not None and "://" not in str(report):   # a report on an object store stays there
            self.client.log_artifacts(self.parent, str(Path(report).parent), "report")
        self.client.set_terminated(self.parent, "FAILED" if summary.exit_code else "FINISHED")
        self.parent = None

    def close(self, status: str = "KILLED") -> None:
        """The parent marked ``status`` when a run ends early (an error, Ctrl-C); the next run continues it."""
        if self.parent is not None:
            self._safely(self.client.set_terminated, self.parent, status)
        self.parent = None


def _read_record(store: ResultStore) -> dict[str, Any]:
    """The folder's ``tracking.json`` (empty when it has none or it cannot be read: a new parent run is made)."""
    try:
        with store.fs.open_input_stream(f"{store.root}/{RECORD}") as stream:
            record = json.loads(stream.read())
        return record if isinstance(record, dict) else {}
    except (OSError, ValueError):
        return {}


def open_tracker(cfg: Mapping[str, Any], progress: bool = True) -> Tracker | None:
    """The run's tracker, checked before anything runs, or None when tracking is off."""
    return Tracker(cfg, progress) if cfg["tracking"]["mlflow"] else None
