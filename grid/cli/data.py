"""``biasgrid data synth``, ``biasgrid data import`` and ``biasgrid data embed`` (in :mod:`grid.cli.embed`): write
an embedding table (Parquet).

Both check everything before writing and write atomically, so on bad input (InputError, exit code 2) nothing is
left behind.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from storage.errors import InputError
from storage.results import check_outside_results
from storage.attributes import default_groups, is_numeric
from storage.table import EmbeddingTable
from storage.vocab import ETHNICITIES

_PER_ETHNICITY_FORMS = ("a number for every ethnicity, three values for asian,caucasian,black (e.g. 1,0.8,1.2) "
                        "or some of them by name (e.g. asian=1.2); a value starting with '-' needs '=': "
                        "--gender-offset=-0.3,0.3,0")


def register(subparsers: Any) -> None:
    """Add the ``data`` command with subcommands ``synth``, ``import`` and ``embed`` to the ``biasgrid``
    subparsers."""
    from grid.cli import embed
    from storage.importers import FORMAT_NAMES
    from storage.synth import PARAM_HELP, PER_ETHNICITY_PARAMS, SynthParams

    data = subparsers.add_parser("data", help="write an embedding table: synthetic (synth), imported (import) or "
                                              "embedded from face images (embed)",
                                 description="Write an embedding table (Parquet) for 'biasgrid run --data'.")
    sub = data.add_subparsers(dest="data_command", required=True)

    synth = sub.add_parser("synth", help="write built-in synthetic DiveFace-like embeddings",
                           description="Write SYNTHETIC DiveFace-like embeddings (for trying biasgrid, tests and "
                                       "controlled experiments on the bias parameters; not real faces). Defaults "
                                       "reproduce the study's pattern.")
    synth.add_argument("--out", required=True, help="output table (.parquet)")
    for f in dataclasses.fields(SynthParams):
        forms = f" ({_PER_ETHNICITY_FORMS})" if f.name in PER_ETHNICITY_PARAMS else ""
        default = ",".join(f"{v:g}" for v in f.default) if isinstance(f.default, tuple) else f.default
        synth.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, metavar="VALUE",
                           help=f"{PARAM_HELP[f.name]}{forms}; default {default}")
    synth.set_defaults(func=_synth)

    imp = sub.add_parser("import", help="import embeddings (DiveFace folder, npy/npz per group, UAM CSV pair, "
                                        "Parquet/CSV table) into a table",
                         description="Import embeddings into an embedding table. Formats: diveface "
                                     "(<root>/<GROUP>/<identity>/<image>.npy), npy (one .npy/.npz matrix per group "
                                     "+ <group>.txt identity lists), uam-csv (embeddings CSV + attributes CSV), "
                                     "table (Parquet or CSV with identity, image, ethnicity, gender and e0..e{d-1}).")
    imp.add_argument("src", help="file or folder to import")
    imp.add_argument("--out", required=True, help="output table (.parquet)")
    imp.add_argument("--format", choices=FORMAT_NAMES, help="input format (default: detected from SRC)")
    imp.add_argument("--map", action="append", default=[], metavar="COLUMN=SOURCE",
                     help="take a table column from a differently named source column, e.g. identity=subject_id "
                          "(repeat, or comma-separate); for a CSV table, embedding=PREFIX names the embedding "
                          "columns PREFIX0..PREFIX{d-1} (formats table and uam-csv)")
    imp.add_argument("--identities", metavar="PATH",
                     help="npy format: folder of <group>.txt identity lists (default: beside the matrices), or the "
                          "list itself when importing one matrix")
    imp.add_argument("--attributes", metavar="CSV", help="uam-csv format: the attributes CSV (default: found "
                                                         "beside the embeddings CSV)")
    imp.add_argument("--prefix-group", action="store_true",
                     help="name identities <ethnicity>_<gender>/<identity> (when identity names are only unique "
                          "within each group)")
    imp.set_defaults(func=_import)
    embed.register(sub)


def check_table_out(out: str) -> Path:
    """``--out`` of a command that writes a table: a .parquet file name, not a folder (InputError otherwise)."""
    path = Path(out)
    if path.suffix.lower() != ".parquet":
        raise InputError(f"--out {out}: expected a .parquet file name")
    if path.is_dir():
        raise InputError(f"--out {out}: is a folder; expected a .parquet file name")
    check_outside_results(path)
    return path


def _number(text: str, name: str, kind: type) -> int | float:
    try:
        return kind(text.strip())
    except ValueError as exc:
        expected = "an integer" if kind is int else "a number"
        raise InputError(f"--{name.replace('_', '-')} {text}: expected {expected}") from exc


def _per_ethnicity(text: str, name: str) -> Any:
    option = f"--{name.replace('_', '-')}"
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts:
        raise InputError(f"{option}: empty value; expected {_PER_ETHNICITY_FORMS}")
    if all("=" in p for p in parts):
        out = {}
        for p in parts:
            key, value = (s.strip() for s in p.split("=", 1))
            if key not in ETHNICITIES:
                raise InputError(f"{option} {text}: {key!r} is not an ethnicity; expected {', '.join(ETHNICITIES)}")
            out[key] = _number(value, name, float)
        return out
    if any("=" in p for p in parts):
        raise InputError(f"{option} {text}: mixes name=value and plain values; expected {_PER_ETHNICITY_FORMS}")
    values = [_number(p, name, float) for p in parts]
    if len(values) == 1:
        return values[0]
    if len(values) != len(ETHNICITIES):
        raise InputError(f"{option} {text}: {len(values)} values; expected {_PER_ETHNICITY_FORMS}")
    return values


def table_summary(table: EmbeddingTable, out: Path, what: str) -> str:
    """The line a data command closes with: the table written, its size, identities per demographic group and its
    further attributes."""
    codes = table.identity_codes()
    groups = default_groups(table)
    per_group = [f"{groups.names[g]} {len(np.unique(codes[groups.codes == g]))}" for g in np.unique(groups.codes)]
    extra = [f"{name} ({'numeric' if is_numeric(v) else f'{len(set(v.tolist()))} values'})"
             for name, v in sorted(table.attributes.items())]
    return (f"wrote {out}: {what}, {len(table)} rows, dim {table.dim}, {len(np.unique(codes))} identities "
            f"({', '.join(per_group)})" + (f"; attributes: {', '.join(extra)}" if extra else ""))


def _synth(args: argparse.Namespace) -> int:
    from storage.synth import PER_ETHNICITY_PARAMS, SynthParams, generate, synth_params_from_dict
    from storage.table import write_table

    out = check_table_out(args.out)
    given: dict[str, Any] = {}
    for f in dataclasses.fields(SynthParams):
        text = getattr(args, f.name, None)
        if text is None:
            continue
        if f.name in PER_ETHNICITY_PARAMS:
            given[f.name] = _per_ethnicity(text, f.name)
        else:
            given[f.name] = _number(text, f.name, int if isinstance(f.default, int) else float)
    params = synth_params_from_dict(given, "biasgrid data synth")
    table = generate(params)
    write_table(table, out)
    print(table_summary(table, out, f"synthetic data (seed {params.seed})"))
    return 0


def parse_map(items: list[str]) -> dict[str, str]:
    """``--map COLUMN=SOURCE`` options (repeated or comma-separated) as {column: source}; InputError naming a
    malformed or repeated one."""
    mapping: dict[str, str] = {}
    for item in items:
        for part in item.split(","):
            if not part.strip():
                continue
            if "=" not in part:
                raise InputError(f"--map {item}: expected COLUMN=SOURCE, e.g. identity=subject_id")
            key, value = (s.strip() for s in part.split("=", 1))
            if not key or not value:
                raise InputError(f"--map {item}: expected COLUMN=SOURCE, e.g. identity=subject_id")
            if key in mapping:
                raise InputError(f"--map: {key} is mapped twice ({mapping[key]} and {value})")
            mapping[key] = value
    return mapping


def _import(args: argparse.Namespace) -> int:
    from storage.importers import detect_format, import_embeddings
    from storage.table import write_table

    out = check_table_out(args.out)
    fmt = args.format or detect_format(args.src)
    table = import_embeddings(args.src, fmt, columns=parse_map(args.map) or None, identities=args.identities,
                              attributes=args.attributes, prefix_group=args.prefix_group)
    write_table(table, out)
    print(table_summary(table, out, f"imported from {args.src} ({fmt})"))
    return 0
