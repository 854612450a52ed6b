"""The report of a results folder: its content as blocks (headings, paragraphs, tables of display strings,
figures), written as report.html (self-contained), report.md, tables.tex, CSV and PNG files.

    from grid.report import load_results, write_report
    write_report(load_results("results"))        # -> results/report/report.html

The CSVs hold the unformatted numbers (mean, std and n as separate columns). A results folder with failed or
missing jobs, or with empty tables, still gives a report that says what is missing. Formulas: docs/REPORT.md.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from grid.report import figures, stats
from grid.report.render import CORNER, METRIC_TITLES, slug, render_html, render_latex, render_markdown
from grid.report.results import Results
from storage.errors import EnvironmentFailure, InputError
from storage.results import ResultStore, check_outside_results
from tasks import rates as trates

REPORT_DIR = "report"
HTML_FILE = "report.html"


# ------------------------------------------------------------------------------------------------- formatting
def _num(v: Any, digits: int = 3) -> str:
    return "—" if v is None or pd.isna(v) else f"{v:.{digits}f}"


def _pm(mean: Any, std: Any, digits: int = 3, scale: float = 1.0) -> str:
    if mean is None or pd.isna(mean):
        return "—"
    if std is None or pd.isna(std):
        return f"{mean * scale:.{digits}f}"
    return f"{mean * scale:.{digits}f} ± {std * scale:.{digits}f}"


def _p(p: Any) -> str:
    if p is None or pd.isna(p):
        return "undefined"
    return "<1e-4" if p < 1e-4 else f"{p:.4f}"


def _sci(v: Any) -> str:
    return "—" if v is None or pd.isna(v) else ("0" if v == 0 else f"{v:.2e}")


def _yes(v: Any) -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return "—"
    return "yes" if bool(v) else "no"


# ---------------------------------------------------------------------------------------------- document model
@dataclass
class Table:
    frame: pd.DataFrame           # display strings; the index is shown as the first column when index_name is set
    caption: str
    index_name: str | None = None
    notes: list[str] = field(default_factory=list)


@dataclass
class FigureBlock:
    name: str                     # file name under figures/
    caption: str
    png: bytes


Block = tuple[str, Any]           # ("h2"|"h3"|"p"|"note"|"pre"|"table"|"figure", content)


def _matrix_blocks(res: Results) -> list[Block]:
    blocks: list[Block] = [("h2", "Accuracy matrices")]
    n = len(res.seeds)
    blocks.append(("p", f"Mean ± standard deviation (ddof=1) over {n} seed{'s' if n != 1 else ''} "
                        f"({', '.join(map(str, res.seeds)) or 'none'}); rows: the group the classifier was trained "
                        f"on, columns: the group it was tested on. † marks a cell with fewer seeds than planned; "
                        f"— a cell without data. The CSV files hold mean, std and n as separate columns."))
    if not res.models:
        blocks.append(("note", "No accuracy results are stored: every cell job failed or is missing "
                               "(see Failed and missing jobs)."))
    for model in res.models:
        blocks.append(("h3", f"Model: {model}"))
        fig = figures.plot_accuracy(res, model, ("accuracy",))
        if fig is not None:
            blocks.append(("figure", FigureBlock(f"accuracy_{slug(model)}.png",
                                            f"{model}: accuracy, mean ± std over seeds", _png(fig))))
        for metric in stats.METRICS:
            notes = [f"† {line}" for line in stats.incomplete_cells(res, metric, model)]
            blocks.append(("table", Table(stats.matrix_text(res, model, metric), f"{model}: {METRIC_TITLES[metric]}",
                                          CORNER, notes)))
        fig = figures.plot_accuracy(res, model, ("accuracy_male", "accuracy_female"))
        if fig is not None:
            blocks.append(("figure", FigureBlock(f"accuracy_gender_{slug(model)}.png",
                                            f"{model}: accuracy on men and on women", _png(fig))))
    return blocks


def _bias_blocks(res: Results, s: dict[str, pd.DataFrame]) -> list[Block]:
    blocks: list[Block] = [("h2", "Bias summaries (accuracy)")]
    spread = s["row_spread"]
    blocks.append(("h3", "Spread across test groups, per training group"))
    blocks.append(("p", "From the mean matrix: range = max − min of the test groups' accuracies, std across "
                        "groups (population std), skewed error ratio (SER) = highest error / lowest error with "
                        "error = 1 − accuracy. The range's ± is the standard deviation over seeds of the range "
                        "computed per seed; the SER per seed, unstable when an error is near 0, is given as its "
                        "lowest and highest value over seeds."))
    if spread.empty:
        blocks.append(("note", "No accuracy results: nothing to summarise."))
    else:
        frame = pd.DataFrame({
            "model": spread["model"], "trained on": spread["train_group"],
            "best test group": [f"{g} ({_num(v)})" for g, v in zip(spread["best_test_group"], spread["best"])],
            "worst test group": [f"{g} ({_num(v)})" for g, v in zip(spread["worst_test_group"], spread["worst"])],
            "range": [_pm(m, s_) for m, s_ in zip(spread["range"], spread["range_sd"])],
            "std across groups": [_num(v) for v in spread["std_groups"]],
            "SER": [_num(v, 2) for v in spread["skewed_error_ratio"]],
            "SER per seed [min, max]": [f"[{_num(lo, 2)}, {_num(hi, 2)}]" if not pd.isna(lo) else "—"
                                        for lo, hi in zip(spread["ser_seed_min"], spread["ser_seed_max"])],
            "seeds": spread["n_seeds"].astype(str), "note": spread["note"].fillna(""),
        })
        blocks.append(("table", Table(frame, "Spread across test groups")))

    best = s["best_train_group"]
    blocks.append(("h3", "Best training group for each test group"))
    blocks.append(("p", "The training group with the highest mean accuracy on each test group, its margin over "
                        "the runner-up (mean paired difference over seeds, 95% t confidence interval) and the "
                        "paired t-test p-value of best vs runner-up."))
    if best.empty:
        blocks.append(("note", "No accuracy results: nothing to compare."))
    else:
        frame = pd.DataFrame({
            "model": best["model"], "tested on": best["test_group"],
            "best trained on": [f"{g} ({_num(v)})" for g, v in zip(best["best_train_group"], best["best_mean"])],
            "runner-up": [f"{g} ({_num(v)})" if isinstance(g, str) else "—"
                          for g, v in zip(best["runner_up"], best["runner_up_mean"])],
            "margin [95% CI]": [_ci(m, lo, hi) for m, lo, hi in zip(best["margin"], best["ci_low"], best["ci_high"])],
            "p": [_p(p) for p in best["p_value"]], "pairs": best["n_pairs"].astype(str),
            "same group best": [_yes(v) for v in best["same_group_is_best"]],
            "all best": [_yes(v) for v in best["all_is_best"]], "note": best["note"].fillna(""),
        })
        blocks.append(("table", Table(frame, "Best training group per test group")))

    diff = s["paired_differences"]
    blocks.append(("h3", "Off-diagonal cells against same-group training (paired by seed)"))
    blocks.append(("p", "For each test group T and each other training group G (including all), the per-seed "
                        "difference accuracy(G → T) − accuracy(T → T), paired by seed (same split). Mean "
                        "difference with its 95% t confidence interval; two p-values, each Holm-adjusted over the "
                        "model's comparisons: p (t) from the plain paired t-test and p (NB) from the Nadeau–Bengio "
                        "corrected resampled t-test, whose variance (1/J + n_test/n_train)·s² accounts for the "
                        "training sets the seeds share (the plain test's is too small). Negative = worse than "
                        "training on the test group itself. Significant = Holm-adjusted plain p < 0.05."))
    if diff.empty:
        blocks.append(("note", "No comparison: the grid has no cell trained and tested on the same group, "
                               "or no accuracy results."))
    else:
        frame = pd.DataFrame({
            "model": diff["model"], "tested on": diff["test_group"], "trained on": diff["train_group"],
            "vs": diff["reference"],
            "difference [95% CI]": [_ci(m, lo, hi) for m, lo, hi in
                                    zip(diff["mean_diff"], diff["ci_low"], diff["ci_high"])],
            "p (t)": [_p(p) for p in diff["p_value"]], "p (t, Holm)": [_p(p) for p in diff["p_holm"]],
            "p (NB)": [_p(p) for p in diff["p_corrected"]], "p (NB, Holm)": [_p(p) for p in diff["p_holm_corrected"]],
            "pairs": diff["n_pairs"].astype(str),
            "significant": [_yes(sig) if not pd.isna(p) else "—" for sig, p in zip(diff["significant"],
                                                                                  diff["p_holm"])],
            "note": diff["note"].fillna(""),
        })
        blocks.append(("table", Table(frame, "Paired differences to the same-group cell")))

    eo = s["equalized_odds"]
    blocks.append(("h3", "Equalized-odds difference across test groups"))
    blocks.append(("p", "Per trained model, from its stored predictions (predictions table): max(TPR spread, FPR "
                        "spread) across the test groups, female = positive (Fairlearn's equalized_odds_difference); "
                        "0 = the same error profile in every group. Mean ± std over seeds, and each seed's value."))
    if eo.empty:
        blocks.append(("note", "No predictions are stored (results written before the predictions table)."))
    else:
        frame = pd.DataFrame({
            "model": eo["model"], "trained on": eo["train_group"],
            "equalized-odds difference": [_pm(m, sd) for m, sd in zip(eo["value_mean"], eo["value_std"])],
            "TPR spread": [_num(v) for v in eo["tpr_difference_mean"]],
            "FPR spread": [_num(v) for v in eo["fpr_difference_mean"]],
            "per seed": eo["per_seed"], "note": eo["note"].fillna(""),
        })
        blocks.append(("table", Table(frame, "Equalized-odds difference (mean over seeds)")))
    return blocks


def _ci(mean: Any, lo: Any, hi: Any) -> str:
    if mean is None or pd.isna(mean):
        return "—"
    if pd.isna(lo):
        return f"{mean:+.3f}"
    return f"{mean:+.3f} [{lo:+.3f}, {hi:+.3f}]"


def _verification_blocks(res: Results, s: dict[str, pd.DataFrame]) -> list[Block]:
    blocks: list[Block] = [("h2", "Verification")]
    ver = s["verification"]
    blocks.append(("p", "Cosine-similarity verification of the test identities per ethnicity: genuine pairs are two "
                        "images of the same identity, impostor pairs images of different identities. Rates in %, "
                        "mean ± std over seeds."))
    if ver.empty:
        blocks.append(("note", "No verification results are stored (verification disabled, or every scores job "
                               "failed or is missing)."))
    else:
        frame = pd.DataFrame({
            "test group": ver["test_group"],
            "EER (%)": [_pm(m, sd, 2, 100) for m, sd in zip(ver["eer_mean"], ver["eer_std"])],
            "FNMR @ FMR=1e-3 (%)": [_pm(m, sd, 2, 100) for m, sd in
                                    zip(ver["fnmr_at_fmr_1e_3_mean"], ver["fnmr_at_fmr_1e_3_std"])],
            "FNMR @ FMR=1e-2 (%)": [_pm(m, sd, 2, 100) for m, sd in
                                    zip(ver["fnmr_at_fmr_1e_2_mean"], ver["fnmr_at_fmr_1e_2_std"])],
            "EER threshold": [_num(v) for v in ver["eer_threshold_mean"]],
            "genuine / impostor pairs": [f"{g:,.0f} / {i:,.0f}" for g, i in zip(ver["n_genuine"], ver["n_impostor"])],
            "seeds": ver["n_seeds"].astype(str),
        })
        if ver["eer_ci_low"].notna().any():
            seed = int(ver["ci_seed"].min())
            for m, label in (("eer", "EER"), ("fnmr_at_fmr_1e_3", "FNMR @ 1e-3")):
                frame[f"{label}, seed {seed} [95% CI] (%)"] = [
                    stats.interval_text(100 * v, 100 * lo, 100 * hi) for v, lo, hi in
                    zip(ver[f"{m}_seed"], ver[f"{m}_ci_low"], ver[f"{m}_ci_high"])]
        notes = ["Impostor pairs were sampled (not every pair scored) in at least one seed of: "
                 + ", ".join(ver.loc[ver["impostor_sampled"], "test_group"])] if ver["impostor_sampled"].any() else []
        if ver["eer_ci_low"].notna().any():
            notes.append("Seed columns: that seed's value with its 95% identity-bootstrap percentile interval "
                         "(identities resampled within each gender of the test group; docs/REPORT.md); the mean "
                         "± std columns show the spread over seeds (other splits).")
        blocks.append(("table", Table(frame, "EER and FNMR per test group", None, notes)))
    for name, plot, caption in (
            ("scores.png", figures.plot_score_densities, "Genuine and impostor score densities per test group, "
                                                         "EER threshold marked"),
            ("error_rates.png", figures.plot_error_rates, "FMR and FNMR against the threshold, and DET curves "
                                                          "(mean over seeds)")):
        fig = plot(res)
        if fig is not None:
            blocks.append(("figure", FigureBlock(name, caption, _png(fig))))

    blocks.append(("h3", "Demographic differentials at the global threshold"))
    blocks.append(("p", "One threshold for everyone (FMR = 1e-3 over all impostor pairs); each demographic group's "
                        "own FMR and FNMR at it, and the summaries used in the field (docs/REPORT.md): NIST's "
                        "Max/Min and Max/GeoMean (1 = equal), FDR (1 = no discrepancy) and GARBE (0 = equal), "
                        "a = 0.5, computed per seed then mean ± std. A ratio with a zero rate is undefined and "
                        "reported as such."))
    rates = s["demographic_rates"]
    if rates.empty:
        blocks.append(("note", "No demographic rates are stored (the impostor job failed, is missing, or "
                               "verification is disabled)."))
    else:
        frame = pd.DataFrame({
            "group": rates["group"],
            "FMR": [_sci(m) + ("" if pd.isna(sd) else f" ± {_sci(sd)}") for m, sd in
                    zip(rates["fmr_mean"], rates["fmr_std"])],
            "FNMR (%)": [_pm(m, sd, 2, 100) for m, sd in zip(rates["fnmr_mean"], rates["fnmr_std"])],
            "threshold": [_num(v) for v in rates["threshold_mean"]], "seeds": rates["n_seeds"].astype(str),
        })
        blocks.append(("table", Table(frame, "FMR and FNMR per demographic group at the global threshold")))
        fig = figures.plot_group_rates(res)
        if fig is not None:
            blocks.append(("figure", FigureBlock("group_rates.png", "FMR and FNMR per demographic group at the global "
                                                 "threshold, lowest seed, 95% identity-bootstrap intervals (Clopper–"
                                                 "Pearson when no bootstrap is stored); an open marker = 0 false "
                                                 "matches, drawn at its rule-of-three bound 3/n", _png(fig))))
        fair = s["fairness"]
        frame = pd.DataFrame({
            "summary": fair["label"],
            "mean ± std": [_pm(m, sd, 3) if not pd.isna(m) else "undefined" for m, sd in
                           zip(fair["mean"], fair["std"])],
            "defined in seeds": fair["n_seeds"].astype(str), "undefined in seeds": fair["n_undefined"].astype(str),
            "note": fair["note"].fillna(""),
        })
        blocks.append(("table", Table(frame, "Demographic-differential summaries")))
        bounded = s["fairness_bounded_by_seed"]
        if not bounded.empty and (bounded["bound"] == ">=").any():
            b = bounded[bounded["bound"] == ">="]
            frame = pd.DataFrame({"seed": b["seed"].astype(str), "summary": b["metric"],
                                  "lower bound": [f">= {v:.3g}" for v in b["value"]], "note": b["note"]})
            blocks.append(("table", Table(frame, "Ratios over a zero rate, as lower bounds (rule of three)")))
    blocks += _interval_blocks(res, s)
    blocks += _allpairs_blocks(res, s)
    blocks += _pair_blocks(res)
    mat = stats.impostor_fmr_matrix(res)
    blocks.append(("h3", "Cross-group impostor FMR"))
    if mat.empty:
        blocks.append(("note", "No impostor matrix is stored."))
    else:
        blocks.append(("p", "FMR of impostor pairs between an image of group A (rows) and one of group B (columns) at "
                            "the global threshold, mean over seeds."))
        fig = figures.plot_impostor_matrix(res)
        if fig is not None:
            blocks.append(("figure", FigureBlock("impostor_fmr.png", "Cross-group impostor FMR", _png(fig))))
        blocks.append(("table", Table(mat.map(_sci), "Cross-group impostor FMR (mean over seeds)", "A \\ B")))
        ci = stats.impostor_interval_matrix(res)
        if not ci.empty:
            seed = int(res.tables["impostor_matrix"]["seed"].min())
            blocks.append(("table", Table(ci, f"Cross-group impostor FMR, seed {seed}: false matches / pairs with "
                                              f"the Clopper–Pearson 95% interval", "A \\ B")))
    return blocks


def _interval_blocks(res: Results, s: dict[str, pd.DataFrame]) -> list[Block]:
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
                              "EER (%)": [_pm(m, sd, 2, 100) for m, sd in zip(eer["eer_mean"], eer["eer_std"])],
                              "EER threshold": [_num(v) for v in eer["eer_threshold_mean"]],
                              "seeds": eer["n_seeds"].astype(str)})
        blocks.append(("table", Table(frame, "EER per demographic group")))
    frame = pd.DataFrame({
        "group": ops["group"], "threshold": ops["threshold_kind"], "target FMR": [f"{v:g}" for v in ops["target_fmr"]],
        "t": [_num(v) for v in ops["threshold_mean"]], "FMR": [_sci(v) for v in ops["fmr_mean"]],
        "FNMR (%)": [_pm(m, sd, 2, 100) for m, sd in zip(ops["fnmr_mean"], ops["fnmr_std"])],
        "false matches / impostors": [f"{k:,} / {n:,}" for k, n in zip(ops["false_matches"], ops["n_impostor"])],
        "FNMR, lowest seed [95% CP]": ops["fnmr_seed"],
        "resolved": [_yes(v) for v in ops["resolved"]], "reason": ops["reason"],
    })
    blocks.append(("table", Table(frame, "Own and global operating points per group")))
    ci = stats.verification_intervals(res)
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


def _pair_blocks(res: Results) -> list[Block]:
    """The standard pair protocol ([verification] pairs), when stored."""
    p = stats.pair_protocol(res)
    if p["groups"].empty:
        return []
    blocks: list[Block] = [("h3", "Standard pair protocol")]
    blocks.append(("p", "The pairs of the protocol file, scored on this table's embeddings, per group as the LFW/RFW "
                        "papers do: 10-fold accuracy (threshold chosen on 9 folds, applied to the 10th) mean ± std "
                        "(ddof = 1) and standard error; EER and FNMR at each target FMR on the same pairs; across "
                        "groups the std of the accuracies and the skewed error ratio (docs/REPORT.md)."))
    g = p["groups"]
    frame = pd.DataFrame({"file": g["pairs_file"], "group": g["group"], "pairs": g["n_pairs"].astype(str),
                          "accuracy (%)": [_pm(m, sd, 2, 100) for m, sd in zip(g["accuracy_mean"], g["accuracy_std"])],
                          "standard error (%)": [_num(v * 100, 2) for v in g["accuracy_se"]],
                          "EER (%)": [_num(v * 100, 2) for v in g["eer"]]})
    blocks.append(("table", Table(frame, "Pair protocol: 10-fold accuracy and EER per group")))
    o = p["operating_points"]
    frame = pd.DataFrame({"file": o["pairs_file"], "group": o["group"],
                          "target FMR": [f"{v:g}" for v in o["target_fmr"]],
                          "FNMR (%)": [_num(v * 100, 2) for v in o["fnmr"]],
                          "false matches / impostors": [f"{k} / {n}" for k, n in
                                                        zip(o["false_matches"], o["n_impostor"])],
                          "resolved": [_yes(v) for v in o["resolved"]], "reason": o["reason"]})
    blocks.append(("table", Table(frame, "Pair protocol: FNMR at target FMR per group")))
    a = p["across"]
    frame = pd.DataFrame({"file": a["pairs_file"], "groups": a["n_groups"].astype(str),
                          "std of accuracies (%)": [_num(v * 100, 2) for v in a["accuracy_std_groups"]],
                          "skewed error ratio": [_num(v, 2) for v in a["skewed_error_ratio"]],
                          "best": a["best_group"], "worst": a["worst_group"], "note": a["note"]})
    blocks.append(("table", Table(frame, "Pair protocol: across groups")))
    return blocks


def _allpairs_blocks(res: Results, s: dict[str, pd.DataFrame]) -> list[Block]:
    """The exact all-pairs counts ([verification] identities = "all"), when stored, and the identity-bootstrap
    intervals from their tail (``s["allpairs_intervals"]``)."""
    exact = stats.allpairs_summary(res)
    if exact["operating_points"].empty and not exact["note"]:
        return []
    blocks: list[Block] = [("h3", "Exact counts over every pair of the table")]
    if exact["operating_points"].empty:
        blocks.append(("note", exact["note"]))
        return blocks
    blocks.append(("p", "Every image of every identity in the table compared with every other (no sampling, no "
                        "split), counted exactly in score bins; rates at bin-edge thresholds (docs/REPORT.md). "
                        + exact["note"] + "."))
    ops = exact["operating_points"]
    frame = pd.DataFrame({
        "group": ops["group"], "threshold": ops["threshold_kind"], "target FMR": [f"{v:g}" for v in ops["target_fmr"]],
        "t": [f"{v:.5f}" for v in ops["threshold"]], "FMR": ops["fmr_display"],
        "FMR 95% CP": [f"[{lo:.2g}, {hi:.2g}]" for lo, hi in zip(ops["fmr_ci_low"], ops["fmr_ci_high"])],
        "FNMR": ops["fnmr_display"],
        "FNMR 95% CP": [f"[{lo:.3g}, {hi:.3g}]" for lo, hi in zip(ops["fnmr_ci_low"], ops["fnmr_ci_high"])],
        "resolved": [_yes(v) for v in ops["resolved"]], "reason": ops["reason"],
    })
    blocks.append(("table", Table(frame, "All pairs: own and global operating points per group")))
    m = exact["impostor_matrix"]
    text = m.assign(text=[f"{d} [{lo:.2g}, {hi:.2g}]" for d, lo, hi in
                          zip(m["fmr_display"], m["fmr_ci_low"], m["fmr_ci_high"])])
    mat = text.set_index(["group_a", "group_b"])["text"].unstack("group_b")
    blocks.append(("table", Table(mat, "All pairs: cross-group impostor FMR at the global threshold, with the "
                                       "Clopper–Pearson 95% interval", "A \\ B")))
    ci = s["allpairs_intervals"] if "allpairs_intervals" in s else stats.allpairs_intervals(res, exact)
    return blocks + _allpairs_interval_blocks(res, ci)


def _allpairs_interval_blocks(res: Results, ci: pd.DataFrame) -> list[Block]:
    """The identity bootstrap over every pair's tail counts, beside the exact numbers."""
    if ci.empty:
        note = stats.allpairs_intervals_note(res)
        return [("note", note)] if note else []
    r, bits, lo = int(ci["n_resamples"].iloc[0]), int(ci["bits"].iloc[0]), float(ci["lo_score"].iloc[0])
    v = res.config.get("verification") or {}
    blocks: list[Block] = [("p", f"Identity-bootstrap 95% percentile intervals over {r} resamples (identities "
                                 "resampled within each group, seeded by the grid's first seed) of the global "
                                 "threshold, each group's FMR and FNMR at it, the cross-group FMRs and the "
                                 "differential summaries, from per-identity counts of every pair: every genuine "
                                 f"comparison and every impostor comparison scoring >= {lo:.6g} (the tail: one bin "
                                 f"below FMR = {v.get('tail_fmr_factor', 10):g} x the target on a seeded subset of "
                                 f"the table; {int(ci['tail_records'].iloc[0]):,} records), in bins of 2^-{bits}. "
                                 "The bootstrap's thresholds are edges of these bins, so its estimates may differ "
                                 "from the exact numbers (bins of 2^-14) beside them by up to a bin; a resample "
                                 "whose threshold falls below the tail is undefined and counted in the note "
                                 "(docs/REPORT.md). Every row: allpairs_intervals.csv.")]
    exact = []
    for q, value, k, n in zip(ci["quantity"], ci["exact"], ci["exact_k"], ci["exact_n"]):
        if k >= 0 and n >= 0:
            exact.append(trates.format_rate(int(k), int(n)))
        else:
            exact.append("—" if pd.isna(value) else f"{value:.5f}" if q == "threshold" else f"{value:.3g}")
    frame = pd.DataFrame({
        "quantity": ci["quantity"], "group(s)": [a if not b else f"{a} × {b}" for a, b in zip(ci["group_a"],
                                                                                            ci["group_b"])],
        "summary": ci["metric"], "exact (2^-14 bins)": exact,
        f"estimate [bootstrap 95%] (2^-{bits} bins)": stats.shown_intervals(ci),
        "Clopper–Pearson 95%": ["" if pd.isna(lo_) else f"[{lo_:.3g}, {hi:.3g}]"
                                for lo_, hi in zip(ci["cp_low"], ci["cp_high"])],
        "note": ci["note"].fillna(""),
    })
    blocks.append(("table", Table(frame, "All pairs: identity-bootstrap 95% intervals at the global threshold")))
    return blocks


