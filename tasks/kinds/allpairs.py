"""Job kind "allpairs": exact genuine/impostor counts over every pair of images of the whole table, sharded.

With ``[verification] identities = "all"`` the plan adds ``allpairs_shards`` jobs. Shard k of S counts the
rectangles ``tasks.stats.allpairs.block_tasks(n)[k::S]`` of the n x n score matrix (every image of every identity in the
table, i < j) into per-(group pair, bin) counts (:func:`tasks.stats.allpairs.shard_counts`), and stores only the
non-zero bins: table ``allpairs_counts`` = (shard, n_shards, bits, group_a, group_b, kind, bin, count), genuine
rows with group_b = group_a. Any sharding sums to the same exact counts; the report sums the shards
(``grid.report.sections.allpairs.allpairs_summary``) and derives the rates with
:func:`tasks.stats.allpairs_rates.hist_group_tables`.

**Tail for the identity bootstrap** (when ``[verification] bootstrap`` > 0): every shard first chooses the same
lower score e_lo from the whole table and the job's seed (the first grid seed, the same for all shards;
:func:`tasks.stats.allpairs.tail_lower_score` at FMR = ``tail_fmr_factor`` x ``target_fmr``, bins of 2^-``tail_bits``),
then records while counting every genuine comparison per (identity, bin) and every impostor comparison >= e_lo
per (identity pair, bin), compacted: table ``allpairs_tail`` = (shard, n_shards, bits, lo_bin, kind, identity_a,
identity_b, bin, count), identity_b = identity_a for genuine rows; identities are the data's ``identity_codes``.
Shard 0 also stores every identity once, with its demographic group and image count (identities without any
tail record included): table ``allpairs_identities`` = (shard, n_shards, bits, lo_bin, identity, group,
n_images). The jobs of kind ``allpairs_bootstrap`` (``tasks.kinds.allpairs_bootstrap``), run after these, sum the
shards' tails and resample them; the report reads their replicates.

Rows are L2-normalised block by block as they are read (X itself may be a memory map and is never copied whole).
The counts do not depend on the seed's split; the jobs carry the first grid seed, which seeds the tail's choice.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import pandas as pd

from storage.errors import InputError
from storage.schema import result_table
from tasks.kinds import ConfigPart, JobKind, PlannedJob, Where, register
from tasks.runtime import job_gpus, row_groups, tensorflow_device
from tasks.stats import allpairs
from tasks.stats.scoring import scaled_rows

TABLES = (
    result_table("allpairs_counts", "shard", {
        "shard": "int", "n_shards": "int", "bits": "int", "group_a": "string", "group_b": "string",
        "kind": "string", "bin": "int", "count": "int"}),
    result_table("allpairs_tail", "shard", {
        "shard": "int", "n_shards": "int", "bits": "int", "lo_bin": "int", "kind": "string", "identity_a": "int",
        "identity_b": "int", "bin": "int", "count": "int"}),
    result_table("allpairs_identities", "shard", {
        "shard": "int", "n_shards": "int", "bits": "int", "lo_bin": "int", "identity": "int", "group": "string",
        "n_images": "int"}),
)
DEFAULTS: dict[str, Any] = {
    "identities": "test",          # "all": also exact counts over every pair of the whole table
    "allpairs_shards": 8,          # allpairs jobs (shards of the blocks) when identities = "all"
    "tail_fmr_factor": 3.0,        # all pairs, bootstrap > 0: the tail starts at FMR = factor x target_fmr
    "tail_bits": 10,               # all pairs, bootstrap > 0: the tail's bins are 2^-tail_bits wide
}


class NormalisedRows:
    """Row slices of X as L2-normalised float32 (what :func:`tasks.stats.allpairs.block_counts` needs), computed per
    slice: ``rows[i0:i1]`` = X[i0:i1] / ||X[i0:i1]|| (also ``rows[index_array]``)."""

    def __init__(self, X: np.ndarray) -> None:
        self.X = X

    def __len__(self) -> int:
        return len(self.X)

    def __getitem__(self, index: slice | np.ndarray) -> np.ndarray:
        block = scaled_rows(self.X[index])   # scale-safe: any finite float32 scale gives the same rows
        norms = np.sqrt(np.einsum("ij,ij->i", block, block))
        if not (norms > 0).all():
            raise InputError("an embedding is all zeros: cosine similarity is undefined")
        return block / norms[:, None]


def group_codes(names_per_row: np.ndarray) -> tuple[list[str], np.ndarray]:
    """(sorted demographic group names of the table, each row's code into them)."""
    names, codes = np.unique(np.asarray(names_per_row).astype(str), return_inverse=True)
    return [str(n) for n in names], codes.astype(np.int64)


def count_shard(X: np.ndarray, identity: np.ndarray, group_names: np.ndarray, shard: int, n_shards: int,
                bits: int = allpairs.DEFAULT_BITS, block: int = allpairs.DEFAULT_BLOCK,
                tail: allpairs.TailCounts | None = None,
                binner: allpairs.Binner = allpairs.numpy_bins) -> pd.DataFrame:
    """The non-zero bins of shard ``shard`` of ``n_shards`` (``group_names``: each row's demographic group):
    columns shard, n_shards, bits, group_a, group_b, kind (genuine | impostor), bin, count. With ``tail``, the
    shard's per-identity tail records are added to it (compacted; :func:`tail_rows` turns them into rows).
    ``binner``: the block product (numpy, or TensorFlow for a job with a GPU)."""
    if not (isinstance(n_shards, int) and n_shards >= 1 and isinstance(shard, int) and 0 <= shard < n_shards):
        raise InputError(f"shard must lie in [0, n_shards), got shard {shard!r} of {n_shards!r}")
    names, group = group_codes(group_names)
    tasks = allpairs.block_tasks(len(X), block)[shard::n_shards]
    counts = allpairs.shard_counts(NormalisedRows(X), np.asarray(identity), group, len(names), tasks, bits,
                                   tail=tail, binner=binner)
    frames = []
    g, b = np.nonzero(counts.genuine)
    frames.append(pd.DataFrame({"group_a": np.asarray(names)[g], "group_b": np.asarray(names)[g],
                                "kind": "genuine", "bin": b, "count": counts.genuine[g, b]}))
    ga, gb, b = np.nonzero(counts.impostor)
    frames.append(pd.DataFrame({"group_a": np.asarray(names)[ga], "group_b": np.asarray(names)[gb],
                                "kind": "impostor", "bin": b, "count": counts.impostor[ga, gb, b]}))
    out = pd.concat(frames, ignore_index=True)
    return out.assign(shard=shard, n_shards=n_shards, bits=bits)


def tail_rows(tail: allpairs.TailCounts, shard: int, n_shards: int) -> pd.DataFrame:
    """A shard's compacted tail as rows of table ``allpairs_tail``: columns shard, n_shards, bits, lo_bin, kind
    (genuine | impostor), identity_a, identity_b (= identity_a for genuine), bin, count."""
    t = tail.compact()
    gen = pd.DataFrame({"kind": "genuine", "identity_a": t.gen_id, "identity_b": t.gen_id, "bin": t.gen_bin,
                        "count": t.gen_count})
    imp = pd.DataFrame({"kind": "impostor", "identity_a": t.imp_a, "identity_b": t.imp_b, "bin": t.imp_bin,
                        "count": t.imp_count})
    out = pd.concat([gen, imp], ignore_index=True)
    return out.assign(shard=shard, n_shards=n_shards, bits=t.bits, lo_bin=t.lo_bin)


def identity_rows(identity: np.ndarray, group_names: np.ndarray, shard: int, n_shards: int, bits: int,
                  lo_bin: int) -> pd.DataFrame:
    """One row per identity code 0..max (every identity of the table, with or without tail records): columns
    shard, n_shards, bits, lo_bin, identity, group (its rows' demographic group), n_images."""
    identity = np.asarray(identity, dtype=np.int64)
    n_images = np.bincount(identity)
    if (n_images == 0).any():
        raise InputError("identity codes must be 0..n_identities-1 with no gap")
    _, first = np.unique(identity, return_index=True)              # each identity's first row
    names = np.asarray(group_names).astype(str)
    return pd.DataFrame({"identity": np.arange(len(n_images)), "group": names[first], "n_images": n_images,
                         "shard": shard, "n_shards": n_shards, "bits": bits, "lo_bin": lo_bin})


# ------------------------------------------------------------------------------------------------- the kind ---
def _plan(cfg: Mapping[str, Any]) -> Iterator[PlannedJob]:
    """``allpairs_shards`` jobs when verification is enabled with ``identities = "all"``; with ``bootstrap`` > 0
    their params carry the tail's rule ("tail": bits, fmr_factor, target_fmr)."""
    v = cfg["verification"]
    if not v["enabled"] or v["identities"] != "all":
        return
    n = int(v["allpairs_shards"])
    tail = {"bits": int(v["tail_bits"]), "fmr_factor": float(v["tail_fmr_factor"]),
            "target_fmr": float(v["target_fmr"])} if v["bootstrap"] > 0 else None
    for shard in range(n):
        params = {"shard": shard, "n_shards": n, "bits": allpairs.DEFAULT_BITS, **({"tail": tail} if tail else {})}
        yield PlannedJob(cfg["grid"]["seeds"][0], params, f"allpairs shard {shard + 1}/{n}")


def run(payload: Mapping[str, Any], data: Mapping[str, np.ndarray]) -> dict[str, pd.DataFrame]:
    """Worker entry of an allpairs job: its shard's non-zero counts, and with a tail its tail records (and on
    shard 0 the identities). A job that asked for a GPU (``[run.resources] allpairs = {GPU = 1}``) runs its
    block products with TensorFlow on it."""
    if job_gpus(payload) > 0:
        with tensorflow_device(True):
            return _run(payload, data, allpairs.tensorflow_bins)
    return _run(payload, data, allpairs.numpy_bins)


def _run(payload: Mapping[str, Any], data: Mapping[str, np.ndarray],
         binner: allpairs.Binner) -> dict[str, pd.DataFrame]:
    p = payload["params"]
    shard, n_shards, bits = int(p["shard"]), int(p["n_shards"]), int(p["bits"])
    X, identity, groups = data["X"], data["identity_codes"], row_groups(data)
    rule = p.get("tail")
    if not rule:
        return {"allpairs_counts": count_shard(X, identity, groups, shard, n_shards, bits, binner=binner)}
    lo = allpairs.tail_lower_score(NormalisedRows(X), identity, float(rule["target_fmr"]),
                                   float(rule["fmr_factor"]), int(rule["bits"]), int(payload["seed"]))
    tail = allpairs.TailCounts.empty(int(rule["bits"]), lo)
    out = {"allpairs_counts": count_shard(X, identity, groups, shard, n_shards, bits, tail=tail, binner=binner),
           "allpairs_tail": tail_rows(tail, shard, n_shards)}
    if shard == 0:
        out["allpairs_identities"] = identity_rows(identity, groups, shard, n_shards, tail.bits, tail.lo_bin)
    return out


def _check_config(cfg: dict[str, Any], where: Where) -> None:
    v = cfg["verification"]
    if v["identities"] not in ("test", "all"):
        raise InputError(f"{where('verification.identities')} must be \"test\" or \"all\", got {v['identities']!r}")
    shards_limit = cfg["run"]["max_jobs"] if v["identities"] == "all" else 2**63 - 1   # one job per shard
    if not 1 <= v["allpairs_shards"] <= shards_limit:
        raise InputError(f"{where('verification.allpairs_shards')} must be from 1 to run.max_jobs "
                         f"({cfg['run']['max_jobs']:,}; one job per shard), got {v['allpairs_shards']:,}")
    if not v["tail_fmr_factor"] >= 1.0:
        raise InputError(f"{where('verification.tail_fmr_factor')} must be at least 1 (the tail must reach below the "
                         f"global threshold), got {v['tail_fmr_factor']}")
    if not 4 <= v["tail_bits"] <= 14:
        raise InputError(f"{where('verification.tail_bits')} must be from 4 to 14 (bins of 2^-4 to 2^-14, no finer "
                         f"than the all-pairs counts'), got {v['tail_bits']}")


KIND = register(JobKind(
    "allpairs", plan=_plan, rows=lambda p, split: {}, run="tasks.kinds.allpairs:run", tables=TABLES, order=4,
    cost=lambda p: 10, config=ConfigPart("verification", DEFAULTS, _check_config), timeout=21600.0,
    report=("grid.report.sections.verification:SECTION",)))
