"""``biasgrid status DIR``: the done, failed and missing jobs of a results folder."""

from __future__ import annotations

import argparse
from collections import Counter
from typing import Any

from storage.errors import InputError
from storage.results import JOB_STATES, ResultStore, job_state, jobs_from_columns


def register(subparsers: Any) -> None:
    """Add the ``status`` subcommand."""
    status = subparsers.add_parser("status", help="list done, failed and missing jobs of a results folder")
    status.add_argument("dir", help="results folder")
    status.add_argument("--verify", action="store_true",
                        help="read every result file and compare its checksum (default: sizes only)")
    status.set_defaults(func=handler)


def handler(args: argparse.Namespace) -> int:
    """Print every planned job that is not done and every foreign entry inside a table's folder; exit 0 when all
    jobs are done and the table folders hold only the store's files, else 1."""
    store = ResultStore(args.dir)
    info = store.run_info()
    if info is None:
        raise InputError(f"{args.dir}: no run.json here; expected a results folder written by 'biasgrid run'")
    ledger = store.ledger()
    damage = store.damage(ledger, verify=args.verify)
    jobs = jobs_from_columns(info.get("jobs"))
    states: Counter[str] = Counter()
    lines = []
    for job in jobs:
        record = ledger.get(job["job_id"])
        state = job_state(record, damage.get(job["job_id"]))
        states[state] += 1
        if state != "done":
            detail = damage.get(job["job_id"]) if state == "damaged" else (record or {}).get("error", "")
            lines.append(f"  {state:8s} {job.get('description', '')} [{job['job_id']}]"
                         + (f": {detail}" if detail else ""))
    foreign = store.foreign()
    total = len(jobs)
    print(f"{args.dir}: {total} jobs planned: " + ", ".join(f"{states[s]} {s}" for s in JOB_STATES))
    print("\n".join(lines) if lines else "  every planned job is stored")
    if states["damaged"]:
        print("damaged results are left out of the report; the next 'biasgrid run' recomputes them")
    for path in foreign:
        print(f"  damaged  {path}: not a file of the results store, inside a table's folder")
    if foreign:
        print(f"{len(foreign)} foreign entries in table folders: readers of those tables (pandas, pyarrow, DuckDB) "
              f"read or fail on them; move them out of the results folder")
    return 0 if states["done"] == total and not foreign else 1
