"""Job kind "cell": train one model on one train group's rows, evaluate it on every test group (the accuracy
matrices' cells, model x train group x seed). The labels are the target's codes (``[grid] target``, gender by
default: 0 = male, 1 = female; another binary attribute: its two values in sorted order); ``accuracy_male`` and
``accuracy_female`` are the accuracies on class 0 and class 1 of the target (their names: the default's)."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import pandas as pd

from storage.errors import InputError
from storage.schema import JOB_COLUMNS, PROVENANCE_COLUMNS, result_table
from tasks.kinds import JobKind, PlannedJob, register
from tasks.models import build_model, model_type
from tasks.runtime import check_rows, job_threads, limit_threads
from tasks.stats import classifier_stats

TABLES = (
    result_table("accuracy", "model", {
        "model": "string", "train_group": "string", "test_group": "string", "seed": "int", "accuracy": "float",
        "accuracy_male": "float", "accuracy_female": "float", "balanced_accuracy": "float", "n_test": "int",
        "n_train": "int", "train_seconds": "float"},
        provenance=True),
    result_table("predictions", "model", {
        "model": "string", "train_group": "string", "test_group": "string", "seed": "int", "row": "int",
        "identity": "int", "y_true": "int", "y_pred": "int", "score": "float"}),
)


def _positive_score(classifier: Any, X: np.ndarray, *group: np.ndarray) -> np.ndarray:
    """The model's score for class 1 (female by default): ``predict_proba(X)[:, 1]`` (a mitigation's
    ``predict_proba(X, group)``) when it has one, else NaN."""
    proba = getattr(classifier, "predict_proba", None)
    if not callable(proba):
        return np.full(len(X), np.nan)
    try:
        p = np.asarray(proba(X, *group), dtype=np.float64)
    except AttributeError:   # a mitigation wrapping a model without predict_proba
        return np.full(len(X), np.nan)
    return p[:, 1] if p.ndim == 2 and p.shape == (len(X), 2) else np.full(len(X), np.nan)


def _balanced_accuracy(y: np.ndarray, pred: np.ndarray) -> float:
    """(TPR + TNR)/2 (classifier_stats.balanced_accuracy); NaN when a class is absent from the test rows."""
    return float(classifier_stats.classification_rates(y, pred).iloc[0]["balanced_accuracy"])


def run_cell(X: np.ndarray, gender: np.ndarray, train_idx: np.ndarray, test_sets: Mapping[str, np.ndarray], *,
             model: str, model_config: Mapping, train_group: str, seed: int, threads: int = 1,
             identity_codes: np.ndarray | None = None, mitigation: str | None = None,
             mitigation_config: Mapping | None = None,
             group_labels: np.ndarray | None = None) -> dict[str, pd.DataFrame]:
    """Train ``model`` (a model type, or a variant: its ``base`` in ``model_config``) once on rows ``train_idx`` of
    X (labels ``gender``: the target's codes, 0 male, 1 female by default), initialised by ``seed``, and evaluate
    it on each test set (name -> rows).

    Returns ``{"accuracy": one row per test group: model, train_group, test_group, seed, accuracy,
    accuracy_male, accuracy_female, balanced_accuracy = (TPR + TNR)/2 with female positive, n_test, n_train,
    train_seconds`` (NaN for a gender with no test rows; train_seconds is the wall time of fit, after the model's
    ``prepare(width)`` when it has one), ``"predictions":
    one row per test image: model, train_group, test_group, seed, row, identity (its identity code, -1 without
    codes), y_true, y_pred, score`` (predict_proba of class 1, NaN when the model has none)}.

    With ``mitigation`` (a classifier-side one, :mod:`tasks.mitigation`; ``group_labels``: each row's group name,
    required): ``build_mitigation(mitigation, mitigation_config, seed)`` is fitted instead of the model (it builds
    fresh untrained models itself) on the training rows, their group labels and identities, and predicts the
    test rows with their group labels; ``train_seconds`` is the wall time of its fit, ``score`` its
    ``predict_proba`` (NaN without one). A test group of groups the fitted method holds no parameters for (its
    ``groups_``, as the threshold optimizer's per-group thresholds: a union train group not covering the test
    group) is left out of both tables."""
    limit_threads(threads)
    if X.ndim != 2:
        raise InputError(f"embedding matrix must be 2-D, got shape {X.shape}")
    gender = np.asarray(gender)
    if gender.shape != (len(X),):
        raise InputError(f"gender must have one code per embedding row ({len(X)}), got shape {gender.shape}")
    train_idx = check_rows(train_idx, len(X), f"train group {train_group!r}")
    if not test_sets:
        raise InputError(f"cell of train group {train_group!r}: no test groups given")
    tests = {name: check_rows(rows, len(X), f"test group {name!r}") for name, rows in test_sets.items()}
    for name, rows in [(f"train group {train_group!r}", train_idx)] + [(f"test group {k!r}", v) for k, v in
                                                                        tests.items()]:
        bad = ~np.isin(gender[rows], (0, 1))
        if bad.any():
            raise InputError(f"{name}: target codes must be 0 or 1 (male or female by default), got "
                             f"{gender[rows][bad][0]!r}")
    y_train = gender[train_idx].astype(np.int64)
    if len(np.unique(y_train)) < 2:
        raise InputError(f"train group {train_group!r} has only rows of target class {y_train[0]}; a binary "
                         f"classifier needs both classes")

    def build() -> Any:
        return build_model(model, model_config, seed=seed, threads=threads)  # resolves (and checks) the config

    if mitigation is not None and (group_labels is None or np.shape(group_labels) != (len(X),)):
        raise InputError(f"mitigation {mitigation!r}: expected one group label per embedding row ({len(X)})")
    groups = np.asarray(group_labels) if mitigation is not None else None
    X_train = np.ascontiguousarray(X[train_idx], dtype=np.float32)
    model_built = build()   # a mitigation builds its own models, of this type and config
    prepare = getattr(model_built, "prepare", None)
    if callable(prepare):   # the model's one-time costs for this input width (the MLP's compilation), untimed
        prepare(X_train.shape[1])
    start = time.perf_counter()
    if mitigation is None:
        classifier = model_built
        classifier.fit(X_train, y_train)
    else:
        from tasks.mitigation import build_mitigation

        identity_train = None if identity_codes is None else np.asarray(identity_codes)[train_idx]
        classifier = build_mitigation(mitigation, mitigation_config, seed)
        classifier.fit(build, X_train, y_train, groups[train_idx], identity_train)
        known = getattr(classifier, "groups_", None)
        if known is not None:
            tests = {k: v for k, v in tests.items() if np.isin(groups[v], known).all()}
    train_seconds = time.perf_counter() - start
    del X_train

    records, predictions = [], []
    for name, rows in tests.items():
        y = gender[rows].astype(np.int64)
        X_test = np.ascontiguousarray(X[rows], dtype=np.float32)
        by_group = () if groups is None else (groups[rows],)   # a mitigation predicts with the rows' groups
        pred = np.asarray(classifier.predict(X_test, *by_group)).astype(np.int64)
        if pred.shape != y.shape:
            raise InputError(f"model {model!r}: predict returned shape {pred.shape} for {len(y)} test rows")
        predictions.append(pd.DataFrame({
            "model": model, "train_group": train_group, "test_group": name, "seed": seed, "row": rows,
            "identity": np.asarray(identity_codes)[rows].astype(np.int64) if identity_codes is not None else -1,
            "y_true": y, "y_pred": pred, "score": _positive_score(classifier, X_test, *by_group)}))
        correct = pred == y
        records.append({
            "model": model, "train_group": train_group, "test_group": name, "seed": seed,
            "accuracy": float(correct.mean()),
            "accuracy_male": float(correct[y == 0].mean()) if (y == 0).any() else float("nan"),
            "accuracy_female": float(correct[y == 1].mean()) if (y == 1).any() else float("nan"),
            "balanced_accuracy": _balanced_accuracy(y, pred),
            "n_test": int(len(y)), "n_train": int(len(train_idx)), "train_seconds": train_seconds,
        })
    return {"accuracy": pd.DataFrame.from_records(records, columns=_columns(TABLES[0])),
            "predictions": pd.concat(predictions, ignore_index=True) if predictions else
            pd.DataFrame(columns=_columns(TABLES[1]))}


def _columns(table: Any) -> list[str]:
    """A cell table's columns that the worker fills (the store adds the job's)."""
    return [c for c in table.names if c not in JOB_COLUMNS and c not in PROVENANCE_COLUMNS]


# ------------------------------------------------------------------------------------------------- the kind ---
def _plan(cfg: Mapping[str, Any]) -> Iterator[PlannedJob]:
    """One cell per model x train group x seed."""
    g = cfg["grid"]
    for model, train_group, seed in itertools.product(g["models"], g["train_groups"], g["seeds"]):
        params = {"model": model, "model_config": cfg["model"][model], "train_group": train_group,
                  "test_groups": list(g["test_groups"]), "threads": cfg["run"]["threads_per_job"]}
        yield PlannedJob(seed, params, f"cell {model} train={train_group} seed={seed}")


def cell_rows(params: Mapping[str, Any], split: Any) -> dict[str, Any]:
    return {"train_idx": split.train_rows(params["train_group"]),
            "test_sets": {g: split.test[g] for g in params["test_groups"]}}


def run(payload: Mapping[str, Any], data: Mapping[str, np.ndarray]) -> dict[str, pd.DataFrame]:
    """Worker entry of a cell job: its accuracy rows and per-image predictions."""
    p = payload["params"]
    return run_cell(data["X"], data["target"], payload["train_idx"], payload["test_sets"], model=p["model"],
                    model_config=p["model_config"], train_group=p["train_group"], seed=payload["seed"],
                    threads=job_threads(payload), identity_codes=data.get("identity_codes"))


def cell_cost(params: Mapping[str, Any]) -> int:
    """``all`` trains on every group (three ethnicities in the study); the MLP (and its variants) is slower than the
    tree and linear baselines."""
    mlp = model_type(params["model"], params["model_config"]) == "mlp"
    return (3 if params["train_group"] == "all" else 1) + (1 if mlp else 0)


KIND = register(JobKind(
    "cell", plan=_plan, rows=cell_rows, run="tasks.kinds.cell:run", tables=TABLES, order=3, cost=cell_cost,
    record=("model", "train_group"), preload=("tasks.models",),
    report=("grid.report.sections.matrices:SECTION", "grid.report.sections.bias:SECTION")))
