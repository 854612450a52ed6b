"""Exact all-pairs genuine/impostor counts (tasks.stats.allpairs) on a DiveFace-size table: time, memory, throughput.

Run from the repository root:

    PYTHONPATH=. .venv/bin/python bench/bench_allpairs.py [--identities-per-group 4000] [--dim 2048]
        [--workers 1,2] [--shards 0] [--block 2048] [--bits 14] [--fraction 1.0] [--data synth|random]
        [--tail [--tail-bits 10] [--tail-factor 3] [--target-fmr 1e-3] [--resamples 5]] [--tail-score S]

The table is storage.synth.generate(SynthParams(identities_per_group=N, dim=D)) (6 groups, DiveFace's images per
identity: ~142K rows for N = 4000), rows in the generator's order (group, identity), saved once as .npy and
memory-mapped by every worker. ``--fraction f`` runs only every (1/f)-th block task and extrapolates the full
time by the share of pairs it covered (labelled as such). Every worker runs with 1 BLAS thread. Prints, per
worker count: wall time, comparisons/s in total and per core, each worker's peak RSS, and the machine's float32
matmul rate (one thread, 2048^3 products) with the comparisons/s it would allow (rate / (2 d)), and the
workers' CPU seconds (comparisons per CPU second is what a loaded, shared machine does not distort).

``--tail`` also collects the identity bootstrap's tail as the allpairs jobs do (tasks/kinds/allpairs.py): each
worker chooses the lower score with ``tasks.stats.allpairs.tail_lower_score`` (FMR = --tail-factor x --target-fmr on a
seeded subset, seed 0, bins of 2^---tail-bits; timed) and records the tail while counting. Prints per worker the
tail's impostor and genuine records (compacted) and its share of the counted impostors; then, in this process,
the time to sum the workers' tails (one compaction), to set up ``TailStatistics`` and per resample
(median of --resamples resamples of ``TailStatistics.evaluate``), with the records extrapolated to every pair
when ``--fraction`` < 1 (records grow with the comparisons; labelled as extrapolated). ``--tail-score S`` (the
earlier option) records a tail from the fixed score S in the counts' own bins instead of the rule.
"""

from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS"):
    os.environ[_v] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from concurrent.futures import ProcessPoolExecutor  # noqa: E402
from multiprocessing import get_context  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def matmul_rate(d: int = 2048, reps: int = 5) -> float:
    """float32 GFLOP/s of one thread on a d x d x d product (best of reps)."""
    rng = np.random.default_rng(0)
    A = rng.standard_normal((d, d), dtype=np.float32)
    B = rng.standard_normal((d, d), dtype=np.float32)
    A @ B
    best = min(_timed(lambda: A @ B) for _ in range(reps))
    return 2 * d ** 3 / best / 1e9


def _timed(f) -> float:
    t = time.perf_counter()
    f()
    return time.perf_counter() - t


def worker(path: str, tasks: list, n_groups: int, bits: int, tail_score: float | None = None,
           rule: dict | None = None) -> tuple:
    """One shard: counts (and a tail: from ``tail_score`` in the counts' bins, or by the jobs' ``rule``)."""
    from tasks.stats.allpairs import TailCounts, shard_counts, tail_lower_score
    from tasks.kinds.allpairs import NormalisedRows

    X = np.load(path + ".X.npy", mmap_mode="r")
    ids = np.load(path + ".ids.npy")
    grp = np.load(path + ".grp.npy")
    tail, lo_s = None, 0.0
    if rule is not None:                    # as tasks.kinds.allpairs.run does
        X = NormalisedRows(X)
        t = time.perf_counter()
        lo = tail_lower_score(X, ids, rule["target_fmr"], rule["factor"], rule["bits"], seed=0)
        lo_s = time.perf_counter() - t
        tail = TailCounts.empty(rule["bits"], lo)
    elif tail_score is not None:
        tail = TailCounts.empty(bits, tail_score)
    t, cpu = time.perf_counter(), time.process_time()
    c = shard_counts(X, ids, grp, n_groups, tasks, bits, tail=tail)
    secs, cpu = time.perf_counter() - t, time.process_time() - cpu
    records = None if tail is None else (len(tail.imp_count), len(tail.gen_count))
    return (c.genuine, c.impostor, secs, peak_rss_mb(), cpu, records, tail if rule is not None else None,
            round(lo_s, 2))


