"""Per-group operating points (own and global thresholds), per-group EER and the identity-bootstrap intervals of the
impostor-matrix jobs."""

from __future__ import annotations

import numpy as np
import pandas as pd

from grid.report.blocks import Block, Table, num, pm, sci, yes
from grid.report.results import Results, demographic_groups
from grid.report.sections import Summaries


def _first_seed(frame: pd.DataFrame) -> int | None:
    """The lowest seed stored in ``frame`` (the seed whose intervals the report shows), None when empty."""
    return int(frame["seed"].min()) if not frame.empty else None


def interval_text(estimate: float, low: float, high: float, digits: int = 3) -> str:
    """'0.0123 [0.0101, 0.0149]'; 'n/a' for an undefined estimate without an interval."""
    if np.isnan(estimate) and np.isnan(low):
        return "n/a"
    est = "n/a" if np.isnan(estimate) else f"{estimate:.{digits}g}"
    return est if np.isnan(low) else f"{est} [{low:.{digits}g}, {high:.{digits}g}]"


def verification_intervals(res: Results, seed: int | None = None) -> pd.DataFrame:
    """One seed's (default: the lowest) identity-bootstrap table: every verification number with its 95%
    percentile interval (ci_low, ci_high), counts k/n and Clopper-Pearson interval (cp_low, cp_high) for rates,
    and ``shown``: the estimate with its bootstrap interval (rates: "k/n" or the rule-of-three bound "<= 3/n" for
    k = 0, then the interval). Columns: the table's, plus shown. Empty when no bootstrap was stored."""
    ci = res.tables["verification_ci"].drop_duplicates(
        ["seed", "quantity", "group_a", "group_b", "target_fmr", "metric"], keep="last")
    seed = _first_seed(ci) if seed is None else seed
    part = ci[ci["seed"] == seed].reset_index(drop=True)
    return part.assign(shown=shown_intervals(part))


def shown_intervals(rows: pd.DataFrame) -> list[str]:
    """Each bootstrap row's (columns ``tasks.stats.bootstrap.COLUMNS``) estimate with its bootstrap interval, as
    :func:`interval_text` ("<= 3/n" bound then the interval for a zero count; thresholds with 5 digits)."""
    shown = []
    for r in rows.itertuples():
        text = interval_text(r.estimate, r.ci_low, r.ci_high, 5 if r.quantity == "threshold" else 3)
        if r.k == 0 and r.n > 0:
            text = f"{r.display} [{r.ci_low:.3g}, {r.ci_high:.3g}]"
        shown.append(text)
    return shown


def impostor_interval_matrix(res: Results, seed: int | None = None) -> pd.DataFrame:
    """One seed's cross-group impostor FMR at the global threshold as text: "k/n-based FMR [CP 95%]" ("<= 3/n
    (0/n)" for no false match) and "(unresolved)" when the pair's comparisons cannot resolve the target FMR.
    group_a (rows) x group_b. Empty when nothing is stored."""
    imp = res.tables["impostor_matrix"].drop_duplicates(["seed", "group_a", "group_b"], keep="last")
    seed = _first_seed(imp) if seed is None else seed
    part = imp[imp["seed"] == seed]
    if part.empty or part["false_matches"].isna().any():     # nothing, or stored before the counts existed
        return pd.DataFrame()
    text = [f"{d} [{lo:.2g}, {hi:.2g}]" + ("" if ok else " (unresolved)")
            for d, lo, hi, ok in zip(part["display"], part["ci_low"], part["ci_high"], part["resolved"])]
    mat = part.assign(text=text).set_index(["group_a", "group_b"])["text"].unstack("group_b")
    order = demographic_groups(res)
    mat = mat.reindex(index=[g for g in order if g in mat.index], columns=[g for g in order if g in mat.columns])
    mat.index.name, mat.columns.name = "group_a", "group_b"
    return mat