def _tsne_blocks(res: Results) -> list[Block]:
    blocks: list[Block] = [("h2", "t-SNE of the training embeddings")]
    fig = figures.plot_tsne(res)
    if fig is None:
        blocks.append(("note", "No t-SNE results are stored (t-SNE disabled, or its jobs failed or are missing)."))
    else:
        caption = "Men by ethnicity, women by ethnicity, all by ethnicity, all by ethnicity x gender"
        blocks.append(("figure", FigureBlock("tsne.png", caption, _png(fig))))
    return blocks


def _job_blocks(res: Results) -> list[Block]:
    blocks: list[Block] = [("h2", "Failed and missing jobs")]
    status = stats.job_status(res)
    if status.empty:
        blocks.append(("note", "run.json lists no planned jobs and the ledger is empty: missing jobs cannot be "
                               "listed."))
        return blocks
    counts = status["status"].value_counts()
    done, failed, missing, damaged = (int(counts.get(k, 0)) for k in ("done", "failed", "missing", "damaged"))
    if failed == 0 and missing == 0 and damaged == 0:
        blocks.append(("p", f"All {len(status)} planned jobs finished."))
    else:
        broken = (f", {damaged} damaged (stored, but their files are not as written; the next run recomputes "
                  f"them)") if damaged else ""
        blocks.append(("note", f"{done} of {len(status)} jobs done, {failed} failed, {missing} missing{broken} "
                               f"(planned but never finished). The tables and figures use the done jobs only."))
    cells = stats.missing_cells(res)
    if not cells.empty:
        frame = pd.DataFrame({"model": cells["model"], "trained on": cells["train_group"],
                              "failed seeds": [", ".join(map(str, v)) or "—" for v in cells["failed_seeds"]],
                              "missing seeds": [", ".join(map(str, v)) or "—" for v in cells["missing_seeds"]]})
        blocks.append(("table", Table(frame, "Accuracy cells without every seed")))
    bad = status[status["status"] == "failed"]
    if not bad.empty:
        frame = pd.DataFrame({"job": bad["description"], "job id": bad["job_id"],
                              "error": [(e or "").strip() for e in bad["error"]]})
        blocks.append(("table", Table(frame, "Failed jobs (tracebacks: failures.csv beside this report)")))
    broken = status[status["status"] == "damaged"]
    if not broken.empty:
        frame = pd.DataFrame({"job": broken["description"], "job id": broken["job_id"], "what is wrong": broken["error"]})
        blocks.append(("table", Table(frame, "Damaged results (left out of every table and figure)")))
    miss = status[status["status"] == "missing"]
    if not miss.empty:
        frame = pd.DataFrame({"job": miss["description"], "job id": miss["job_id"]})
        blocks.append(("table", Table(frame, "Missing jobs (planned, no ledger record)")))
    for note in res.notes:
        blocks.append(("note", note))
    return blocks


