"""Job kind "allpairs": exact genuine/impostor counts over every pair of images of the whole table, sharded.

With ``[verification] identities = "all"`` the plan adds ``allpairs_shards`` jobs. Shard k of S counts the
rectangles ``tasks.allpairs.block_tasks(n)[k::S]`` of the n x n score matrix (every image of every identity in the
table, i < j) into per-(group pair, bin) counts (:func:`tasks.allpairs.shard_counts`), and stores only the
non-zero bins: table ``allpairs_counts`` = (shard, n_shards, bits, group_a, group_b, kind, bin, count), genuine
rows with group_b = group_a. Any sharding sums to the same exact counts; the report sums the shards
(``grid.report.stats.allpairs_summary``) and derives the rates with :func:`tasks.allpairs.hist_group_tables`.

**Tail for the identity bootstrap** (when ``[verification] bootstrap`` > 0): every shard first chooses the same
lower score e_lo from the whole table and the job's seed (the first grid seed, the same for all shards;
:func:`tasks.allpairs.tail_lower_score` at FMR = ``tail_fmr_factor`` x ``target_fmr``, bins of 2^-``tail_bits``),
then records while counting every genuine comparison per (identity, bin) and every impostor comparison >= e_lo
per (identity pair, bin), compacted: table ``allpairs_tail`` = (shard, n_shards, bits, lo_bin, kind, identity_a,
identity_b, bin, count), identity_b = identity_a for genuine rows; identities are the data's ``identity_codes``.
Shard 0 also stores every identity once, with its demographic group and image count (identities without any
tail record included): table ``allpairs_identities`` = (shard, n_shards, bits, lo_bin, identity, group,
n_images). The report sums the shards' tails (:func:`tail_from_rows`) and runs
:func:`tasks.allpairs.tail_bootstrap` (``grid.report.stats.allpairs_intervals``).

Rows are L2-normalised block by block as they are read (X itself may be a memory map and is never copied whole).
The counts do not depend on the seed's split; the jobs carry the first grid seed, which seeds the tail's choice.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import pandas as pd

from storage.errors import InputError
from storage.vocab import GENDERS
from tasks import allpairs
from tasks.kinds import JobKind, PlannedJob
from tasks.verification import scaled_rows


class NormalisedRows:
    """Row slices of X as L2-normalised float32 (what :func:`tasks.allpairs.block_counts` needs), computed per
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


def row_groups(data: Mapping[str, np.ndarray], rows: np.ndarray | None = None) -> np.ndarray:
    """Each row's demographic group name "<ethnicity>_<gender>" (of ``rows``, default every row), with the
    table's own ethnicity groups (``data["ethnicity_names"]``, which the ethnicity codes index)."""
    vocabulary = np.asarray(data["ethnicity_names"], dtype=object)
    e, g = np.asarray(data["ethnicity"]), np.asarray(data["gender"])
    if rows is not None:
        e, g = e[rows], g[rows]
    return np.char.add(np.char.add(vocabulary[e.astype(np.intp)].astype(str), "_"),
                       np.asarray(GENDERS)[g.astype(np.intp)])


def group_codes(names_per_row: np.ndarray) -> tuple[list[str], np.ndarray]:
    """(sorted demographic group names of the table, each row's code into them)."""
    names, codes = np.unique(np.asarray(names_per_row).astype(str), return_inverse=True)
    return [str(n) for n in names], codes.astype(np.int64)


def count_shard(X: np.ndarray, identity: np.ndarray, group_names: np.ndarray, shard: int, n_shards: int,
                bits: int = allpairs.DEFAULT_BITS, block: int = allpairs.DEFAULT_BLOCK,
                tail: allpairs.TailCounts | None = None) -> pd.DataFrame:
    """The non-zero bins of shard ``shard`` of ``n_shards`` (``group_names``: each row's demographic group):
    columns shard, n_shards, bits, group_a, group_b, kind (genuine | impostor), bin, count. With ``tail``, the
    shard's per-identity tail records are added to it (compacted; :func:`tail_rows` turns them into rows)."""
    if not (isinstance(n_shards, int) and n_shards >= 1 and isinstance(shard, int) and 0 <= shard < n_shards):
        raise InputError(f"shard must lie in [0, n_shards), got shard {shard!r} of {n_shards!r}")
    names, group = group_codes(group_names)
    tasks = allpairs.block_tasks(len(X), block)[shard::n_shards]
    counts = allpairs.shard_counts(NormalisedRows(X), np.asarray(identity), group, len(names), tasks, bits,
                                   tail=tail)
    frames = []
    g, b = np.nonzero(counts.genuine)
    frames.append(pd.DataFrame({"group_a": np.asarray(names)[g], "group_b": np.asarray(names)[g],
                                "kind": "genuine", "bin": b, "count": counts.genuine[g, b]}))
    ga, gb, b = np.nonzero(counts.impostor)
    frames.append(pd.DataFrame({"group_a": np.asarray(names)[ga], "group_b": np.asarray(names)[gb],
                                "kind": "impostor", "bin": b, "count": counts.impostor[ga, gb, b]}))
    out = pd.concat(frames, ignore_index=True)
    return out.assign(shard=shard, n_shards=n_shards, bits=bits)


