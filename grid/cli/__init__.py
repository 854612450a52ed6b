"""The ``biasgrid`` command. Each subcommand is one module here with ``register(subparsers)``, which adds its
parser and sets its handler (``args -> exit code``): run, status, report, data (synth, import).

Exit codes: 0 success; 1 some jobs failed (every other result stored); 2 bad input (nothing written);
130 interrupted (every finished job stored: run again to resume).
"""

from __future__ import annotations

import argparse
import sys

from grid import __version__
from grid.cli import data, report, run, status
from storage.errors import InputError

SUBCOMMANDS = (run, status, report, data)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(prog="biasgrid", description=(
        "Measure how a face-embedding gender classifier's accuracy depends on the demographic group it was "
        "trained and tested on: every train-group x test-group x seed x model cell, in parallel."))
    parser.add_argument("--version", action="version", version=f"biasgrid {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in SUBCOMMANDS:
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``biasgrid`` command."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except InputError as exc:
        print(f"biasgrid: error: {exc}", file=sys.stderr)
        return InputError.exit_code
    except KeyboardInterrupt:
        print("\nbiasgrid: interrupted; every finished job is stored: run the same command again to resume",
              file=sys.stderr)
        return 130
