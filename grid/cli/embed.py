"""``biasgrid data embed``: face images -> an embedding table, one shard of images per job on the executors.

Everything that can be checked is checked before any image is embedded (exit 2): the output name, the images and
their labels (:func:`storage.images.list_images`), the model and its options (opened on the driver), the group
names. The images (sorted by path) are then cut into shards; each shard is keyed by its files' contents and the
model's configuration (:func:`tasks.embedders.shard_key`) and run as one job (``tasks.embedders.shard:
run_embed_job``). The driver writes each finished shard atomically to ``TABLE.parquet.shards/<key>.parquet`` as it
arrives, so a crash, kill -9 or Ctrl-C loses only the shards in flight and the same command again embeds only
the missing ones. When every shard is done the driver assembles the table, writes it atomically (with its
``face_detected`` column), lists undecodable images in ``TABLE.parquet.errors.csv`` (exit 1), and removes the
shard folder.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from storage.errors import InputError, environment_failure
from storage.images import LabelledImages
from storage.table import EmbeddingTable
from storage.vocab import GENDERS, check_group_name, ethnicity_vocabulary

if TYPE_CHECKING:
    from tasks.embedders import EmbedSpec

RUN_FUNCTION = "tasks.embedders.shard:run_embed_job"
DEFAULT_SHARD_SIZE = 256
SHARDS_SUFFIX = ".shards"
ERRORS_SUFFIX = ".errors.csv"
_SHARD_SCHEMA = pa.schema([("row", pa.int64()), ("status", pa.string()), ("reason", pa.string()),
                           ("face_detected", pa.bool_()), ("embedding", pa.list_(pa.float32()))])


def register(subparsers: Any) -> None:
    """Add ``embed`` to the ``biasgrid data`` subparsers."""
    from grid.executors import EXECUTORS
    from tasks.embedders.faces import ALIGNS
    from tasks.embedders.preprocess import PREPROCESS

    p = subparsers.add_parser(
        "embed", help="embed face images into a table (dlib, keras:PATH, onnx:PATH, package.module:builder)",
        description="Embed face images into an embedding table, one shard of images per job. Labels come from "
                    "the DiveFace layout (SRC/<GROUP>/<identity>/<image>.jpg), a manifest (SRC.csv/.parquet, or "
                    "--manifest with SRC the images' folder) or the file names (--name-pattern). Running the "
                    "same command again after an interruption embeds only the shards not yet done.")
    p.add_argument("src", help="image folder (DiveFace layout, or with --name-pattern), or a manifest file")
    p.add_argument("--out", required=True, help="output table (.parquet)")
    p.add_argument("--model", required=True,
                   help="dlib | keras:PATH | onnx:PATH | package.module:builder")
    m = p.add_argument_group("model options")
    m.add_argument("--layer", help="keras: the layer whose output is the embedding (default: the model's output)")
    m.add_argument("--output", help="onnx: the output that is the embedding (default: the first)")
    m.add_argument("--input-size", metavar="N|HxW", help="keras/onnx: network input size (default: the model's)")
    m.add_argument("--preprocess", choices=list(PREPROCESS),
                   help="keras (required) / onnx (default arcface): pixel preprocessing")
    m.add_argument("--align", choices=list(ALIGNS),
                   help="keras (default none) / onnx (default arcface): face detection and alignment")
    m.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="any other model option, e.g. upsample=0, detect_max_side=800, num_jitters=0, or your "
                        "builder's options (repeat it)")
    m.add_argument("--no-normalise", "--no-normalize", dest="normalise", action="store_false",
                   help="keep raw features (default: L2-normalised)")
    m.add_argument("--skip-undetected", action="store_true",
                   help="leave out images without a detected face (default: embed their centre crop, "
                        "face_detected = false)")
    lab = p.add_argument_group("labels")
    lab.add_argument("--manifest", metavar="FILE",
                     help="manifest (.csv/.parquet: path, identity, ethnicity, gender); relative paths are taken "
                          "from SRC")
    lab.add_argument("--map", action="append", default=[], metavar="COLUMN=SOURCE",
                     help="manifest: take a column from another name, e.g. path=file, ethnicity=race")
    lab.add_argument("--name-pattern", metavar="PATTERN",
                     help="labels from file names, e.g. '{age}_{gender}_{ethnicity}_{*}' ({identity} optional)")
    lab.add_argument("--values", action="append", default=[], metavar="FIELD=RAW:VALUE,...",
                     help="value map for a manifest or a name pattern, e.g. gender=0:male,1:female (repeat it)")
    run = p.add_argument_group("execution")
    run.add_argument("--executor", choices=list(EXECUTORS), help="default: ray")
    run.add_argument("--workers", type=int, help="parallel shards (default: the number of CPUs)")
    run.add_argument("--address", help="Ray cluster address (default: start Ray locally)")
    run.add_argument("--threads-per-job", type=int, help="threads per shard job (default: 1)")
    run.add_argument("--shard-size", type=int, default=DEFAULT_SHARD_SIZE,
                     help=f"images per shard job (default: {DEFAULT_SHARD_SIZE})")
    run.add_argument("--batch-size", type=int, help="images decoded and embedded at once per worker (memory "
                                                    "bound; default: 32)")
    run.add_argument("--strict", action="store_true",
                     help="refuse (exit 2, no table written) when any image cannot be decoded")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=handler)


# ------------------------------------------------------------------------------------------------ options


def _option_value(text: str) -> Any:
    """``"3"`` -> 3, ``"0.5"`` -> 0.5, ``"[112, 96]"`` -> [112, 96], ``"true"`` -> True, else the text."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def _input_size(text: str) -> int | list[int]:
    parts = text.lower().replace("x", ",").split(",")
    try:
        values = [int(v) for v in parts]
    except ValueError:
        raise InputError(f"option --input-size {text}: expected N or HxW, e.g. 224 or 112x96") from None
    if len(values) == 1:
        return values[0]
    if len(values) != 2:
        raise InputError(f"option --input-size {text}: expected N or HxW, e.g. 224 or 112x96")
    return values


