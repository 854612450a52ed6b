"""``biasgrid data embed``: the command line of the embedding pipeline (``grid.embed``).

Everything that can be checked is checked before any image is embedded (exit 2): the output name, the images and
their labels (:func:`storage.images.list_images`), the model and its options (opened on the driver), the group
names. Then :func:`grid.embed.embed_table` embeds the missing shards and writes the table; this module prints
its summary (exit 1 when images could not be read or shard jobs failed).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from storage.errors import InputError
from storage.images import LabelledImages

if TYPE_CHECKING:
    from grid.embed import Assembled
    from storage.table import EmbeddingTable


def register(subparsers: Any) -> None:
    """Add ``embed`` to the ``biasgrid data`` subparsers."""
    from grid.embed import DEFAULT_SHARD_SIZE
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
                     help="manifest (.csv/.parquet: path, identity, ethnicity, gender, any attribute columns; "
                          "FairFace's file and race are understood); relative paths are taken "
                          "from SRC")
    lab.add_argument("--map", action="append", default=[], metavar="COLUMN=SOURCE",
                     help="manifest: take a column from another name, e.g. path=file, ethnicity=race")
    lab.add_argument("--name-pattern", metavar="PATTERN",
                     help="labels from file names, e.g. '{age}_{gender}_{ethnicity}_{*}' ({identity}, {ethnicity} "
                          "optional; other fields such as {age} are attributes)")
    lab.add_argument("--values", action="append", default=[], metavar="FIELD=RAW:VALUE,...",
                     help="value map for a manifest or a name pattern, e.g. gender=0:male,1:female (repeat it)")
    run = p.add_argument_group("execution")
    run.add_argument("--config", metavar="FILE",
                     help="a grid config whose [run] section sets the execution, e.g. [run.resources] embed = "
                          "{GPU = 1} (the options below override it)")
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
    from grid.cli.data import parse_map
    from storage.images import list_images, parse_value_maps

    values = parse_value_maps(args.values) or None
    columns = parse_map(args.map) or None
    if args.manifest is not None:
        if not Path(args.src).is_dir():
            raise InputError(f"{args.src}: with --manifest, SRC is the folder the manifest's relative paths start "
                             f"from; it is not a folder")
        return list_images(args.manifest, layout="manifest", columns=columns, values=values, root=args.src)
    return list_images(args.src, pattern=args.name_pattern, columns=columns, values=values)


def run_config(args: argparse.Namespace) -> dict[str, Any]:
    """The ``[run]`` section the executors take: the grid's defaults, the ``--config`` file's, the options."""
    from grid.config import resolve_config

    return resolve_config(args.config, {"run.executor": args.executor, "run.workers": args.workers,
                                 "run.address": args.address, "run.threads_per_job": args.threads_per_job})["run"]


# ------------------------------------------------------------------------------------------------ summary
def summary_lines(table: EmbeddingTable, out: Path, what: str, result: Assembled, own: bool) -> list[str]:
    """The command's closing summary: the table, faces detected per group, what was left out and why."""
    from grid.cli.data import table_summary
    from grid.embed import errors_file, listing
    from storage.attributes import default_groups

    groups = default_groups(table)
    face = table.face_detected if table.face_detected is not None else np.ones(len(table), dtype=bool)
    lines = [table_summary(table, out, what),
             "face detected: " + ", ".join(f"{groups.names[g]} {int(face[groups.codes == g].sum())} of "
                                           f"{int((groups.codes == g).sum())}" for g in np.unique(groups.codes))
             + " (the others were embedded from their centre crop)" * bool((~face).any())]
    if result.skipped:
        lines.append(f"{len(result.skipped)} images without a detected face left out (--skip-undetected)")
    if result.errors:
        lines.append(f"{len(result.errors)} images could not be read, listed in {errors_file(out)}: "
                     + listing(result.errors, 3))
    if own:
        lines.append("note: the source names no identities, so each image is its own identity: classification "
                     "works, verification needs identities with two or more images ([verification] enabled = "
                     "false)")
    return lines


def handler(args: argparse.Namespace) -> int:
    """Check everything, embed the shards not stored yet, write the table (exit 0), or with unreadable images
    the table of the others and their list (exit 1); failed shard jobs: no table, exit 1 (run again)."""
    import time

    from grid.cli.data import check_table_out
    from grid.dispatch import say
    from grid.embed import FailedShards, embed_table, label_codes
    from grid.runner import probe_address
    from tasks.embedders import DEFAULT_BATCH_SIZE, open_embedder, resolve_spec

    start = time.perf_counter()
    out = check_table_out(args.out)
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
    try:
        result = embed_table(images, codes, spec, run_cfg, out, src=args.src, shard_size=args.shard_size,
                             strict=args.strict, progress=progress)
    except FailedShards as exc:
        print(f"biasgrid: {exc}", file=sys.stderr)
        return 1
    what = f"embedded {len(images)} images from {args.src} with {spec.model}"
    for line in summary_lines(result.table, out, what, result, images.own_identities):
        print(line)
    say(progress, f"biasgrid: done in {time.perf_counter() - start:.0f} s")
    return 1 if result.errors else 0
