"""Job kind "pairs": a standard verification pair protocol (LFW/RFW pairs files, an RFW folder, or a CSV
``image_a, image_b, same[, fold]``) evaluated on the table's embeddings, per group as the papers do.

``[verification] pairs = PATH`` adds one job. The driver parses the file when planning and checks it against the
table before any job runs (:func:`check`: so a bad file is refused before anything runs, and the pairs themselves
are part of the job's parameters and id); the worker maps each
pair to its two table rows (:func:`tasks.stats.pairs.map_pairs`, by identity and image name), scores it (cosine) and
runs :func:`tasks.stats.pairs.protocol_report`: per group 10-fold accuracy mean ± std, EER and FNMR at each target FMR
on the same pairs; across groups the std of the groups' accuracies and the skewed error ratio. A pair's group is
its RFW group (RFW folder) or the group-axis value (``[grid] group``: ethnicity by default, gender for LFW, say) of
its first image.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from storage.attributes import group_labels
from storage.errors import InputError
from storage.schema import result_table
from tasks.kinds import ConfigPart, JobKind, PlannedJob, Where, register
from tasks.runtime import row_groups
from tasks.stats import pairs, rates

TABLES = (
    result_table("pair_groups", "pairs_file", {
        "pairs_file": "string", "group": "string", "n_pairs": "int", "n_genuine": "int", "n_impostor": "int",
        "accuracy_mean": "float", "accuracy_std": "float", "accuracy_se": "float", "eer": "float",
        "eer_threshold": "float"}),
    result_table("pair_operating_points", "pairs_file", {
        "pairs_file": "string", "group": "string", "target_fmr": "float", "threshold": "float",
        "false_matches": "int", "n_impostor": "int", "fnmr": "float", "resolved": "bool", "reason": "string"}),
    result_table("pair_across", "pairs_file", {
        "pairs_file": "string", "n_groups": "int", "accuracy_std_groups": "float", "skewed_error_ratio": "float",
        "best_group": "string", "worst_group": "string", "note": "string"}),
)

_FIELDS = ["line", "fold", "identity_a", "image_a", "identity_b", "image_b", "same", "group"]


def read_pairs(path: str) -> pd.DataFrame:
    """The pairs of ``path``: an RFW folder (root/txts/<G>/<G>_pairs.txt), a CSV, or an LFW/RFW pairs text file;
    columns :data:`tasks.stats.pairs.PAIR_COLUMNS` plus group ("" when the file has none)."""
    p = Path(path)
    if p.is_dir():
        out = pairs.read_rfw(p)
    elif p.suffix.lower() == ".csv":
        out = pairs.parse_pairs_csv(p)
    else:
        out = pairs.parse_pairs_txt(p)
    if "group" not in out:
        out["group"] = ""
    return out


def evaluate(X: np.ndarray, identity: np.ndarray, image: np.ndarray, group: np.ndarray, table: pd.DataFrame,
             target_fmrs: list[float]) -> dict[str, pd.DataFrame]:
    """Map, score (cosine) and evaluate the pairs ``table`` (``group``: each row's group-axis name, the group of
    a pair whose file gives none). Returns {"pair_groups":
    group, n_pairs, n_genuine, n_impostor, accuracy_mean, accuracy_std, accuracy_se, eer, eer_threshold;
    "pair_operating_points": group, target_fmr, threshold, false_matches, n_impostor, fnmr, resolved, reason; "pair_across": n_groups,
    accuracy_std_groups, skewed_error_ratio, best_group, worst_group, note}."""
    ra, rb = pairs.map_pairs(table, identity, image)
    A, B = np.asarray(X[ra], dtype=np.float64), np.asarray(X[rb], dtype=np.float64)
    scores = np.einsum("ij,ij->i", A, B) / (np.linalg.norm(A, axis=1) * np.linalg.norm(B, axis=1))
    group = _pair_groups(table, ra, group)
    rep = pairs.protocol_report(scores, table["same"].to_numpy(bool), table["fold"].to_numpy(), group,
                                target_fmrs)
    g = rep["groups"]
    ops = []
    for _, row in g.iterrows():
        for x in target_fmrs:
            k = rates.fmr_key(x)
            ops.append({"group": row["group"], "target_fmr": float(x), "threshold": row[f"threshold_at_fmr_{k}"],
                        "false_matches": int(row[f"false_matches_at_fmr_{k}"]), "n_impostor": int(row["n_impostor"]),
                        "fnmr": row[f"fnmr_at_fmr_{k}"], "resolved": bool(row[f"resolved_at_fmr_{k}"]),
                        "reason": row[f"reason_at_fmr_{k}"]})
    base = ["group", "n_pairs", "n_genuine", "n_impostor", "accuracy_mean", "accuracy_std", "accuracy_se", "eer",
            "eer_threshold"]
    return {"pair_groups": g[base], "pair_operating_points": pd.DataFrame(ops), "pair_across": rep["across"]}


def _pair_groups(table: pd.DataFrame, ra: np.ndarray, group: np.ndarray) -> np.ndarray:
    """Each pair's group: its file's group (RFW), else its first image's (row ``ra``) ``group`` name."""
    given = table["group"].astype(str).to_numpy()
    return np.where(given == "", np.asarray(group)[ra].astype(str), given)


