"""Job kind "allpairs": exact genuine/impostor counts over every pair of images of the whole table, sharded.

With ``[verification] identities = "all"`` the plan adds ``allpairs_shards`` jobs. Shard k of S counts the
rectangles ``tasks.allpairs.block_tasks(n)[k::S]`` of the n x n score matrix (every image of every identity in the
table, i < j) into per-(group pair, bin) counts (:func:`tasks.allpairs.shard_counts`), and stores only the
non-zero bins: table ``allpairs_counts`` = (shard, n_shards, bits, group_a, group_b, kind, bin, count), genuine
rows with group_b = group_a. Any sharding sums to the same exact counts; the report sums the shards
(``grid.report.stats.allpairs_summary``) and derives the rates with :func:`tasks.allpairs.hist_group_tables`.

Rows are L2-normalised block by block as they are read (X itself may be a memory map and is never copied whole).
The jobs do not depend on the seed's split; they carry the first grid seed only so that a job id names a seed.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import pandas as pd

from storage.errors import InputError
from storage.vocab import GENDERS, ETHNICITIES
from tasks import allpairs
from tasks.kinds import JobKind, PlannedJob


class NormalisedRows:
    """Row slices of X as L2-normalised float32 (what :func:`tasks.allpairs.block_counts` needs), computed per
    slice: ``rows[i0:i1]`` = X[i0:i1] / ||X[i0:i1]||."""

    def __init__(self, X: np.ndarray) -> None:
        self.X = X

    def __len__(self) -> int:
        return len(self.X)

    def __getitem__(self, index: slice) -> np.ndarray:
        block = np.asarray(self.X[index], dtype=np.float32)
        norms = np.sqrt(np.einsum("ij,ij->i", block, block))
        if not (norms > 0).all():
            raise InputError("an embedding is all zeros: cosine similarity is undefined")
        return block / norms[:, None]


def row_groups(data: Mapping[str, np.ndarray], rows: np.ndarray | None = None) -> np.ndarray:
    """Each row's demographic group name "<ethnicity>_<gender>" (of ``rows``, default every row), with the
    table's own ethnicity names when the data carry them (``data["ethnicity_names"]``), else the study's."""
    vocabulary = np.asarray(data["ethnicity_names"] if "ethnicity_names" in data else ETHNICITIES, dtype=object)
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
                bits: int = allpairs.DEFAULT_BITS, block: int = allpairs.DEFAULT_BLOCK) -> pd.DataFrame:
    """The non-zero bins of shard ``shard`` of ``n_shards`` (``group_names``: each row's demographic group):
    columns shard, n_shards, bits, group_a, group_b, kind (genuine | impostor), bin, count."""
    if not (isinstance(n_shards, int) and n_shards >= 1 and isinstance(shard, int) and 0 <= shard < n_shards):
        raise InputError(f"shard must lie in [0, n_shards), got shard {shard!r} of {n_shards!r}")
    names, group = group_codes(group_names)
    tasks = allpairs.block_tasks(len(X), block)[shard::n_shards]
    counts = allpairs.shard_counts(NormalisedRows(X), np.asarray(identity), group, len(names), tasks, bits)
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


# ------------------------------------------------------------------------------------------------- the kind ---
def _plan(cfg: Mapping[str, Any]) -> Iterator[PlannedJob]:
    """``allpairs_shards`` jobs when verification is enabled with ``identities = "all"``."""
    v = cfg["verification"]
    if not v["enabled"] or v["identities"] != "all":
        return
    n = int(v["allpairs_shards"])
    for shard in range(n):
        yield PlannedJob(cfg["grid"]["seeds"][0], {"shard": shard, "n_shards": n, "bits": allpairs.DEFAULT_BITS},
                         f"allpairs shard {shard + 1}/{n}")


def run(payload: Mapping[str, Any], data: Mapping[str, np.ndarray]) -> dict[str, pd.DataFrame]:
    """Worker entry of an allpairs job: its shard's non-zero counts."""
    p = payload["params"]
    return {"allpairs_counts": count_shard(data["X"], data["identity_codes"], row_groups(data), int(p["shard"]),
                                           int(p["n_shards"]), int(p["bits"]))}


KIND = JobKind("allpairs", plan=_plan, rows=lambda p, split: {}, run="tasks.allpairs_kind:run",
               tables=("allpairs_counts",), order=4, cost=lambda p: 10)