def operating_points_summary(res: Results) -> pd.DataFrame:
    """Per group, target FMR and threshold kind (own / global): mean over seeds of the threshold, FMR and FNMR,
    the std (ddof=1) of the FNMR, the counts summed over seeds, the lowest seed's FNMR with its Clopper-Pearson
    interval, and whether every seed resolved the point (else the reasons). Columns: group, target_fmr,
    threshold_kind, n_seeds, threshold_mean, fmr_mean, fnmr_mean, fnmr_std, false_matches, n_impostor,
    false_non_matches, n_genuine, fnmr_seed (text), resolved, reason."""
    ops = res.tables["operating_points"].drop_duplicates(["seed", "group", "target_fmr", "threshold_kind"],
                                                         keep="last")
    columns = ["group", "target_fmr", "threshold_kind", "n_seeds", "threshold_mean", "fmr_mean", "fnmr_mean",
               "fnmr_std", "false_matches", "n_impostor", "false_non_matches", "n_genuine", "fnmr_seed", "resolved",
               "reason"]
    if ops.empty:
        return pd.DataFrame(columns=columns)
    first = _first_seed(ops)
    rows = []
    for (group, target, kind), part in ops.groupby(["group", "target_fmr", "threshold_kind"], sort=False):
        one = part[part["seed"] == first]
        rows.append({"group": group, "target_fmr": target, "threshold_kind": kind, "n_seeds": len(part),
                     "threshold_mean": part["threshold"].mean(), "fmr_mean": part["fmr"].mean(),
                     "fnmr_mean": part["fnmr"].mean(),
                     "fnmr_std": part["fnmr"].std(ddof=1) if len(part) > 1 else np.nan,
                     **{c: int(part[c].sum()) for c in ("false_matches", "n_impostor", "false_non_matches",
                                                         "n_genuine")},
                     "fnmr_seed": "" if one.empty else interval_text(one["fnmr"].iloc[0], one["fnmr_ci_low"].iloc[0],
                                                                     one["fnmr_ci_high"].iloc[0]),
                     "resolved": bool(part["resolved"].all()),
                     "reason": "; ".join(sorted(set(r for r in part["reason"] if r)))})
    out = pd.DataFrame(rows, columns=columns)
    order = {g: i for i, g in enumerate(["all", *demographic_groups(res)])}
    out["_o"] = out["group"].map(order).fillna(len(order))
    return out.sort_values(["_o", "threshold_kind", "target_fmr"], ascending=[True, False, False],
                           kind="stable").drop(columns="_o").reset_index(drop=True)


def group_eer_summary(res: Results) -> pd.DataFrame:
    """Each demographic group's own EER and d' (and "all"): mean and std (ddof=1) over seeds (d' NaN for results
    stored before it). Columns: group, n_seeds, eer_mean, eer_std, eer_threshold_mean, d_prime_mean, d_prime_std."""
    eer = res.tables["group_eer"].drop_duplicates(["seed", "group"], keep="last")
    columns = ["group", "n_seeds", "eer_mean", "eer_std", "eer_threshold_mean", "d_prime_mean", "d_prime_std"]
    if eer.empty:
        return pd.DataFrame(columns=columns)
    out = eer.groupby("group").agg(n_seeds=("seed", "count"), eer_mean=("eer", "mean"),
                                   eer_std=("eer", lambda v: v.std(ddof=1)),
                                   eer_threshold_mean=("eer_threshold", "mean"),
                                   d_prime_mean=("d_prime", "mean"), d_prime_std=("d_prime", lambda v: v.std(ddof=1)))
    out = out.reindex([g for g in ["all", *demographic_groups(res)] if g in out.index]).reset_index()
    return out[columns]


