"""Job kind "scores": verification scores of one test group per seed, and the ``[verification]`` section's
switch and sample size.

A scores job scores every genuine pair and all (or a seeded uniform sample of ``max_impostor_pairs``) impostor
pairs of the test group's verification identities (:mod:`tasks.stats.scoring`), then gives the EER, FNMR at FMR
1e-2 and 1e-3, genuine/impostor means, FMR/FNMR curves on a fixed threshold grid, histograms on fixed bins, and
with ``[verification] bootstrap`` > 0 the identity bootstrap's interval of the EER and both FNMRs.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import pandas as pd

from storage.errors import InputError
from storage.schema import result_table
from tasks.kinds import ConfigPart, JobKind, PlannedJob, Where, register
from tasks.runtime import check_rows
from tasks.stats import bootstrap, rates, scoring

HIST_EDGES = np.linspace(-1.0, 1.0, 401)    # 400 histogram bins, the same for every job
SCORE_TARGETS = {1e-2: "fnmr_at_fmr_1e_2", 1e-3: "fnmr_at_fmr_1e_3"}   # a scores job's FNMR columns
TABLES = (
    result_table("verification", "test_group", {
        "test_group": "string", "seed": "int", "eer": "float", "eer_threshold": "float",
        "fnmr_at_fmr_1e_2": "float", "fnmr_at_fmr_1e_3": "float", "genuine_mean": "float",
        "impostor_mean": "float", "n_genuine": "int", "n_impostor": "int", "impostor_sampled": "bool",
        "eer_ci_low": "float", "eer_ci_high": "float", "fnmr_at_fmr_1e_2_ci_low": "float",
        "fnmr_at_fmr_1e_2_ci_high": "float", "fnmr_at_fmr_1e_3_ci_low": "float", "fnmr_at_fmr_1e_3_ci_high": "float",
        "n_resamples": "int"},
        provenance=True),
    result_table("verification_curve", "test_group", {
        "test_group": "string", "seed": "int", "threshold": "float", "fmr": "float", "fnmr": "float"}),
    result_table("verification_hist", "test_group", {
        "test_group": "string", "seed": "int", "kind": "string", "bin_left": "float", "bin_right": "float",
        "count": "int"}),
)


def _histogram(kind: str, scores: np.ndarray) -> pd.DataFrame:
    counts, _ = np.histogram(np.clip(scores, HIST_EDGES[0], HIST_EDGES[-1]), bins=HIST_EDGES)
    return pd.DataFrame({"kind": kind, "bin_left": HIST_EDGES[:-1], "bin_right": HIST_EDGES[1:],
                         "count": counts.astype(np.int64)})


def score_group(X: np.ndarray, identity_codes: np.ndarray, rows: np.ndarray, *, seed: int,
                max_impostor_pairs: int = 5_000_000, n_resamples: int = 0, strata: np.ndarray | None = None,
                confidence: float = rates.CONFIDENCE, transform: scoring.ScoreTransform | None = None,
                curves: bool = True) -> dict[str, pd.DataFrame]:
    """Verification scores of the images ``rows`` of X (identity_codes: one code per row of X).

    Returns ``{"verification": one row (eer, eer_threshold, fnmr_at_fmr_1e_2, fnmr_at_fmr_1e_3, genuine_mean,
    impostor_mean, n_genuine, n_impostor, impostor_sampled, and with ``n_resamples`` > 0 the identity bootstrap's
    95% percentile interval of the EER and of both FNMRs, seeded by ``seed``, resampling identities within each
    stratum of ``strata`` (one code per row of X, e.g. gender; default one stratum): <metric>_ci_low/_ci_high,
    n_resamples), "verification_curve": (threshold, fmr, fnmr) on :data:`tasks.stats.scoring.THRESHOLDS`,
    "verification_hist": (kind,
    bin_left, bin_right, count) on :data:`HIST_EDGES`}``.

    ``transform`` (:data:`tasks.stats.scoring.ScoreTransform`, e.g. a fitted score mitigation): every number is
    computed on the transformed scores (:func:`tasks.stats.scoring.transformed`). ``curves`` False: only the
    ``"verification"`` row (the curve and histogram grids fit cosine scores in [-1, 1] only)."""
    sc = scoring.transformed(scoring.score_pairs(X, identity_codes, rows, seed=seed,
                                                 max_impostor_pairs=max_impostor_pairs, what="verification group"),
                             rows, transform)
    gen_sorted, imp_sorted = np.sort(sc.gen.astype(np.float64)), np.sort(sc.imp.astype(np.float64))
    fpr, tpr, thr = rates.sorted_roc(gen_sorted, imp_sorted)            # scikit-learn's roc_curve, every point
    fnr = 1.0 - tpr
    eer, eer_threshold = rates.eer_at_crossing(thr, fpr, fnr)

    def fnmr_at(target: float) -> float:  # at the convention's threshold (tasks.stats.rates), not the ROC's
        t = rates.sorted_threshold_at_fmr(imp_sorted, target)
        return float(np.count_nonzero(sc.gen < t) / len(sc.gen))

    summary = pd.DataFrame([{
        "eer": eer, "eer_threshold": eer_threshold,
        **{name: fnmr_at(target) for target, name in SCORE_TARGETS.items()},
        "genuine_mean": float(sc.gen.mean(dtype=np.float64)), "impostor_mean": float(sc.imp.mean(dtype=np.float64)),
        "n_genuine": int(len(sc.gen)), "n_impostor": int(len(sc.imp)), "impostor_sampled": sc.sampled,
    }])
    if n_resamples:
        rows = check_rows(rows, len(X), "verification group")
        summary = summary.assign(**_interval_columns(sc, np.asarray(identity_codes)[rows],
                                                     None if strata is None else np.asarray(strata)[rows],
                                                     int(n_resamples), seed, confidence))
    else:
        summary = summary.assign(n_resamples=0, **{f"{m}_{end}": np.nan for m in ("eer", *SCORE_TARGETS.values())
                                                   for end in ("ci_low", "ci_high")})
    if not curves:
        return {"verification": summary}
    fmr, fnmr = scoring.rates_on_grid(sc.gen, sc.imp)
    curve = pd.DataFrame({"threshold": scoring.THRESHOLDS, "fmr": fmr, "fnmr": fnmr})
    hist = pd.concat([_histogram("genuine", sc.gen), _histogram("impostor", sc.imp)], ignore_index=True)
    return {"verification": summary, "verification_curve": curve, "verification_hist": hist}


def _interval_columns(sc: scoring.Scores, codes: np.ndarray, strata: np.ndarray | None, n_resamples: int, seed: int,
                      confidence: float) -> dict[str, float]:
    """The identity bootstrap of a scores job's EER and FNMR at FMR 1e-2 and 1e-3: <metric>_ci_low/_ci_high."""
    ident, id_code = np.unique(codes, return_inverse=True)
    id_group = np.zeros(len(ident), np.int64)
    if strata is not None:
        _, stratum = np.unique(strata, return_inverse=True)
        id_group[id_code] = stratum
    names = [str(g) for g in range(int(id_group.max()) + 1)]
    table = bootstrap.bootstrap_verification(
        np.r_[sc.gen, sc.imp], id_code[np.r_[sc.gen_a, sc.imp_a]], id_code[np.r_[sc.gen_b, sc.imp_b]], id_group,
        names, target_fmrs=tuple(SCORE_TARGETS), global_target_fmr=1e-3, n_resamples=n_resamples, seed=seed,
        confidence=confidence)
    out: dict[str, float] = {"n_resamples": n_resamples}
    for row in table[table["group_a"] == "all"].itertuples():
        name = "eer" if row.quantity == "eer" else SCORE_TARGETS[row.target_fmr]
        out[f"{name}_ci_low"], out[f"{name}_ci_high"] = float(row.ci_low), float(row.ci_high)
    return out


