"""Exact genuine/impostor counts over ALL pairs of a large table, in shardable blocks.

**Bins.** Scores are counted in fixed bins of width w = 2^-bits over [-1, 1] (``bits`` = 14 by default:
w = 6.1e-5, 32768 bins; 20 gives w = 9.5e-7). Bin k holds e_k <= s < e_(k+1), e_k = -1 + k w; scores below -1
go to bin 0, scores >= 1 (rounding) to the last bin. The bin index is computed as floor(s * 2^bits) + 2^bits in
float32, which is exact (scaling by a power of two and floor are exact), so a score is counted as >= e_k
exactly when it is. Thresholds are bin edges: at an edge, FMR and FNMR are exact counts, not approximations.

**Blocks.** :func:`block_tasks` cuts the upper triangle (i < j) of the n x n score matrix into rectangles
[i0,i1) x [j0,j1) of at most ``block`` rows and columns; :func:`block_counts` scores one rectangle by one
matrix product (rows of X must be L2-normalised float32) and reduces it at once to counts per
(demographic group pair, bin), separately for genuine and impostor pairs. Counts of any partition of the
tasks add up to the exact full counts, so tasks can be sharded over processes or machines; memory is
O(block^2 + groups^2 x bins). Sorting the rows by (group, identity) first makes each rectangle span few group
pairs and identities (fast path); any order gives the same counts.

**Identity bootstrap at full scale.** With a :class:`TailCounts` passed to the block functions, each block also
records every genuine comparison per (identity, bin) and every impostor comparison scoring >= a lower score e_lo
per (identity pair, bin), in the tail's own bins of width 2^-tail_bits (coarser than the counts' or equal: a
coarse bin index is the fine one shifted right by bits - tail_bits, exact), so that the comparisons of one
identity pair share records. :func:`tail_lower_score` chooses e_lo from the table and a seed alone, so every
shard of a sharding uses the same tail. Rates from the counts, and the bootstrap over the
tail: :mod:`tasks.stats.allpairs_rates`.

**On a GPU.** The block product and its binning are one function ``binner(A, B, bits)`` -> bins: numpy
(:func:`numpy_bins`, the default) or TensorFlow (:func:`tensorflow_bins`, on the device in scope: an allpairs job
that asked for a GPU runs it there); the reductions after it (masks, counts, tail) are numpy's either way. Both
bin float32 scores by the same exact operations, so equal scores get equal bins, ties at bin edges included (a
score exactly on an edge e_k goes to bin k in both). The two products may round a score differently in its last
bits (a different summation order; TensorFloat-32 is off, so both are float32 products): a pair then moves to
the neighbouring bin only if an edge lies between its two scores, i.e. within |s_tf - s_np| <= 2 d 2^-24 of its
score (d the dimension; measured: at most a few ulps). Totals per group pair are always identical, counts
differ by such moves only, and a threshold's FMR by at most the pairs within that distance of its edge
(tests/test_allpairs.py measures it against numpy on the CPU).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from storage.errors import InputError
from tasks.stats import rates

DEFAULT_BITS = 14
DEFAULT_BLOCK = 2048
_MAX_SUBRECTS = 16
TAIL_BITS = 10                 # the tail's bins: 2^-10 wide
TAIL_FMR_FACTOR = 10.0         # the tail starts where FMR = factor x the global target (minus one bin)
TAIL_MIN_IMPOSTORS = 100       # impostor comparisons above that FMR wanted in the subset that chooses it
TAIL_MAX_ROWS = 4000           # rows of that subset at most (8M pairs)
_COMPACT_EVERY = 64            # blocks between compactions of a shard's tail


def n_bins(bits: int = DEFAULT_BITS) -> int:
    """2^(bits+1) bins of width 2^-bits over [-1, 1]."""
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or not 4 <= bits <= 22:
        raise InputError(f"bin bits must be an integer from 4 to 22, got {bits!r}")
    return 2 ** (int(bits) + 1)


def bin_edges(bits: int = DEFAULT_BITS) -> np.ndarray:
    """The 2^(bits+1) + 1 edges -1 + k 2^-bits (exact in float64)."""
    return -1.0 + np.arange(n_bins(bits) + 1, dtype=np.float64) * 2.0 ** -bits


def score_bins(scores: np.ndarray, bits: int = DEFAULT_BITS) -> np.ndarray:
    """Bin index of each float32 score: floor(s 2^bits) + 2^bits, clipped to [0, n_bins-1] (exact)."""
    s = np.asarray(scores, dtype=np.float32) * np.float32(2.0 ** bits)
    np.floor(s, out=s)
    out = s.astype(np.int32)
    out += 2 ** bits
    np.clip(out, 0, n_bins(bits) - 1, out=out)
    return out


@dataclass
class PairCounts:
    """Counts per bin. ``genuine``: (G, B), by the identity's group. ``impostor``: (G, G, B), pairs of groups
    (a, b) stored at [min(a, b), max(a, b)] (the lower triangle is 0). int64."""

    genuine: np.ndarray
    impostor: np.ndarray
    bits: int

    @classmethod
    def zeros(cls, n_groups: int, bits: int = DEFAULT_BITS) -> PairCounts:
        b = n_bins(bits)
        return cls(np.zeros((n_groups, b), np.int64), np.zeros((n_groups, n_groups, b), np.int64), bits)

    def __add__(self, other: PairCounts) -> PairCounts:
        if self.bits != other.bits or self.impostor.shape != other.impostor.shape:
            raise InputError("cannot add counts of different bins or group counts")
        return PairCounts(self.genuine + other.genuine, self.impostor + other.impostor, self.bits)

    @property
    def n_genuine(self) -> int:
        return int(self.genuine.sum())

    @property
    def n_impostor(self) -> int:
        return int(self.impostor.sum())

    def impostor_of(self, a: int | None = None, b: int | None = None) -> np.ndarray:
        """Impostor counts (B,) of group pair {a, b}, of group a with itself if b is None, or of all pairs."""
        if a is None:
            return self.impostor.sum(axis=(0, 1))
        b = a if b is None else b
        return self.impostor[min(a, b), max(a, b)]


@dataclass
class TailCounts:
    """Per-identity counts for the identity bootstrap at full scale (see :func:`tail_bootstrap`).

    Impostor comparisons with bin >= ``lo_bin`` (score >= e_lo) per identity pair and bin: ``imp_a < imp_b``
    (identity codes), ``imp_bin``, ``imp_count``; every genuine comparison per identity and bin: ``gen_id``,
    ``gen_bin``, ``gen_count``; bins of width 2^-``bits`` (the tail's own, see the module docstring). Rows are
    unique after :meth:`compact`. Memory: 32 bytes per (identity pair, bin) with a comparison in the tail, 24 per
    (identity, bin) of genuine comparisons."""

    bits: int
    lo_bin: int
    imp_a: np.ndarray
    imp_b: np.ndarray
    imp_bin: np.ndarray
    imp_count: np.ndarray
    gen_id: np.ndarray
    gen_bin: np.ndarray
    gen_count: np.ndarray

    @classmethod
    def empty(cls, bits: int, lo_score: float | None = None, lo_bin: int | None = None) -> TailCounts:
        """No records yet; the tail starts at the bin of ``lo_score``, or at bin ``lo_bin``."""
        if (lo_score is None) == (lo_bin is None):
            raise InputError("a tail needs exactly one of lo_score and lo_bin")
        lo = int(score_bins(np.float32([lo_score]), bits)[0]) if lo_bin is None else int(lo_bin)
        if not 0 <= lo < n_bins(bits):
            raise InputError(f"tail lower bin {lo} outside [0, {n_bins(bits)})")
        z = np.empty(0, np.int64)
        return cls(bits, lo, z, z, z, z, z, z, z)

    @property
    def n_records(self) -> int:
        """Impostor plus genuine records (rows)."""
        return len(self.imp_count) + len(self.gen_count)

    def add(self, imp_a, imp_b, imp_bin, gen_id, gen_bin) -> None:
        """Append raw records (one per comparison, count 1)."""
        one_i, one_g = np.ones(len(imp_a), np.int64), np.ones(len(gen_id), np.int64)
        self.imp_a, self.imp_b = np.r_[self.imp_a, imp_a], np.r_[self.imp_b, imp_b]
        self.imp_bin, self.imp_count = np.r_[self.imp_bin, imp_bin], np.r_[self.imp_count, one_i]
        self.gen_id, self.gen_bin = np.r_[self.gen_id, gen_id], np.r_[self.gen_bin, gen_bin]
        self.gen_count = np.r_[self.gen_count, one_g]

    def compact(self) -> TailCounts:
        """Sum the counts of equal (identity pair, bin) and (identity, bin) rows."""
        nb = n_bins(self.bits) + 1
        key = (self.imp_a * (int(self.imp_b.max(initial=0)) + 1) + self.imp_b) * nb + self.imp_bin
        gkey = self.gen_id * nb + self.gen_bin
        if (key[1:] > key[:-1]).all() and (gkey[1:] > gkey[:-1]).all():   # compact already: in order, unique
            return self
        u, inv = np.unique(key, return_inverse=True)
        cnt = np.bincount(inv, weights=self.imp_count, minlength=len(u)).astype(np.int64)
        first = np.zeros(len(u), np.int64)
        first[inv] = np.arange(len(key))
        gu, ginv = np.unique(gkey, return_inverse=True)
        gcnt = np.bincount(ginv, weights=self.gen_count, minlength=len(gu)).astype(np.int64)
        return TailCounts(self.bits, self.lo_bin, self.imp_a[first], self.imp_b[first], self.imp_bin[first], cnt,
                          gu // nb, gu % nb, gcnt)

    def __add__(self, other: TailCounts) -> TailCounts:
        return TailCounts.concatenate([self, other]).compact()

    @staticmethod
    def concatenate(parts: Sequence[TailCounts]) -> TailCounts:
        """The records of ``parts`` (same bins and lower bin) one after the other, not compacted."""
        if not parts or len({(p.bits, p.lo_bin) for p in parts}) != 1:
            raise InputError("cannot add tail counts of different bins or tails")
        return TailCounts(parts[0].bits, parts[0].lo_bin, *(np.concatenate([getattr(p, f) for p in parts])
                                                            for f in _TAIL_FIELDS))


_TAIL_FIELDS = ("imp_a", "imp_b", "imp_bin", "imp_count", "gen_id", "gen_bin", "gen_count")


def block_tasks(n: int, block: int = DEFAULT_BLOCK) -> list[tuple[int, int, int, int]]:
    """The rectangles (i0, i1, j0, j1) covering every pair i < j of n rows exactly once: diagonal squares
    (i0 = j0, only i < j counted) and off-diagonal rectangles (j0 >= i1)."""
    if n < 2 or block < 1:
        raise InputError(f"all-pairs counts need at least 2 rows and a positive block size (got {n}, {block})")
    starts = list(range(0, n, block))
    return [(i0, min(i0 + block, n), j0, min(j0 + block, n)) for a, i0 in enumerate(starts) for j0 in starts[a:]]


def _runs(codes: np.ndarray) -> list[tuple[int, int, int]]:
    cut = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1], True])
    return [(int(codes[s]), int(s), int(e)) for s, e in zip(cut[:-1], cut[1:])]


def numpy_bins(A: np.ndarray, B: np.ndarray, bits: int = DEFAULT_BITS) -> np.ndarray:
    """Bins (:func:`score_bins`) of the scores A B^T, computed by numpy (the default product)."""
    return score_bins(A @ B.T, bits)


def tensorflow_bins(A: np.ndarray, B: np.ndarray, bits: int = DEFAULT_BITS) -> np.ndarray:
    """:func:`numpy_bins` by TensorFlow on the device in scope (``tasks.runtime.tensorflow_device``): the float32
    product, then the same exact binning, floor(s 2^bits) + 2^bits clipped; a writable int32 numpy array."""
    import tensorflow as tf

    s = tf.linalg.matmul(A, B, transpose_b=True)
    k = tf.cast(tf.floor(s * np.float32(2.0 ** bits)), tf.int32) + 2 ** bits
    return np.array(tf.clip_by_value(k, 0, n_bins(bits) - 1))


Binner = Callable[[np.ndarray, np.ndarray, int], np.ndarray]


def block_counts(X: np.ndarray, identity: np.ndarray, group: np.ndarray, n_groups: int,
                 task: tuple[int, int, int, int], bits: int = DEFAULT_BITS,
                 out: PairCounts | None = None, tail: TailCounts | None = None,
                 binner: Binner = numpy_bins) -> PairCounts:
    """Add the counts of one rectangle ``task`` = (i0, i1, j0, j1) to ``out`` (new zero counts if None), and
    when ``tail`` is given its per-identity records (genuine comparisons, impostors in the tail), in the tail's
    bins (``tail.bits`` <= ``bits``), not compacted.

    X: (n, d) L2-normalised float32 (may be a memory map); identity: (n,) integer codes; group: (n,) integer
    demographic group codes in [0, n_groups). Score = X_i . X_j (float32 matrix product, by ``binner``)."""
    i0, i1, j0, j1 = task
    diagonal = (i0, i1) == (j0, j1)
    if not diagonal and j0 < i1:
        raise InputError(f"block {task}: a rectangle must be a diagonal square or lie right of the diagonal")
    out = PairCounts.zeros(n_groups, bits) if out is None else out
    nb = n_bins(bits)
    shift = 0 if tail is None else _tail_shift(bits, tail.bits)
    A = np.asarray(X[i0:i1], dtype=np.float32)
    B = A if diagonal else np.asarray(X[j0:j1], dtype=np.float32)
    bins = binner(A, B, bits)
    dump = nb                                   # pairs not counted as impostors go to an extra bin
    if diagonal:
        bins[np.tril_indices(i1 - i0)] = dump
    ida, idb = identity[i0:i1], identity[j0:j1]
    ga, gb = group[i0:i1], group[j0:j1]
    if np.intersect1d(ida, idb).size:          # genuine pairs only where the identities overlap
        same = ida[:, None] == idb[None, :]
        if diagonal:
            same &= np.triu(np.ones_like(same), 1)
        r, _ = np.nonzero(same)
        gbins = bins[same]
        np.add.at(out.genuine, (ga[r], gbins), 1)
        if tail is not None:
            tail.add(*(np.empty(0, np.int64),) * 3, ida[r].astype(np.int64), gbins.astype(np.int64) >> shift)
        bins[same] = dump
    if tail is not None:
        # coarse bin k >= lo  <=>  fine bin >= lo << shift (floor(s 2^c) = floor(floor(s 2^b) / 2^(b-c)))
        r, c = np.nonzero((bins >= tail.lo_bin << shift) & (bins < dump))
        x, y = ida[r].astype(np.int64), idb[c].astype(np.int64)
        tail.add(np.minimum(x, y), np.maximum(x, y), bins[r, c].astype(np.int64) >> shift,
                 *(np.empty(0, np.int64),) * 2)
    row_runs, col_runs = _runs(ga), _runs(gb)
    if len(row_runs) * len(col_runs) <= _MAX_SUBRECTS:
        for a, rs, re in row_runs:
            for b, cs, ce in col_runs:
                c = np.bincount(bins[rs:re, cs:ce].ravel(), minlength=nb + 1)[:nb]
                out.impostor[min(a, b), max(a, b)] += c
    else:
        lo = np.minimum(ga[:, None], gb[None, :]).astype(np.int64)
        hi = np.maximum(ga[:, None], gb[None, :]).astype(np.int64)
        key = (lo * n_groups + hi) * (nb + 1) + bins
        c = np.bincount(key.ravel(), minlength=n_groups * n_groups * (nb + 1))
        out.impostor += c.reshape(n_groups, n_groups, nb + 1)[:, :, :nb]
    return out


def _tail_shift(bits: int, tail_bits: int) -> int:
    n_bins(tail_bits)
    if tail_bits > bits:
        raise InputError(f"the tail's bins (2^-{tail_bits}) cannot be finer than the counts' (2^-{bits})")
    return bits - tail_bits


def shard_counts(X: np.ndarray, identity: np.ndarray, group: np.ndarray, n_groups: int,
                 tasks: Iterable[tuple[int, int, int, int]], bits: int = DEFAULT_BITS,
                 tail: TailCounts | None = None, binner: Binner = numpy_bins) -> PairCounts:
    """The summed counts of several rectangles (one worker's shard); per-identity records added to ``tail``,
    which is left compacted (shards' tails add with ``+``). The blocks' records are gathered in a list and
    merged into ``tail`` every 64 blocks (one concatenation and compaction each), so memory stays ~ the
    compacted tail plus 64 blocks' raw records."""
    identity, group = np.asarray(identity), np.asarray(group)
    if identity.shape != (len(X),) or group.shape != (len(X),):
        raise InputError(f"identity and group codes need one entry per row of X ({len(X)})")
    if len(group) and (group.min() < 0 or group.max() >= n_groups):
        raise InputError(f"group codes must lie in [0, {n_groups})")
    if tail is not None:
        _tail_shift(bits, tail.bits)
    out = PairCounts.zeros(n_groups, bits)
    pending: list[TailCounts] = []

    def merge() -> None:
        merged = TailCounts.concatenate([tail, *pending]).compact()
        for f in _TAIL_FIELDS:
            setattr(tail, f, getattr(merged, f))
        pending.clear()

    for t in tasks:
        part = None if tail is None else TailCounts.empty(tail.bits, lo_bin=tail.lo_bin)
        block_counts(X, identity, group, n_groups, t, bits, out, part, binner)
        if part is not None:
            pending.append(part)
            if len(pending) == _COMPACT_EVERY:
                merge()
    if tail is not None:
        merge()
    return out


def all_pair_counts(X: np.ndarray, identity: np.ndarray, group: np.ndarray, n_groups: int,
                    bits: int = DEFAULT_BITS, block: int = DEFAULT_BLOCK) -> PairCounts:
    """Every pair's counts in this process (= the sum of :func:`shard_counts` over any sharding)."""
    return shard_counts(X, identity, group, n_groups, block_tasks(len(X), block), bits)


def tail_lower_score(X: np.ndarray, identity: np.ndarray, target_fmr: float, factor: float = TAIL_FMR_FACTOR,
                     bits: int = TAIL_BITS, seed: int = 0, min_impostors: int = TAIL_MIN_IMPOSTORS,
                     max_rows: int = TAIL_MAX_ROWS) -> float:
    """The lower score e_lo of the identity-bootstrap tail, a bin edge of width 2^-bits, chosen from the whole
    table and ``seed`` only (never from a shard), so every shard of every sharding gets the same one.

    Rule: x = factor x target_fmr. If x >= 1 the tail is everything (e_lo = -1). Otherwise draw
    k = min(n, max_rows, smallest k with k(k-1)/2 >= ceil(min_impostors / x)) rows of X without replacement
    (``numpy.random.default_rng(seed).choice(n, k, replace=False)``), score every pair of them in float64
    (X's rows must be L2-normalised, e.g. :class:`tasks.kinds.allpairs.NormalisedRows`), take the convention's
    threshold t at FMR = x over their impostor pairs (:func:`tasks.stats.rates.threshold_at_fmr`; -1 when the subset
    has none) and return the edge one bin below t's bin: e_lo = e_(k_t - 1), k_t = floor(t 2^bits) + 2^bits
    (e_0 = -1 at least). With factor > 1 the global threshold of the data and of most resamples lies well
    above e_lo (a resample's threshold below it is NaN in :class:`TailStatistics`)."""
    if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not factor >= 1:
        raise InputError(f"the tail's FMR factor must be a number >= 1, got {factor!r}")
    rates.max_accepted(target_fmr, 1)
    nb = n_bins(bits)
    x = float(factor) * float(target_fmr)
    identity = np.asarray(identity)
    n = len(X)
    if identity.shape != (n,):
        raise InputError(f"identity codes need one entry per row of X ({n})")
    if x >= 1 or n < 2:
        return -1.0
    want = math.ceil(min_impostors / x)
    k = math.ceil((1 + math.sqrt(1 + 8 * want)) / 2)
    while k * (k - 1) // 2 < want:
        k += 1
    k = max(2, min(n, int(max_rows), k))
    rows = np.sort(np.random.default_rng(seed).choice(n, size=k, replace=False))
    A = np.asarray(X[rows], dtype=np.float64)
    ids = identity[rows]
    scores = []
    for i0 in range(0, k, 512):                    # row chunks: memory O(512 k), no k x k matrix
        S = A[i0:i0 + 512] @ A.T
        r, c = np.nonzero(np.arange(i0, min(i0 + 512, k))[:, None] < np.arange(k)[None, :])
        keep = ids[i0 + r] != ids[c]
        scores.append(S[r[keep], c[keep]])
    imp = np.concatenate(scores)
    if imp.size == 0:
        return -1.0
    t = rates.threshold_at_fmr(imp, x)
    k_t = min(max(math.floor(t * 2.0 ** bits) + 2 ** bits, 0), nb - 1)
    return float(bin_edges(bits)[max(k_t - 1, 0)])