def interval_blocks(res: Results, s: Summaries) -> list[Block]:
    """Per-group EER and operating points (own and global thresholds), and the identity-bootstrap intervals."""
    blocks: list[Block] = [("h3", "Per-group operating points")]
    ops, eer = s["operating_points"], s["group_eer"]
    if ops.empty:
        blocks.append(("note", "No per-group operating points are stored (results written before them)."))
        return blocks
    blocks.append(("p", "Each demographic group's own EER, its own threshold at each target FMR (the convention of "
                        "docs/REPORT.md applied to its impostors) and the FNMR there, beside the rates at the one "
                        "global threshold. Mean over seeds; counts summed over seeds; the lowest seed's FNMR with "
                        "its Clopper–Pearson 95% interval. Unresolved: too few impostor comparisons for the target "
                        "(n < 1/FMR) or no false match at the threshold — the reason is given."))
    if not eer.empty:
        frame = pd.DataFrame({"group": eer["group"],
                              "EER (%)": [pm(m, sd, 2, 100) for m, sd in zip(eer["eer_mean"], eer["eer_std"])],
                              "EER threshold": [num(v) for v in eer["eer_threshold_mean"]],
                              "d'": [pm(m, sd, 2) for m, sd in zip(eer["d_prime_mean"], eer["d_prime_std"])],
                              "seeds": eer["n_seeds"].astype(str)})
        blocks.append(("table", Table(frame, "EER per demographic group, with the decidability d'", notes=[
            "d' = |mean genuine − mean impostor score| / sqrt((var genuine + var impostor) / 2): how far apart the "
            "group's two score distributions lie (larger = easier to tell apart; docs/REPORT.md)."])))
    frame = pd.DataFrame({
        "group": ops["group"], "threshold": ops["threshold_kind"], "target FMR": [f"{v:g}" for v in ops["target_fmr"]],
        "t": [num(v) for v in ops["threshold_mean"]], "FMR": [sci(v) for v in ops["fmr_mean"]],
        "FNMR (%)": [pm(m, sd, 2, 100) for m, sd in zip(ops["fnmr_mean"], ops["fnmr_std"])],
        "false matches / impostors": [f"{k:,} / {n:,}" for k, n in zip(ops["false_matches"], ops["n_impostor"])],
        "FNMR, lowest seed [95% CP]": ops["fnmr_seed"],
        "resolved": [yes(v) for v in ops["resolved"]], "reason": ops["reason"],
    })
    blocks.append(("table", Table(frame, "Own and global operating points per group")))
    ci = verification_intervals(res)
    if ci.empty:
        blocks.append(("note", "No identity-bootstrap intervals are stored ([verification] bootstrap = 0)."))
        return blocks
    seed, r = int(ci["seed"].iloc[0]), int(ci["n_resamples"].iloc[0])
    blocks.append(("h3", f"Uncertainty within a seed (identity bootstrap, seed {seed})"))
    blocks.append(("p", f"Every verification number of seed {seed} with its 95% percentile interval over {r} "
                        "identity-bootstrap resamples (identities resampled within each group; docs/REPORT.md), "
                        "and for rates the counts k/n (a zero count shown as its rule-of-three bound) and the "
                        "Clopper–Pearson interval, the binomial floor of the uncertainty. All seeds: "
                        "verification_intervals.csv."))
    frame = pd.DataFrame({
        "quantity": ci["quantity"], "group(s)": [a if not b else f"{a} × {b}" for a, b in zip(ci["group_a"],
                                                                                            ci["group_b"])],
        "target FMR": ["" if pd.isna(t) else f"{t:g}" for t in ci["target_fmr"]], "summary": ci["metric"],
        "estimate [bootstrap 95%]": ci["shown"],
        "Clopper–Pearson 95%": ["" if pd.isna(lo) else f"[{lo:.3g}, {hi:.3g}]"
                                for lo, hi in zip(ci["cp_low"], ci["cp_high"])],
        "note": ci["note"].fillna(""),
    })
    blocks.append(("table", Table(frame, f"Verification numbers with 95% intervals (seed {seed})")))
    return blocks
