"""From all-pairs counts to rates, and the identity bootstrap over the per-identity tail (the counts themselves:
:mod:`tasks.stats.allpairs`); and the stored shard rows of the allpairs kind summed back into counts.

**From counts to rates** (consistent with :mod:`tasks.stats.rates` to bin resolution): FMR(e_k) = sum_{j>=k} imp_j /
n_imp, FNMR(e_k) = sum_{j<k} gen_j / n_gen. The threshold at target FMR is the smallest edge e_k with
#impostors >= e_k <= floor(target n_imp) (exact integers). Relative to the exact convention's threshold t*
(smallest observed impostor score meeting the target): FMR(e_k) <= target always, e_k < t* + w, and no impostor
score lies in [e_k, t*) — so e_k differs from t* only by less than a bin upwards, or downwards inside a gap free
of impostor scores. EER: :func:`tasks.stats.rates.eer_from_counts` on the edges.

**Identity bootstrap at full scale.** :class:`TailStatistics` / :func:`tail_bootstrap` resample identities with
exact product weights (as :mod:`tasks.stats.bootstrap`) at the global threshold, at the tail's bin resolution, in
O(records + identities) per resample (blocks of resamples at once: :meth:`TailStatistics.replicates`), from the
tails the allpairs jobs record (:class:`tasks.stats.allpairs.TailCounts`); the grid runs it as the jobs of kind
``allpairs_bootstrap`` (``tasks.kinds.allpairs_bootstrap``).

**Stored rows.** :func:`counts_from_rows` and :func:`tail_from_rows` (:func:`tail_from_columns` on arrays) sum the
shards' rows of tables ``allpairs_counts``, ``allpairs_tail`` and ``allpairs_identities`` (written by
``tasks.kinds.allpairs``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from storage.errors import InputError
from tasks.stats import allpairs, rates


# ---------------------------------------------------------------------------------------- counts -> rates ---
def _check(gen: np.ndarray, imp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    gen, imp = np.asarray(gen, np.int64), np.asarray(imp, np.int64)
    if gen.shape != imp.shape or gen.ndim != 1:
        raise InputError("genuine and impostor histograms must be 1-D with the same bins")
    return gen, imp


def hist_threshold_at_fmr(impostor: np.ndarray, target_fmr: float, bits: int = allpairs.DEFAULT_BITS) -> float:
    """Smallest bin edge e_k with #impostors in bins >= k <= floor(target n_imp) (module docstring)."""
    imp = np.asarray(impostor, np.int64)
    accepted = np.r_[np.cumsum(imp[::-1])[::-1], 0]           # impostors >= e_k, k = 0..B
    k = int(np.argmax(accepted <= rates.max_accepted(target_fmr, int(imp.sum()))))
    return float(allpairs.bin_edges(bits)[k])


def _edge_index(t: float, bits: int) -> int:
    k = (t + 1.0) * 2.0 ** bits
    if k != math.floor(k) or not 0 <= k <= allpairs.n_bins(bits):
        raise InputError(f"threshold {t!r} is not a bin edge of width 2^-{bits} in [-1, 1]")
    return int(k)


def hist_counts_at(genuine: np.ndarray, impostor: np.ndarray, threshold: float,
                   bits: int = allpairs.DEFAULT_BITS) -> tuple[int, int, int, int]:
    """(false matches, n_impostor, false non-matches, n_genuine) at a bin edge ``threshold`` (exact)."""
    gen, imp = _check(genuine, impostor)
    k = _edge_index(threshold, bits)
    return int(imp[k:].sum()), int(imp.sum()), int(gen[:k].sum()), int(gen.sum())


def hist_eer(genuine: np.ndarray, impostor: np.ndarray, bits: int = allpairs.DEFAULT_BITS) -> tuple[float, float]:
    """(EER, threshold) from the operating points at every bin edge (decreasing), interpolated at the crossing."""
    gen, imp = _check(genuine, impostor)
    edges = allpairs.bin_edges(bits)
    fm = np.r_[np.cumsum(imp[::-1])[::-1], 0][::-1]           # at e_B, e_(B-1), ..., e_0
    fnm = np.r_[0, np.cumsum(gen)][::-1]
    return rates.eer_from_counts(np.r_[np.inf, edges[::-1]], np.r_[0, fm], int(imp.sum()),
                                 np.r_[int(gen.sum()), fnm], int(gen.sum()))