def model_options(args: argparse.Namespace) -> dict[str, Any]:
    """The model options given on the command line (checked later by :func:`tasks.embedders.resolve_spec`)."""
    options: dict[str, Any] = {}
    for item in args.option:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise InputError(f"option --option {item}: expected KEY=VALUE, e.g. upsample=0")
        if key.strip() in options:
            raise InputError(f"option --option: {key.strip()} is given twice")
        options[key.strip()] = _option_value(value.strip())
    named = {"layer": args.layer, "output": args.output, "preprocess": args.preprocess, "align": args.align,
             "input_size": _input_size(args.input_size) if args.input_size is not None else None}
    for key, value in named.items():
        if value is None:
            continue
        if key in options:
            raise InputError(f"option --{key.replace('_', '-')} and --option {key}=... both set {key}")
        options[key] = value
    return options


def list_labelled(args: argparse.Namespace) -> LabelledImages:
    """The images and labels SRC and the label options name (InputError before anything is decoded)."""
    from grid.cli.data import _parse_map
    from storage.images import list_images, parse_value_maps

    values = parse_value_maps(args.values) or None
    columns = _parse_map(args.map) or None
    if args.manifest is not None:
        if not Path(args.src).is_dir():
            raise InputError(f"{args.src}: with --manifest, SRC is the folder the manifest's relative paths start "
                             f"from; it is not a folder")
        return list_images(args.manifest, layout="manifest", columns=columns, values=values, root=args.src)
    return list_images(args.src, pattern=args.name_pattern, columns=columns, values=values)


def label_codes(images: LabelledImages) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """int8 ethnicity and gender codes of the images and the table's ethnicity vocabulary (any group names,
    storage.vocab.ethnicity_vocabulary); InputError naming the first image whose group cannot be a group name."""
    for name in sorted(set(images.ethnicity)):
        check_group_name(name, f"{images.source}: ethnicity")
    vocabulary = ethnicity_vocabulary(set(images.ethnicity))
    eth_index = {e: i for i, e in enumerate(vocabulary)}
    ethnicity = np.fromiter((eth_index[e] for e in images.ethnicity), dtype=np.int8, count=len(images))
    gender = np.fromiter((GENDERS.index(g) for g in images.gender), dtype=np.int8, count=len(images))
    return ethnicity, gender, vocabulary


def run_config(args: argparse.Namespace) -> dict[str, Any]:
    """The ``[run]`` section the executors take, from the grid's defaults and the execution options."""
    from grid.config import resolve_config

    return resolve_config(None, {"run.executor": args.executor, "run.workers": args.workers,
                                 "run.address": args.address, "run.threads_per_job": args.threads_per_job})["run"]


# ------------------------------------------------------------------------------------------------ shards


@dataclass(frozen=True)
class Shard:
    """Rows ``rows`` of the image list, keyed by their files' contents and the model's configuration."""

    rows: range
    key: str


