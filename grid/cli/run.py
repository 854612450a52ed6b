"""``biasgrid run``: run the grid, then print the matrices and write the report."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from grid.executors import EXECUTORS


def register(subparsers: Any) -> None:
    """Add the ``run`` subcommand."""
    run = subparsers.add_parser("run", help="run the grid (the default grid on built-in synthetic data when no "
                                            "config or data is named)")
    run.add_argument("--config", help="TOML config file (every field has a default)")
    run.add_argument("--data", help="embedding table (.parquet) or importer source; default: built-in "
                                     "synthetic DiveFace-like data")
    run.add_argument("--format", help="importer format of --data (default: detected)")
    run.add_argument("--out", help="results folder or URI (default: results/)")
    run.add_argument("--seeds", help="N (seeds 0..N-1) or a comma list such as 3,7,9 (default: 5)")
    run.add_argument("--models", help="comma list of model types (default: mlp,xgboost)")
    run.add_argument("--executor", choices=list(EXECUTORS), help="default: ray")
    run.add_argument("--workers", type=int, help="parallel jobs (default: the number of CPUs)")
    run.add_argument("--address", help="Ray cluster address (default: start Ray locally)")
    run.add_argument("--rerun-failed", action="store_true", help="run again the jobs that failed before")
    run.add_argument("--wait", action="store_true",
                     help="when another run holds the results folder, wait for it instead of refusing")
    run.add_argument("--max-jobs", type=int, help="refuse a grid of more jobs than this (default: 100000)")
    run.add_argument("--no-report", action="store_true", help="skip the HTML report at the end")
    run.add_argument("--mlflow", nargs="?", const="local", metavar="URI",
                     help="track the run in MLflow at URI (alone: a SQLite store in the results folder)")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    run.set_defaults(func=handler)


def handler(args: argparse.Namespace) -> int:
    """Resolve the config, run what is not stored yet, print the matrices and job status, write the report."""
    from grid.config import resolve_config
    from grid.runner import open_executor

    overrides: dict[str, Any] = {
        "data.path": args.data, "data.format": args.format, "run.out": args.out, "grid.seeds": args.seeds,
        "grid.models": args.models.split(",") if args.models is not None else None,
        "run.executor": args.executor, "run.workers": args.workers, "run.address": args.address,
        "run.report": False if args.no_report else None, "run.max_jobs": args.max_jobs,
        "tracking.mlflow": args.mlflow,
    }
    cfg = resolve_config(args.config, overrides)
    executor = open_executor(cfg)   # before the report's imports (1-2 s): Ray's node starts meanwhile
    try:
        from grid.api import execute
        from grid.report.render import format_matrices, format_sections, format_status
    except BaseException:
        executor.close()
        raise
    summary, results, report = execute(cfg, rerun_failed=args.rerun_failed, progress=not args.quiet, wait=args.wait,
                                       executor=executor)
    out = cfg["run"]["out"]
    print(f"\n{summary.ran} jobs run, {summary.stored_before} were already stored, "
          f"{len(summary.failed) + len(summary.failed_before)} failed; {summary.seconds:.0f} s")
    print(format_matrices(results))
    sections = format_sections(results)
    if sections:
        print(sections)
    print(format_status(results))
    if report is not None:
        print(f"report: {report}")
    print(f"results: {out}  (pandas: pd.read_parquet('{out}/accuracy'); status: biasgrid status {out})")
    for line in summary.failed + [f"{d} (failed in an earlier run; --rerun-failed retries it)"
                                  for d in summary.failed_before]:
        print(f"FAILED {line}", file=sys.stderr)
    return summary.exit_code
