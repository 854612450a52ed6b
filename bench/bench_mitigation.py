"""Cost of each mitigation method (tasks/mitigation/): fit + apply, at the default grid's sizes, on one thread.

    PYTHONPATH=. .venv/bin/python bench/bench_mitigation.py [--identities-per-group 750] [--dim 2048]
        [--model logreg] [--methods reweight,erase,...] [--clusters 100] [--max-impostor-pairs 5000000]

Data: the built-in synthetic data (storage/synth.py) and seed 0's split at the study's protocol (--train-per-gender
500, --test-per-gender 250). Classifier side: the "all" train group (3 ethnicities x 2 genders x 500 = 3000 rows,
one image per identity) and one test ethnicity (500 rows); each method's fit (model training included) and its
predictions, against ``none`` (the model alone). Score side: fitted on every image of the training identities
(3000 identities, ~6 images each, pairs as a scores job scores them: all genuine, impostors sampled to
--max-impostor-pairs), applied to one scores job's pairs (every pair of one test ethnicity's images), against
``none`` (scoring those pairs). Times are wall seconds; the machine may be shared, so they are indicative.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from grid.splits import Protocol, make_split  # noqa: E402
from storage.synth import SynthParams, generate  # noqa: E402
from tasks.mitigation import METHODS, build_mitigation  # noqa: E402
from tasks.models import build_model, resolve_model_config  # noqa: E402
from tasks.runtime import limit_threads  # noqa: E402
from tasks.stats import scoring  # noqa: E402


def timed(f):
    start = time.perf_counter()
    out = f()
    return out, time.perf_counter() - start


def classifier_side(table, split, args) -> None:
    train = split.train_rows("all")
    test = split.test[table.ethnicities[0]]
    X, y = table.embeddings, table.gender.astype(np.int64)
    group = np.asarray(table.ethnicities)[table.ethnicity]
    config = resolve_model_config(args.model, {"max_iter": args.logreg_iter} if args.model == "logreg" else {})
    build = lambda: build_model(args.model, config, seed=0, threads=1)  # noqa: E731
    print(f"classifier side: {len(train)} train rows x {table.dim}, {len(test)} test rows, model {args.model}")
    warm = np.r_[train[y[train] == 0][:25], train[y[train] == 1][:25]]
    build().fit(X[warm], y[warm])  # first-call imports (and the mlp's compilation) outside the timing
    for name in ["none"] + [m for m in args.methods if METHODS[m].side == "classifier"]:
        if name == "none":
            model, fit_s = timed(lambda: build().fit(X[train], y[train]))
            pred, pred_s = timed(lambda: model.predict(X[test]))
        else:
            extra = {"max_iter": args.reductions_iter} if name == "reductions" else {}
            m = build_mitigation(name, extra, seed=0)
            _, fit_s = timed(lambda: m.fit(build, X[train], y[train], group[train], table.identity_codes()[train]))
            pred, pred_s = timed(lambda: m.predict(X[test], group[test]))
        acc = float(np.mean(np.asarray(pred) == y[test]))
        print(f"  {name:<20} fit {fit_s:8.2f} s   predict {pred_s:7.3f} s   accuracy {acc:.3f}")


def score_side(table, split, args) -> None:
    ids = table.identity_codes()
    train_ids = np.unique(ids[split.train_rows("all")])
    fit_rows = np.flatnonzero(np.isin(ids, train_ids))
    rows = split.verification[table.ethnicities[0]]
    group = np.asarray([f"{table.ethnicities[e]}_{'female' if g else 'male'}"
                        for e, g in zip(table.ethnicity, table.gender)])
    (sc, score_s) = timed(lambda: scoring.score_pairs(table.embeddings, ids, rows, seed=0,
                                                      max_impostor_pairs=args.max_impostor_pairs, what="scores"))
    a, b = np.r_[sc.gen_a, sc.imp_a], np.r_[sc.gen_b, sc.imp_b]
    s = np.r_[sc.gen, sc.imp]
    X_fit, X_eval = table.embeddings[fit_rows], table.embeddings[rows]
    print(f"score side: fitted on {len(fit_rows)} images of {len(train_ids)} identities x {table.dim}; "
          f"applied to {len(s)} pairs of {len(rows)} images")
    print(f"  {'none':<20} fit {0.0:8.2f} s   apply {score_s:7.3f} s   (scoring the job's pairs)")
    for name in [m for m in args.methods if METHODS[m].side == "score"]:
        config = {k: v for k, v in (("n_clusters", args.clusters), ("max_impostor_pairs", args.max_impostor_pairs))
                  if k in METHODS[name].spec}
        m = build_mitigation(name, config, seed=0)
        _, fit_s = timed(lambda: m.fit(X_fit, ids[fit_rows], group[fit_rows]))
        out, apply_s = timed(lambda: m.transform(X_eval, group[rows], a, b, s))
        print(f"  {name:<20} fit {fit_s:8.2f} s   apply {apply_s:7.3f} s   scores {out.min():.3f}..{out.max():.3f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--identities-per-group", type=int, default=750)
    p.add_argument("--dim", type=int, default=2048)
    p.add_argument("--train-per-gender", type=int, default=500)
    p.add_argument("--test-per-gender", type=int, default=250)
    p.add_argument("--model", default="logreg")
    p.add_argument("--logreg-iter", type=int, default=1000, help="logreg max_iter (its default)")
    p.add_argument("--reductions-iter", type=int, default=50, help="ExponentiatedGradient max_iter (its default)")
    p.add_argument("--clusters", type=int, default=100)
    p.add_argument("--max-impostor-pairs", type=int, default=5_000_000)
    p.add_argument("--methods", default=",".join(METHODS))
    args = p.parse_args()
    args.methods = [m for m in args.methods.split(",") if m]
    unknown = sorted(set(args.methods) - set(METHODS))
    if unknown:
        raise SystemExit(f"unknown method {unknown[0]!r}; allowed: {', '.join(METHODS)}")
    limit_threads(1)
    table, gen_s = timed(lambda: generate(SynthParams(identities_per_group=args.identities_per_group,
                                                      dim=args.dim)))
    split = make_split(table, 0, Protocol(args.train_per_gender, args.test_per_gender))
    print(f"data: {len(table)} images x {table.dim} generated in {gen_s:.1f} s")
    classifier_side(table, split, args)
    score_side(table, split, args)


if __name__ == "__main__":
    main()
