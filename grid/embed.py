"""The embedding pipeline of ``biasgrid data embed`` (its command line: ``grid/cli/embed.py``): labelled face
images -> an embedding table, one shard of images per job on the executors.

The images (sorted by path) are cut into shards; each shard is keyed by its files' contents and the model's
configuration (:func:`tasks.embedders.shard_key`) and run as one job (``tasks.embedders.shard:run_embed_job``),
through the driver's one dispatch loop (:func:`grid.dispatch.dispatch`). The driver writes each finished shard
atomically to ``TABLE.parquet.shards/<key>.parquet`` as it arrives, so a crash, kill -9 or Ctrl-C loses only the
shards in flight and the same command again embeds only the missing ones. When every shard is done the driver
assembles the table, writes it atomically (with its ``face_detected`` column), lists undecodable images in
``TABLE.parquet.errors.csv``, and removes the shard folder (:func:`embed_table`).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from grid.dispatch import dispatch, progress_bar, say
from grid.resources import EMBED
from storage.atomic import write_atomic
from storage.errors import InputError, environment_failure
from storage.images import LabelledImages
from storage.table import EmbeddingTable, write_table
from tasks.runtime import Outcome
from storage.vocab import GENDERS, check_group_name, ethnicity_vocabulary

if TYPE_CHECKING:
    from tasks.embedders import EmbedSpec

RUN_FUNCTION = "tasks.embedders.shard:run_embed_job"
DEFAULT_SHARD_SIZE = 256
SHARDS_SUFFIX = ".shards"
ERRORS_SUFFIX = ".errors.csv"
_SHARD_SCHEMA = pa.schema([("row", pa.int64()), ("status", pa.string()), ("reason", pa.string()),
                           ("face_detected", pa.bool_()), ("embedding", pa.list_(pa.float32()))])


# ------------------------------------------------------------------------------------------------- labels


def label_codes(images: LabelledImages) -> tuple[np.ndarray | None, np.ndarray, tuple[str, ...]]:
    """int8 ethnicity (None without ethnicity labels) and gender codes of the images and the table's ethnicity
    vocabulary (any group names, storage.vocab.ethnicity_vocabulary); InputError naming the first image whose
    group cannot be a group name."""
    gender = np.fromiter((GENDERS.index(g) for g in images.gender), dtype=np.int8, count=len(images))
    if images.ethnicity is None:
        return None, gender, ()
    for name in sorted(set(images.ethnicity)):
        check_group_name(name, f"{images.source}: ethnicity")
    vocabulary = ethnicity_vocabulary(set(images.ethnicity))
    eth_index = {e: i for i, e in enumerate(vocabulary)}
    ethnicity = np.fromiter((eth_index[e] for e in images.ethnicity), dtype=np.int8, count=len(images))
    return ethnicity, gender, vocabulary


# ------------------------------------------------------------------------------------------------ shards


@dataclass(frozen=True)
class Shard:
    """Rows ``rows`` of the image list, keyed by their files' contents and the model's configuration."""

    rows: range
    key: str


def plan_shards(images: LabelledImages, spec: EmbedSpec, size: int, progress: bool) -> list[Shard]:
    """Cut the (path-sorted) images into shards of ``size`` and key each one (reads every file once)."""
    from tasks.embedders import shard_key, split_shards
    from tasks.embedders.shard import file_digests

    shards = []
    bar = progress_bar(len(images), progress, unit="image")
    bar.set_description("hashing")
    try:
        for rows in split_shards(len(images), size):
            paths = list(images.path[rows.start:rows.stop])
            shards.append(Shard(rows, shard_key(paths, spec, file_digests(paths))))
            bar.update(len(rows))
    finally:
        bar.close()
    return shards


def shard_file(folder: Path, key: str) -> Path:
    return folder / f"{key}.parquet"


def write_named(path: Path, write: Any) -> None:
    """:func:`storage.atomic.write_atomic`, a full or read-only disk named as an EnvironmentFailure (exit 3)."""
    try:
        write_atomic(path, write)
    except OSError as exc:
        raise environment_failure(str(path), exc) from None


def shard_table(frame: pd.DataFrame) -> pa.Table:
    """A shard job's rows (``tasks.embedders.shard.run_embed_job``) as Arrow, in the shard files' schema."""
    embedding = pa.array([None if e is None else np.asarray(e, dtype=np.float32) for e in frame["embedding"]],
                         type=pa.list_(pa.float32()))
    return pa.table([pa.array(frame["row"], pa.int64()), pa.array(frame["status"], pa.string()),
                     pa.array(frame["reason"], pa.string()), pa.array(frame["face_detected"], pa.bool_()),
                     embedding], schema=_SHARD_SCHEMA)


def save_shard(folder: Path, key: str, table: pa.Table) -> None:
    """A finished shard's rows as Parquet ``<key>.parquet`` (nothing pickled), written atomically."""
    write_named(shard_file(folder, key), lambda sink: pq.write_table(table, sink, compression="lz4"))


