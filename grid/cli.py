"""The ``biasgrid`` command: run, status, report, data synth, data import.

Exit codes: 0 success; 1 some jobs failed (every other result stored); 2 bad input (nothing written);
130 interrupted (every finished job stored: run again to resume).
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from typing import Any

from grid import __version__
from storage.errors import InputError


def _run(args: argparse.Namespace) -> int:
    from grid.config import resolve_config
    from grid.runner import run_grid

    overrides: dict[str, Any] = {
        "data.path": args.data, "data.format": args.format, "run.out": args.out, "grid.seeds": args.seeds,
        "grid.models": args.models.split(",") if args.models else None, "run.executor": args.executor,
        "run.workers": args.workers, "run.address": args.address,
        "run.report": False if args.no_report else None,
    }
    cfg = resolve_config(args.config, overrides)
    summary = run_grid(cfg, rerun_failed=args.rerun_failed, progress=not args.quiet)
    out = cfg["run"]["out"]
    print(f"\n{summary.ran} jobs run, {summary.stored_before} were already stored, "
          f"{len(summary.failed) + len(summary.failed_before)} failed; {summary.seconds:.0f} s")
    from grid import aggregate, report

    results = aggregate.load_results(out)
    print(report.format_matrices(results))
    print(report.format_status(results))
    if cfg["run"]["report"]:
        local_copy = "report" if "://" in out else None  # a remote results folder: the report is written here
        print(f"report: {report.write_report(results, local_copy)}")
    print(f"results: {out}  (pandas: pd.read_parquet('{out}/accuracy'); status: biasgrid status {out})")
    for line in summary.failed + [f"{d} (failed in an earlier run; --rerun-failed retries it)"
                                  for d in summary.failed_before]:
        print(f"FAILED {line}", file=sys.stderr)
    return summary.exit_code


def _status(args: argparse.Namespace) -> int:
    from storage.results import ResultStore

    store = ResultStore(args.dir)
    info = store.run_info()
    if info is None:
        raise InputError(f"{args.dir}: no run.json here; expected a results folder written by 'biasgrid run'")
    ledger = store.ledger()
    states: Counter[str] = Counter()
    lines = []
    for job in info["jobs"]:
        record = ledger.get(job["job_id"])
        state = record["status"] if record else "missing"
        states[state] += 1
        if state != "done":
            detail = f": {record.get('error', '')}" if record else ""
            lines.append(f"  {state:8s} {job['description']} [{job['job_id']}]{detail}")
    total = len(info["jobs"])
    print(f"{args.dir}: {total} jobs planned: {states['done']} done, {states['failed']} failed, "
          f"{states['missing']} missing")
    print("\n".join(lines) if lines else "  every planned job is stored")
    return 0 if states["done"] == total else 1


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(prog="biasgrid", description=(
        "Measure how a face-embedding gender classifier's accuracy depends on the demographic group it was "
        "trained and tested on: every train-group x test-group x seed x model cell, in parallel."))
    parser.add_argument("--version", action="version", version=f"biasgrid {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the grid (the default grid on built-in synthetic data when no "
                                     "config or data is named)")
    run.add_argument("--config", help="TOML config file (every field has a default)")
    run.add_argument("--data", help="embedding table (.parquet) or importer source; default: built-in "
                                     "synthetic DiveFace-like data")
    run.add_argument("--format", help="importer format of --data (default: detected)")
    run.add_argument("--out", help="results folder or URI (default: results/)")
    run.add_argument("--seeds", help="N (seeds 0..N-1) or a comma list such as 3,7,9 (default: 5)")
    run.add_argument("--models", help="comma list of model types (default: mlp,xgboost)")
    run.add_argument("--executor", choices=["ray", "local"], help="default: ray")
    run.add_argument("--workers", type=int, help="parallel jobs (default: the number of CPUs)")
    run.add_argument("--address", help="Ray cluster address (default: start Ray locally)")
    run.add_argument("--rerun-failed", action="store_true", help="run again the jobs that failed before")
    run.add_argument("--no-report", action="store_true", help="skip the HTML report at the end")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    run.set_defaults(func=_run)

    status = sub.add_parser("status", help="list done, failed and missing jobs of a results folder")
    status.add_argument("dir", help="results folder")
    status.set_defaults(func=_status)

    from grid import cli_data, cli_report

    cli_report.register(sub)
    cli_data.register(sub)
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


if __name__ == "__main__":
    sys.exit(main())
