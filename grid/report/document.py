"""The report of a results folder: its content as blocks (headings, paragraphs, tables of display strings,
figures), written as report.html (self-contained), report.md, tables.tex, CSV and PNG files.

    from grid.report import load_results, write_report
    write_report(load_results("results"))        # -> results/report/report.html

The CSVs hold the unformatted numbers (mean, std and n as separate columns). A results folder with failed or
missing jobs, or with empty tables, still gives a report that says what is missing. Formulas: docs/REPORT.md.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd

from grid.report.blocks import Block, Table
from grid.report.render import render_html, render_latex, render_markdown
from grid.report.results import Results
from grid.report.sections import Section, kind_sections
from grid.report.sections.jobs import job_blocks, job_status
from storage.atomic import replace_folder
from storage.errors import EnvironmentFailure, InputError
from storage.results import ResultStore, check_outside_results

REPORT_DIR = "report"
HTML_FILE = "report.html"


def _config_blocks(res: Results) -> list[Block]:
    blocks: list[Block] = [("h2", "Configuration and provenance")]
    versions = res.run.get("versions") or {}
    facts = pd.DataFrame({"value": [res.fingerprint or "unknown", res.run.get("created_at") or "unknown",
                                    ", ".join(f"{k} {v}" for k, v in versions.items()) or "unknown",
                                    str(res.path)]},
                         index=["data fingerprint", "run created at", "versions", "results folder"])
    blocks.append(("table", Table(facts, "Provenance", "")))
    blocks.append(("pre", json.dumps(res.config, indent=2, sort_keys=False, default=str) if res.config
                   else "(run.json has no config)"))
    return blocks


def build_blocks(res: Results, summaries: dict[str, pd.DataFrame] | None = None) -> list[Block]:
    """The report's content as blocks (see the module docstring); figures rendered to PNG bytes: the heading, the
    job status, each kind's sections (``grid.report.sections.kind_sections``), the configuration."""
    sections = kind_sections()
    s = summaries if summaries is not None else all_summaries(res, sections)
    blocks: list[Block] = [("h1", "biasgrid report")]
    status = s["jobs"]
    counts = status["status"].value_counts() if not status.empty else pd.Series(dtype=int)
    blocks.append(("p", f"Models: {', '.join(res.models) or 'none'}; training groups: "
                        f"{', '.join(res.train_groups) or 'none'}; test groups: {', '.join(res.test_groups) or 'none'}"
                        f"; seeds: {', '.join(map(str, res.seeds)) or 'none'}. Data fingerprint: "
                        f"{res.fingerprint or 'unknown'}."))
    if int(counts.get("failed", 0)) or int(counts.get("missing", 0)) or int(counts.get("damaged", 0)):
        damaged = int(counts.get("damaged", 0))
        blocks.append(("note", f"Incomplete run: {int(counts.get('failed', 0))} failed and "
                               f"{int(counts.get('missing', 0))} missing jobs"
                               + (f" and {damaged} damaged results" if damaged else "")
                               + " — see Failed and missing jobs."))
    blocks += job_blocks(res, sections)
    for section in sections:
        blocks += section.blocks(res, s)
    blocks += _config_blocks(res)
    blocks.append(("p", "Definitions of every summary (paired test, confidence interval, skewed error ratio, "
                        "Max/Min, Max/GeoMean, FDR, GARBE, WERM, d', FTA): docs/REPORT.md in the biasgrid repository."))
    return blocks


def all_summaries(res: Results, sections: list[Section] | None = None) -> dict[str, pd.DataFrame]:
    """Every summary table of the report by CSV name: each section's, then the job status ("jobs")."""
    out: dict[str, pd.DataFrame] = {}
    for section in kind_sections() if sections is None else sections:
        out.update(section.summaries(res))
    out["jobs"] = job_status(res)
    return out


# -------------------------------------------------------------------------------------------------------- write
def report_files(res: Results) -> dict[str, bytes]:
    """Every file of the report, by path within the report folder: report.html (self-contained), report.md,
    tables.tex, figures/*.png and CSVs (accuracy*.csv with mean, std, n per cell; row_spread, best_train_group,
    paired_differences, verification, demographic_rates, fairness, fairness_by_seed, impostor_fmr, jobs, and
    failures with the tracebacks)."""
    files: dict[str, bytes] = {}
    summaries = all_summaries(res)
    for name, frame in summaries.items():
        frame = frame.copy()
        for col in frame.columns:
            if frame[col].map(lambda v: isinstance(v, list)).any():
                frame[col] = frame[col].map(lambda v: " ".join(map(str, v)) if isinstance(v, list) else v)
        files[f"{name}.csv"] = frame.to_csv(index=False).encode()
    files["failures.csv"] = res.tables["failures"].to_csv(index=False).encode()
    blocks = build_blocks(res, summaries)
    for kind, content in blocks:
        if kind == "figure":
            files[f"figures/{content.name}"] = content.png
    files["report.md"] = render_markdown(blocks).encode()
    files["tables.tex"] = render_latex(blocks).encode()
    files[HTML_FILE] = render_html(blocks).encode()
    return files


def write_report(res: Results, out: str | os.PathLike[str] | None = None) -> Path | str:
    """Write the report of loaded results and return the location of its report.html.

    Into ``out`` (a local folder), by default into the results folder's ``report/`` (also when the results
    folder is a URI such as s3://...: never into the current folder). A local report folder is replaced as a
    whole (written beside it, then swapped in), so a full disk leaves the previous report or none, never half
    of one; on an object store each file is replaced whole.
    """
    files = report_files(res)
    if out is None and "://" in str(res.path):
        store = ResultStore(res.path)
        for name, data in files.items():
            store.write_bytes(f"{REPORT_DIR}/{name}", data)
        return f"{str(res.path).rstrip('/')}/{REPORT_DIR}/{HTML_FILE}"
    check_report_out(res.path, out)
    out = Path(out) if out is not None else Path(res.path) / REPORT_DIR
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: the report's output folder is a file")
    try:
        replace_folder(out, files)
    except OSError as exc:
        raise EnvironmentFailure(f"{out}: cannot write the report ({exc.strerror or exc}); the previous "
                                 f"report (if any) is unchanged. Free some space, or write it elsewhere "
                                 f"(biasgrid report DIR --out FOLDER)") from exc
    return out / HTML_FILE


def _is_report(folder: Path) -> bool:
    """Whether ``folder`` holds a report and nothing else: the files :func:`report_files` writes."""
    own = {HTML_FILE, "report.md", "tables.tex"}
    names = {p.name for p in folder.iterdir()}
    return HTML_FILE in names and all(
        name in own or name.endswith(".csv") or (name == "figures" and (folder / name).is_dir()
                                                 and all(f.suffix == ".png" for f in (folder / name).iterdir()))
        for name in names)


def check_report_out(results: str | os.PathLike[str], out: str | os.PathLike[str] | None) -> None:
    """InputError when the report folder ``out`` named for the ``results`` folder would be written inside a
    results folder (other than the results' own ``report/``) or replace a folder holding anything but a report
    (it is replaced as a whole)."""
    if out is None or ("://" not in str(results) and Path(out).resolve() == (Path(results) / REPORT_DIR).resolve()):
        return
    out = Path(out)
    check_outside_results(out)
    if out.is_dir() and any(out.iterdir()) and not _is_report(out):
        names = sorted(p.name for p in out.iterdir())
        raise InputError(f"--out {out}: is a folder holding other files ({', '.join(names[:3])}"
                         f"{' ...' if len(names) > 3 else ''}) and no report; the report folder is replaced as a "
                         f"whole, so name a new or empty folder, or an earlier report's")