def plan_shards(images: LabelledImages, spec: EmbedSpec, size: int, progress: bool) -> list[Shard]:
    """Cut the (path-sorted) images into shards of ``size`` and key each one (reads every file once)."""
    from grid.runner import _progress_bar
    from tasks.embedders import shard_key, split_shards
    from tasks.embedders.shard import file_digests

    shards = []
    bar = _progress_bar(len(images), progress, unit="image")
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


def write_atomic(path: Path, write: Any) -> None:
    """``write(tmp_path)`` then rename over ``path`` (same folder), so readers see a whole file or none."""
    tmp = path.parent / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:   # a full or read-only disk: named, nothing half-written left
        tmp.unlink(missing_ok=True)
        raise environment_failure(str(path), exc) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def shard_table(frame: pd.DataFrame) -> pa.Table:
    """A shard job's rows (``tasks.embedders.shard.run_embed_job``) as Arrow, in the shard files' schema."""
    embedding = pa.array([None if e is None else np.asarray(e, dtype=np.float32) for e in frame["embedding"]],
                         type=pa.list_(pa.float32()))
    return pa.table([pa.array(frame["row"], pa.int64()), pa.array(frame["status"], pa.string()),
                     pa.array(frame["reason"], pa.string()), pa.array(frame["face_detected"], pa.bool_()),
                     embedding], schema=_SHARD_SCHEMA)


def save_shard(folder: Path, key: str, table: pa.Table) -> None:
    """A finished shard's rows as Parquet ``<key>.parquet`` (nothing pickled), written atomically."""
    write_atomic(shard_file(folder, key), lambda tmp: pq.write_table(table, tmp, compression="lz4"))


def load_shard(folder: Path, key: str) -> pa.Table | None:
    """A stored shard, or None when it is missing or unreadable (then it is embedded again)."""
    path = shard_file(folder, key)
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException):
        return None
    return table if table.schema.equals(_SHARD_SCHEMA) else None


def _payloads(images: LabelledImages, shards: Iterable[Shard], spec: EmbedSpec, threads: int) -> list[dict[str, Any]]:
    """One job per distinct key (identical shards are embedded once)."""
    payloads: dict[str, dict[str, Any]] = {}
    for s in shards:
        payloads.setdefault(s.key, {"job_id": s.key, "kind": "embed", "seed": 0, "run": RUN_FUNCTION,
                                    "params": {"spec": spec.to_dict(), "threads": threads},
                                    "paths": list(images.path[s.rows.start:s.rows.stop])})
    return list(payloads.values())


def embed_missing(images: LabelledImages, shards: list[Shard], spec: EmbedSpec, run_cfg: dict[str, Any],
                  folder: Path, progress: bool) -> tuple[dict[str, pa.Table], list[str]]:
    """Run the shards not stored in ``folder`` on the executor, storing each as it finishes. Returns every
    shard's rows by key (incomplete shards -- a file that could not be read -- are kept in memory only) and the
    failed jobs' messages."""
    from grid.executors import make_executor
    from grid.runner import _progress_bar, _say

    done: dict[str, pa.Table] = {}
    for s in shards:
        if s.key not in done and (stored := load_shard(folder, s.key)) is not None:
            done[s.key] = stored
    todo = [p for p in _payloads(images, shards, spec, run_cfg["threads_per_job"]) if p["job_id"] not in done]
    stored = sum(s.key in done for s in shards)
    _say(progress, f"biasgrid: {len(images)} images in {len(shards)} shards, {stored} already embedded, "
                   f"{len(todo)} to run on {run_cfg['executor']} -> {folder}")
    failed: list[str] = []
    if not todo:
        return done, failed
    ship = [spec.model] if spec.kind == "user" else []
    executor = make_executor(run_cfg, ship)
    bar = _progress_bar(len(todo), progress, unit="shard")
    try:
        for outcome in executor.run(todo, {}):
            if outcome.error is None:
                table = shard_table(outcome.tables["embed_shard"])
                if "unreadable" not in table["status"].to_pylist():   # else not keyed by what it read: not stored
                    save_shard(folder, outcome.job_id, table)
                done[outcome.job_id] = table
            else:
                failed.append(outcome.error)
            bar.update(1)
            bar.set_postfix(failed=len(failed), refresh=False)
    finally:
        bar.close()
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
             codes: tuple[np.ndarray, np.ndarray]) -> Assembled:
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
                           np.asarray(images.image[at], dtype=object), codes[0][at], codes[1][at], codes[2], face)
    return Assembled(table, errors, skipped)