def _config_blocks(res: Results) -> list[Block]:
    blocks: list[Block] = [("h2", "Configuration and provenance")]
    versions = res.run.get("versions") or {}
    facts = pd.DataFrame({"value": [res.fingerprint or "unknown", res.run.get("created_at") or "unknown",
                                    ", ".join(f"{k} {v}" for k, v in versions.items()) or "unknown",
                                    str(res.path)]},
                         index=["data fingerprint", "run created at", "versions", "results folder"])
    blocks.append(("table", Table(facts, "Provenance", "")))
    blocks.append(("pre", json.dumps(res.config, indent=2, sort_keys=False, default=str) if res.config
                   else "(run.json has no config)"))
    return blocks


def build_blocks(res: Results,
                 summaries: dict[str, pd.DataFrame] | None = None) -> list[Block]:
    """The report's content as blocks (see the module docstring); figures rendered to PNG bytes."""
    s = summaries if summaries is not None else stats.all_summaries(res)
    blocks: list[Block] = [("h1", "biasgrid report")]
    status = s["jobs"]
    counts = status["status"].value_counts() if not status.empty else pd.Series(dtype=int)
    blocks.append(("p", f"Models: {', '.join(res.models) or 'none'}; training groups: "
                        f"{', '.join(res.train_groups) or 'none'}; test groups: {', '.join(res.test_groups) or 'none'}"
                        f"; seeds: {', '.join(map(str, res.seeds)) or 'none'}. Data fingerprint: "
                        f"{res.fingerprint or 'unknown'}."))
    if int(counts.get("failed", 0)) or int(counts.get("missing", 0)) or int(counts.get("damaged", 0)):
        damaged = int(counts.get("damaged", 0))
        blocks.append(("note", f"Incomplete run: {int(counts.get('failed', 0))} failed and "
                               f"{int(counts.get('missing', 0))} missing jobs"
                               + (f" and {damaged} damaged results" if damaged else "")
                               + " — see Failed and missing jobs."))
    blocks += _job_blocks(res)
    blocks += _matrix_blocks(res)
    blocks += _bias_blocks(res, s)
    blocks += _verification_blocks(res, s)
    blocks += _tsne_blocks(res)
    blocks += _config_blocks(res)
    blocks.append(("p", "Definitions of every summary (paired test, confidence interval, skewed error ratio, "
                        "Max/Min, Max/GeoMean, FDR, GARBE): docs/REPORT.md in the biasgrid repository."))
    return blocks


