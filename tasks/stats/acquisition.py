"""Failure to acquire (FTA) per demographic group, and verification rates that count acquisition failures.

An image *failed* when the face detector found no face in it (``face_detected = False`` in the table; ``biasgrid
data embed`` then embedded its centre crop). Per group g: FTA_g = failed images / images, with its
Clopper-Pearson interval. At one threshold t, two views of the rates (docs/REPORT.md, "Failure to acquire"):

- **excluded**: only comparisons whose two images were both acquired count (ISO/IEC 2382-37: FNMR is a
  proportion of *completed* comparisons);
- **generalised** (the convention of ISO/IEC 19795-1's generalised rates, per comparison): every comparison counts;
  a genuine comparison involving a failed image is a non-match (a false non-match whatever its score), and an
  impostor comparison involving a failed image is a non-match too, so it is never a false match.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from tasks.stats import rates


def fta_table(row_group: np.ndarray, acquired: np.ndarray, groups: Sequence[str],
              confidence: float = rates.CONFIDENCE) -> pd.DataFrame:
    """Per group of ``groups`` (``row_group``: each image's group name; ``acquired``: whether its face was found):
    columns group, n_images, failed, fta = failed / n_images, fta_ci_low, fta_ci_high (Clopper-Pearson), display."""
    row_group, acquired = np.asarray(row_group).astype(str), np.asarray(acquired, dtype=bool)
    n = np.array([np.count_nonzero(row_group == g) for g in groups], np.int64)
    k = np.array([np.count_nonzero((row_group == g) & ~acquired) for g in groups], np.int64)
    f = rates.rate_frame(k, n, confidence=confidence)
    return pd.DataFrame({"group": list(groups), "n_images": n, "failed": k, "fta": f["rate"],
                         "fta_ci_low": f["ci_low"], "fta_ci_high": f["ci_high"], "display": f["display"]})


def acquisition_rates(genuine: np.ndarray, genuine_group: np.ndarray, genuine_ok: np.ndarray, impostor: np.ndarray,
                      impostor_group_a: np.ndarray, impostor_group_b: np.ndarray, impostor_ok: np.ndarray,
                      threshold: float, groups: Sequence[str],
                      confidence: float = rates.CONFIDENCE) -> pd.DataFrame:
    """Each group's FMR and FNMR at ``threshold`` in both views of the module docstring. A group's comparisons are
    as in ``demographic_rates``: its identities' genuine ones, its impostors with both images in it; ``*_ok``: both
    images of the comparison were acquired. Columns: group, view (excluded | generalised), threshold,
    false_matches, n_impostor, fmr, fmr_ci_low, fmr_ci_high, false_non_matches, n_genuine, fnmr, fnmr_ci_low,
    fnmr_ci_high (Clopper-Pearson)."""
    g, gok, i, iok = (np.asarray(genuine, float), np.asarray(genuine_ok, bool), np.asarray(impostor, float),
                      np.asarray(impostor_ok, bool))
    gg, ia, ib = (rates.label_codes(x, groups) for x in (genuine_group, impostor_group_a, impostor_group_b))
    rows = []
    for k, name in enumerate(groups):
        gen, imp = gg == k, (ia == k) & (ib == k)
        accepted, rejected = imp & iok & (i >= threshold), gen & gok & (g < threshold)
        rows.append((name, "excluded", int(accepted.sum()), int((imp & iok).sum()), int(rejected.sum()),
                     int((gen & gok).sum())))
        rows.append((name, "generalised", int(accepted.sum()), int(imp.sum()),
                     int(rejected.sum() + (gen & ~gok).sum()), int(gen.sum())))
    out = pd.DataFrame(rows, columns=["group", "view", "false_matches", "n_impostor", "false_non_matches",
                                      "n_genuine"])
    out.insert(2, "threshold", float(threshold))
    for rate, k, n in (("fmr", "false_matches", "n_impostor"), ("fnmr", "false_non_matches", "n_genuine")):
        f = rates.rate_frame(out[k], out[n], confidence=confidence)
        out[rate], out[f"{rate}_ci_low"], out[f"{rate}_ci_high"] = f["rate"], f["ci_low"], f["ci_high"]
    return out[["group", "view", "threshold", "false_matches", "n_impostor", "fmr", "fmr_ci_low", "fmr_ci_high",
                "false_non_matches", "n_genuine", "fnmr", "fnmr_ci_low", "fnmr_ci_high"]]