def hist_group_tables(counts: allpairs.PairCounts, group_names: Sequence[str], target_fmrs: Sequence[float] = (1e-3,),
                      global_target_fmr: float = 1e-3) -> dict[str, pd.DataFrame]:
    """The tables of :func:`tasks.stats.rates.group_operating_points` (columns ``rates.EER_COLUMNS`` and
    ``rates.OP_COLUMNS``) from all-pairs counts, plus "impostor_matrix": group_a, group_b, threshold,
    false_matches, n_pairs, fmr, fmr_ci_low, fmr_ci_high, fmr_display (every ordered pair, symmetric)."""
    G = len(group_names)
    if counts.genuine.shape[0] != G:
        raise InputError(f"{G} group names for counts of {counts.genuine.shape[0]} groups")
    bits = counts.bits
    all_imp = counts.impostor_of()
    t_global = hist_threshold_at_fmr(all_imp, global_target_fmr, bits)
    eer_rows, rows = [], []
    edges = allpairs.bin_edges(bits)
    centres = (edges[:-1] + edges[1:]) / 2          # d' from the bins' centres (bin resolution)
    sides = [("all", counts.genuine.sum(axis=0), all_imp)] + \
        [(name, counts.genuine[g], counts.impostor_of(g)) for g, name in enumerate(group_names)]
    for name, gen, imp in sides:
        ng, ni = int(gen.sum()), int(imp.sum())
        e = hist_eer(gen, imp, bits) if ng and ni else (np.nan, np.nan)
        eer_rows.append({"group": name, "eer": e[0], "eer_threshold": e[1], "n_genuine": ng, "n_impostor": ni,
                         "d_prime": rates.decidability(centres[:len(gen)], centres[:len(imp)], gen, imp)})
        for target, kind in [(t, "own") for t in target_fmrs] + [(global_target_fmr, "global")]:
            if kind == "own" and ni == 0:
                rows.append({"group": name, "target_fmr": float(target), "threshold_kind": kind,
                             "threshold": np.nan, "false_matches": 0, "n_impostor": 0, "false_non_matches": 0,
                             "n_genuine": ng, "resolved": False, "reason": "no impostor comparisons in this group"})
                continue
            t = t_global if kind == "global" else hist_threshold_at_fmr(imp, target, bits)
            fm, _, fnm, _ = hist_counts_at(gen, imp, t, bits)
            ok, why = rates.resolution(ni, fm, target)
            rows.append({"group": name, "target_fmr": float(target), "threshold_kind": kind, "threshold": t,
                         "false_matches": fm, "n_impostor": ni, "false_non_matches": fnm, "n_genuine": ng,
                         "resolved": ok, "reason": why})
    ops = pd.DataFrame(rows)
    fmf = rates.rate_frame(ops["false_matches"], ops["n_impostor"])
    fnf = rates.rate_frame(ops["false_non_matches"], ops["n_genuine"])
    for p, f in (("fmr", fmf), ("fnmr", fnf)):
        ops[p], ops[f"{p}_ci_low"], ops[f"{p}_ci_high"], ops[f"{p}_display"] = \
            f["rate"], f["ci_low"], f["ci_high"], f["display"]
    mrows = []
    k = _edge_index(t_global, bits)
    for a, na in enumerate(group_names):
        for b, nb_ in enumerate(group_names):
            c = counts.impostor_of(a, b)
            mrows.append({"group_a": na, "group_b": nb_, "threshold": t_global, "false_matches": int(c[k:].sum()),
                          "n_pairs": int(c.sum())})
    matrix = pd.DataFrame(mrows)
    f = rates.rate_frame(matrix["false_matches"], matrix["n_pairs"])
    matrix["fmr"], matrix["fmr_ci_low"], matrix["fmr_ci_high"], matrix["fmr_display"] = \
        f["rate"], f["ci_low"], f["ci_high"], f["display"]
    return {"eer": pd.DataFrame(eer_rows)[rates.EER_COLUMNS], "operating_points": ops[rates.OP_COLUMNS],
            "impostor_matrix": matrix}