def _png(fig) -> bytes:
    import io
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=figures.DPI)
    return buffer.getvalue()


# -------------------------------------------------------------------------------------------------------- write
def report_files(res: Results) -> dict[str, bytes]:
    """Every file of the report, by path within the report folder: report.html (self-contained), report.md,
    tables.tex, figures/*.png and CSVs (accuracy*.csv with mean, std, n per cell; row_spread, best_train_group,
    paired_differences, verification, demographic_rates, fairness, fairness_by_seed, impostor_fmr, jobs, and
    failures with the tracebacks)."""
    files: dict[str, bytes] = {}
    summaries = stats.all_summaries(res)
    for name, frame in summaries.items():
        frame = frame.copy()
        for col in frame.columns:
            if frame[col].map(lambda v: isinstance(v, list)).any():
                frame[col] = frame[col].map(lambda v: " ".join(map(str, v)) if isinstance(v, list) else v)
        files[f"{name}.csv"] = frame.to_csv(index=False).encode()
    files["failures.csv"] = res.tables["failures"].to_csv(index=False).encode()
    blocks = build_blocks(res, summaries)
    for kind, content in blocks:
        if kind == "figure":
            files[f"figures/{content.name}"] = content.png
    files["report.md"] = render_markdown(blocks).encode()
    files["tables.tex"] = render_latex(blocks).encode()
    files[HTML_FILE] = render_html(blocks).encode()
    return files


