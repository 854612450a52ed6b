"""The results store: one Hive-partitioned Parquet dataset per table under the output folder.

Layout (``out`` is a local folder or a URI that pyarrow's file systems understand, e.g. ``s3://bucket/run``)::

    out/accuracy/model=mlp/<job_id>.parquet
    out/verification/test_group=asian/<job_id>.parquet
    ...
    out/_jobs/<job_id>.json      the ledger: one small record per finished (done or failed) job
    out/run.json                 resolved config, data fingerprint, versions, planned jobs

Every file is written under a hidden temporary name and renamed into place, so readers (pandas, pyarrow,
DuckDB) only ever see whole files. A job's data files are written before its ledger record: a job without a
record is run again and its files (named by job id) are replaced, so no row is ever stored twice.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from storage.schema import TABLES, schema

LEDGER = "_jobs"
RUN_FILE = "run.json"
JOB_STATES: tuple[str, ...] = ("done", "failed", "missing")


def job_state(record: Mapping[str, Any] | None) -> str:
    """The state of a planned job, decided here only: ``done`` or ``failed`` as its ledger record says,
    ``missing`` when it has no record (never run, or lost in flight)."""
    if not record:
        return "missing"
    status = record.get("status")
    return status if status in ("done", "failed") else "missing"


class ResultStore:
    """Writes and reads one results folder (local path or URI)."""

    def __init__(self, out: str | os.PathLike[str]) -> None:
        out = str(out)
        if "://" in out:
            self.fs, self.root = pafs.FileSystem.from_uri(out)
        else:
            self.fs, self.root = pafs.LocalFileSystem(), str(Path(out).resolve())
        self.uri = out
        self.root = self.root.rstrip("/")

    # -- paths ---------------------------------------------------------------------------------------------
    def _path(self, *parts: str) -> str:
        return "/".join([self.root, *parts])

    def _write_atomic(self, path: str, write: Any) -> None:
        """Write through ``write(stream)`` to a hidden temporary file next to ``path``, then rename it."""
        folder, name = path.rsplit("/", 1)
        self.fs.create_dir(folder, recursive=True)
        tmp = f"{folder}/.{name}.{uuid.uuid4().hex}.tmp"
        try:
            with self.fs.open_output_stream(tmp) as stream:
                write(stream)
            self.fs.move(tmp, path)
        except BaseException:
            try:
                self.fs.delete_file(tmp)
            except (OSError, FileNotFoundError):
                pass
            raise

    def _exists(self, path: str) -> bool:
        return self.fs.get_file_info(path).type != pafs.FileType.NotFound

    # -- writing -------------------------------------------------------------------------------------------
    def write_table_rows(self, table: str, job_id: str, rows: pd.DataFrame) -> None:
        """Store one job's rows of ``table``: one file per partition value, named by the job id."""
        spec = schema(table)
        missing = [c for c in spec.names if c not in rows.columns]
        if missing:
            raise ValueError(f"rows for table {table!r} lack columns {missing}")
        key = spec.partition
        file_schema = spec.arrow_schema(without=key)
        for value, part in rows[spec.names].groupby(key, sort=False):
            arrow = pa.Table.from_pandas(part.drop(columns=[key]), schema=file_schema, preserve_index=False)
            path = self._path(table, f"{key}={quote(str(value), safe='')}", f"{job_id}.parquet")
            self._write_atomic(path, lambda s, t=arrow: pq.write_table(t, s))

    def write_job(self, job_id: str, tables: Mapping[str, pd.DataFrame], record: Mapping[str, Any]) -> None:
        """Store a finished job: its tables first, then its ledger record (which marks it done)."""
        for name, rows in tables.items():
            self.write_table_rows(name, job_id, rows)
        self._delete_failure(job_id, record.get("kind", ""))
        self._write_record(job_id, {**record, "status": "done"})

    def write_failure(self, job_id: str, record: Mapping[str, Any], error: str, traceback: str) -> None:
        """Store a failed job in ``failures/`` and mark it failed in the ledger."""
        row = pd.DataFrame([{
            "job_id": job_id, "kind": record.get("kind", ""), "description": record.get("description", ""),
            "error": error, "traceback": traceback, "finished_at": record.get("finished_at", ""),
        }])
        self.write_table_rows("failures", job_id, row)
        self._write_record(job_id, {**record, "status": "failed", "error": error})

    def _delete_failure(self, job_id: str, kind: str) -> None:
        path = self._path("failures", f"kind={quote(str(kind), safe='')}", f"{job_id}.parquet")
        if self._exists(path):
            self.fs.delete_file(path)

    def _write_record(self, job_id: str, record: Mapping[str, Any]) -> None:
        data = json.dumps(dict(record), sort_keys=True).encode()
        self._write_atomic(self._path(LEDGER, f"{job_id}.json"), lambda s: s.write(data))

    def write_run(self, info: Mapping[str, Any]) -> None:
        """Write ``run.json`` (resolved config, data fingerprint, versions, planned jobs)."""
        data = json.dumps(dict(info), indent=2, sort_keys=False, default=str).encode()
        self._write_atomic(self._path(RUN_FILE), lambda s: s.write(data))

    # -- reading -------------------------------------------------------------------------------------------
    def ledger(self) -> dict[str, dict[str, Any]]:
        """Every job record in the ledger, by job id."""
        folder = self._path(LEDGER)
        if not self._exists(folder):
            return {}
        records: dict[str, dict[str, Any]] = {}
        for info in self.fs.get_file_info(pafs.FileSelector(folder)):
            name = info.base_name
            if info.type != pafs.FileType.File or not name.endswith(".json") or name.startswith("."):
                continue
            with self.fs.open_input_stream(info.path) as stream:
                records[name[:-5]] = json.loads(stream.read())
        return records

    def run_info(self) -> dict[str, Any] | None:
        """The contents of ``run.json``, or None when there is none."""
        path = self._path(RUN_FILE)
        if not self._exists(path):
            return None
        with self.fs.open_input_stream(path) as stream:
            return json.loads(stream.read())

    def read(self, table: str) -> pd.DataFrame:
        """One table as a DataFrame with the schema's columns and types (empty when nothing is stored)."""
        spec = schema(table)
        folder = self._path(table)
        if not self._exists(folder):
            return spec.empty()
        dataset = ds.dataset(folder, filesystem=self.fs, format="parquet", partitioning="hive")
        return spec.conform(dataset.to_table().to_pandas())


def load(path: str | os.PathLike[str], tables: Iterable[str] | None = None) -> dict[str, pd.DataFrame]:
    """Load the results tables of a results folder (local path or URI) as DataFrames, by table name."""
    store = ResultStore(path)
    return {name: store.read(name) for name in (tables or list(TABLES))}
