"""The results store: one Hive-partitioned Parquet dataset per table under the output folder.

Layout (``out`` is a local folder or a URI that pyarrow's file systems understand, e.g. ``s3://bucket/run``)::

    out/accuracy/model=mlp/<job_id>.parquet
    out/verification/test_group=asian/<job_id>.parquet
    ...
    out/_jobs/<job_id>.json      the ledger: one record per finished (done or failed) job, with the size and
                                 SHA-256 of each file the job wrote
    out/run.json                 the folder's experiment, merged config, every run's record, planned jobs
    out/.lock.json               while a run writes the folder (storage/lock.py)

Every file is written under a hidden temporary name and renamed into place, so readers (pandas, pyarrow,
DuckDB) only ever see whole files. A job's data files are written before its ledger record: a job without a
record is run again and its files (named by job id) are replaced, so no row is ever stored twice. A done job
whose files are missing, of another size, unreadable or (with ``verify``) of another checksum is *damaged*:
reported as such, left out of the report, and recomputed by the next run.

Over 400 lines, on purpose: the store is the results folder's one writer and one reader (files, ledger, run.json,
damage and leftovers, the tables' schemas), so that what it writes and how it is read back are defined together.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from storage.errors import InputError, environment_failure
from storage.atomic import write_atomic
from storage.lock import LOCK_FILE
from storage.schema import TABLES, TableSchema, register_table, schema

LEDGER = "_jobs"
RUN_FILE = "run.json"
MARKERS = (RUN_FILE, LEDGER, LOCK_FILE)   # what makes a folder a results folder (the lock: before run.json)
JOB_STATES: tuple[str, ...] = ("done", "failed", "missing", "damaged")
JOB_FIELDS = ("job_id", "kind", "seed", "description")   # every job's; its kind's record parameters follow


def job_state(record: Mapping[str, Any] | None, damage: str | None = None) -> str:
    """The state of a planned job, decided here only: ``done`` or ``failed`` as its ledger record says,
    ``damaged`` when a done job's files are not as recorded or its record cannot be read (``damage`` says how),
    ``missing`` when it has no record (never run, or lost in flight)."""
    if damage and (not record or record.get("status") == "done"):
        return "damaged"
    if not record:
        return "missing"
    status = record.get("status")
    return status if status in ("done", "failed") else "missing"


def jobs_to_columns(records: Iterable[Mapping[str, Any]]) -> dict[str, list[Any]]:
    """Job records as one list per field (run.json's compact form)."""
    records = list(records)
    fields = dict.fromkeys([*JOB_FIELDS, *(f for r in records for f in r)])
    return {f: [r.get(f) for r in records] for f in fields}


def jobs_from_columns(jobs: Any) -> list[dict[str, Any]]:
    """Job records from run.json: the compact form (one list per field) or a list of records."""
    if isinstance(jobs, dict):
        ids = jobs.get("job_id") or []
        columns = {f: (jobs.get(f) if isinstance(jobs.get(f), list) else None) or [None] * len(ids)
                   for f in dict.fromkeys([*JOB_FIELDS, *jobs])}
        return [{f: v[i] for f, v in columns.items() if i < len(v) and v[i] is not None} for i in range(len(ids))]
    return [j for j in jobs or [] if isinstance(j, dict)]


def filesystem(out: str | os.PathLike[str]) -> tuple[pafs.FileSystem, str]:
    """The file system and root path of a folder given as a local path (resolved) or a URI."""
    out = str(out)
    if "://" in out:
        fs, root = pafs.FileSystem.from_uri(out)
    else:
        fs, root = pafs.LocalFileSystem(), str(Path(out).resolve())
    return fs, root.rstrip("/") or "/"


def _marker(fs: pafs.FileSystem, folder: str) -> str | None:
    """The first of :data:`MARKERS` that ``folder`` holds: it is a results folder."""
    for name in MARKERS:
        try:
            if fs.get_file_info(f"{folder.rstrip('/')}/{name}").type != pafs.FileType.NotFound:
                return name
        except OSError:   # a parent the user may not read (object stores): not known to be a results folder
            return None
    return None


def enclosing_results_folder(out: str | os.PathLike[str]) -> tuple[str, str] | None:
    """(the results folder that holds ``out`` somewhere below it, the marker it holds), or None."""
    fs, root = filesystem(out)
    parts = root.split("/")
    for i in range(len(parts) - 1, 0, -1):
        parent = "/".join(parts[:i]) or "/"
        if (found := _marker(fs, parent)) is not None:
            return parent, found
    return None


def check_outside_results(out: str | os.PathLike[str], option: str = "--out") -> None:
    """InputError when ``out`` lies inside a results folder (whose table folders any file would break)."""
    if (inside := enclosing_results_folder(out)) is not None:
        raise InputError(f"{option} {out}: is inside the results folder {inside[0]} (it holds {inside[1]}), which "
                         f"holds only what 'biasgrid run' writes; name a place outside it")


def check_results_out(out: str, option: str = "--out") -> None:
    """InputError (nothing written) when ``out`` cannot be a results folder: a file, a folder inside a results
    folder (its tables would then hold a second results tree), or an existing non-empty folder that is not a
    results folder (the results would be written among other files). New, empty and results folders pass."""
    fs, root = filesystem(out)
    info = fs.get_file_info(root)
    if info.type == pafs.FileType.File:
        raise InputError(f"{option} {out}: is a file; expected a results folder (a new or an existing one)")
    check_outside_results(out, option)
    if info.type == pafs.FileType.Directory and _marker(fs, root) is None:
        names = sorted(i.base_name for i in fs.get_file_info(pafs.FileSelector(root)))
        if names:
            raise InputError(f"{option} {out}: is a folder holding other files ({', '.join(names[:3])}"
                             f"{' ...' if len(names) > 3 else ''}) and no results (no {RUN_FILE}); expected a new "
                             f"or empty folder, or an existing results folder to add to")


@dataclass(frozen=True)
class Stored:
    """A file of the results folder: its path relative to the root and its size in bytes."""

    path: str
    size: int


class ResultStore:
    """Writes and reads one results folder (local path or URI)."""

    def __init__(self, out: str | os.PathLike[str]) -> None:
        self.fs, self.root = filesystem(out)
        self.uri = str(out)
        self.unreadable: dict[str, str] = {}   # ledger records that could not be read: job id -> reason

    # -- paths ---------------------------------------------------------------------------------------------
    def _path(self, *parts: str) -> str:
        return "/".join([self.root, *parts])

    def exists(self) -> bool:
        """Whether the results folder exists."""
        return self._exists(self.root)

    def _exists(self, path: str) -> bool:
        return self.fs.get_file_info(path).type != pafs.FileType.NotFound

    def write_bytes(self, relative: str, data: bytes) -> None:
        """Write ``data`` to ``relative`` through a hidden temporary file and a rename (EnvironmentFailure when
        the file system refuses: read-only, full, no permission)."""
        path = self._path(relative)
        try:
            self.fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
            write_atomic(path, lambda stream: stream.write(data), self.fs)
        except OSError as exc:
            raise environment_failure(path, exc) from exc

    def _delete(self, path: str) -> None:
        try:
            self.fs.delete_file(path)
        except (OSError, FileNotFoundError):
            pass

    # -- writing -------------------------------------------------------------------------------------------
    def write_table_rows(self, table: str, job_id: str, rows: pd.DataFrame) -> dict[str, dict[str, Any]]:
        """Store one job's rows of ``table``: one file per partition value, named by the job id. Returns each
        file's path (relative to the folder) with its size and SHA-256."""
        spec = schema(table)
        missing = [c for c in spec.names if c not in rows.columns]
        if missing:
            raise ValueError(f"rows for table {table!r} lack columns {missing}")
        key = spec.partition
        file_schema = spec.arrow_schema(without=key)
        files = {}
        for value, part in rows[spec.names].groupby(key, sort=False):
            arrow = pa.Table.from_pandas(part.drop(columns=[key]), schema=file_schema, preserve_index=False)
            sink = pa.BufferOutputStream()
            pq.write_table(arrow, sink)
            data = sink.getvalue().to_pybytes()
            relative = f"{table}/{key}={quote(str(value), safe='')}/{job_id}.parquet"
            self.write_bytes(relative, data)
            files[relative] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        return files

    def write_job(self, job_id: str, tables: Mapping[str, pd.DataFrame], record: Mapping[str, Any]) -> None:
        """Store a finished job: its tables first, then its ledger record (which marks it done)."""
        files: dict[str, dict[str, Any]] = {}
        for name, rows in tables.items():
            files.update(self.write_table_rows(name, job_id, rows))
        self._delete(self._failure_path(job_id, record.get("kind", "")))
        self._write_record(job_id, {**record, "status": "done", "files": files})

    def write_failure(self, job_id: str, record: Mapping[str, Any], error: str, traceback: str) -> None:
        """Store a failed job in ``failures/`` and mark it failed in the ledger."""
        row = pd.DataFrame([{
            "job_id": job_id, "kind": record.get("kind", ""), "description": record.get("description", ""),
            "error": error, "traceback": traceback, "finished_at": record.get("finished_at", ""),
        }])
        files = self.write_table_rows("failures", job_id, row)
        self._write_record(job_id, {**record, "status": "failed", "error": error, "files": files})

    def _failure_path(self, job_id: str, kind: str) -> str:
        return self._path("failures", f"kind={quote(str(kind), safe='')}", f"{job_id}.parquet")

    def _write_record(self, job_id: str, record: Mapping[str, Any]) -> None:
        self.write_bytes(f"{LEDGER}/{job_id}.json", json.dumps(dict(record), sort_keys=True).encode())

    def write_run(self, info: Mapping[str, Any]) -> None:
        """Write ``run.json`` (the experiment, merged config, every run's record, planned jobs)."""
        self.write_bytes(RUN_FILE, json.dumps(dict(info), indent=1, default=str).encode())

    def discard_job(self, job_id: str, record: Mapping[str, Any] | None) -> None:
        """Delete a job's ledger record, then its files (the recorded ones and any named by its id)."""
        self._delete(self._path(LEDGER, f"{job_id}.json"))
        for relative in (record or {}).get("files") or {}:
            self._delete(self._path(relative))
        for stored in self.listing():
            if stored.path.rsplit("/", 1)[-1] == f"{job_id}.parquet":
                self._delete(self._path(stored.path))

    # -- reading -------------------------------------------------------------------------------------------
    def listing(self) -> list[Stored]:
        """Every file under the folder (one recursive listing)."""
        if not self.exists():
            return []
        infos = self.fs.get_file_info(pafs.FileSelector(self.root, recursive=True))
        return [Stored(i.path[len(self.root) + 1:], int(i.size or 0)) for i in infos if i.type == pafs.FileType.File]

    def ledger(self) -> dict[str, dict[str, Any]]:
        """Every readable job record in the ledger, by job id (unreadable ones are in ``self.unreadable``)."""
        folder = self._path(LEDGER)
        self.unreadable = {}
        if not self._exists(folder):
            return {}
        records: dict[str, dict[str, Any]] = {}
        for info in self.fs.get_file_info(pafs.FileSelector(folder)):
            name = info.base_name
            if info.type != pafs.FileType.File or not name.endswith(".json") or name.startswith("."):
                continue
            try:
                with self.fs.open_input_stream(info.path) as stream:
                    record = json.loads(stream.read())
                if not isinstance(record, dict):
                    raise ValueError("not a JSON object")
                records[name[:-5]] = record
            except (OSError, ValueError) as exc:
                self.unreadable[name[:-5]] = f"{LEDGER}/{name} is not a readable ledger record ({exc})"
        return records

    def run_info(self) -> dict[str, Any] | None:
        """The contents of ``run.json``, or None when there is none; InputError naming it when malformed."""
        path = self._path(RUN_FILE)
        if not self._exists(path):
            return None
        try:
            with self.fs.open_input_stream(path) as stream:
                info = json.loads(stream.read())
        except (ValueError, OSError) as exc:
            raise InputError(f"{path}: not valid JSON ({exc}); expected the record written by 'biasgrid run'") \
                from exc
        if not isinstance(info, dict):
            raise InputError(f"{path}: expected a JSON object with config, data_fingerprint and jobs")
        return info

    def damage(self, ledger: Mapping[str, Mapping[str, Any]], verify: bool = False) -> dict[str, str]:
        """Done jobs whose files are not as their record says: job id -> what is wrong. Sizes are compared
        (one listing); with ``verify`` every file is also read and its SHA-256 compared."""
        sizes = {s.path: s.size for s in self.listing()}
        damaged: dict[str, str] = {}
        for job_id, record in ledger.items():
            if record.get("status") != "done":
                continue
            for relative, meta in (record.get("files") or {}).items():
                size = sizes.get(relative)
                if size is None:
                    damaged[job_id] = f"{relative} is missing"
                elif size != meta.get("size"):
                    damaged[job_id] = f"{relative} has {size} bytes, {meta.get('size')} were written"
                elif verify and self._sha256(relative) != meta.get("sha256"):
                    damaged[job_id] = f"{relative} does not have the checksum it was written with"
                else:
                    continue
                break
        for job_id, reason in self.unreadable.items():
            damaged.setdefault(job_id, reason)
        return damaged

    def foreign(self) -> list[str]:
        """Entries inside a table's folder that are not the store's own (``<partition>=<value>/`` folders holding
        ``<job_id>.parquet`` files, and hidden temporary files): a reader of the table (pandas, pyarrow, DuckDB)
        would read them as its data, or fail. Paths relative to the folder, outermost foreign entry only."""
        found = []
        for table in TABLES:
            folder = self._path(table)
            if not self._exists(folder):
                continue
            if self.fs.get_file_info(folder).type != pafs.FileType.Directory:
                found.append(table)
                continue
            key = schema(table).partition
            for info in self.fs.get_file_info(pafs.FileSelector(folder, recursive=True)):
                parts = info.path[len(folder) + 1:].split("/")
                if parts[-1].startswith(".") and parts[-1].endswith(".tmp") and info.type == pafs.FileType.File:
                    continue   # an interrupted write (readers skip hidden files; the next run removes it)
                if len(parts) == 1 and info.type == pafs.FileType.Directory and parts[0].startswith(f"{key}="):
                    continue
                if len(parts) == 2 and info.type == pafs.FileType.File and parts[1].endswith(".parquet") \
                        and parts[0].startswith(f"{key}="):
                    continue
                found.append("/".join([table, *parts]))
        return [p for p in sorted(found) if not any(p.startswith(f"{q}/") for q in found)]

    def _sha256(self, relative: str) -> str:
        digest = hashlib.sha256()
        with self.fs.open_input_stream(self._path(relative)) as stream:
            while chunk := stream.read(1 << 20):
                digest.update(chunk)
        return digest.hexdigest()

    def clean(self, ledger: Mapping[str, Mapping[str, Any]]) -> list[str]:
        """Remove what no finished job owns: leftover ``.tmp`` files of interrupted writes and table files whose
        job has no ledger record (lost in flight; the job runs again). Returns what was removed."""
        removed = []
        for stored in self.listing():
            name = stored.path.rsplit("/", 1)[-1]
            table = stored.path.split("/", 1)[0]
            orphan = table in TABLES and name.endswith(".parquet") and name[:-8] not in ledger
            if (name.startswith(".") and name.endswith(".tmp")) or orphan:
                self._delete(self._path(stored.path))
                removed.append(stored.path)
        return removed

    def files(self, table: str, listing: Iterable[Stored] | None = None) -> list[tuple[str, str]]:
        """(job id, path) of every stored data file of ``table`` (from ``listing``, default a new listing)."""
        out = []
        for s in self.listing() if listing is None else listing:
            name = s.path.rsplit("/", 1)[-1]
            if s.path.startswith(f"{table}/") and name.endswith(".parquet") and not name.startswith("."):
                out.append((name[:-8], self._path(s.path)))
        return out

    def scan(self, table: str, columns: list[str] | None = None, jobs: Collection[str] | None = None,
             spec: TableSchema | None = None, listing: Iterable[Stored] | None = None) -> pa.Table:
        """``columns`` (default all) of ``table`` as a ``pyarrow.Table``, read by column from the files of ``jobs``
        (job ids; None: every job's): nothing else is read into memory. The partition column has its schema's type.
        Raises OSError / ArrowException when a file cannot be read (:meth:`read` finds which)."""
        spec = spec or schema(table)
        columns = spec.names if columns is None else list(columns)
        files = [p for j, p in self.files(table, listing) if jobs is None or j in jobs]
        want = spec.arrow_schema()
        if not files:
            return want.empty_table().select(columns)
        out = self._dataset(spec, files).to_table(columns=columns)
        if spec.partition in columns:
            i = out.schema.get_field_index(spec.partition)
            out = out.set_column(i, spec.partition, out.column(i).cast(want.field(spec.partition).type))
        return out

    def read(self, table: str, skip_jobs: Iterable[str] = (), spec: TableSchema | None = None,
             jobs: Collection[str] | None = None, columns: list[str] | None = None,
             listing: Iterable[Stored] | None = None) -> tuple[pd.DataFrame, dict[str, str]]:
        """One table as a DataFrame with the schema's columns (or ``columns`` of them) and types (``spec``, default
        the registered one; empty when nothing is stored), from the files of ``jobs`` (None: every job's) without
        those of ``skip_jobs``. Files that cannot be read are left out and returned: job id -> reason."""
        spec = spec or schema(table)
        skip = set(skip_jobs)
        files = [(j, p) for j, p in self.files(table, listing) if j not in skip and (jobs is None or j in jobs)]
        if not files:
            return spec.empty(columns), {}
        listed = [Stored(p[len(self.root) + 1:], 0) for _, p in files]
        try:
            return spec.conform(self.scan(table, columns, spec=spec, listing=listed).to_pandas(), columns), {}
        except (OSError, pa.ArrowException):
            pass
        frames, unreadable = [], {}
        for job, path in files:   # one file is damaged: read file by file to find it and keep the others
            try:
                frames.append(self.scan(table, columns, spec=spec, listing=[Stored(path[len(self.root) + 1:], 0)])
                              .to_pandas())
            except (OSError, pa.ArrowException) as exc:
                unreadable[job] = f"{path[len(self.root) + 1:]} cannot be read ({exc})"
        frame = pd.concat(frames, ignore_index=True) if frames else spec.empty(columns)
        return spec.conform(frame, columns), unreadable

    def rows(self, table: str, jobs: Collection[str], listing: Iterable[Stored] | None = None) -> int:
        """How many rows the files of ``jobs`` hold in ``table`` (from the Parquet footers only)."""
        total = 0
        for job, path in self.files(table, listing):
            if job in jobs:
                try:
                    with self.fs.open_input_file(path) as source:
                        total += pq.ParquetFile(source).metadata.num_rows
                except (OSError, pa.ArrowException):
                    continue
        return total

    def _dataset(self, spec: TableSchema, files: list[str]) -> ds.Dataset:
        partitioning = ds.partitioning(pa.schema([(spec.partition, pa.string())]), flavor="hive")
        return ds.dataset(files, filesystem=self.fs, format="parquet", partitioning=partitioning,
                          partition_base_dir=self._path(spec.name), schema=spec.arrow_schema(without=spec.partition)
                          .append(pa.field(spec.partition, pa.string())))


def load(path: str | os.PathLike[str], tables: Iterable[str] | None = None) -> dict[str, pd.DataFrame]:
    """Load the results tables of a results folder (local path or URI) as DataFrames, by table name: the tables
    run.json describes (columns and partition key, written by every run since the job kinds own their tables)
    and the registered ones (``tasks.kinds`` registers the kinds' tables when imported)."""
    store = ResultStore(path)
    specs = {**inferred_tables(store), **recorded_tables(store.run_info()), **TABLES}
    return {name: store.read(name, spec=specs.get(name))[0] for name in (tables or list(specs))}


def recorded_tables(run: Mapping[str, Any] | None) -> dict[str, TableSchema]:
    """The tables run.json ``run`` describes (every run records its kinds' tables)."""
    return {name: TableSchema(name, dict(spec["columns"]), spec["partition"])
            for name, spec in ((run or {}).get("tables") or {}).items() if isinstance(spec, Mapping)}


def register_recorded(run: Mapping[str, Any] | None) -> None:
    """Register the tables that run.json ``run`` describes and that are not registered yet."""
    for name, spec in recorded_tables(run).items():
        if name not in TABLES:
            register_table(spec)


_ARROW_KINDS = {pa.string(): "string", pa.int64(): "int", pa.float64(): "float", pa.bool_(): "bool"}


def inferred_tables(store: ResultStore) -> dict[str, TableSchema]:
    """The tables found in the folder, as their files describe them (for folders written before run.json
    recorded the tables, read where no job kind is imported): columns and types from a file's Parquet schema,
    the partition key (first; an integer when every value is one) from the folder names."""
    out: dict[str, TableSchema] = {}
    found: dict[str, list[str]] = {}
    for stored in store.listing():
        parts = stored.path.split("/")
        if len(parts) == 3 and parts[2].endswith(".parquet") and not parts[2].startswith(".") and "=" in parts[1]:
            found.setdefault(parts[0], []).append(stored.path)
    for name, paths in found.items():
        if name in TABLES or name.startswith(("_", ".")):
            continue
        try:
            with store.fs.open_input_file(store._path(paths[0])) as source:
                arrow = pq.read_schema(source)
        except (OSError, pa.ArrowException):
            continue
        key = paths[0].split("/")[1].split("=", 1)[0]
        values = {p.split("/")[1].split("=", 1)[1] for p in paths}
        integer = all(v.lstrip("-").isdigit() for v in values)
        columns = {key: "int" if integer else "string",
                   **{f.name: _ARROW_KINDS.get(f.type, "string") for f in arrow if f.name != key}}
        out[name] = TableSchema(name, columns, key)
    return out
