"""Job kind "mitigated_verification": per seed and score mitigation (``[grid] mitigations``, side "score", not
``none``), the method fitted ONCE on every image of the seed's training identities (``Split.fitting`` of the test
groups: identities disjoint from the evaluated ones), then every verification number of the scores kind (each
test group) and of the impostor kind (the seed) computed on the transformed scores of the same pairs.

The scores and impostor kinds' own functions compute them (:func:`tasks.kinds.scores.score_group`,
:func:`tasks.kinds.impostor.seed_tables`), given the fitted method as a score transform
(:data:`tasks.stats.scoring.ScoreTransform`): the same pairs, samples and thresholds' convention, every threshold
chosen on the transformed scores. Transformed scores may leave [-1, 1] (``znorm``, ``fsn``) or be probabilities
(``faircal``), so the FMR/FNMR curves and histograms on the scores kind's fixed grids are not stored for a
mitigation. Rows go to ``mitigated_<table>`` (:func:`storage.schema.mitigated_table`, a ``mitigation`` column
first); the ``none`` rows stay in the scores and impostor kinds' tables, whose jobs do not change.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import pandas as pd

from storage.errors import InputError
from storage.schema import mitigated_table, schema
from tasks.kinds import JobKind, PlannedJob, register
from tasks.kinds import impostor, scores
from tasks.mitigation import build_mitigation, describe, mitigations_of
from tasks.runtime import check_rows, row_groups

SCORES_TABLES = ("verification",)
IMPOSTOR_TABLES = ("impostor_matrix", "demographic_rates", "group_eer", "operating_points", "verification_ci")
TABLES = tuple(mitigated_table(schema(name)) for name in SCORES_TABLES + IMPOSTOR_TABLES)
FIT_COST = 100   # a fit is 50-150x one scores job (docs/PERFORMANCE.md, "Mitigation methods")


def _plan(cfg: Mapping[str, Any]) -> Iterator[PlannedJob]:
    """One job per seed x score mitigation (not none), when verification is enabled: the mitigation, its config,
    and the verification keys of the scores and impostor kinds' jobs (:func:`tasks.kinds.impostor.seed_params`,
    with the scores kind's bootstrap)."""
    v = cfg["verification"]
    if not v["enabled"]:
        return
    for name in mitigations_of(cfg, "score")[1:]:
        for seed in cfg["grid"]["seeds"]:
            params = {"mitigation": name, "mitigation_config": cfg["mitigation"][name],
                      **impostor.seed_params(cfg), "bootstrap": v["bootstrap"]}
            yield PlannedJob(seed, params, f"mitigated verification {name} seed={seed}")


def _rows(params: Mapping[str, Any], split: Any) -> dict[str, Any]:
    """Every image of the test groups' training identities (the fit) and of their test identities (per group)."""
    groups = params["test_groups"]
    return {"fitting": np.sort(np.concatenate([split.fitting[g] for g in groups])),
            "verification": {g: split.verification[g] for g in groups}}


def check_fitting(cfg: Mapping[str, Any], table: Any, splits: Mapping[int, Any], jobs: list[Any]) -> None:
    """Score mitigations fit on the training identities: a split must have some (protocol.train_per_gender)."""
    if jobs and cfg["protocol"]["train_per_gender"] == 0:
        names = ", ".join(dict.fromkeys(j.params["mitigation"] for j in jobs))
        raise InputError(f"protocol.train_per_gender = 0 (a verification-only study) leaves no training identities, "
                         f"but the score mitigations ({names}) fit on every image of each seed's training "
                         f"identities, disjoint from the test ones; set protocol.train_per_gender to at least 1 "
                         f"or remove them from grid.mitigations")


def fit(payload: Mapping[str, Any], data: Mapping[str, np.ndarray]) -> Any:
    """The job's mitigation, fitted on its fitting rows (their identities, and their demographic groups for a
    method that uses group labels)."""
    p = payload["params"]
    rows = check_rows(payload["fitting"], len(data["X"]), f"mitigation {p['mitigation']!r}: the fitting rows")
    labels = describe(p["mitigation"], p["mitigation_config"]).uses_group_labels
    method = build_mitigation(p["mitigation"], p["mitigation_config"], payload["seed"])
    return method.fit(np.asarray(data["X"][rows]), np.asarray(data["identity_codes"])[rows],
                      row_groups(data, rows) if labels else None)


def run(payload: Mapping[str, Any], data: Mapping[str, np.ndarray]) -> dict[str, pd.DataFrame]:
    """Worker entry: fit the mitigation once, then the scores kind's summary row of every test group and the
    impostor kind's tables of the seed, on the transformed scores."""
    p, seed = payload["params"], payload["seed"]
    X, codes = data["X"], data["identity_codes"]
    method = fit(payload, data)
    labels = describe(p["mitigation"], p["mitigation_config"]).uses_group_labels

    def transform(rows: np.ndarray, a: np.ndarray, b: np.ndarray, s: np.ndarray) -> np.ndarray:
        return method.transform(np.asarray(X[rows]), row_groups(data, rows) if labels else None, a, b, s)

    out: dict[str, list[pd.DataFrame]] = {name: [] for name in SCORES_TABLES}
    for group, rows in payload["verification"].items():
        scored = scores.score_group(X, codes, rows, seed=seed, max_impostor_pairs=p["max_impostor_pairs"],
                                    n_resamples=p["bootstrap"], strata=data["target"], transform=transform,
                                    curves=False)
        for name in SCORES_TABLES:
            out[name].append(scored[name].assign(test_group=group, seed=seed))
    evaluated = np.concatenate([payload["verification"][g] for g in p["test_groups"]])
    tables = {name: pd.concat(frames, ignore_index=True) for name, frames in out.items()}
    tables.update(impostor.seed_tables(X, codes, impostor.job_groups(data, evaluated), evaluated, p, seed,
                                       transform=transform))
    return {f"mitigated_{name}": df.assign(seed=seed, mitigation=p["mitigation"]) for name, df in tables.items()}


KIND = register(JobKind(
    "mitigated_verification", plan=_plan, rows=_rows, run="tasks.kinds.mitigated_verification:run", tables=TABLES,
    order=4, cost=lambda p: FIT_COST + p.get("bootstrap", 0) // 100, record=("mitigation",),
    preload=("tasks.mitigation.fitting",), check=check_fitting,
    report=("grid.report.sections.mitigation:SECTION",)))
