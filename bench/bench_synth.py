"""Benchmark and calibration check of the built-in synthetic data (storage/synth.py).

    PYTHONPATH=. .venv/bin/python bench/bench_synth.py [--seeds 3] [--no-mlp] [--param gender_alignment=0.5 ...]
        [--train-per-gender 500] [--test-per-gender 250]

Prints:
* generation time of the default data (6 groups x 1000 identities x 2048-d) with one BLAS thread;
* the gender-classification accuracy matrix (rows = train group, columns = test ethnicity; mean ± std over
  seeds = identity splits) of two proxy classifiers: scikit-learn LogisticRegression and
  MLPClassifier(hidden_layer_sizes=(60, 60)), trained on the study's protocol (500 + 500 training identities per
  ethnicity, one image each; 250 + 250 test identities; --train-per-gender, --test-per-gender);
* per ethnicity, the verification EER of the test identities (cosine similarity; genuine = two images of the same
  identity, impostor = images of different identities) and the mean genuine and impostor scores.

The proxies stand in for biasgrid's own models; the machine is shared, so times are indicative.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
from threadpoolctl import threadpool_limits

from grid.splits import Protocol, make_split
from storage.synth import PER_ETHNICITY_PARAMS, generate, synth_params_from_dict
from storage.vocab import ETHNICITIES

TRAIN_GROUPS = (*ETHNICITIES, "all")


def eer(scores: np.ndarray, genuine: np.ndarray) -> float:
    """Equal error rate of similarity ``scores`` with ``genuine`` marking same-identity pairs."""
    g, i = np.sort(scores[genuine]), np.sort(scores[~genuine])
    thresholds = np.unique(np.concatenate([g, i]))
    fnmr = np.searchsorted(g, thresholds, side="left") / len(g)        # genuine below the threshold
    fmr = 1.0 - np.searchsorted(i, thresholds, side="left") / len(i)   # impostor at or above it
    k = int(np.argmin(np.abs(fnmr - fmr)))
    return float((fnmr[k] + fmr[k]) / 2)


def verification(X: np.ndarray, codes: np.ndarray) -> tuple[float, float, float]:
    S = X @ X.T
    upper = np.triu_indices(len(X), 1)
    scores = S[upper]
    genuine = (codes[:, None] == codes[None, :])[upper]
    return eer(scores, genuine), float(scores[genuine].mean()), float(scores[~genuine].mean())


def parse_params(items: list[str]) -> dict:
    given = {}
    for item in items:
        key, value = item.split("=", 1)
        parts = [float(v) for v in value.split(",")]
        given[key] = parts if key in PER_ETHNICITY_PARAMS and len(parts) > 1 else (
            parts[0] if "." in value or key not in ("identities_per_group", "dim", "seed", "images_per_identity",
                                                    "shared_dims", "private_dims") else int(value))
    return given


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3, help="identity splits (and model seeds) to average")
    parser.add_argument("--no-mlp", action="store_true", help="only the logistic-regression proxy")
    parser.add_argument("--param", action="append", default=[], help="generator parameter KEY=VALUE")
    parser.add_argument("--train-per-gender", type=int, default=Protocol.train_per_gender)
    parser.add_argument("--test-per-gender", type=int, default=Protocol.test_per_gender)
    args = parser.parse_args()
    protocol = Protocol(args.train_per_gender, args.test_per_gender)
    warnings.filterwarnings("ignore")  # convergence warnings of the proxies
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier

    params = synth_params_from_dict(parse_params(args.param), "--param")
    generate(synth_params_from_dict({"identities_per_group": 5, "dim": 8}, "warm-up"))
    with threadpool_limits(limits=1):
        t = time.perf_counter()
        table = generate(params)
        seconds = time.perf_counter() - t
    X, y, codes = table.embeddings, table.gender, table.identity_codes()
    print(f"generate: {seconds:.2f} s on one thread; {len(table)} rows x {table.dim}, "
          f"{len(np.unique(codes))} identities, {np.mean(X == 0):.0%} zero features")

    models = {"logreg": lambda seed: LogisticRegression(max_iter=3000)}
    if not args.no_mlp:
        models["mlp(60,60)"] = lambda seed: MLPClassifier(hidden_layer_sizes=(60, 60), max_iter=300,
                                                          random_state=seed)
    acc = {name: np.zeros((args.seeds, len(TRAIN_GROUPS), len(ETHNICITIES))) for name in models}
    ver = np.zeros((args.seeds, len(ETHNICITIES), 3))
    t = time.perf_counter()
    for s in range(args.seeds):
        split = make_split(table, s, protocol)
        for j, test in enumerate(ETHNICITIES):
            rows = split.verification[test]
            ver[s, j] = verification(X[rows], codes[rows])
        for name, make in models.items():
            for i, train in enumerate(TRAIN_GROUPS):
                rows = split.train_rows(train)
                clf = make(s).fit(X[rows], y[rows])
                for j, test in enumerate(ETHNICITIES):
                    acc[name][s, i, j] = clf.score(X[split.test[test]], y[split.test[test]])
    print(f"(classifiers and scores: {time.perf_counter() - t:.0f} s for {args.seeds} seeds)")

    header = "train \\ test".ljust(14) + "".join(e.rjust(16) for e in ETHNICITIES)
    for name, a in acc.items():
        print(f"\ngender accuracy, {name}, mean ± std over {args.seeds} seeds")
        print(header)
        for i, train in enumerate(TRAIN_GROUPS):
            cells = "".join(f"{a[:, i, j].mean():.3f} ± {a[:, i, j].std():.3f}".rjust(16)
                            for j in range(len(ETHNICITIES)))
            print(train.ljust(14) + cells)
    print(f"\nverification of the test identities (cosine), mean over {args.seeds} seeds")
    print("ethnicity".ljust(14) + "EER".rjust(10) + "genuine".rjust(10) + "impostor".rjust(10))
    for j, e in enumerate(ETHNICITIES):
        m = ver[:, j].mean(axis=0)
        print(e.ljust(14) + f"{m[0]:.2%}".rjust(10) + f"{m[1]:.3f}".rjust(10) + f"{m[2]:.3f}".rjust(10))


if __name__ == "__main__":
    main()