def peak_rss_mb() -> float:
    """This process's peak resident memory since it started its program (VmHWM; getrusage's ru_maxrss is not
    it: Linux carries the parent's peak over fork and exec, so a spawned worker of a large driver inherits it)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def tail_report(tails: list, ids: np.ndarray, grp: np.ndarray, n_groups: int, target: float, resamples: int,
                scale: float) -> dict:
    """Sum the workers' tails and time TailStatistics: set-up and one resample (median of ``resamples``)."""
    from tasks.stats import fairness
    from tasks.stats.allpairs import TailCounts
    from tasks.stats.allpairs_rates import TailStatistics
    from tasks.stats.bootstrap import identity_multiplicities

    t = time.perf_counter()
    summed = TailCounts.concatenate(tails).compact()
    sum_s = time.perf_counter() - t
    n_id = int(ids.max()) + 1
    id_group = np.zeros(n_id, np.int64)
    id_group[ids] = grp
    images = np.bincount(ids, minlength=n_id)
    names = [f"g{g}" for g in range(n_groups)]
    t = time.perf_counter()
    st = TailStatistics(summed, id_group, images, names, target, fairness.summaries)
    setup_s = time.perf_counter() - t
    times, defined = [], 0
    for m in identity_multiplicities(id_group, resamples, seed=0):
        t = time.perf_counter()
        _, v, _, _ = st.evaluate(m)
        times.append(time.perf_counter() - t)
        defined += int(not np.isnan(v[0]))
    imp, gen = len(summed.imp_count), len(summed.gen_count)
    stored = stored_tail_read(tails, ids, grp)
    return {**stored, "tail_lo_bin": summed.lo_bin, "tail_bits": summed.bits, "summed_impostor_records": imp,
            "summed_genuine_records": gen, "summed_tail_mb": round((imp * 4 + gen * 3) * 8 / 2 ** 20, 1),
            "sum_tails_s": round(sum_s, 3), "statistics_setup_s": round(setup_s, 3),
            "resample_s_median": round(float(np.median(times)), 4), "resamples_timed": resamples,
            "resamples_defined": defined, "identities": n_id,
            "extrapolated_full_impostor_records": round(imp * scale) if scale != 1 else None,
            "extrapolated_full_resample_s": round(float(np.median(times)) * scale, 3) if scale != 1 else None}


def stored_tail_read(tails: list, ids: np.ndarray, grp: np.ndarray) -> dict:
    """Write each shard's tail as its job does (table allpairs_tail, a ResultStore in a temporary folder), then
    read it back as the report does (``ResultStore.read``, ``allpairs_rates.tail_from_rows``): files' size, time
    and the growth of this process's peak RSS."""
    from storage.results import ResultStore
    from tasks.kinds.allpairs import identity_rows, tail_rows

    with tempfile.TemporaryDirectory() as folder:
        store = ResultStore(folder)
        t = time.perf_counter()
        for k, tail in enumerate(tails):
            store.write_table_rows("allpairs_tail", f"allpairs-{k}", tail_rows(tail, k, len(tails)).assign(
                job_id=f"allpairs-{k}"))
        write_s = time.perf_counter() - t
        size = sum(f.stat().st_size for f in Path(folder).rglob("*.parquet"))
        ident = identity_rows(ids, np.asarray([f"g{g}" for g in grp]), 0, len(tails), tails[0].bits,
                              tails[0].lo_bin).assign(job_id="allpairs-0")
        with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as ex:   # a fresh process
            read = ex.submit(read_tail, folder, ident).result()
    return {"stored_tail_mb": round(size / 2 ** 20, 1), "write_tail_s": round(write_s, 2), **read}