def shards_folder(out: Path) -> Path:
    """Where finished shards wait until the table is written: ``TABLE.parquet.shards/``."""
    return out.with_name(out.name + SHARDS_SUFFIX)


def errors_file(out: Path) -> Path:
    """The list of images that could not be read: ``TABLE.parquet.errors.csv``."""
    return out.with_name(out.name + ERRORS_SUFFIX)


def _listing(errors: list[tuple[str, str]], most: int) -> str:
    """The first ``most`` (path, reason) pairs for a message."""
    return "; ".join(f"{p}: {r}" for p, r in errors[:most]) + (" ..." if len(errors) > most else "")


def summary_lines(table: EmbeddingTable, out: Path, what: str, result: Assembled, own: bool) -> list[str]:
    """The command's closing summary: the table, faces detected per group, what was left out and why."""
    from grid.cli.data import _summary, group_order
    from storage.table import demographic_groups

    names = demographic_groups(table)
    face = table.face_detected if table.face_detected is not None else np.ones(len(table), dtype=bool)
    lines = [_summary(table, out, what),
             "face detected: " + ", ".join(f"{g} {int(face[names == g].sum())} of {int((names == g).sum())}"
                                           for g in group_order(table, names))
             + " (the others were embedded from their centre crop)" * bool((~face).any())]
    if result.skipped:
        lines.append(f"{len(result.skipped)} images without a detected face left out (--skip-undetected)")
    if result.errors:
        lines.append(f"{len(result.errors)} images could not be read, listed in {errors_file(out)}: "
                     + _listing(result.errors, 3))
    if own:
        lines.append("note: the source names no identities, so each image is its own identity: classification "
                     "works, verification needs identities with two or more images ([verification] enabled = "
                     "false)")
    return lines


def handler(args: argparse.Namespace) -> int:
    """Check everything, embed the shards not stored yet, write the table (exit 0), or with unreadable images
    the table of the others and their list (exit 1); failed shard jobs: no table, exit 1 (run again)."""
    import time

    from grid.cli.data import _check_out
    from grid.runner import _say, probe_address
    from storage.table import write_table
    from tasks.embedders import DEFAULT_BATCH_SIZE, open_embedder, resolve_spec

    start = time.perf_counter()
    out = _check_out(args.out)
    for option, value in (("--shard-size", args.shard_size), ("--batch-size", args.batch_size)):
        if value is not None and value < 1:
            raise InputError(f"option {option} {value}: expected a positive integer")
    images = list_labelled(args)
    codes = label_codes(images)
    spec = resolve_spec(args.model, model_options(args), normalize=args.normalise,
                        skip_undetected=args.skip_undetected,
                        batch_size=DEFAULT_BATCH_SIZE if args.batch_size is None else args.batch_size)
    run_cfg = run_config(args)
    open_embedder(spec, run_cfg["threads_per_job"])   # a model that does not load: refused before any work
    if run_cfg["executor"] == "ray":
        probe_address(run_cfg["address"], run_cfg["connect_timeout"])
    progress = not args.quiet
    shards = plan_shards(images, spec, args.shard_size, progress)
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
        print(f"biasgrid: {len(failed)} shard jobs failed, first: {failed[0]}; no table written. The finished "
              f"shards are kept in {folder}: run the same command again to retry the others", file=sys.stderr)
        return 1
    result = assemble(images, shards, done, codes)
    listing = _listing(result.errors, 5)
    if result.errors and args.strict:
        raise InputError(f"{len(result.errors)} images cannot be read (--strict): {listing}; no table written "
                         f"(the embedded shards are kept in {folder}, so a rerun embeds only what changed)")
    if result.table is None:
        raise InputError(f"{args.src}: no image could be embedded ({len(result.errors)} unreadable: {listing}"
                         f"{f'; {len(result.skipped)} without a face, --skip-undetected' if result.skipped else ''})")
    write_table(result.table, out)
    errors = errors_file(out)
    if result.errors:
        frame = pd.DataFrame(result.errors, columns=["path", "reason"])
        write_atomic(errors, lambda tmp: frame.to_csv(tmp, index=False))
    else:
        errors.unlink(missing_ok=True)   # a list left by an earlier run of this table
    shutil.rmtree(folder, ignore_errors=True)
    what = f"embedded {len(images)} images from {args.src} with {spec.model}"
    for line in summary_lines(result.table, out, what, result, images.own_identities):
        print(line)
    _say(progress, f"biasgrid: done in {time.perf_counter() - start:.0f} s")
    return 1 if result.errors else 0
