"""Job kind "allpairs_bootstrap": the identity bootstrap over every pair's tail, its resamples split into jobs.

With ``[verification] identities = "all"`` and ``bootstrap`` = R > 0, the plan adds ``tail_bootstrap_jobs`` jobs
(at most R) that run **after** the allpairs jobs (``JobKind.after``: a later stage of the run). The driver sums
the allpairs jobs' stored tails once (:func:`tasks.stats.allpairs_rates.tail_from_columns`, reading only the
columns it needs) and ships them to the workers as the stage's shared arrays (:func:`inputs`). Block b of B
evaluates resamples ``b R // B`` to ``(b + 1) R // B`` of the one sequence of multiplicities
(:func:`tasks.stats.bootstrap.identity_multiplicities` with the grid's first seed, as the allpairs jobs), so the
replicates, and the intervals the report takes from them, do not depend on B or on the number of workers: they
equal :func:`tasks.stats.allpairs_rates.tail_bootstrap` in one process with the same seed.

Table ``allpairs_replicates``: one row per (resample, statistic), ``resample`` = -1 for the original data (block 0
only: the point estimates with their counts k, n and the note where undefined); the tail's bins, lower bin,
records and note (shards cut at a common lower bin) on every row. The report
(``grid.report.sections.allpairs.allpairs_intervals``) only reads it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.compute as pc

from storage.errors import InputError
from storage.schema import result_table
from tasks.kinds import ConfigPart, JobKind, PlannedJob, Where, register
from tasks.stats import allpairs, allpairs_rates, bootstrap, fairness

TABLES = (
    result_table("allpairs_replicates", "block", {
        "block": "int", "n_blocks": "int", "n_resamples": "int", "resample": "int", "statistic": "int",
        "quantity": "string", "group_a": "string", "group_b": "string", "target_fmr": "float", "metric": "string",
        "value": "float", "k": "int", "n": "int", "bits": "int", "lo_bin": "int", "tail_records": "int",
        "note": "string", "tail_note": "string"}),
)
DEFAULTS: dict[str, Any] = {"tail_bootstrap_jobs": 8}   # jobs sharing the all-pairs bootstrap's resamples
FIELDS = ("imp_a", "imp_b", "imp_bin", "imp_count", "gen_id", "gen_bin", "gen_count")


def _plan(cfg: Mapping[str, Any]) -> Iterator[PlannedJob]:
    """``tail_bootstrap_jobs`` jobs (at most ``bootstrap``) when the allpairs jobs record a tail."""
    v = cfg["verification"]
    if not v["enabled"] or v["identities"] != "all" or v["bootstrap"] <= 0:
        return
    n_resamples = int(v["bootstrap"])
    n = min(int(v["tail_bootstrap_jobs"]), n_resamples)
    tail = {"bits": int(v["tail_bits"]), "fmr_factor": float(v["tail_fmr_factor"]),
            "target_fmr": float(v["target_fmr"])}          # the allpairs jobs' rule: which tail it resamples
    for block in range(n):
        params = {"block": block, "n_blocks": n, "n_resamples": n_resamples, "tail": tail,
                  "first": block * n_resamples // n, "last": (block + 1) * n_resamples // n}
        yield PlannedJob(cfg["grid"]["seeds"][0], params,
                         f"all-pairs bootstrap {block + 1}/{n} (resamples {params['first']}-{params['last'] - 1})")


def inputs(cfg: Mapping[str, Any], read: Callable[[str, list[str]], Any]) -> dict[str, Any]:
    """The allpairs jobs' stored tails summed, as the arrays the bootstrap jobs read (``tail_*``)."""
    tail = read("allpairs_tail", ["kind", "identity_a", "identity_b", "bin", "count", "bits", "lo_bin"])
    ids = read("allpairs_identities", ["identity", "group", "n_images", "bits", "lo_bin"])
    if ids.num_rows == 0:
        raise InputError("the allpairs jobs stored no tail (table allpairs_identities is empty): the identity "
                         "bootstrap over every pair needs [verification] bootstrap > 0 when they ran")
    columns = {c: tail.column(c).to_numpy() for c in ("identity_a", "identity_b", "bin", "count", "bits", "lo_bin")}
    kind = tail.column("kind")
    columns["genuine"] = pc.equal(kind, "genuine").to_numpy(zero_copy_only=False)
    columns["impostor"] = pc.equal(kind, "impostor").to_numpy(zero_copy_only=False)
    del tail, kind
    t, group, images, names, note = allpairs_rates.tail_from_columns(
        columns, {c: ids.column(c).to_numpy(zero_copy_only=False) for c in ids.column_names})
    return {**{f"tail_{f}": getattr(t, f) for f in FIELDS}, "tail_bits": np.int64(t.bits),
            "tail_lo_bin": np.int64(t.lo_bin), "tail_identity_group": group, "tail_images": images,
            "tail_group_names": np.asarray(names, dtype=object), "tail_note": np.asarray(note, dtype=object)}