# ------------------------------------------------------------------------------ identity bootstrap at scale ---
class TailStatistics:
    """Identity-bootstrap statistics at the ONE global threshold from all-pairs :class:`allpairs.TailCounts`.

    Exact product weights (impostor comparison of identities i, j counts m_i m_j times, genuine of i m_i times,
    as in :mod:`tasks.stats.bootstrap`), at bin resolution: per resample, the impostor total per pair of groups is
    N_gh = S_g S_h (g != h) and N_gg = (S_g^2 - sum_(i in g) (m_i c_i)^2) / 2 with S_g = sum_(i in g) m_i c_i
    (c_i = images of identity i); the tail's weighted histogram gives the global threshold (smallest edge with
    #impostors >= edge <= floor(target N), as :func:`hist_threshold_at_fmr`) and the false matches per pair of
    groups; the genuine per-identity histogram gives each group's FNMR. The threshold must lie above the tail's
    lower edge: otherwise (the tail does not reach low enough) every value of that resample is NaN, with
    the note saying so. Keys: ("threshold", "all"), ("group_fmr", g), ("group_fnmr", g), ("cross_fmr", g, h),
    ("summary", metric) — evaluate(m) -> (keys, values, k, n) for :func:`tasks.stats.bootstrap.run`.

    Two forms of the weighted histograms, the same numbers: :meth:`evaluate` (one resample: a weighted
    ``bincount`` over the records) and :meth:`replicates` (blocks of resamples: per chunk of distinct identity
    pairs, the block's m_a m_b gathered once per pair, then one sparse product with the chunk's counts per
    (pair of groups, bin); float32 where every partial sum stays below 2^24, so exact, float64 otherwise)."""

    CHUNK_RECORDS = 1 << 18        # impostor records per chunk of identity pairs (replicates)

    def __init__(self, tail: allpairs.TailCounts, identity_group: np.ndarray, images_per_identity: np.ndarray,
                 group_names: Sequence[str], global_target_fmr: float = 1e-3, summarize=None,
                 block_bytes: int = 128 << 20):
        self.t = tail.compact()
        self.ig = np.asarray(identity_group, np.int64)
        self.c = np.asarray(images_per_identity, np.int64)
        if self.ig.shape != self.c.shape:
            raise InputError("identity_group and images_per_identity need one entry per identity")
        self.G, self.names = len(group_names), list(group_names)
        rates.max_accepted(global_target_fmr, 1)
        self.target, self.summarize, self.block_bytes = global_target_fmr, summarize, block_bytes
        self.nb = allpairs.n_bins(tail.bits)
        self.bt = self.nb - tail.lo_bin
        G = self.G
        ga, gb = self.ig[self.t.imp_a], self.ig[self.t.imp_b]
        self.imp_key = (np.minimum(ga, gb) * G + np.maximum(ga, gb)) * self.bt + (self.t.imp_bin - tail.lo_bin)
        self.gen_key = self.ig[self.t.gen_id] * self.nb + self.t.gen_bin
        self.edges = allpairs.bin_edges(tail.bits)
        self.undefined_note = (f"undefined: the global threshold lies below the tail's lower edge "
                               f"{self.edges[tail.lo_bin]:.6g} (lower allpairs.TailCounts' lo_score), or a rate has no "
                               f"comparisons")
        self._chunks: list[tuple] | None = None

    def _weights(self, m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One resample's (impostor histogram (G*G, bt), genuine histogram (G, nb)), weighted, by bincount."""
        G = self.G
        w = m[self.t.imp_a] * m[self.t.imp_b] * self.t.imp_count
        hist = np.bincount(self.imp_key, weights=w, minlength=G * G * self.bt).reshape(G * G, self.bt)
        gw = m[self.t.gen_id] * self.t.gen_count
        gh = np.bincount(self.gen_key, weights=gw, minlength=G * self.nb).reshape(G, self.nb)
        return hist, gh

    def evaluate(self, m: np.ndarray | None = None) -> tuple[list[tuple], np.ndarray, np.ndarray, np.ndarray]:
        m = np.ones(self.c.size, np.int64) if m is None else np.asarray(m, np.int64)
        return self._finish(m, *self._weights(m))

    def _finish(self, m: np.ndarray, hist: np.ndarray, gh: np.ndarray
                ) -> tuple[list[tuple], np.ndarray, np.ndarray, np.ndarray]:
        """(keys, values, k, n) of one resample (multiplicities ``m``) from its weighted histograms."""
        G, gt = self.G, self.target
        mc = (m * self.c).astype(float)
        S = np.bincount(self.ig, weights=mc, minlength=G)
        Q = np.bincount(self.ig, weights=mc * mc, minlength=G)
        N = np.outer(S, S)
        N[np.diag_indices(G)] = (S * S - Q) / 2
        N = np.rint(np.triu(N)).astype(np.int64)
        n_total = int(N.sum())
        acc = np.cumsum(hist.sum(axis=0)[::-1])[::-1]                       # impostors >= e_(lo + j)
        M = rates.max_accepted(gt, n_total)
        ok = np.flatnonzero(np.r_[acc, 0] <= M)
        keys, vals, ks, ns = [], [], [], []

        def put(key, v, k=-1, n=-1):
            keys.append(key)
            vals.append(v)
            ks.append(k)
            ns.append(n)

        covered = ok[0] > 0
        j = int(ok[0])
        k_edge = self.t.lo_bin + j
        put(("threshold", "all", "", gt, ""), float(self.edges[k_edge]) if covered else np.nan)
        fm_code = hist[:, j:].sum(axis=1)
        fmr_v, fnmr_v = np.full(G, np.nan), np.full(G, np.nan)
        for g, name in enumerate(self.names):
            k, n = int(fm_code[g * G + g]), int(N[g, g])
            fmr_v[g] = k / n if n and covered else np.nan
            put(("group_fmr", name, "", gt, ""), fmr_v[g], k if covered else -1, n)
            n = int(gh[g].sum())
            k = int(gh[g, :k_edge].sum())
            fnmr_v[g] = k / n if n and covered else np.nan
            put(("group_fnmr", name, "", gt, ""), fnmr_v[g], k if covered else -1, n)
        for g in range(G):
            for h in range(g + 1, G):
                k, n = int(fm_code[g * G + h]), int(N[g, h])
                put(("cross_fmr", self.names[g], self.names[h], gt, ""), k / n if n and covered else np.nan,
                    k if covered else -1, n)
        if self.summarize is not None:
            table = self.summarize(fmr_v, fnmr_v)
            for metric, v in zip(table["metric"], table["value"]):
                put(("summary", "", "", gt, str(metric)), float(v) if covered else np.nan)
        return keys, np.asarray(vals, float), np.asarray(ks, np.int64), np.asarray(ns, np.int64)

    # -- blocks of resamples ---------------------------------------------------------------------------------
    def _prepare_chunks(self) -> tuple[list[tuple], Any]:
        """Chunks of the impostor records (sorted by identity pair, as compacted), each (its distinct pairs'
        identities a and b, its (keys x pairs) float32 count matrix, the largest count summed per key, its records'
        range); and the genuine (G * nb x identities) count matrix."""
        from scipy import sparse

        t = self.t
        present = np.bincount(self.imp_key, minlength=self.G * self.G * self.bt) > 0
        self.used = np.flatnonzero(present)                              # the (pair of groups, bin) keys present
        key = (np.cumsum(present) - 1)[self.imp_key]
        self._key = key
        new_pair = np.r_[True, (t.imp_a[1:] != t.imp_a[:-1]) | (t.imp_b[1:] != t.imp_b[:-1])]
        pair = np.cumsum(new_pair) - 1
        starts = np.flatnonzero(new_pair)
        chunks, s = [], 0
        while s < len(key):
            i = int(np.searchsorted(starts, s + self.CHUNK_RECORDS))   # whole pairs in a chunk
            e = int(starts[i]) if i < len(starts) else len(key)
            p0, p1 = int(pair[s]), int(pair[e - 1]) + 1
            S = sparse.csr_matrix((t.imp_count[s:e].astype(np.float32), (key[s:e], pair[s:e] - p0)),
                                  shape=(len(self.used), p1 - p0))
            widest = float(np.bincount(key[s:e], weights=t.imp_count[s:e]).max())
            chunks.append((t.imp_a[starts[p0:p1]], t.imp_b[starts[p0:p1]], S, widest, (s, e, p0)))
            s = e
        gen = sparse.csr_matrix((t.gen_count.astype(np.float64), (self.gen_key, t.gen_id)),
                                shape=(self.G * self.nb, self.c.size))
        return chunks, gen

    def _block(self, M: np.ndarray) -> list[tuple]:
        """:meth:`_finish` of each row of the block ``M`` (R, n_identities), from histograms summed at once."""
        from scipy import sparse

        chunks, gen = self._chunks
        R, G, t = M.shape[0], self.G, self.t
        big = float(M.max(initial=0))
        MT = np.ascontiguousarray(M.T, dtype=np.float32)
        H = np.zeros((len(self.used), R))
        for a, b, S, widest, (s, e, p0) in chunks:
            W = MT[a]
            W *= MT[b]                                                   # m_a m_b: exact (small integers)
            if widest * big * big < 2 ** 24:          # every partial sum an integer below 2^24: float32 exact
                H += S @ W
            else:
                pair = np.cumsum(np.r_[True, (t.imp_a[s + 1:e] != t.imp_a[s:e - 1])
                                       | (t.imp_b[s + 1:e] != t.imp_b[s:e - 1])]) - 1
                S64 = sparse.csr_matrix((t.imp_count[s:e].astype(np.float64), (self._key[s:e], pair)),
                                        shape=S.shape)
                H += S64 @ W.astype(np.float64)
        GH = gen @ MT.astype(np.float64)                                 # (G * nb, R)
        out = []
        for r in range(R):
            hist = np.zeros(G * G * self.bt)
            hist[self.used] = H[:, r]
            out.append(self._finish(M[r].astype(np.int64), hist.reshape(G * G, self.bt),
                                    GH[:, r].reshape(G, self.nb)))
        return out

    def replicates(self, multiplicities: np.ndarray) -> tuple[list[tuple], np.ndarray]:
        """(keys, (R, K) values), one row per resample (rows of ``multiplicities``), in blocks of rows that keep
        the gathered weights of a chunk within ``block_bytes``; the values of :meth:`evaluate` row by row."""
        M = np.asarray(multiplicities)
        if M.ndim != 2 or M.shape[1] != self.c.size:
            raise InputError(f"multiplicities need one entry per identity ({self.c.size})")
        if self._chunks is None:
            self._chunks = self._prepare_chunks()
        pairs = max((len(c[0]) for c in self._chunks[0]), default=1)
        step = int(max(1, min(256, self.block_bytes // (8 * pairs))))
        rows = [row for i in range(0, len(M), step) for row in self._block(M[i:i + step])]
        keys = rows[0][0] if rows else self.evaluate(None)[0]
        if any(k != keys for k, *_ in rows):
            raise InputError("statistic keys changed between resamples")
        return keys, np.vstack([v for _, v, _, _ in rows]) if rows else np.empty((0, len(keys)))


def tail_bootstrap(tail: allpairs.TailCounts, identity_group: np.ndarray, images_per_identity: np.ndarray,
                   group_names: Sequence[str], *, global_target_fmr: float = 1e-3, n_resamples: int = 1000,
                   seed: int = 0, confidence: float = 0.95, summarize=None) -> pd.DataFrame:
    """Identity-bootstrap intervals of the global threshold, each group's FMR and FNMR at it, the cross-group
    FMRs and the summaries, from full-scale all-pairs tail counts (:class:`TailStatistics`). Columns
    ``tasks.stats.bootstrap.COLUMNS``. The tail's lower score must lie below the global threshold of every plausible
    resample (:func:`allpairs.tail_lower_score`: one bin below the FMR = 10 x target point): resamples it does not
    cover are NaN and counted (``n_defined``, note). Thresholds are edges of the tail's bins (2^-tail.bits)."""
    from tasks.stats import bootstrap

    return bootstrap.run(TailStatistics(tail, identity_group, images_per_identity, group_names,
                                        global_target_fmr, summarize), identity_group, n_resamples, seed,
                         confidence)


# ------------------------------------------------------------------------------------- stored shard rows ---
def counts_from_rows(rows: pd.DataFrame) -> tuple[allpairs.PairCounts, list[str]]:
    """Sum stored shard rows back into :class:`tasks.stats.allpairs.PairCounts` (groups: every name in the rows,
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


def tail_from_rows(tail: pd.DataFrame, identities: pd.DataFrame
                   ) -> tuple[allpairs.TailCounts, np.ndarray, np.ndarray, list[str], str]:
    """The shards' stored tails summed (= the ``+`` of their :class:`tasks.stats.allpairs.TailCounts`, compacted once)
    and each identity's group code and image count, from the rows of ``allpairs_tail`` and
    ``allpairs_identities`` (DataFrames; :func:`tail_from_columns` takes their columns as arrays). Returns (tail,
    identity_group, images_per_identity, group names (sorted), note)."""
    return tail_from_columns({**{c: tail[c].to_numpy() for c in ("identity_a", "identity_b", "bin", "count",
                                                                  "bits", "lo_bin")},
                              "genuine": (tail["kind"] == "genuine").to_numpy(),
                              "impostor": (tail["kind"] == "impostor").to_numpy()},
                             {c: identities[c].to_numpy() for c in identities.columns})


def tail_from_columns(tail: Mapping[str, np.ndarray], identities: Mapping[str, np.ndarray]
                      ) -> tuple[allpairs.TailCounts, np.ndarray, np.ndarray, list[str], str]:
    """:func:`tail_from_rows` from columns: ``tail`` = identity_a, identity_b, bin, count, bits, lo_bin and the
    masks genuine, impostor (of the kind column); ``identities`` = identity, group, n_images, bits, lo_bin.

    Shards normally share one lower bin; if they do not (only possible when machines score the tail-choosing
    subset differently in the last bits), every shard's tail is cut at the highest lower bin, which keeps the
    sum exact above it, and the note says so."""
    ident = np.asarray(identities["identity"], np.int64)
    if ident.size == 0:
        raise InputError("no allpairs_identities rows: the tail's identities are unknown")
    order = np.argsort(ident, kind="stable")
    if (np.diff(ident[order]) == 0).any():
        raise InputError("allpairs_identities holds an identity twice")
    if not np.array_equal(ident[order], np.arange(ident.size)):
        raise InputError("allpairs_identities must list identities 0..n-1")
    bits = {int(b) for b in np.unique(np.r_[tail["bits"], identities["bits"]])}
    if len(bits) != 1:
        raise InputError(f"all-pairs tails with different bins (bits {sorted(bits)}) cannot be summed")
    bits_ = bits.pop()
    starts = [int(b) for b in np.unique(np.r_[tail["lo_bin"], identities["lo_bin"]])]
    lo = starts[-1]
    note = "" if len(starts) == 1 else (f"shards' tails started at bins {starts}: each cut at bin {lo} (exact "
                                        f"above it)")
    group = np.asarray(identities["group"]).astype(str)[order]
    names, identity_group = np.unique(group, return_inverse=True)
    gen, imp = np.asarray(tail["genuine"], bool), np.asarray(tail["impostor"], bool)
    if not (gen | imp).all():
        raise InputError("allpairs_tail rows must be of kind genuine or impostor")
    col = {c: np.asarray(tail[c], np.int64) for c in ("identity_a", "identity_b", "bin", "count")}
    keep = imp & (col["bin"] >= lo)
    out = allpairs.TailCounts(bits_, lo, col["identity_a"][keep], col["identity_b"][keep], col["bin"][keep],
                              col["count"][keep], col["identity_a"][gen], col["bin"][gen], col["count"][gen])
    if out.n_records and max(out.imp_b.max(initial=-1), out.gen_id.max(initial=-1)) >= ident.size:
        raise InputError("allpairs_tail names an identity that allpairs_identities does not list")
    images = np.asarray(identities["n_images"], np.int64)[order]
    return out.compact(), identity_group.astype(np.int64), images, [str(n) for n in names], note