def read_tail(folder: str, ident) -> dict:
    """As the report: ``ResultStore.read("allpairs_tail")`` then ``tail_from_rows``; times and peak memory."""
    import tasks.kinds  # noqa: F401  (registers the kinds' tables, allpairs_tail among them)
    from storage.results import ResultStore
    from tasks.stats.allpairs_rates import tail_from_rows

    base = peak_rss_mb()
    t = time.perf_counter()
    rows, _ = ResultStore(folder).read("allpairs_tail")
    read_s = time.perf_counter() - t
    t = time.perf_counter()
    tail_from_rows(rows, ident)
    return {"stored_tail_rows": len(rows), "report_read_tail_s": round(read_s, 2),
            "report_tail_from_rows_s": round(time.perf_counter() - t, 2),
            "report_peak_rss_mb": round(peak_rss_mb()), "report_peak_rss_over_start_mb": round(peak_rss_mb() - base)}


def make_data(path: str, n_id: int, dim: int, kind: str) -> tuple[int, int]:
    if kind == "synth":
        from storage.synth import SynthParams, generate

        t = generate(SynthParams(identities_per_group=n_id, dim=dim))
        X = t.embeddings
        _, ids = np.unique(t.identity.astype(str), return_inverse=True)
        grp = t.ethnicity.astype(np.int64) * 2 + t.gender.astype(np.int64)
    else:
        rng = np.random.default_rng(0)
        per = rng.integers(3, 9, 6 * n_id)
        ids = np.repeat(np.arange(6 * n_id), per)
        grp = ids // n_id
        X = np.empty((len(ids), dim), np.float32)
        for s in range(0, len(ids), 8192):
            b = np.abs(rng.standard_normal((min(8192, len(ids) - s), dim), dtype=np.float32))
            X[s:s + 8192] = b / np.linalg.norm(b, axis=1, keepdims=True)
    np.save(path + ".X.npy", X)
    np.save(path + ".ids.npy", ids.astype(np.int64))
    np.save(path + ".grp.npy", grp.astype(np.int64))
    return len(ids), 6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--identities-per-group", type=int, default=4000)
    ap.add_argument("--dim", type=int, default=2048)
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--block", type=int, default=2048)
    ap.add_argument("--bits", type=int, default=14)
    ap.add_argument("--fraction", type=float, default=1.0)
    ap.add_argument("--data", choices=["synth", "random"], default="synth")
    ap.add_argument("--shards", type=int, default=0,
                    help="shards of the block tasks, run by --workers processes (0: one per worker; the grid's "
                         "allpairs_shards is 8)")
    ap.add_argument("--tail-score", type=float, default=None,
                    help="also collect per-identity tail counts (TailCounts) from this score up")
    ap.add_argument("--tail", action="store_true",
                    help="also collect the identity bootstrap's tail as the allpairs jobs do (the lower score by "
                         "tasks.stats.allpairs.tail_lower_score) and time one tail_bootstrap resample")
    ap.add_argument("--tail-bits", type=int, default=10)
    ap.add_argument("--tail-factor", type=float, default=3.0)
    ap.add_argument("--target-fmr", type=float, default=1e-3)
    ap.add_argument("--resamples", type=int, default=5, help="resamples timed on the summed tail")
    args = ap.parse_args()
    if args.tail and args.tail_score is not None:
        ap.error("--tail chooses the tail's lower score itself; give --tail or --tail-score, not both")
    rule = {"bits": args.tail_bits, "factor": args.tail_factor, "target_fmr": args.target_fmr} if args.tail else None
    from tasks.stats.allpairs import block_tasks

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "t")
        t0 = time.perf_counter()
        n, G = make_data(path, args.identities_per_group, args.dim, args.data)
        gen_s = time.perf_counter() - t0
        ids = np.load(path + ".ids.npy")
        gflops = matmul_rate()
        tasks = block_tasks(n, args.block)
        step = max(1, round(1 / args.fraction))
        chosen = tasks[::step]
        pairs = sum((i1 - i0) * (j1 - j0) if (i0, i1) != (j0, j1) else (i1 - i0) * (i1 - i0 - 1) // 2
                    for i0, i1, j0, j1 in chosen)
        total_pairs = n * (n - 1) // 2
        _, sizes = np.unique(ids, return_counts=True)
        n_gen = int((sizes * (sizes - 1) // 2).sum())
        report = {"rows": n, "dim": args.dim, "identities": int(len(sizes)), "data": args.data,
                  "generate_s": round(gen_s, 1), "block": args.block, "bits": args.bits,
                  "tasks": len(tasks), "tasks_run": len(chosen), "pairs_run": pairs, "pairs_total": total_pairs,
                  "matmul_gflops_1thread": round(gflops, 1),
                  "matmul_bound_comparisons_per_s_per_core": round(gflops * 1e9 / (2 * args.dim)),
                  "load_before": os.getloadavg(), "runs": []}
        print(json.dumps(report), flush=True)
        results = {}
        for w in [int(x) for x in args.workers.split(",")]:
            n_shards = args.shards or w
            shards = [chosen[k::n_shards] for k in range(n_shards)]
            t = time.perf_counter()
            with ProcessPoolExecutor(max_workers=w, mp_context=get_context("spawn")) as ex:
                outs = list(ex.map(worker, [path] * n_shards, shards, [G] * n_shards, [args.bits] * n_shards,
                                   [args.tail_score] * n_shards, [rule] * n_shards))
            wall = time.perf_counter() - t
            gen = sum(o[0] for o in outs)
            imp = sum(o[1] for o in outs)
            results[w] = (gen, imp)
            if step == 1:
                assert int(gen.sum()) == n_gen and int(gen.sum() + imp.sum()) == total_pairs, "counts do not add up"
            run = {"workers": w, "shards": n_shards, "wall_s": round(wall, 1),
                   "shard_s": [round(o[2], 1) for o in outs],
                   "shard_cpu_s": [round(o[4], 1) for o in outs],
                   "comparisons_per_cpu_s": round(pairs / sum(o[4] for o in outs)),
                   "peak_rss_mb": [round(o[3]) for o in outs],   # of the worker process, when its shard ended
                   "comparisons_per_s": round(pairs / wall),
                   "comparisons_per_s_per_core": round(pairs / wall / w),
                   "extrapolated_full_wall_s": round(wall * total_pairs / pairs, 1) if step > 1 else None,
                   "tail_records": [o[5] for o in outs], "load_after": os.getloadavg()}
            if rule is not None:
                lo = outs[0][6].lo_bin
                assert all(o[6].lo_bin == lo for o in outs), "shards chose different tails"
                shift = args.bits - args.tail_bits
                n_imp = int(imp.sum())
                in_tail = int(imp.sum(axis=(0, 1))[lo << shift:].sum())
                run["tail"] = {"lo_score": float(-1 + lo * 2.0 ** -args.tail_bits),
                               "choose_lo_s": [o[7] for o in outs],
                               "impostors_in_tail": in_tail, "tail_fmr": in_tail / max(n_imp, 1),
                               **tail_report([o[6] for o in outs], ids, np.load(path + ".grp.npy"), G,
                                             args.target_fmr, args.resamples, total_pairs / pairs)}
            report["runs"].append(run)
            print(json.dumps(run), flush=True)
        from tasks.stats.allpairs_rates import hist_eer, hist_threshold_at_fmr

        gen, imp = results[list(results)[0]]
        g_all, i_all = gen.sum(axis=0), imp.sum(axis=(0, 1))
        summary = {"eer": hist_eer(g_all, i_all, args.bits)[0],
                   "threshold_at_fmr": {f"{x:g}": hist_threshold_at_fmr(i_all, x, args.bits)
                                        for x in (1e-2, 1e-3, 1e-4, 1e-5, 1e-6)},
                   "n_genuine": int(g_all.sum()), "n_impostor": int(i_all.sum())}
        report["rates_of_pairs_run"] = summary
        print(json.dumps({"rates_of_pairs_run": summary}), flush=True)
        ws = list(results)
        if len(ws) > 1:
            same = all(np.array_equal(results[ws[0]][k], results[w][k]) for w in ws[1:] for k in (0, 1))
            report["shardings_identical"] = same
            print(json.dumps({"shardings_identical": same}), flush=True)
        print(json.dumps(report))


if __name__ == "__main__":
    main()
