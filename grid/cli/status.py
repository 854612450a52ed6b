"""``biasgrid status DIR``: the done, failed and missing jobs of a results folder."""

from __future__ import annotations

import argparse
from collections import Counter
from typing import Any

from storage.errors import InputError
from storage.results import JOB_STATES, ResultStore, job_state


def register(subparsers: Any) -> None:
    """Add the ``status`` subcommand."""
    status = subparsers.add_parser("status", help="list done, failed and missing jobs of a results folder")
    status.add_argument("dir", help="results folder")
    status.set_defaults(func=handler)


def handler(args: argparse.Namespace) -> int:
    """Print every planned job that is not done; exit 0 when all are done, else 1."""
    store = ResultStore(args.dir)
    info = store.run_info()
    if info is None:
        raise InputError(f"{args.dir}: no run.json here; expected a results folder written by 'biasgrid run'")
    ledger = store.ledger()
    states: Counter[str] = Counter()
    lines = []
    for job in info["jobs"]:
        record = ledger.get(job["job_id"])
        state = job_state(record)
        states[state] += 1
        if state != "done":
            detail = f": {record.get('error', '')}" if record else ""
            lines.append(f"  {state:8s} {job['description']} [{job['job_id']}]{detail}")
    total = len(info["jobs"])
    print(f"{args.dir}: {total} jobs planned: " + ", ".join(f"{states[s]} {s}" for s in JOB_STATES))
    print("\n".join(lines) if lines else "  every planned job is stored")
    return 0 if states["done"] == total else 1
