"""The ``biasgrid`` command. Each subcommand is one module here with ``register(subparsers)``, which adds its
parser and sets its handler (``args -> exit code``): run, status, report, data (synth, import).

Exit codes: 0 success; 1 some jobs failed (every other result stored); 2 bad input (nothing written);
3 the environment failed (read-only or full file system, unreachable cluster, out of memory); 4 an internal
error (a bug: the traceback is shown); 130 interrupted (every finished job stored: run again to resume).
Only exit 4 shows a traceback, or any error with --debug.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback

# Before numpy is imported: no transparent huge pages for its large arrays in this process and the workers it
# starts, which inherit the environment (numpy madvises them by default). On VMs whose host backs guest memory
# lazily a huge-page fault costs ~10x its 4 KiB pages: on this project's test VM the driver's synthetic data took
# 3.4-3.9 s with them, 1.7 s without (docs/PERFORMANCE.md). A value the user set is kept.
os.environ.setdefault("NUMPY_MADVISE_HUGEPAGE", "0")

from grid import __version__  # noqa: E402
from grid.cli import data, report, run, status  # noqa: E402

from storage.errors import EnvironmentFailure, InputError, environment_failure  # noqa: E402

SUBCOMMANDS = (run, status, report, data)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(prog="biasgrid", description=(
        "Measure how a face-embedding gender classifier's accuracy depends on the demographic group it was "
        "trained and tested on: every train-group x test-group x seed x model cell, in parallel."))
    parser.add_argument("--version", action="version", version=f"biasgrid {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the traceback of any error")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in SUBCOMMANDS:
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``biasgrid`` command."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv    # accepted anywhere on the line, not only before the subcommand
    args = parser.parse_args([a for a in argv if a != "--debug"])
    args.debug = debug
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        print("\nbiasgrid: interrupted; every finished job is stored: run the same command again to resume",
              file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - every failure ends in one sentence and its exit code
        code, message = classify(exc)
        if args.debug or code == INTERNAL_ERROR:
            traceback.print_exc()
        print(f"biasgrid: error: {message}", file=sys.stderr)
        return code


INTERNAL_ERROR = 4


def classify(exc: BaseException) -> tuple[int, str]:
    """The exit code and one-line message of an error: bad input 2, environment 3, anything else 4 (a bug)."""
    if isinstance(exc, InputError):
        return InputError.exit_code, str(exc)
    if isinstance(exc, EnvironmentFailure):
        return EnvironmentFailure.exit_code, str(exc)
    if isinstance(exc, MemoryError):
        return EnvironmentFailure.exit_code, ("out of memory; run fewer jobs at once (--workers), use smaller "
                                              "data, or a machine with more memory")
    if isinstance(exc, ConnectionError):
        return EnvironmentFailure.exit_code, (f"cannot reach Ray ({exc}); check --address and that the cluster is up, "
                                              f"or run with --executor local")
    if isinstance(exc, OSError):
        return EnvironmentFailure.exit_code, str(environment_failure(str(exc.filename or "biasgrid"), exc))
    return INTERNAL_ERROR, (f"internal error ({type(exc).__name__}: {exc}); this is a bug in biasgrid, "
                            f"please report it with the traceback above")
