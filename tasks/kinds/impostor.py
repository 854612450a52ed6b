"""Job kind "impostor": per seed, the cross-group impostor matrix at ONE global threshold, each demographic
group's rates at it, per-group operating points and the identity bootstrap; with ``face_detected`` in the table,
each group's failure to acquire and its rates counted both ways; and the ``[verification]`` keys of the threshold,
the targets, the bootstrap, the impostor sampling and where thresholds are chosen (``threshold_split``: on the
test comparisons themselves, or on a development part of the test identities and applied to the rest).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from storage.attributes import group_labels
from storage.errors import InputError
from storage.schema import result_table
from tasks.kinds import ConfigPart, JobKind, PlannedJob, Where, register
from tasks.runtime import check_rows
from tasks.stats import acquisition, bootstrap, dev_eval, fairness, rates, scoring
from tasks.runtime import row_groups

SAMPLING = ("stratified", "uniform")         # impostor sampling beyond max_impostor_pairs
THRESHOLD_SPLITS = ("test", "dev")           # thresholds chosen on the test comparisons, or on a development part
MAX_BOOTSTRAP = 1_000_000                    # verification.bootstrap: resamples per job
TABLES = (
    result_table("impostor_matrix", "seed", {
        "seed": "int", "group_a": "string", "group_b": "string", "fmr": "float", "n_pairs": "int",
        "threshold": "float", "false_matches": "int", "ci_low": "float", "ci_high": "float", "display": "string",
        "resolved": "bool", "reason": "string"}),
    result_table("demographic_rates", "seed", {
        "seed": "int", "group": "string", "fmr": "float", "fnmr": "float", "threshold": "float",
        "n_genuine": "int", "n_impostor": "int", "false_matches": "int", "false_non_matches": "int",
        "fmr_ci_low": "float", "fmr_ci_high": "float", "fnmr_ci_low": "float", "fnmr_ci_high": "float",
        "resolved": "bool", "reason": "string"}),
    result_table("group_eer", "seed", {
        "seed": "int", "group": "string", "eer": "float", "eer_threshold": "float", "n_genuine": "int",
        "n_impostor": "int", "d_prime": "float"}),
    result_table("operating_points", "seed", {
        "seed": "int", "group": "string", "target_fmr": "float", "threshold_kind": "string", "threshold": "float",
        "false_matches": "int", "n_impostor": "int", "fmr": "float", "fmr_ci_low": "float",
        "fmr_ci_high": "float", "fmr_display": "string", "false_non_matches": "int", "n_genuine": "int",
        "fnmr": "float", "fnmr_ci_low": "float", "fnmr_ci_high": "float", "fnmr_display": "string",
        "resolved": "bool", "reason": "string"}),
    result_table("verification_ci", "seed", {
        "seed": "int", "quantity": "string", "group_a": "string", "group_b": "string", "target_fmr": "float",
        "metric": "string", "estimate": "float", "k": "int", "n": "int", "ci_low": "float", "ci_high": "float",
        "n_resamples": "int", "n_defined": "int", "cp_low": "float", "cp_high": "float", "display": "string",
        "note": "string"}),
    result_table("acquisition", "seed", {
        "seed": "int", "group": "string", "n_images": "int", "failed": "int", "fta": "float", "fta_ci_low": "float",
        "fta_ci_high": "float", "display": "string"}),
    result_table("acquisition_rates", "seed", {
        "seed": "int", "group": "string", "view": "string", "threshold": "float", "false_matches": "int",
        "n_impostor": "int", "fmr": "float", "fmr_ci_low": "float", "fmr_ci_high": "float",
        "false_non_matches": "int", "n_genuine": "int", "fnmr": "float", "fnmr_ci_low": "float",
        "fnmr_ci_high": "float"}),
)
DEFAULTS: dict[str, Any] = {
    "target_fmr": 1e-3,                  # the ONE global threshold of the impostor-matrix job
    "target_fmrs": [1e-2, 1e-3, 1e-4],   # per-group own thresholds (operating_points table)
    "bootstrap": 1000,                   # identity-bootstrap resamples per scores and impostor-matrix job; 0 = none
    "sampling": "stratified",            # impostor sample beyond max_impostor_pairs: stratified | uniform
    "threshold_split": "test",           # thresholds chosen on the test comparisons ("test") or a dev part ("dev")
    "dev_fraction": 0.5,                 # threshold_split = "dev": share of each group's test identities in dev
    "groups": ["ethnicity", "gender"],   # the demographic groups: a product of attributes (grid.axes)
}


@dataclass(frozen=True)
class Thresholds:
    """Thresholds chosen on other comparisons (a development part): the global one, and each group's own at each
    target FMR ((group, target) -> threshold, group "all" included)."""

    global_threshold: float
    own: dict[tuple[str, float], float]


def _scored(X: np.ndarray, identity_codes: np.ndarray, demographic_group: np.ndarray, rows: np.ndarray, *,
            seed: int, target_fmr: float, max_impostor_pairs: int, sampling: str,
            transform: scoring.ScoreTransform | None = None,
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray, scoring.Scores, np.ndarray, np.ndarray]:
    """The checked comparisons of ``rows``: (group names, each row's group code, identity codes, scores, the pooled
    and the per-stratum impostor masks), sampled as :func:`impostor_matrix` describes, the scores transformed by
    ``transform`` (:func:`tasks.stats.scoring.transformed`) once sampled."""
    if not (isinstance(target_fmr, (int, float)) and 0.0 < target_fmr < 1.0):
        raise InputError(f"target_fmr must be between 0 and 1, got {target_fmr!r}")
    X = np.asarray(X)
    demographic_group = np.asarray(demographic_group)
    if demographic_group.shape != (len(X),):
        raise InputError(f"demographic groups must have one entry per embedding row ({len(X)}), "
                         f"got shape {demographic_group.shape}")
    rows = check_rows(rows, len(X), "impostor matrix")
    labels = demographic_group[rows]
    if not all(isinstance(v, str) and v for v in labels.tolist()):
        raise InputError("impostor matrix: every selected row needs a demographic group name")
    names, group = np.unique(labels.astype(str), return_inverse=True)
    codes = scoring.check_codes(np.asarray(X), identity_codes)[rows]
    spans = pd.Series(group).groupby(codes).nunique()
    if (spans > 1).any():
        raise InputError(f"impostor matrix: identity code {spans.index[spans > 1][0]} has images in more than one "
                         f"demographic group")
    if sampling not in SAMPLING:
        raise InputError(f"impostor sampling must be one of {', '.join(SAMPLING)}, got {sampling!r}")
    sc = scoring.score_pairs(X, identity_codes, rows, seed=seed, max_impostor_pairs=max_impostor_pairs,
                             what="impostor matrix")
    if sampling == "stratified" and sc.sampled:
        sc = scoring.stratify(sc, X, rows, codes, group, len(names), target_fmr=target_fmr, seed=seed)
    sc = scoring.transformed(sc, rows, transform)
    return names, group, codes, sc, sc.pooled(), sc.stratum()


def fit_thresholds(X: np.ndarray, identity_codes: np.ndarray, demographic_group: np.ndarray, rows: np.ndarray, *,
                   seed: int, target_fmr: float = 1e-3, max_impostor_pairs: int = 5_000_000,
                   target_fmrs: Sequence[float] = (), sampling: str = "stratified",
                   transform: scoring.ScoreTransform | None = None) -> Thresholds:
    """The thresholds :func:`impostor_matrix` would choose on the comparisons of ``rows`` (the convention of
    :mod:`tasks.stats.rates`): the global one at ``target_fmr`` over the pooled impostors, and each group's own
    (and group "all"'s) at each of ``target_fmrs``."""
    names, group, _, sc, pooled, stratum = _scored(X, identity_codes, demographic_group, rows, seed=seed,
                                                   target_fmr=target_fmr, max_impostor_pairs=max_impostor_pairs,
                                                   sampling=sampling, transform=transform)
    within = np.where(group[sc.imp_a] == group[sc.imp_b], group[sc.imp_a], -1)
    own = {}
    for target in target_fmrs:
        own["all", float(target)] = rates.threshold_at_fmr(sc.imp[pooled], target)
        for g, name in enumerate(names):
            own[str(name), float(target)] = rates.threshold_at_fmr(sc.imp[stratum & (within == g)], target)
    return Thresholds(rates.threshold_at_fmr(sc.imp[pooled], target_fmr), own)


def impostor_matrix(X: np.ndarray, identity_codes: np.ndarray, demographic_group: np.ndarray, rows: np.ndarray, *,
                    seed: int, target_fmr: float = 1e-3, max_impostor_pairs: int = 5_000_000,
                    target_fmrs: Sequence[float] = (), n_resamples: int = 0, sampling: str = "stratified",
                    confidence: float = rates.CONFIDENCE, thresholds: Thresholds | None = None,
                    acquired: np.ndarray | None = None,
                    transform: scoring.ScoreTransform | None = None) -> dict[str, pd.DataFrame]:
    """Cross-group false matches at ONE global threshold, as in NIST's demographic-effects reports, with counts,
    exact intervals, per-group operating points and the identity bootstrap.

    The threshold gives FMR = ``target_fmr`` over all impostor pairs of ``rows`` (all, or a seeded uniform
    sample of ``max_impostor_pairs``), by the convention of :mod:`tasks.stats.rates`. With ``sampling="stratified"``
    a sample is topped up per pair of groups (:func:`tasks.stats.scoring.stratify`): pooled numbers (the
    threshold, the EER and FNMR over all) come from the uniform sample, each pair of groups' counts from a uniform
    sample of its own pairs of at least ``tasks.stats.scoring.STRATUM_FALSE_MATCHES / target_fmr`` pairs.
    ``demographic_group`` has one group name per row of X (e.g. "asian_female"). Returns

    - ``"impostor_matrix"``: group_a, group_b, fmr = false_matches / n_pairs, false_matches, n_pairs, threshold,
      ci_low, ci_high (Clopper-Pearson), display (k/n, "<= 3/n" for k = 0), resolved, reason (every ordered pair
      of groups, a group with itself included; symmetric);
    - ``"demographic_rates"``: group, fmr, fnmr, threshold, n_genuine, n_impostor, false_matches,
      false_non_matches, fmr_ci_low/_high, fnmr_ci_low/_high (CP), resolved, reason (each group's own impostor
      FMR and genuine FNMR at that threshold);
    - when ``target_fmrs`` is given, ``"group_eer"`` and ``"operating_points"``: :func:`tasks.stats.rates.
      group_operating_points` (each group's EER, its own threshold at each target and the global one);
    - when ``n_resamples`` > 0, ``"verification_ci"``: :func:`tasks.stats.bootstrap.bootstrap_verification` seeded by
      ``seed`` (EER, FNMR at each target, per-group and cross-group rates at the global threshold and the
      differential summaries of :func:`tasks.stats.fairness.summaries`, each with its 95% percentile interval);
    - when ``acquired`` is given (one bool per row of X: the face was found), ``"acquisition_rates"``:
      :func:`tasks.stats.acquisition.acquisition_rates` at the global threshold.

    ``thresholds`` (:func:`fit_thresholds` on other comparisons, e.g. a development part): the global and own
    thresholds applied instead of those chosen on these comparisons. ``transform`` (:data:`tasks.stats.scoring.
    ScoreTransform`, e.g. a fitted score mitigation): everything is computed on the transformed scores, the
    thresholds chosen on them too.
    """
    names, group, codes, sc, pooled, stratum = _scored(X, identity_codes, demographic_group, rows, seed=seed,
                                                       target_fmr=target_fmr,
                                                       max_impostor_pairs=max_impostor_pairs, sampling=sampling,
                                                       transform=transform)
    G = len(names)
    threshold = rates.threshold_at_fmr(sc.imp[pooled], target_fmr) if thresholds is None else \
        thresholds.global_threshold

    ga, gb = group[sc.imp_a[stratum]], group[sc.imp_b[stratum]]
    key = np.minimum(ga, gb) * G + np.maximum(ga, gb)
    n_pairs = np.bincount(key, minlength=G * G).reshape(G, G)
    false_matches = np.bincount(key, weights=sc.imp[stratum] >= threshold,
                                minlength=G * G).reshape(G, G).astype(np.int64)
    n_pairs = np.triu(n_pairs) + np.triu(n_pairs, 1).T
    false_matches = np.triu(false_matches) + np.triu(false_matches, 1).T
    cells = rates.rate_frame(false_matches.ravel(), n_pairs.ravel(), confidence=confidence)
    resolved = [rates.resolution(n, k, target_fmr) for k, n in zip(false_matches.ravel(), n_pairs.ravel())]
    matrix = pd.DataFrame({"group_a": np.repeat(names, G), "group_b": np.tile(names, G), "fmr": cells["rate"],
                           "false_matches": cells["k"], "n_pairs": cells["n"], "threshold": threshold,
                           "ci_low": cells["ci_low"], "ci_high": cells["ci_high"], "display": cells["display"],
                           "resolved": [r[0] for r in resolved], "reason": [r[1] for r in resolved]})

    gen_group = group[sc.gen_a]
    n_gen = np.bincount(gen_group, minlength=G)
    false_non = np.bincount(gen_group, weights=sc.gen < threshold, minlength=G).astype(np.int64)
    fm = rates.rate_frame(np.diag(false_matches), np.diag(n_pairs), confidence=confidence)
    fn = rates.rate_frame(false_non, n_gen, confidence=confidence)
    own = [rates.resolution(n, k, target_fmr) for k, n in zip(fm["k"], fm["n"])]
    out = {"impostor_matrix": matrix, "demographic_rates": pd.DataFrame({
        "group": names, "fmr": fm["rate"], "fnmr": fn["rate"], "threshold": threshold, "n_genuine": fn["n"],
        "n_impostor": fm["n"], "false_matches": fm["k"], "false_non_matches": fn["k"],
        "fmr_ci_low": fm["ci_low"], "fmr_ci_high": fm["ci_high"], "fnmr_ci_low": fn["ci_low"],
        "fnmr_ci_high": fn["ci_high"], "resolved": [r[0] for r in own], "reason": [r[1] for r in own]})}
    if len(target_fmrs):
        ops = rates.group_operating_points(sc.gen, gen_group, sc.imp[stratum], ga, gb,   # codes into names
                                           target_fmrs=target_fmrs, global_target_fmr=target_fmr,
                                           groups=list(names), confidence=confidence,
                                           pooled_impostor=sc.imp[pooled],
                                           thresholds=None if thresholds is None else thresholds.own,
                                           global_threshold=None if thresholds is None else threshold)
        out["group_eer"], out["operating_points"] = ops["eer"], ops["operating_points"]
    if acquired is not None:
        ok = np.asarray(acquired, dtype=bool)[check_rows(rows, len(X), "impostor matrix")]
        out["acquisition_rates"] = acquisition.acquisition_rates(
            sc.gen, gen_group, ok[sc.gen_a] & ok[sc.gen_b], sc.imp[stratum], ga, gb,
            ok[sc.imp_a[stratum]] & ok[sc.imp_b[stratum]], threshold, list(names), confidence)
    if n_resamples:
        ident, id_code = np.unique(codes, return_inverse=True)      # identities of rows -> 0..n_identities-1
        id_group = np.zeros(len(ident), np.int64)
        id_group[id_code] = group
        out["verification_ci"] = bootstrap.bootstrap_verification(
            np.r_[sc.gen, sc.imp], id_code[np.r_[sc.gen_a, sc.imp_a]], id_code[np.r_[sc.gen_b, sc.imp_b]],
            id_group, list(names), target_fmrs=tuple(target_fmrs) or (target_fmr,), global_target_fmr=target_fmr,
            n_resamples=int(n_resamples), seed=seed, confidence=confidence, summarize=fairness.summary_values,
            pooled=np.r_[np.ones(len(sc.gen), bool), pooled], stratum=np.r_[np.ones(len(sc.gen), bool), stratum])
    return out


# ------------------------------------------------------------------------------------------------- the kind ---
def _check_config(cfg: dict[str, Any], where: Where) -> None:
    v = cfg["verification"]
    if not 0.0 < v["target_fmr"] < 1.0:
        raise InputError(f"{where('verification.target_fmr')} must be between 0 and 1, got {v['target_fmr']}")
    if not v["target_fmrs"] or not all(isinstance(x, (int, float)) and not isinstance(x, bool) and 0.0 < x < 1.0
                                       for x in v["target_fmrs"]):
        raise InputError(f"{where('verification.target_fmrs')} must be a non-empty list of numbers between 0 and 1, "
                         f"got {v['target_fmrs']!r}")
    v["target_fmrs"] = [float(x) for x in v["target_fmrs"]]
    if len(set(v["target_fmrs"])) != len(v["target_fmrs"]):
        raise InputError(f"{where('verification.target_fmrs')} repeats a value: {v['target_fmrs']!r}")
    if v["sampling"] not in SAMPLING:
        raise InputError(f"{where('verification.sampling')} must be one of {', '.join(SAMPLING)}, "
                         f"got {v['sampling']!r}")
    if v["threshold_split"] not in THRESHOLD_SPLITS:
        raise InputError(f"{where('verification.threshold_split')} must be one of {', '.join(THRESHOLD_SPLITS)}, "
                         f"got {v['threshold_split']!r}")
    if not 0.0 < v["dev_fraction"] < 1.0:
        raise InputError(f"{where('verification.dev_fraction')} must be between 0 and 1 (the share of each group's "
                         f"test identities that choose the thresholds), got {v['dev_fraction']}")
    if not v["groups"] or not all(isinstance(a, str) and a.strip() for a in v["groups"]) \
            or len(set(v["groups"])) != len(v["groups"]):
        raise InputError(f"{where('verification.groups')} must be a non-empty list of distinct attribute names, "
                         f"e.g. [\"ethnicity\", \"gender\"] or [\"age\"], got {v['groups']!r}")
    if v["bootstrap"] < 0 or v["bootstrap"] == 1 or v["bootstrap"] > MAX_BOOTSTRAP:
        raise InputError(f"{where('verification.bootstrap')} must be 0 (no bootstrap) or from 2 to "
                         f"{MAX_BOOTSTRAP:,} resamples, got {v['bootstrap']:,}")


def _plan_impostor(cfg: Mapping[str, Any]) -> Iterator[PlannedJob]:
    """One impostor-matrix job per seed (when verification is enabled). With ``threshold_split = "dev"`` its params
    name the split (and its fraction) and carry no bootstrap; the default params are those of earlier versions."""
    if not cfg["verification"]["enabled"]:
        return
    for seed in cfg["grid"]["seeds"]:
        yield PlannedJob(seed, seed_params(cfg), f"impostor matrix seed={seed}")


def seed_params(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The params of a seed's impostor-matrix job (the same for every seed): the test groups and the
    ``[verification]`` keys :func:`seed_tables` reads."""
    v, dev = cfg["verification"], cfg["verification"]["threshold_split"] == "dev"
    return {"test_groups": list(cfg["grid"]["test_groups"]), "target_fmr": v["target_fmr"],
            "max_impostor_pairs": v["max_impostor_pairs"], "target_fmrs": list(v["target_fmrs"]),
            "bootstrap": 0 if dev else v["bootstrap"], "sampling": v["sampling"],
            **({"threshold_split": "dev", "dev_fraction": v["dev_fraction"]} if dev else {})}


def job_groups(data: Mapping[str, np.ndarray], rows: np.ndarray) -> np.ndarray:
    """Each row's demographic group name (those of ``rows``; the others empty)."""
    demographic = np.empty(len(data["X"]), dtype=object)
    demographic[rows] = row_groups(data, rows)
    return demographic


def check_dev_split(cfg: Mapping[str, Any], table: Any, splits: Mapping[int, Any], jobs: list[Any]) -> None:
    """With ``threshold_split = "dev"``: every demographic group of every seed's test identities can be split
    (:func:`tasks.stats.dev_eval.development` refuses a group with too few identities)."""
    if not jobs or cfg["verification"]["threshold_split"] != "dev":
        return
    labels = group_labels(table, cfg["verification"]["groups"], cfg["attributes"]["bins"])
    names = np.asarray(labels.names, dtype=object)[labels.codes]
    for seed, split in splits.items():
        rows = np.concatenate([split.verification[g] for g in cfg["grid"]["test_groups"]])
        dev_eval.development(table.identity_codes()[rows], names[rows], cfg["verification"]["dev_fraction"], seed)


def seed_tables(X: np.ndarray, codes: np.ndarray, demographic: np.ndarray, rows: np.ndarray, p: Mapping[str, Any],
                seed: int, *, acquired: np.ndarray | None = None,
                transform: scoring.ScoreTransform | None = None) -> dict[str, pd.DataFrame]:
    """:func:`impostor_matrix` of the images ``rows`` with a job's params ``p`` (:func:`seed_params`); with
    ``threshold_split = "dev"`` the thresholds chosen on the development identities (no bootstrap), everything
    measured on the evaluation ones. ``demographic``: each row's group (those of ``rows``)."""
    common = {"seed": seed, "target_fmr": p["target_fmr"], "max_impostor_pairs": p["max_impostor_pairs"],
              "target_fmrs": p.get("target_fmrs", ()), "sampling": p.get("sampling", "uniform"),
              "transform": transform}
    thresholds, n_resamples = None, p.get("bootstrap", 0)
    if p.get("threshold_split") == "dev":
        dev = dev_eval.development(codes[rows], demographic[rows], p["dev_fraction"], seed)
        thresholds = fit_thresholds(X, codes, demographic, rows[dev], **common)
        rows, n_resamples = rows[~dev], 0
    return impostor_matrix(X, codes, demographic, rows, n_resamples=n_resamples, thresholds=thresholds,
                           acquired=acquired, **common)


def run(payload: Mapping[str, Any], data: Mapping[str, np.ndarray]) -> dict[str, pd.DataFrame]:
    """Worker entry of an impostor-matrix job: the cross-group FMR matrix and each group's rates (with a dev split:
    thresholds chosen on the development identities, everything measured on the evaluation ones), and with
    ``face_detected`` in the data each group's failure to acquire over all the job's images."""
    p, seed, rows = payload["params"], payload["seed"], np.asarray(payload["rows"])
    demographic = job_groups(data, rows)
    acquired = data.get("face_detected")
    out = seed_tables(data["X"], data["identity_codes"], demographic, rows, p, seed, acquired=acquired)
    if acquired is not None:
        every = np.asarray(payload["rows"])
        out["acquisition"] = acquisition.fta_table(demographic[every], np.asarray(acquired)[every],
                                                   list(out["demographic_rates"]["group"]))
    return {name: df.assign(seed=seed) for name, df in out.items()}



KIND = register(JobKind(
    "impostor", plan=_plan_impostor,
    rows=lambda p, split: {"rows": np.concatenate([split.verification[g] for g in p["test_groups"]])},
    run="tasks.kinds.impostor:run", tables=TABLES, order=1, cost=lambda p: 1 + p.get("bootstrap", 0) // 100,
    config=ConfigPart("verification", DEFAULTS, _check_config), check=check_dev_split,
    report=("grid.report.sections.verification:SECTION",)))