def counts_from_rows(rows: pd.DataFrame) -> tuple[allpairs.PairCounts, list[str]]:
    """Sum stored shard rows back into :class:`tasks.allpairs.PairCounts` (groups: every name in the rows,
    sorted). Exact: integer sums."""
    bits = int(rows["bits"].iloc[0])
    if rows["bits"].nunique() != 1:
        raise InputError("all-pairs shards with different bin widths cannot be summed")
    names = sorted(set(rows["group_a"]) | set(rows["group_b"]))
    code = {n: i for i, n in enumerate(names)}
    counts = allpairs.PairCounts.zeros(len(names), bits)
    a = rows["group_a"].map(code).to_numpy()
    b = rows["group_b"].map(code).to_numpy()
    k = rows["bin"].to_numpy(np.int64)
    c = rows["count"].to_numpy(np.int64)
    gen = (rows["kind"] == "genuine").to_numpy()
    np.add.at(counts.genuine, (a[gen], k[gen]), c[gen])
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    np.add.at(counts.impostor, (lo[~gen], hi[~gen], k[~gen]), c[~gen])
    return counts, names


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


def tail_from_rows(tail: pd.DataFrame, identities: pd.DataFrame
                   ) -> tuple[allpairs.TailCounts, np.ndarray, np.ndarray, list[str], str]:
    """The shards' stored tails summed (= the ``+`` of their :class:`tasks.allpairs.TailCounts`, compacted once)
    and each identity's group code and image count, from the rows of ``allpairs_tail`` and
    ``allpairs_identities``. Returns (tail, identity_group, images_per_identity, group names (sorted), note).

    Shards normally share one lower bin; if they do not (only possible when machines score the tail-choosing
    subset differently in the last bits), every shard's tail is cut at the highest lower bin, which keeps the
    sum exact above it, and the note says so."""
    if identities.empty:
        raise InputError("no allpairs_identities rows: the tail's identities are unknown")
    if identities["identity"].duplicated().any():
        raise InputError("allpairs_identities holds an identity twice")
    ids = identities.sort_values("identity")
    if not np.array_equal(ids["identity"].to_numpy(), np.arange(len(ids))):
        raise InputError("allpairs_identities must list identities 0..n-1")
    bits = {int(b) for b in pd.concat([tail["bits"], identities["bits"]])}
    if len(bits) != 1:
        raise InputError(f"all-pairs tails with different bins (bits {sorted(bits)}) cannot be summed")
    bits_ = bits.pop()
    starts = sorted({int(b) for b in pd.concat([tail["lo_bin"], identities["lo_bin"]])})
    lo = starts[-1]
    note = "" if len(starts) == 1 else (f"shards' tails started at bins {starts}: each cut at bin {lo} (exact "
                                        f"above it)")
    names = sorted(set(ids["group"]))
    code = {n: i for i, n in enumerate(names)}
    identity_group = ids["group"].map(code).to_numpy(np.int64)
    gen = (tail["kind"] == "genuine").to_numpy()
    imp = (tail["kind"] == "impostor").to_numpy()
    if not (gen | imp).all():
        raise InputError("allpairs_tail rows must be of kind genuine or impostor")
    col = {c: tail[c].to_numpy(np.int64) for c in ("identity_a", "identity_b", "bin", "count")}
    keep = imp & (col["bin"] >= lo)
    out = allpairs.TailCounts(bits_, lo, col["identity_a"][keep], col["identity_b"][keep], col["bin"][keep],
                              col["count"][keep], col["identity_a"][gen], col["bin"][gen], col["count"][gen])
    if out.n_records and max(out.imp_b.max(initial=-1), out.gen_id.max(initial=-1)) >= len(ids):
        raise InputError("allpairs_tail names an identity that allpairs_identities does not list")
    return out.compact(), identity_group, ids["n_images"].to_numpy(np.int64), names, note


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
    shard 0 the identities)."""
    p = payload["params"]
    shard, n_shards, bits = int(p["shard"]), int(p["n_shards"]), int(p["bits"])
    X, identity, groups = data["X"], data["identity_codes"], row_groups(data)
    rule = p.get("tail")
    if not rule:
        return {"allpairs_counts": count_shard(X, identity, groups, shard, n_shards, bits)}
    lo = allpairs.tail_lower_score(NormalisedRows(X), identity, float(rule["target_fmr"]),
                                   float(rule["fmr_factor"]), int(rule["bits"]), int(payload["seed"]))
    tail = allpairs.TailCounts.empty(int(rule["bits"]), lo)
    out = {"allpairs_counts": count_shard(X, identity, groups, shard, n_shards, bits, tail=tail),
           "allpairs_tail": tail_rows(tail, shard, n_shards)}
    if shard == 0:
        out["allpairs_identities"] = identity_rows(identity, groups, shard, n_shards, tail.bits, tail.lo_bin)
    return out


KIND = JobKind("allpairs", plan=_plan, rows=lambda p, split: {}, run="tasks.allpairs_kind:run",
               tables=("allpairs_counts", "allpairs_tail", "allpairs_identities"), order=4, cost=lambda p: 10)