def load_shard(folder: Path, key: str) -> pa.Table | None:
    """A stored shard, or None when it is missing or unreadable (then it is embedded again)."""
    path = shard_file(folder, key)
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException):
        return None
    return table if table.schema.equals(_SHARD_SCHEMA) else None


def _payloads(images: LabelledImages, shards: Iterable[Shard], spec: EmbedSpec, threads: int) -> list[dict[str, Any]]:
    """One job per distinct key (identical shards are embedded once), of kind ``embed`` (its ``[run.resources]``
    ask: the executor gives each job its threads and, when asked, a GPU)."""
    payloads: dict[str, dict[str, Any]] = {}
    for s in shards:
        payloads.setdefault(s.key, {"job_id": s.key, "kind": EMBED, "seed": 0, "run": RUN_FUNCTION,
                                    "params": {"spec": spec.to_dict(), "threads": threads},
                                    "paths": list(images.path[s.rows.start:s.rows.stop])})
    return list(payloads.values())


def embed_missing(images: LabelledImages, shards: list[Shard], spec: EmbedSpec, run_cfg: dict[str, Any],
                  folder: Path, progress: bool) -> tuple[dict[str, pa.Table], list[str]]:
    """Run the shards not stored in ``folder`` on the executor, storing each as it finishes. Returns every
    shard's rows by key (incomplete shards -- a file that could not be read -- are kept in memory only) and the
    failed jobs' messages."""
    from grid.executors import make_executor

    done: dict[str, pa.Table] = {}
    for s in shards:
        if s.key not in done and (stored := load_shard(folder, s.key)) is not None:
            done[s.key] = stored
    todo = [p for p in _payloads(images, shards, spec, run_cfg["threads_per_job"]) if p["job_id"] not in done]
    stored = sum(s.key in done for s in shards)
    say(progress, f"biasgrid: {len(images)} images in {len(shards)} shards, {stored} already embedded, "
                  f"{len(todo)} to run on {run_cfg['executor']} -> {folder}")
    failed: list[str] = []
    if not todo:
        return done, failed
    ship = [spec.model] if spec.kind == "user" else []
    executor = make_executor(run_cfg, ship)

    def store(outcome: Outcome) -> bool:
        if outcome.error is not None:
            failed.append(outcome.error)
            return True
        table = shard_table(outcome.tables["embed_shard"])
        if "unreadable" not in table["status"].to_pylist():   # else not keyed by what it read: not stored
            save_shard(folder, outcome.job_id, table)
        done[outcome.job_id] = table
        return False

    try:
        dispatch(executor, todo, {}, store, progress=progress, unit="shard")
    finally:
        executor.close()
    return done, failed


# ------------------------------------------------------------------------------------------------ the table


@dataclass
class Assembled:
    """The table of every embedded image, and the images left out: (path, reason) errors and skipped paths."""

    table: EmbeddingTable | None
    errors: list[tuple[str, str]]
    skipped: list[str]