def tail_statistics(data: Mapping[str, Any], target_fmr: float) -> allpairs_rates.TailStatistics:
    """The statistics of the shipped tail (:func:`inputs`) at the global ``target_fmr``."""
    tail = allpairs.TailCounts(int(data["tail_bits"]), int(data["tail_lo_bin"]), *(data[f"tail_{f}"] for f in FIELDS))
    return allpairs_rates.TailStatistics(tail, data["tail_identity_group"], data["tail_images"],
                                         [str(n) for n in data["tail_group_names"]], target_fmr, fairness.summaries)


def run(payload: Mapping[str, Any], data: Mapping[str, Any]) -> dict[str, pd.DataFrame]:
    """Worker entry: the replicates of resamples first..last-1 (and on block 0 the point estimates)."""
    p = payload["params"]
    st = tail_statistics(data, float(p["tail"]["target_fmr"]))
    keys, reps = bootstrap.replicate_values(st, data["tail_identity_group"], int(p["n_resamples"]),
                                            int(payload["seed"]), range(int(p["first"]), int(p["last"])))
    K, R = len(keys), reps.shape[0]
    frame = {"resample": np.repeat(np.arange(p["first"], p["last"]), K), "statistic": np.tile(np.arange(K), R),
             "value": reps.reshape(-1), "k": -1, "n": -1, "note": ""}
    frames = [pd.DataFrame(frame)]
    if p["block"] == 0:
        _, est, ks, ns = st.evaluate(None)
        frames.insert(0, pd.DataFrame({"resample": -1, "statistic": np.arange(K), "value": est, "k": ks, "n": ns,
                                       "note": [st.undefined_note if np.isnan(v) else "" for v in est]}))
    out = pd.concat(frames, ignore_index=True)
    key = pd.DataFrame(keys, columns=["quantity", "group_a", "group_b", "target_fmr", "metric"])
    out = out.join(key, on="statistic")
    return {"allpairs_replicates": out.assign(block=p["block"], n_blocks=p["n_blocks"], n_resamples=p["n_resamples"],
                                              bits=st.t.bits, lo_bin=st.t.lo_bin, tail_records=st.t.n_records,
                                              tail_note=str(data["tail_note"]))}


def _check_config(cfg: dict[str, Any], where: Where) -> None:
    v = cfg["verification"]
    limit = cfg["run"]["max_jobs"] if v["identities"] == "all" else 2**63 - 1   # one job per block of resamples
    if not 1 <= v["tail_bootstrap_jobs"] <= limit:
        raise InputError(f"{where('verification.tail_bootstrap_jobs')} must be from 1 to run.max_jobs "
                         f"({cfg['run']['max_jobs']:,}; one job per block of resamples), got "
                         f"{v['tail_bootstrap_jobs']:,}")


KIND = register(JobKind(
    "allpairs_bootstrap", plan=_plan, rows=lambda p, split: {}, run="tasks.kinds.allpairs_bootstrap:run",
    tables=TABLES, order=3, cost=lambda p: int(p["last"]) - int(p["first"]),
    config=ConfigPart("verification", DEFAULTS, _check_config), timeout=21600.0, after=("allpairs",),
    inputs=inputs, report=("grid.report.sections.verification:SECTION",)))