def write_report(res: Results, out: str | os.PathLike[str] | None = None) -> Path | str:
    """Write the report of loaded results and return the location of its report.html.

    Into ``out`` (a local folder), by default into the results folder's ``report/`` (also when the results
    folder is a URI such as s3://...: never into the current folder). A local report folder is replaced as a
    whole (written beside it, then swapped in), so a full disk leaves the previous report or none, never half
    of one; on an object store each file is replaced whole.
    """
    files = report_files(res)
    if out is None and "://" in str(res.path):
        store = ResultStore(res.path)
        for name, data in files.items():
            store.write_bytes(f"{REPORT_DIR}/{name}", data)
        return f"{str(res.path).rstrip('/')}/{REPORT_DIR}/{HTML_FILE}"
    check_report_out(res.path, out)
    out = Path(out) if out is not None else Path(res.path) / REPORT_DIR
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: the report's output folder is a file")
    _replace_folder(out, files)
    return out / HTML_FILE


def _is_report(folder: Path) -> bool:
    """Whether ``folder`` holds a report and nothing else: the files :func:`report_files` writes."""
    own = {HTML_FILE, "report.md", "tables.tex"}
    names = {p.name for p in folder.iterdir()}
    return HTML_FILE in names and all(
        name in own or name.endswith(".csv") or (name == "figures" and (folder / name).is_dir()
                                                 and all(f.suffix == ".png" for f in (folder / name).iterdir()))
        for name in names)


