"""All pairs of the table re-aggregated at report time: the shards' exact counts summed into rates, and the identity
bootstrap over their per-identity tails."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from grid.report import fairness
from grid.report.blocks import Block, Table, yes
from grid.report.results import Results
from grid.report.sections import Summaries, kinds_filling
from grid.report.sections.intervals import shown_intervals
from grid.report.sections.jobs import job_status
from tasks.stats import allpairs
from tasks.stats import allpairs_rates
from tasks.stats import bootstrap as tbootstrap
from tasks.stats import rates as trates


def allpairs_summary(res: Results) -> dict[str, Any]:
    """The exact all-pairs tables: the stored shard counts of the ``allpairs`` jobs summed (integer sums), then
    tasks.stats.allpairs_rates.hist_group_tables at ``[verification] target_fmrs`` and the global ``target_fmr``.

    Returns {"eer", "operating_points", "impostor_matrix"} (DataFrames, empty when nothing is stored or a shard is
    missing) and "note" (which shards are missing; bin width)."""
    empty = {"eer": pd.DataFrame(), "operating_points": pd.DataFrame(), "impostor_matrix": pd.DataFrame(),
             "note": ""}
    missing = _allpairs_missing(res)
    if missing is None:
        return empty
    if missing:
        return {**empty, "note": missing + "; no exact tables"}
    rows = res.columns("allpairs_counts", ["n_shards", "bits", "group_a", "group_b", "kind", "bin", "count"])
    n_shards = int(rows["n_shards"].max())
    v = res.config.get("verification") or {}
    counts, names = allpairs_rates.counts_from_rows(rows)
    out = allpairs_rates.hist_group_tables(counts, names, v.get("target_fmrs", [1e-2, 1e-3, 1e-4]),
                                     v.get("target_fmr", 1e-3))
    return {**out, "note": f"{n_shards} shards; {counts.n_genuine:,} genuine and {counts.n_impostor:,} impostor "
                           f"comparisons; thresholds on bin edges of width 2^-{counts.bits}"}


def _allpairs_missing(res: Results) -> str | None:
    """None when no allpairs job is planned or stored, "" when every one is done with counts stored, else which
    shards are not done."""
    stored = len(res.columns("allpairs_counts", ["shard"])) > 0
    status = job_status(res)
    jobs = status[status["kind"].isin(kinds_filling("allpairs_counts"))]
    if jobs.empty and not stored:
        return None
    if (jobs["status"] != "done").any() or not stored:   # a shard with no pairs of its own stores no rows
        bad = jobs.loc[jobs["status"] != "done", "description"].tolist()
        return "all-pairs counts incomplete (" + (", ".join(bad) or "no counts stored") + " not done)"
    return ""


ALLPAIRS_INTERVAL_COLUMNS = [*tbootstrap.COLUMNS, "bits", "lo_bin", "lo_score", "tail_records", "exact",
                             "exact_k", "exact_n"]


def allpairs_intervals(res: Results, exact: dict[str, Any] | None = None) -> pd.DataFrame:
    """Identity-bootstrap intervals at full scale, from the replicates the ``allpairs_bootstrap`` jobs stored
    (table ``allpairs_replicates``: ``tasks.stats.allpairs_rates.TailStatistics`` over the shards' summed tails,
    ``[verification] bootstrap`` resamples, seed = the grid's first seed, the global ``target_fmr``,
    ``summarize`` = the group aggregators of tasks/stats/fairness.py): percentile intervals at confidence 0.95
    (``tasks.stats.bootstrap.intervals``), the same as ``tasks.stats.allpairs_rates.tail_bootstrap`` in one
    process, whatever the number of jobs.

    Rows: the global threshold, each group's FMR and FNMR at it, every cross-group FMR, the summaries. Columns
    ``tasks.stats.bootstrap.COLUMNS`` (estimates and intervals at the tail's bins, 2^-bits), plus bits, lo_bin,
    lo_score (the tail's lower edge), tail_records, and the same quantity from the exact counts (bins of 2^-14,
    ``exact`` = :func:`allpairs_summary`, computed when not given): exact, exact_k, exact_n (-1 for non-rates).
    Empty when nothing is stored, a job is missing, or ``bootstrap`` = 0 (:func:`allpairs_intervals_note`
    says why). Reads only the replicates (resamples x statistics rows), never the tails."""
    v = res.config.get("verification") or {}
    if _allpairs_missing(res) != "" or int(v.get("bootstrap", 0) or 0) == 0 or _bootstrap_missing(res) != "":
        return pd.DataFrame(columns=ALLPAIRS_INTERVAL_COLUMNS)
    rows = res.tables["allpairs_replicates"]
    est = rows[rows["resample"] == -1].sort_values("statistic")
    keys = list(zip(est["quantity"], est["group_a"].fillna(""), est["group_b"].fillna(""), est["target_fmr"],
                    est["metric"].fillna("")))
    reps = rows[rows["resample"] >= 0].pivot(index="resample", columns="statistic", values="value")
    undefined = next((n for n in est["note"] if n), "")
    out = tbootstrap.intervals(keys, est["value"].to_numpy(float), est["k"].to_numpy(), est["n"].to_numpy(),
                               reps[est["statistic"].tolist()].to_numpy(float), 0.95, undefined)
    first = rows.iloc[0]
    if first["tail_note"]:
        out["note"] = [f"{n}; {first['tail_note']}" if n else first["tail_note"] for n in out["note"]]
    bits, lo = int(first["bits"]), int(first["lo_bin"])
    out = out.assign(bits=bits, lo_bin=lo, lo_score=float(allpairs.bin_edges(bits)[lo]),
                     tail_records=int(first["tail_records"]))
    exact = allpairs_summary(res) if exact is None else exact
    names = sorted({g for q, g in zip(out["quantity"], out["group_a"]) if q == "group_fmr"})
    values = _exact_values(exact, names)
    found = [values.get((q, a, b, m), (np.nan, -1, -1)) for q, a, b, m in
             zip(out["quantity"], out["group_a"], out["group_b"], out["metric"])]
    out["exact"], out["exact_k"], out["exact_n"] = ([f[i] for f in found] for i in range(3))
    return out[ALLPAIRS_INTERVAL_COLUMNS]


def _bootstrap_missing(res: Results) -> str:
    """"" when every planned job filling allpairs_replicates is done and their replicates are all stored, else which are
    not."""
    status = job_status(res)
    jobs = status[status["kind"].isin(kinds_filling("allpairs_replicates"))]
    if jobs.empty:
        return ("the folder's plan has no all-pairs bootstrap jobs (a folder of an earlier version: 'biasgrid run' "
                "on it adds them)")
    bad = jobs.loc[jobs["status"] != "done", "description"].tolist()
    if bad:
        return "all-pairs bootstrap incomplete (" + ", ".join(bad) + " not done)"
    rows = res.columns("allpairs_replicates", ["resample", "n_resamples"])
    n = int(rows["n_resamples"].max()) if len(rows) else 0
    if not n or set(rows["resample"].unique()) != set(range(-1, n)):
        return "all-pairs bootstrap incomplete (some resamples' replicates are not stored)"
    return ""


def _exact_values(exact: dict[str, Any], names: list[str]) -> dict[tuple, tuple[float, int, int]]:
    """(quantity, group_a, group_b, metric) -> (value, k, n) from the exact all-pairs tables, for the rows of
    :func:`allpairs_intervals`."""
    ops, matrix = exact["operating_points"], exact["impostor_matrix"]
    if ops.empty:
        return {}
    glob = ops[ops["threshold_kind"] == "global"].set_index("group")
    out: dict[tuple, tuple[float, int, int]] = {("threshold", "all", "", ""): (float(glob.loc["all", "threshold"]),
                                                                              -1, -1)}
    for g in names:
        r = glob.loc[g]
        out[("group_fmr", g, "", "")] = (r["fmr"], int(r["false_matches"]), int(r["n_impostor"]))
        out[("group_fnmr", g, "", "")] = (r["fnmr"], int(r["false_non_matches"]), int(r["n_genuine"]))
    for r in matrix.itertuples():
        out[("cross_fmr", r.group_a, r.group_b, "")] = (r.fmr, int(r.false_matches), int(r.n_pairs))
    table = fairness.summaries(glob.loc[names, "fmr"].to_numpy(float), glob.loc[names, "fnmr"].to_numpy(float))
    for metric, value in zip(table["metric"], table["value"]):
        out[("summary", "", "", str(metric))] = (float(value), -1, -1)
    return out


def allpairs_intervals_note(res: Results) -> str:
    """Why :func:`allpairs_intervals` is empty although the all-pairs counts are complete ("" otherwise)."""
    if _allpairs_missing(res) != "":
        return ""
    if int((res.config.get("verification") or {}).get("bootstrap", 0) or 0) == 0:
        return "No identity-bootstrap intervals over all pairs: [verification] bootstrap = 0 (no tail recorded)."
    missing = _bootstrap_missing(res)
    return f"No identity-bootstrap intervals over all pairs: {missing}." if missing else ""


def allpairs_blocks(res: Results, s: Summaries) -> list[Block]:
    """The exact all-pairs counts ([verification] identities = "all"), when stored, and the identity-bootstrap
    intervals from their tail (``s["allpairs_intervals"]``)."""
    exact = allpairs_summary(res)
    if exact["operating_points"].empty and not exact["note"]:
        return []
    blocks: list[Block] = [("h3", "Exact counts over every pair of the table")]
    if exact["operating_points"].empty:
        blocks.append(("note", exact["note"]))
        return blocks
    blocks.append(("p", "Every image of every identity in the table compared with every other (no sampling, no "
                        "split), counted exactly in score bins; rates at bin-edge thresholds (docs/REPORT.md). "
                        + exact["note"] + "."))
    ops = exact["operating_points"]
    frame = pd.DataFrame({
        "group": ops["group"], "threshold": ops["threshold_kind"], "target FMR": [f"{v:g}" for v in ops["target_fmr"]],
        "t": [f"{v:.5f}" for v in ops["threshold"]], "FMR": ops["fmr_display"],
        "FMR 95% CP": [f"[{lo:.2g}, {hi:.2g}]" for lo, hi in zip(ops["fmr_ci_low"], ops["fmr_ci_high"])],
        "FNMR": ops["fnmr_display"],
        "FNMR 95% CP": [f"[{lo:.3g}, {hi:.3g}]" for lo, hi in zip(ops["fnmr_ci_low"], ops["fnmr_ci_high"])],
        "resolved": [yes(v) for v in ops["resolved"]], "reason": ops["reason"],
    })
    blocks.append(("table", Table(frame, "All pairs: own and global operating points per group")))
    m = exact["impostor_matrix"]
    text = m.assign(text=[f"{d} [{lo:.2g}, {hi:.2g}]" for d, lo, hi in
                          zip(m["fmr_display"], m["fmr_ci_low"], m["fmr_ci_high"])])
    mat = text.set_index(["group_a", "group_b"])["text"].unstack("group_b")
    blocks.append(("table", Table(mat, "All pairs: cross-group impostor FMR at the global threshold, with the "
                                       "Clopper–Pearson 95% interval", "A \\ B")))
    ci = s["allpairs_intervals"] if "allpairs_intervals" in s else allpairs_intervals(res, exact)
    return blocks + _allpairs_interval_blocks(res, ci)


def _allpairs_interval_blocks(res: Results, ci: pd.DataFrame) -> list[Block]:
    """The identity bootstrap over every pair's tail counts, beside the exact numbers."""
    if ci.empty:
        note = allpairs_intervals_note(res)
        return [("note", note)] if note else []
    r, bits, lo = int(ci["n_resamples"].iloc[0]), int(ci["bits"].iloc[0]), float(ci["lo_score"].iloc[0])
    v = res.config.get("verification") or {}
    blocks: list[Block] = [("p", f"Identity-bootstrap 95% percentile intervals over {r} resamples (identities "
                                 "resampled within each group, seeded by the grid's first seed) of the global "
                                 "threshold, each group's FMR and FNMR at it, the cross-group FMRs and the "
                                 "differential summaries, from per-identity counts of every pair: every genuine "
                                 f"comparison and every impostor comparison scoring >= {lo:.6g} (the tail: one bin "
                                 f"below FMR = {v.get('tail_fmr_factor', 10):g} x the target on a seeded subset of "
                                 f"the table; {int(ci['tail_records'].iloc[0]):,} records), in bins of 2^-{bits}. "
                                 "The bootstrap's thresholds are edges of these bins, so its estimates may differ "
                                 "from the exact numbers (bins of 2^-14) beside them by up to a bin; a resample "
                                 "whose threshold falls below the tail is undefined and counted in the note "
                                 "(docs/REPORT.md). Every row: allpairs_intervals.csv.")]
    exact = []
    for q, value, k, n in zip(ci["quantity"], ci["exact"], ci["exact_k"], ci["exact_n"]):
        if k >= 0 and n >= 0:
            exact.append(trates.format_rate(int(k), int(n)))
        else:
            exact.append("—" if pd.isna(value) else f"{value:.5f}" if q == "threshold" else f"{value:.3g}")
    frame = pd.DataFrame({
        "quantity": ci["quantity"], "group(s)": [a if not b else f"{a} × {b}" for a, b in zip(ci["group_a"],
                                                                                            ci["group_b"])],
        "summary": ci["metric"], "exact (2^-14 bins)": exact,
        f"estimate [bootstrap 95%] (2^-{bits} bins)": shown_intervals(ci),
        "Clopper–Pearson 95%": ["" if pd.isna(lo_) else f"[{lo_:.3g}, {hi:.3g}]"
                                for lo_, hi in zip(ci["cp_low"], ci["cp_high"])],
        "note": ci["note"].fillna(""),
    })
    blocks.append(("table", Table(frame, "All pairs: identity-bootstrap 95% intervals at the global threshold")))
    return blocks
