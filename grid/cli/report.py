"""`biasgrid report DIR [--out DIR]`: print the accuracy matrices and write the report of a results folder."""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: Any) -> None:
    """Add the ``report`` subcommand to the ``biasgrid`` argument parser's subparsers."""
    parser = subparsers.add_parser(
        "report", help="write the report (HTML, Markdown, LaTeX, CSV, PNG) of a results folder",
        description="Print the mean ± std accuracy matrices of a results folder and write its report: "
                    "report.html (self-contained), report.md, tables.tex, CSV tables and PNG figures.")
    parser.add_argument("results", metavar="DIR", help="results folder written by `biasgrid run`")
    parser.add_argument("--out", metavar="DIR", default=None,
                        help="folder for the report (default: DIR/report)")
    parser.set_defaults(func=handler)


def handler(args: argparse.Namespace) -> int:
    """Load the results (InputError if DIR is not a results folder), print the tables, write the report."""
    from grid.report import load_results, write_report   # here: `biasgrid run` starts Ray before importing them
    from grid.report.document import check_report_out
    from grid.report.render import format_matrices, format_sections, format_status

    check_report_out(args.results, args.out)   # before the work: a refused folder is named at once
    res = load_results(args.results)
    print(format_matrices(res))
    sections = format_sections(res)
    if sections:
        print(sections)
    print(format_status(res))
    path = write_report(res, args.out)
    print(f"\nreport: {path}")
    return 0
