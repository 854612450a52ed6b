"""Job status: every planned job done, failed, missing or damaged, and the report's section about them."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from grid.report.blocks import Block, Table
from grid.report.results import Results
from grid.report.sections import Section
from storage.results import job_state


def job_status(res: Results) -> pd.DataFrame:
    """Every planned job with its status "done", "failed" or "missing" (no ledger record), and the error.

    Columns: job_id, kind, description, model, train_group, test_group, seed, subset, status, error. Without a plan
    in run.json, the ledger's jobs are listed (status from the ledger).
    """
    failures = res.tables["failures"]
    errors = dict(zip(failures["job_id"], failures["error"])) if not failures.empty else {}
    columns = ["job_id", "kind", "description", "model", "train_group", "test_group", "seed", "subset", "status",
               "error"]
    rows = []
    seen = set()
    for job in res.jobs:
        if not isinstance(job, dict):
            continue
        jid = job.get("job_id")
        seen.add(jid)
        record = res.ledger.get(jid)
        status = job_state(record, res.damaged.get(jid))
        rows.append({**{c: job.get(c) for c in columns}, "status": status,
                     "error": _status_error(status, errors.get(jid) or (record or {}).get("error"),
                                            res.damaged.get(jid))})
    for jid, record in res.ledger.items():
        if seen or jid in seen:       # with a plan, ledger records of other (earlier) plans are not this run's
            continue
        status = job_state(record, res.damaged.get(jid))
        rows.append({**{c: record.get(c) for c in columns}, "job_id": jid, "status": status,
                     "error": _status_error(status, errors.get(jid) or record.get("error"), res.damaged.get(jid))})
    out = pd.DataFrame(rows, columns=columns)
    out["description"] = [d if isinstance(d, str) and d else f"{k or 'job'} {j}"
                          for d, k, j in zip(out["description"], out["kind"], out["job_id"])]
    return out


def _status_error(status: str, error: str | None, damage: str | None) -> str:
    """What the status table says about a job: a failed job's error, what is wrong with a damaged one."""
    return {"failed": error or "", "damaged": damage or ""}.get(status, "")


def job_blocks(res: Results, sections: Sequence[Section] = ()) -> list[Block]:
    """The "Failed and missing jobs" part: counts, the sections' own status blocks, failed, damaged and missing
    jobs, and the notes of loading."""
    blocks: list[Block] = [("h2", "Failed and missing jobs")]
    status = job_status(res)
    if status.empty:
        blocks.append(("note", "run.json lists no planned jobs and the ledger is empty: missing jobs cannot be "
                               "listed."))
        return blocks
    counts = status["status"].value_counts()
    done, failed, missing, damaged = (int(counts.get(k, 0)) for k in ("done", "failed", "missing", "damaged"))
    if failed == 0 and missing == 0 and damaged == 0:
        blocks.append(("p", f"All {len(status)} planned jobs finished."))
    else:
        broken = (f", {damaged} damaged (stored, but their files are not as written; the next run recomputes "
                  f"them)") if damaged else ""
        blocks.append(("note", f"{done} of {len(status)} jobs done, {failed} failed, {missing} missing{broken} "
                               f"(planned but never finished). The tables and figures use the done jobs only."))
    for section in sections:
        if section.status is not None:
            blocks += section.status(res)
    bad = status[status["status"] == "failed"]
    if not bad.empty:
        frame = pd.DataFrame({"job": bad["description"], "job id": bad["job_id"],
                              "error": [(e or "").strip() for e in bad["error"]]})
        blocks.append(("table", Table(frame, "Failed jobs (tracebacks: failures.csv beside this report)")))
    broken = status[status["status"] == "damaged"]
    if not broken.empty:
        frame = pd.DataFrame({"job": broken["description"], "job id": broken["job_id"],
                              "what is wrong": broken["error"]})
        blocks.append(("table", Table(frame, "Damaged results (left out of every table and figure)")))
    miss = status[status["status"] == "missing"]
    if not miss.empty:
        frame = pd.DataFrame({"job": miss["description"], "job id": miss["job_id"]})
        blocks.append(("table", Table(frame, "Missing jobs (planned, no ledger record)")))
    for note in res.notes:
        blocks.append(("note", note))
    return blocks