def check_report_out(results: str | os.PathLike[str], out: str | os.PathLike[str] | None) -> None:
    """InputError when the report folder ``out`` named for the ``results`` folder would be written inside a
    results folder (other than the results' own ``report/``) or replace a folder holding anything but a report
    (it is replaced as a whole)."""
    if out is None or ("://" not in str(results) and Path(out).resolve() == (Path(results) / REPORT_DIR).resolve()):
        return
    out = Path(out)
    check_outside_results(out)
    if out.is_dir() and any(out.iterdir()) and not _is_report(out):
        names = sorted(p.name for p in out.iterdir())
        raise InputError(f"--out {out}: is a folder holding other files ({', '.join(names[:3])}"
                         f"{' ...' if len(names) > 3 else ''}) and no report; the report folder is replaced as a "
                         f"whole, so name a new or empty folder, or an earlier report's")


def _replace_folder(folder: Path, files: dict[str, bytes]) -> None:
    """Write ``files`` into a new folder beside ``folder``, then swap it in place of ``folder``."""
    tag = uuid.uuid4().hex[:12]
    new, old = folder.parent / f".{folder.name}-{tag}.tmp", folder.parent / f".{folder.name}-{tag}.old"
    try:
        for name, data in files.items():
            (new / name).parent.mkdir(parents=True, exist_ok=True)
            (new / name).write_bytes(data)
        if folder.exists():
            os.replace(folder, old)
        os.replace(new, folder)
    except OSError as exc:
        shutil.rmtree(new, ignore_errors=True)
        if old.exists() and not folder.exists():
            os.replace(old, folder)
        raise EnvironmentFailure(f"{folder}: cannot write the report ({exc.strerror or exc}); the previous "
                                 f"report (if any) is unchanged. Free some space, or write it elsewhere "
                                 f"(biasgrid report DIR --out FOLDER)") from exc
    shutil.rmtree(old, ignore_errors=True)