def check(path: str, params: Mapping[str, Any], identity: np.ndarray, image: np.ndarray, group: np.ndarray) -> None:
    """On the driver, before any job runs: InputError naming the pairs file ``path`` (and line) when a pair of the
    job's ``params`` names an image that is not in the table (or is ambiguous), or a group's pairs cannot run the
    protocol (one fold, one kind of pair; :func:`tasks.stats.pairs.check_folds`)."""
    table = pd.DataFrame(params["pairs"], columns=_FIELDS)
    rfw = Path(path).is_dir()
    table["source"] = ([str(Path(path) / "txts" / g / f"{g}_pairs.txt") for g in table["group"]] if rfw
                       else path)
    ra, _ = pairs.map_pairs(table, identity, image)
    pairs.check_folds(table["same"].to_numpy(bool), table["fold"].to_numpy(), _pair_groups(table, ra, group), path)


# ------------------------------------------------------------------------------------------------- the kind ---
def _plan(cfg: Mapping[str, Any]) -> Iterator[PlannedJob]:
    """One pairs job when ``[verification] pairs`` names a file or folder (parsed here, on the driver)."""
    v = cfg["verification"]
    if not v["enabled"] or not v["pairs"]:
        return
    table = read_pairs(v["pairs"])
    records = table.assign(line=table["line"].astype(int), fold=table["fold"].astype(int),
                           same=table["same"].astype(bool))[_FIELDS].values.tolist()
    params = {"pairs_file": Path(v["pairs"]).name, "pairs": records, "target_fmrs": list(v["target_fmrs"])}
    yield PlannedJob(cfg["grid"]["seeds"][0], params, f"pairs {Path(v['pairs']).name} ({len(records)} pairs)")


def run(payload: Mapping[str, Any], data: Mapping[str, np.ndarray]) -> dict[str, pd.DataFrame]:
    """Worker entry of a pairs job: the protocol's per-group, operating-point and across-group rows."""
    p = payload["params"]
    table = pd.DataFrame(p["pairs"], columns=_FIELDS).assign(source=p["pairs_file"])
    out = evaluate(data["X"], data["identity"], data["image"], row_groups(data, axis="group"), table,
                   p["target_fmrs"])
    return {name: df.assign(pairs_file=p["pairs_file"]) for name, df in out.items()}


def _check_config(cfg: dict[str, Any], where: Where) -> None:
    v = cfg["verification"]
    if v["pairs"] and not Path(v["pairs"]).exists():
        raise InputError(f"{where('verification.pairs')}: {v['pairs']} does not exist (expected an LFW/RFW pairs "
                         f"file, an RFW folder or a CSV image_a, image_b, same[, fold])")


def _check_jobs(cfg: Mapping[str, Any], table: Any, splits: Mapping[int, Any], jobs: list[Any]) -> None:
    """Before any job runs: the pairs file of each pairs job against the table (:func:`check`)."""
    group = group_labels(table, [cfg["grid"]["group"]], cfg["attributes"]["bins"]).per_row() if jobs else None
    for job in jobs:
        check(cfg["verification"]["pairs"], job.params, table.identity, table.image, group)


KIND = register(JobKind(
    "pairs", plan=_plan, rows=lambda p, split: {}, run="tasks.kinds.pairs:run", tables=TABLES, order=2,
    config=ConfigPart("verification", {"pairs": ""}, _check_config),   # a pairs file or RFW folder; "" = none
    check=_check_jobs, report=("grid.report.sections.verification:SECTION",)))
