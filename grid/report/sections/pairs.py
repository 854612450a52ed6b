"""A standard pair protocol (LFW/RFW pairs) as stored by its job."""

from __future__ import annotations

import pandas as pd

from grid.report.blocks import Block, Table, num, pm, yes
from grid.report.results import Results


def pair_protocol(res: Results) -> dict[str, pd.DataFrame]:
    """The stored pair-protocol tables ([verification] pairs), as written by the pairs job: "groups" (10-fold
    accuracy mean/std/se, EER per group), "operating_points" (FNMR at each target FMR with the resolution flag),
    "across" (std of the groups' accuracies, skewed error ratio)."""
    return {"groups": res.tables["pair_groups"], "operating_points": res.tables["pair_operating_points"],
            "across": res.tables["pair_across"]}


def pair_blocks(res: Results) -> list[Block]:
    """The standard pair protocol ([verification] pairs), when stored."""
    p = pair_protocol(res)
    if p["groups"].empty:
        return []
    blocks: list[Block] = [("h3", "Standard pair protocol")]
    blocks.append(("p", "The pairs of the protocol file, scored on this table's embeddings, per group as the LFW/RFW "
                        "papers do: 10-fold accuracy (threshold chosen on 9 folds, applied to the 10th) mean ± std "
                        "(ddof = 1) and standard error; EER and FNMR at each target FMR on the same pairs; across "
                        "groups the std of the accuracies and the skewed error ratio (docs/REPORT.md)."))
    g = p["groups"]
    frame = pd.DataFrame({"file": g["pairs_file"], "group": g["group"], "pairs": g["n_pairs"].astype(str),
                          "accuracy (%)": [pm(m, sd, 2, 100) for m, sd in zip(g["accuracy_mean"], g["accuracy_std"])],
                          "standard error (%)": [num(v * 100, 2) for v in g["accuracy_se"]],
                          "EER (%)": [num(v * 100, 2) for v in g["eer"]]})
    blocks.append(("table", Table(frame, "Pair protocol: 10-fold accuracy and EER per group")))
    o = p["operating_points"]
    frame = pd.DataFrame({"file": o["pairs_file"], "group": o["group"],
                          "target FMR": [f"{v:g}" for v in o["target_fmr"]],
                          "FNMR (%)": [num(v * 100, 2) for v in o["fnmr"]],
                          "false matches / impostors": [f"{k} / {n}" for k, n in
                                                        zip(o["false_matches"], o["n_impostor"])],
                          "resolved": [yes(v) for v in o["resolved"]], "reason": o["reason"]})
    blocks.append(("table", Table(frame, "Pair protocol: FNMR at target FMR per group")))
    a = p["across"]
    frame = pd.DataFrame({"file": a["pairs_file"], "groups": a["n_groups"].astype(str),
                          "std of accuracies (%)": [num(v * 100, 2) for v in a["accuracy_std_groups"]],
                          "skewed error ratio": [num(v, 2) for v in a["skewed_error_ratio"]],
                          "best": a["best_group"], "worst": a["worst_group"], "note": a["note"]})
    blocks.append(("table", Table(frame, "Pair protocol: across groups")))
    return blocks