def assemble(images: LabelledImages, shards: list[Shard], done: dict[str, pa.Table],
             codes: tuple[np.ndarray | None, np.ndarray, tuple[str, ...]]) -> Assembled:
    """The (n, d) matrix and labels of every ``ok`` row, in image order, from the shards' rows. The matrix is
    allocated once and filled shard by shard (driver memory: the stored shards plus one matrix)."""
    keep: list[np.ndarray] = []
    faces: list[np.ndarray] = []
    errors: list[tuple[str, str]] = []
    skipped: list[str] = []
    oks: list[np.ndarray] = []
    dims: set[int] = set()
    for s in shards:
        t = done[s.key]
        status = np.asarray(t["status"].to_pylist(), dtype=object)
        rows = s.rows.start + t["row"].to_numpy()
        for i in np.flatnonzero((status == "undecodable") | (status == "unreadable")):
            errors.append((images.path[rows[i]], t["reason"][int(i)].as_py()))
        skipped += [images.path[r] for r in rows[status == "skipped"]]
        ok = np.flatnonzero(status == "ok")
        oks.append(ok)
        keep.append(rows[ok])
        faces.append(t["face_detected"].to_numpy(zero_copy_only=False)[ok])
        if len(ok):
            dims.update(np.unique(pc.list_value_length(t["embedding"].combine_chunks().take(pa.array(ok)))
                                  .to_numpy(zero_copy_only=False)).tolist())
    if not dims:
        return Assembled(None, errors, skipped)
    if len(dims) != 1:
        raise RuntimeError(f"the model gave embeddings of different dimensions {sorted(dims)} across shards")
    at = np.concatenate(keep)
    matrix = np.empty((len(at), dims.pop()), dtype=np.float32)
    pos = 0
    for s, ok in zip(shards, oks):
        if len(ok):
            flat = done[s.key]["embedding"].combine_chunks().take(pa.array(ok)).flatten()
            matrix[pos:pos + len(ok)] = flat.to_numpy(zero_copy_only=False).reshape(len(ok), -1)
            pos += len(ok)
    face = np.concatenate(faces).astype(np.bool_)
    nonzero = matrix.any(axis=1)   # an all-zero embedding has no direction: listed, not stored (the table refuses it)
    if not nonzero.all():
        errors += [(images.path[r], "the model gave an all-zero embedding (it has no direction to compare)")
                   for r in at[~nonzero]]
        errors.sort(key=lambda e: e[0])
        matrix, at, face = matrix[nonzero], at[nonzero], face[nonzero]
        if not len(at):
            return Assembled(None, errors, skipped)
    table = EmbeddingTable(matrix, np.asarray(images.identity[at], dtype=object),
                           np.asarray(images.image[at], dtype=object), None if codes[0] is None else codes[0][at],
                           codes[1][at], codes[2], face, {k: v[at] for k, v in images.attributes.items()})
    return Assembled(table, errors, skipped)


def shards_folder(out: Path) -> Path:
    """Where finished shards wait until the table is written: ``TABLE.parquet.shards/``."""
    return out.with_name(out.name + SHARDS_SUFFIX)


def errors_file(out: Path) -> Path:
    """The list of images that could not be read: ``TABLE.parquet.errors.csv``."""
    return out.with_name(out.name + ERRORS_SUFFIX)


def listing(errors: list[tuple[str, str]], most: int) -> str:
    """The first ``most`` (path, reason) pairs for a message."""
    return "; ".join(f"{p}: {r}" for p, r in errors[:most]) + (" ..." if len(errors) > most else "")


class FailedShards(Exception):
    """Shard jobs failed: no table was written; the finished shards are kept for the next run."""


def embed_table(images: LabelledImages, codes: tuple[np.ndarray | None, np.ndarray, tuple[str, ...]], spec: EmbedSpec,
                run_cfg: dict[str, Any], out: Path, *, src: str, shard_size: int, strict: bool,
                progress: bool) -> Assembled:
    """Embed the shards of ``images`` not stored yet, then write the table ``out`` (and the list of unreadable
    images beside it) and remove the shard folder. FailedShards when a shard job failed (nothing written);
    InputError with ``strict`` and an unreadable image, or when no image could be embedded."""
    shards = plan_shards(images, spec, shard_size, progress)
    folder = shards_folder(out)
    made = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    for leftover in folder.glob(".*.tmp"):   # a shard being written when an earlier run died
        leftover.unlink(missing_ok=True)
    try:
        done, failed = embed_missing(images, shards, spec, run_cfg, folder, progress)
    except BaseException:
        if made and not any(folder.iterdir()):   # no shard stored (a full disk at start): no folder left either
            folder.rmdir()
        raise
    if failed:
        raise FailedShards(f"{len(failed)} shard jobs failed, first: {failed[0]}; no table written. The finished "
                           f"shards are kept in {folder}: run the same command again to retry the others")
    result = assemble(images, shards, done, codes)
    shown = listing(result.errors, 5)
    if result.errors and strict:
        raise InputError(f"{len(result.errors)} images cannot be read (--strict): {shown}; no table written "
                         f"(the embedded shards are kept in {folder}, so a rerun embeds only what changed)")
    if result.table is None:
        raise InputError(f"{src}: no image could be embedded ({len(result.errors)} unreadable: {shown}"
                         f"{f'; {len(result.skipped)} without a face, --skip-undetected' if result.skipped else ''})")
    write_table(result.table, out)
    errors = errors_file(out)
    if result.errors:
        frame = pd.DataFrame(result.errors, columns=["path", "reason"])
        write_named(errors, lambda sink: frame.to_csv(sink, index=False))
    else:
        errors.unlink(missing_ok=True)   # a list left by an earlier run of this table
    shutil.rmtree(folder, ignore_errors=True)
    return result