# ------------------------------------------------------------------------------------------------- the kind ---
def _check_config(cfg: dict[str, Any], where: Where) -> None:
    v = cfg["verification"]
    if v["max_impostor_pairs"] < 1000:
        raise InputError(f"{where('verification.max_impostor_pairs')} must be at least 1000, "
                         f"got {v['max_impostor_pairs']}")


def check_genuine_pairs(cfg: Mapping[str, Any], table: Any, splits: Mapping[int, Any], jobs: list[Any]) -> None:
    """Verification needs genuine pairs: some test identity of every group with two or more images."""
    if not cfg["verification"]["enabled"]:
        return
    codes = table.identity_codes()
    for seed, split in splits.items():
        for group in cfg["grid"]["test_groups"]:
            if np.bincount(codes[split.verification[group]]).max(initial=0) < 2:
                raise InputError(f"data: no {group} test identity has two or more images (seed {seed}), so there "
                                 f"are no genuine pairs for verification scores; give identities several images "
                                 f"or set [verification] enabled = false")


def _plan_scores(cfg: Mapping[str, Any]) -> Iterator[PlannedJob]:
    """One scores job per seed x test group (when verification is enabled)."""
    v, g = cfg["verification"], cfg["grid"]
    if not v["enabled"]:
        return
    for seed, test_group in itertools.product(g["seeds"], g["test_groups"]):
        params = {"test_group": test_group, "max_impostor_pairs": v["max_impostor_pairs"],
                  "bootstrap": v["bootstrap"]}
        yield PlannedJob(seed, params, f"scores test={test_group} seed={seed}")


def run(payload: Mapping[str, Any], data: Mapping[str, np.ndarray]) -> dict[str, pd.DataFrame]:
    """Worker entry of a scores job: the verification summary, curve and histogram rows of one test group."""
    p, seed = payload["params"], payload["seed"]
    out = score_group(data["X"], data["identity_codes"], payload["rows"], seed=seed,
                      max_impostor_pairs=p["max_impostor_pairs"], n_resamples=p.get("bootstrap", 0),
                      strata=data["target"])
    return {name: df.assign(test_group=p["test_group"], seed=seed) for name, df in out.items()}



KIND = register(JobKind(
    "scores", plan=_plan_scores, rows=lambda p, split: {"rows": split.verification[p["test_group"]]},
    run="tasks.kinds.scores:run", tables=TABLES, order=0, cost=lambda p: 1 + p.get("bootstrap", 0) // 200,
    config=ConfigPart("verification", {"enabled": True, "max_impostor_pairs": 5_000_000}, _check_config),
    record=("test_group",), check=check_genuine_pairs, report=("grid.report.sections.verification:SECTION",)))
