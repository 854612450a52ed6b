"""Mitigation: each mitigation of the grid against ``none`` on the same seeds (paired), classifier side (accuracy
per cell, overall accuracy, spread, SER, equalized-odds difference) and score side (the differential summaries at
the global threshold, FNMR per group, the cross-group impostor FMR), each difference with its Nadeau-Bengio
corrected interval and p-value, Holm-adjusted per family; the gap-against-accuracy figures; which methods use
group labels and which train groups a mitigation skipped.

The numbers come from pure functions on DataFrames (the ``*_values`` functions give one value per seed in the long
form :data:`VALUE_COLUMNS`, :func:`paired_with_none` compares them); the section only loads and lays out. The
``none`` rows are the base tables' rows (``accuracy``, ``predictions``, ``demographic_rates``, ``impostor_matrix``),
the others the ``mitigated_<table>`` rows (``storage.schema.mitigated_table``). Formulas: docs/REPORT.md,
section "Mitigation: the comparison".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.figure import Figure

from grid.report import fairness, figures
from grid.report.blocks import Block, FigureBlock, Table, p_text, png, yes
from grid.report.results import Results, axis_names
from grid.report.sections import Section, Summaries
from grid.report.sections.paired import holm, paired_test
from storage.attributes import order_names
from storage.errors import InputError
from storage.schema import TABLES, mitigated_table
from tasks import mitigation
from tasks.stats import classifier_stats

NONE = mitigation.NONE
VALUE_COLUMNS = ["mitigation", "metric", "seed", "value", "n_train", "n_test", "note"]   # + the keys, after mitigation
CLASSIFIER_METRICS: dict[str, str] = {
    "overall_accuracy": "accuracy (mean over test groups)",
    "spread": "spread (max − min accuracy)",
    "ser": "SER (max error / min error)",
    "eod": "equalized-odds difference",
}
SCORE_METRICS: dict[str, str] = {"fnmr_overall": "FNMR at the global threshold (all groups)",
                                 **fairness.METRICS}
SHORT = {"overall_accuracy": "accuracy", "spread": "spread", "fnmr_overall": "FNMR", "fdr": "FDR"}
CLASSIFIER_AXES = ("overall_accuracy", "spread")   # the figure's x and y, classifier side
SCORE_AXES = ("fnmr_overall", "fdr")               # the figure's x and y, score side
DIFF_COLUMNS = ["metric", "n_pairs", "mean_none", "mean_mitigation", "mean_diff", "sd_diff", "ci_low", "ci_high",
                "p_value", "ci_low_corrected", "ci_high_corrected", "t_corrected", "p_corrected", "p_holm_corrected",
                "significant", "correction", "n_train", "n_test", "note"]


# ------------------------------------------------------------------------------------------- per-seed values
def _values(rows: list[dict[str, Any]], keys: Sequence[str]) -> pd.DataFrame:
    columns = ["mitigation", *keys, "metric", "seed", "value", "n_train", "n_test", "note"]
    out = pd.DataFrame(rows, columns=columns)
    out["value"] = out["value"].astype(float)
    return out


def cell_values(acc: pd.DataFrame) -> pd.DataFrame:
    """Each cell's accuracy per seed: mitigation, model, train_group, test_group, metric ("accuracy"), seed, value,
    n_train, n_test (the row's), note. ``acc``: accuracy rows with a ``mitigation`` column (the last row of a
    repeated cell and seed counts)."""
    keys = ["model", "train_group", "test_group"]
    acc = acc.dropna(subset=["accuracy"]).drop_duplicates(["mitigation", *keys, "seed"], keep="last")
    rows = [{"mitigation": r.mitigation, "model": r.model, "train_group": r.train_group, "test_group": r.test_group,
             "metric": "accuracy", "seed": int(r.seed), "value": float(r.accuracy), "n_train": r.n_train,
             "n_test": r.n_test, "note": ""} for r in acc.itertuples()]
    return _values(rows, keys)


def classifier_gaps(acc: pd.DataFrame, pred: pd.DataFrame) -> pd.DataFrame:
    """Per mitigation, model, train group and seed, across the test groups: overall_accuracy (the mean of the test
    groups' accuracies), spread (max − min), ser (max error / min error, error = 1 − accuracy) and, from the
    predictions, eod (Fairlearn's equalized-odds difference, tasks.stats.classifier_stats). Long form: the keys
    model, train_group, then metric, seed, value (NaN when undefined, with a note), n_train (the smallest of the
    test groups' rows), n_test (the test images of every test group, summed)."""
    keys = ["model", "train_group"]
    acc = acc.dropna(subset=["accuracy"]).drop_duplicates(["mitigation", *keys, "test_group", "seed"], keep="last")
    rows: list[dict[str, Any]] = []
    sizes: dict[tuple, tuple[float, float]] = {}
    for (m, model, train, seed), part in acc.groupby(["mitigation", *keys, "seed"], sort=False):
        a = part["accuracy"].to_numpy(float)
        n_train = float(part["n_train"].min()) if part["n_train"].notna().any() else np.nan
        n_test = float(part["n_test"].sum()) if part["n_test"].notna().all() else np.nan
        sizes[m, model, train, seed] = (n_train, n_test)
        spread, spread_note = fairness.value_range(a, "accuracy")
        ser, ser_note = fairness.skewed_error_ratio(a)
        base = {"mitigation": m, "model": model, "train_group": train, "seed": int(seed), "n_train": n_train,
                "n_test": n_test}
        rows += [{**base, "metric": "overall_accuracy", "value": float(a.mean()), "note": ""},
                 {**base, "metric": "spread", "value": spread, "note": spread_note},
                 {**base, "metric": "ser", "value": ser, "note": ser_note}]
    if not pred.empty:
        pred = pred.drop_duplicates(["mitigation", *keys, "test_group", "seed", "row"], keep="last")
        for (m, model, train, seed), part in pred.groupby(["mitigation", *keys, "seed"], sort=False):
            eod = classifier_stats.equalized_odds_difference(part["y_true"], part["y_pred"], part["test_group"])
            n_train, n_test = sizes.get((m, model, train, seed), (np.nan, float(len(part))))
            rows.append({"mitigation": m, "model": model, "train_group": train, "seed": int(seed), "metric": "eod",
                         "value": eod["value"], "n_train": n_train, "n_test": n_test, "note": eod["note"]})
    return _values(rows, keys)


def _pooled_fnmr(part: pd.DataFrame) -> tuple[float, str]:
    counts = part[["false_non_matches", "n_genuine"]]
    if counts.isna().any().any() or counts["n_genuine"].sum() == 0:
        return np.nan, "undefined: no genuine-pair counts stored"
    return float(counts["false_non_matches"].sum() / counts["n_genuine"].sum()), ""


def verification_gaps(rates: pd.DataFrame, groups: Sequence[str] | None = None, n_train: float = np.nan,
                      n_test: float = np.nan) -> pd.DataFrame:
    """Per mitigation and seed, from the demographic groups' rates at the global threshold (``rates``: a
    ``demographic_rates`` table with a ``mitigation`` column): fnmr_overall (Σ false non-matches / Σ genuine pairs
    over the groups) and every group aggregator of tasks.stats.fairness.summaries (FMR and FNMR Max/Min and
    Max/GeoMean, FDR, GARBE, WERM) over ``groups`` (default: every group in the table). Long form: metric, seed,
    value (NaN + note when undefined), n_train and n_test as given (the identities the comparison counts)."""
    rows: list[dict[str, Any]] = []
    rates = rates.drop_duplicates(["mitigation", "seed", "group"], keep="last")
    for m, part in rates.groupby("mitigation", sort=False):
        per_seed = fairness.by_seed(part, groups=groups)
        for seed, seed_rows in part.groupby("seed", sort=True):
            value, note = _pooled_fnmr(seed_rows)
            rows.append({"mitigation": m, "metric": "fnmr_overall", "seed": int(seed), "value": value,
                         "n_train": n_train, "n_test": n_test, "note": note})
        rows += [{"mitigation": m, "metric": r.metric, "seed": int(r.seed), "value": r.value, "n_train": n_train,
                  "n_test": n_test, "note": r.note} for r in per_seed.itertuples()]
    return _values(rows, [])


def group_fnmr_values(rates: pd.DataFrame, groups: Sequence[str] | None = None, n_train: float = np.nan,
                      n_test: float = np.nan) -> pd.DataFrame:
    """Each demographic group's FNMR at the global threshold per mitigation and seed: group, metric ("fnmr"),
    seed, value, n_train, n_test; rows in ``groups``' order (default: as stored)."""
    rates = rates.drop_duplicates(["mitigation", "seed", "group"], keep="last")
    if groups is not None:
        rank = {g: i for i, g in enumerate(groups)}
        rates = rates.sort_values("group", key=lambda c: c.map(lambda g: rank.get(g, len(rank))), kind="stable")
    rows = [{"mitigation": r.mitigation, "group": r.group, "metric": "fnmr", "seed": int(r.seed),
             "value": r.fnmr, "n_train": n_train, "n_test": n_test, "note": ""} for r in rates.itertuples()]
    return _values(rows, ["group"])


def impostor_values(matrix: pd.DataFrame, groups: Sequence[str] | None = None, n_train: float = np.nan,
                    n_test: float = np.nan) -> pd.DataFrame:
    """The cross-group impostor FMR per mitigation and seed, one row per unordered pair of groups (the matrix is
    symmetric: group_a before or equal to group_b in ``groups``' order, default sorted): group_a, group_b, metric
    ("fmr"), seed, value, n_train, n_test."""
    order = list(groups) if groups is not None else sorted(set(matrix["group_a"]) | set(matrix["group_b"]))
    rank = {g: i for i, g in enumerate(order)}
    matrix = matrix.drop_duplicates(["mitigation", "seed", "group_a", "group_b"], keep="last")
    keep = [a in rank and b in rank and rank[a] <= rank[b] for a, b in zip(matrix["group_a"], matrix["group_b"])]
    rows = [{"mitigation": r.mitigation, "group_a": r.group_a, "group_b": r.group_b, "metric": "fmr",
             "seed": int(r.seed), "value": r.fmr, "n_train": n_train, "n_test": n_test, "note": ""}
            for r in matrix[keep].itertuples()]
    return _values(rows, ["group_a", "group_b"])


# ------------------------------------------------------------------------------------------ paired comparison
def _size(values: pd.Series, how: Any) -> float | None:
    v = values.dropna()
    return float(how(v)) if len(v) else None


def paired_with_none(values: pd.DataFrame, keys: Sequence[str], mitigations: Sequence[str] | None = None,
                     confidence: float = 0.95, alpha: float = 0.05) -> pd.DataFrame:
    """Each mitigation's per-seed ``values`` (long form: mitigation, ``keys``, metric, seed, value, n_train,
    n_test) against ``none``'s with the same keys and metric, paired by seed (grid.report.sections.paired.
    paired_test on value(mitigation) − value(none) over the seeds where both are defined).

    n_train = the smallest n_train of the two sides' rows, n_test = the mean n_test of their rows (unknown: the
    corrected test is NaN with a note). Holm's adjustment of the corrected p-values runs over the family of one
    mitigation in this table (every key and metric of it): ``p_holm_corrected``, ``significant`` (< ``alpha``).
    Columns: mitigation, keys, :data:`DIFF_COLUMNS`; mitigations in ``mitigations`` order (default: as found).
    """
    columns = ["mitigation", *keys, *DIFF_COLUMNS]
    if values.empty or NONE not in set(values["mitigation"]):
        return pd.DataFrame(columns=columns)
    group_by = [*keys, "metric"]
    reference = {k: part for k, part in values[values["mitigation"] == NONE].groupby(group_by, sort=False)}
    found = [m for m in dict.fromkeys(values["mitigation"]) if m != NONE]
    names = [m for m in (mitigations or found) if m != NONE and m in found]
    frames = []
    for m in names:
        block = []
        for key, part in values[values["mitigation"] == m].groupby(group_by, sort=False):
            ref = reference.get(key)
            if ref is None:
                continue
            x = part.drop_duplicates("seed", keep="last").set_index("seed")["value"]
            y = ref.drop_duplicates("seed", keep="last").set_index("seed")["value"]
            both = pd.concat([x.rename("x"), y.rename("y")], axis=1, join="inner").dropna()
            sides = pd.concat([part, ref])
            n_train, n_test = _size(sides["n_train"], np.min), _size(sides["n_test"], np.mean)
            result = paired_test(x, y, confidence, n_train, n_test)
            notes = [result.get("note") or ""]
            undefined = sorted({n for n in part["note"].tolist() + ref["note"].tolist() if n})
            if undefined:
                notes.append("left out where undefined (" + "; ".join(undefined) + ")")
            block.append({"mitigation": m, **dict(zip(group_by, key)), **result,
                          "mean_none": float(both["y"].mean()) if len(both) else np.nan,
                          "mean_mitigation": float(both["x"].mean()) if len(both) else np.nan,
                          "n_train": n_train, "n_test": n_test, "note": "; ".join(n for n in notes if n)})
        if block:
            frame = pd.DataFrame(block)
            frame["p_holm_corrected"] = holm(frame["p_corrected"])
            frames.append(frame)
    if not frames:
        return pd.DataFrame(columns=columns)
    out = pd.concat(frames, ignore_index=True)
    out["significant"] = out["p_holm_corrected"] < alpha
    return out[columns]


def tradeoff(values: pd.DataFrame, x: str, y: str, keys: Sequence[str] = ()) -> pd.DataFrame:
    """The figure's points: per mitigation (and ``keys``), the mean and std (ddof=1) over seeds of metrics ``x``
    and ``y`` (each over the seeds where it is defined). Columns: mitigation, keys, x_mean, x_std, y_mean, y_std,
    n_seeds (seeds with both defined)."""
    columns = ["mitigation", *keys, "x_metric", "x_mean", "x_std", "y_metric", "y_mean", "y_std", "n_seeds"]
    rows = []
    part = values[values["metric"].isin([x, y])]
    for key, group in part.groupby(["mitigation", *keys], sort=False):
        key = key if isinstance(key, tuple) else (key,)
        wide = group.drop_duplicates(["seed", "metric"], keep="last").pivot(index="seed", columns="metric",
                                                                           values="value")
        xs = wide[x].dropna() if x in wide else pd.Series(dtype=float)
        ys = wide[y].dropna() if y in wide else pd.Series(dtype=float)
        rows.append({**dict(zip(["mitigation", *keys], key)), "x_metric": x,
                     "x_mean": float(xs.mean()) if len(xs) else np.nan,
                     "x_std": float(xs.std(ddof=1)) if len(xs) > 1 else np.nan, "y_metric": y,
                     "y_mean": float(ys.mean()) if len(ys) else np.nan,
                     "y_std": float(ys.std(ddof=1)) if len(ys) > 1 else np.nan,
                     "n_seeds": int(len(wide[[c for c in (x, y) if c in wide]].dropna()))})
    return pd.DataFrame(rows, columns=columns)


# -------------------------------------------------------------------------------------------- the folder's data
def with_none(res: Results, base: str) -> pd.DataFrame:
    """Table ``base`` with a ``mitigation`` column: its own rows as ``none``, then the rows of
    ``mitigated_<base>`` (an empty frame of that schema when no registered kind fills it)."""
    mitigated = f"mitigated_{base}"
    own = res.tables[base]
    rows = res.tables[mitigated] if mitigated in TABLES else mitigated_table(TABLES[base]).empty()
    own = own.assign(mitigation=NONE)[["mitigation", *own.columns]]
    frames = [f for f in (own, rows[own.columns]) if not f.empty]
    return pd.concat(frames, ignore_index=True) if frames else own


def _found(res: Results) -> dict[str, str]:
    """Mitigation names with stored rows -> the side their rows show ("classifier" or "score")."""
    out: dict[str, str] = {}
    for base, side in (("accuracy", "classifier"), ("demographic_rates", "score")):
        name = f"mitigated_{base}"
        if name in TABLES and base in TABLES:
            for m in res.columns(name, ["mitigation"])["mitigation"].dropna().unique():
                out.setdefault(str(m), side)
    return out


def mitigation_methods(res: Results) -> pd.DataFrame:
    """The folder's mitigations (config order, then any other with stored rows), ``none`` first: mitigation,
    side, method (a variant's base), uses_group_labels, needs_sample_weight, skipped_train_groups (classifier
    side: the grid's train groups with no planned job of the mitigation, single-group ones), note."""
    columns = ["mitigation", "side", "method", "uses_group_labels", "needs_sample_weight", "skipped_train_groups",
               "note"]
    cfg = res.config
    names = [str(n) for n in ((cfg.get("grid") or {}).get("mitigations") or []) if n != NONE]
    found = _found(res)
    names += sorted(set(found) - set(names))
    if not names:
        return pd.DataFrame(columns=columns)
    configs = cfg.get("mitigation") or {}
    planned: dict[str, set[str]] = {}
    for job in res.jobs:
        if job.get("mitigation") and job.get("train_group") is not None:
            planned.setdefault(str(job["mitigation"]), set()).add(str(job["train_group"]))
    rows = [{"mitigation": NONE, "side": "both", "method": NONE, "uses_group_labels": False,
             "needs_sample_weight": False, "skipped_train_groups": "", "note": "the reference"}]
    for name in names:
        try:
            facts = mitigation.describe(name, configs.get(name))
            side, method, labels, weights, note = facts.side, facts.name, facts.uses_group_labels, \
                facts.needs_sample_weight, ""
        except InputError as exc:
            side, method, labels, weights = found.get(name, "unknown"), name, None, None
            note = f"method facts unknown: {exc}"
        skipped = [g for g in res.train_groups if g not in planned.get(name, set())] \
            if side == "classifier" and planned else []
        rows.append({"mitigation": name, "side": side, "method": method, "uses_group_labels": labels,
                     "needs_sample_weight": weights, "skipped_train_groups": ", ".join(skipped), "note": note})
    return pd.DataFrame(rows, columns=columns)


def _side(res: Results, side: str, meth: pd.DataFrame | None = None) -> list[str]:
    meth = mitigation_methods(res) if meth is None else meth
    return [NONE] + [m for m, s in zip(meth["mitigation"], meth["side"]) if s == side and m != NONE]


def verification_sizes(res: Results) -> tuple[float, float]:
    """(n_train, n_test) of the score side's corrected test: the fitting identities (training identities) and the
    evaluated identities (test identities) of the test groups, protocol.train_per_gender and test_per_gender
    times the target's classes (1 when the group axis is the target) times the test groups; NaN when unknown."""
    protocol = res.config.get("protocol") or {}
    axes = res.run.get("axes") or {}
    target = axes.get("target") or {}
    classes = len(target.get("names") or ()) or 2
    if (axes.get("group") or {}).get("attributes") and (axes.get("group") or {}).get("attributes") == \
            target.get("attributes"):
        classes = 1
    groups = len(res.test_groups)
    train, test = protocol.get("train_per_gender"), protocol.get("test_per_gender")
    if not isinstance(train, int) or not isinstance(test, int) or not groups:
        return np.nan, np.nan
    return float(train * classes * groups), float(test * classes * groups)


def classifier_values(res: Results, meth: pd.DataFrame | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(cells, gaps): :func:`cell_values` and :func:`classifier_gaps` of the folder's classifier mitigations
    (``meth``: :func:`mitigation_methods`, when known)."""
    names = _side(res, "classifier", meth)
    acc, pred = with_none(res, "accuracy"), with_none(res, "predictions")
    acc, pred = acc[acc["mitigation"].isin(names)], pred[pred["mitigation"].isin(names)]
    return cell_values(acc), classifier_gaps(acc, pred)


def score_values(res: Results, meth: pd.DataFrame | None = None) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(summaries, group FNMR, impostor matrix) per seed of the folder's score mitigations: :func:`verification_gaps`,
    :func:`group_fnmr_values`, :func:`impostor_values`."""
    names = _side(res, "score", meth)
    n_train, n_test = verification_sizes(res)
    rates, matrix = with_none(res, "demographic_rates"), with_none(res, "impostor_matrix")
    rates, matrix = rates[rates["mitigation"].isin(names)], matrix[matrix["mitigation"].isin(names)]
    recorded = axis_names(res, "demographic")
    groups = order_names(rates["group"].dropna(), recorded) or None
    return (verification_gaps(rates, groups, n_train, n_test), group_fnmr_values(rates, groups, n_train, n_test),
            impostor_values(matrix, order_names(set(matrix["group_a"].dropna()) | set(matrix["group_b"].dropna()),
                                                recorded) or None, n_train, n_test))


def mitigation_summaries(res: Results) -> Summaries:
    """The section's tables by CSV name ({} for a folder without mitigations): mitigation_methods,
    mitigation_accuracy, mitigation_gaps (+ _by_seed), mitigation_verification (+ _by_seed), mitigation_group_fnmr,
    mitigation_impostor, mitigation_tradeoff."""
    meth = mitigation_methods(res)
    if len(meth) < 2:
        return {}
    classifier, score = _side(res, "classifier", meth), _side(res, "score", meth)
    cells, gaps = classifier_values(res, meth)
    summ, fnmr, imp = score_values(res, meth)
    mitigated = gaps[gaps["mitigation"] != NONE][["model", "train_group"]].drop_duplicates()
    where = tradeoff(gaps, *CLASSIFIER_AXES, ["model", "train_group"]).merge(mitigated)   # where one ran
    points = pd.concat([f for f in (where.assign(side="classifier"), tradeoff(summ, *SCORE_AXES).assign(
        side="score")) if not f.empty] or [pd.DataFrame(columns=["side"])], ignore_index=True)
    return {"mitigation_methods": meth,
            "mitigation_accuracy": paired_with_none(cells, ["model", "train_group", "test_group"], classifier),
            "mitigation_gaps": paired_with_none(gaps, ["model", "train_group"], classifier),
            "mitigation_gaps_by_seed": gaps,
            "mitigation_verification": paired_with_none(summ, [], score),
            "mitigation_verification_by_seed": summ,
            "mitigation_group_fnmr": paired_with_none(fnmr, ["group"], score),
            "mitigation_impostor": paired_with_none(imp, ["group_a", "group_b"], score),
            "mitigation_tradeoff": points}


# ---------------------------------------------------------------------------------------------------- figures
def _color(i: int, name: str) -> str:
    if name == NONE:
        return "#000000"
    from matplotlib import colors as mcolors
    return mcolors.to_hex(colormaps["tab10"](i % 10))


def plot_tradeoff(points: pd.DataFrame, side: str) -> Figure | None:
    """Gap against accuracy (cost), one point per mitigation (none included) with error bars of ± one std over
    seeds: classifier side one panel per model and train group (x overall accuracy, y spread), score side one
    panel (x overall FNMR at the global threshold, y FDR). None when there is nothing to draw."""
    pts = points[points["side"] == side] if "side" in points else points
    pts = pts.dropna(subset=["x_mean", "y_mean"])
    if pts.empty:
        return None
    panels = [(m, t) for m, t in dict.fromkeys(zip(pts["model"], pts["train_group"]))] \
        if side == "classifier" else [(None, None)]
    # a panel needs a mitigation besides none
    if side == "classifier":
        panels = [p for p in panels if (pts[(pts["model"] == p[0]) & (pts["train_group"] == p[1])]
                                        ["mitigation"] != NONE).any()]
        if not panels:
            return None
    names = list(dict.fromkeys(pts["mitigation"]))
    cols = min(len(panels), 3)
    rows_n = -(-len(panels) // cols)
    fig = figures.new_figure(4.2 * cols + 1.6, 3.6 * rows_n)
    axes = fig.subplots(rows_n, cols, squeeze=False).ravel()
    labels = {"overall_accuracy": "accuracy (mean over test groups)", "spread": "spread across test groups",
              "fnmr_overall": "FNMR at the global threshold", "fdr": "FDR (1 = no discrepancy)"}
    for ax, (model, train) in zip(axes, panels):
        part = pts if model is None else pts[(pts["model"] == model) & (pts["train_group"] == train)]
        for i, name in enumerate(names):
            row = part[part["mitigation"] == name]
            if row.empty:
                continue
            r = row.iloc[0]
            ax.errorbar([r["x_mean"]], [r["y_mean"]], xerr=[[np.nan_to_num(r["x_std"])]],
                        yerr=[[np.nan_to_num(r["y_std"])]], fmt="s" if name == NONE else "o",
                        color=_color(i, name), capsize=3, label=name)
        ax.set_xlabel(labels.get(part["x_metric"].iloc[0], part["x_metric"].iloc[0]))
        ax.set_ylabel(labels.get(part["y_metric"].iloc[0], part["y_metric"].iloc[0]))
        ax.set_title(f"{model}, trained on {train}" if model is not None else "verification", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    fig.suptitle(("Gap against accuracy" if side == "classifier" else "Differential against FNMR") +
                 " per mitigation (mean ± std over seeds)", fontsize=10)
    return fig


# ---------------------------------------------------------------------------------------------------- display
def _fmt(metric: str) -> tuple[int, bool]:
    """Digits and scientific notation for a metric's values."""
    if metric == "fmr":
        return 2, True
    if metric in ("fnmr", "fnmr_overall"):
        return 4, False
    return 3, False


def _value(v: Any, metric: str) -> str:
    digits, sci = _fmt(metric)
    if v is None or pd.isna(v):
        return "—"
    return f"{v:.{digits}e}" if sci else f"{v:.{digits}f}"


def _diff(m: Any, lo: Any, hi: Any, metric: str) -> str:
    digits, sci = _fmt(metric)
    if m is None or pd.isna(m):
        return "—"
    if m == 0 and pd.isna(lo):
        return "0"
    f = (lambda v: f"{v:+.{digits}e}") if sci else (lambda v: f"{v:+.{digits}f}")
    return f(m) if pd.isna(lo) else f"{f(m)} [{f(lo)}, {f(hi)}]"


def _label(metric: str) -> str:
    return {**CLASSIFIER_METRICS, **SCORE_METRICS, "accuracy": "accuracy", "fnmr": "FNMR",
            "fmr": "FMR"}.get(metric, metric)


def diff_table(diff: pd.DataFrame, keys: Mapping[str, str], caption: str) -> Table:
    """The display table of :func:`paired_with_none` (``keys``: key column -> heading)."""
    frame = pd.DataFrame({"mitigation": diff["mitigation"]})
    for key, heading in keys.items():
        frame[heading] = diff[key].astype(str).to_numpy()
    frame["quantity"] = [_label(m) for m in diff["metric"]]
    frame["none"] = [_value(v, m) for v, m in zip(diff["mean_none"], diff["metric"])]
    frame["mitigated"] = [_value(v, m) for v, m in zip(diff["mean_mitigation"], diff["metric"])]
    frame["difference [NB 95% CI]"] = [_diff(v, lo, hi, m) for v, lo, hi, m in zip(
        diff["mean_diff"], diff["ci_low_corrected"], diff["ci_high_corrected"], diff["metric"])]
    frame["p (NB)"] = [p_text(p) for p in diff["p_corrected"]]
    frame["p (NB, Holm)"] = [p_text(p) for p in diff["p_holm_corrected"]]
    frame["significant"] = [yes(s) if not pd.isna(p) else "—" for s, p in zip(diff["significant"],
                                                                            diff["p_holm_corrected"])]
    frame["pairs"] = diff["n_pairs"].astype(str).to_numpy()
    frame["note"] = diff["note"].fillna("").to_numpy()
    return Table(frame.reset_index(drop=True), caption)


def overview(points: pd.DataFrame, side: str, diffs: pd.DataFrame) -> pd.DataFrame:
    """Per mitigation (classifier side: per model and train group), the figure's two numbers as mean ± std over
    seeds and their differences to none [NB 95% CI] with the Holm-adjusted p: display strings."""
    pts = points[points["side"] == side] if "side" in points else points
    rows = []
    for r in pts.itertuples():
        key = (diffs["mitigation"] == r.mitigation)
        if side == "classifier":
            key &= (diffs["model"] == r.model) & (diffs["train_group"] == r.train_group)
        row = {"mitigation": r.mitigation}
        if side == "classifier":
            row.update({"model": r.model, "trained on": r.train_group})
        for axis in ("x", "y"):
            metric = getattr(r, f"{axis}_metric")
            mean, std = getattr(r, f"{axis}_mean"), getattr(r, f"{axis}_std")
            row[_label(metric)] = _value(mean, metric) + ("" if pd.isna(std) else f" ± {_value(std, metric)}")
            d = diffs[key & (diffs["metric"] == metric)]
            row[f"Δ {SHORT.get(metric, metric)} [NB 95% CI], Holm p"] = "—" if d.empty else \
                _diff(d["mean_diff"].iloc[0], d["ci_low_corrected"].iloc[0], d["ci_high_corrected"].iloc[0],
                      metric) + f", {p_text(d['p_holm_corrected'].iloc[0])}"
        row["seeds"] = str(r.n_seeds)
        rows.append(row)
    return pd.DataFrame(rows)


def _impostor_tables(diff: pd.DataFrame, groups: list[str]) -> list[Block]:
    blocks: list[Block] = []
    for m, part in diff.groupby("mitigation", sort=False):
        order = [g for g in groups if g in set(part["group_a"]) | set(part["group_b"])]
        mat = pd.DataFrame("—", index=order, columns=order)
        for r in part.itertuples():
            text = _diff(r.mean_diff, np.nan, np.nan, "fmr") + (" *" if r.significant else "")
            mat.loc[r.group_a, r.group_b] = mat.loc[r.group_b, r.group_a] = text
        blocks.append(("table", Table(mat, f"Cross-group impostor FMR, {m} − none (mean paired difference; * = "
                                           f"Holm-adjusted NB p < 0.05)", "A \\ B")))
    return blocks


def _methods_table(meth: pd.DataFrame) -> Table:
    frame = pd.DataFrame({
        "mitigation": meth["mitigation"], "side": meth["side"], "method": meth["method"],
        "uses group labels": [yes(v) for v in meth["uses_group_labels"]],
        "needs sample weights": [yes(v) for v in meth["needs_sample_weight"]],
        "train groups skipped": meth["skipped_train_groups"].replace("", "—"),
        "note": meth["note"].fillna(""),
    })
    return Table(frame, "Mitigations of the grid")


def mitigation_blocks(res: Results, s: Summaries) -> list[Block]:
    """The Mitigation section: the methods, then the classifier and the score side's comparisons with none."""
    if "mitigation_methods" not in s:
        return []
    meth = s["mitigation_methods"]
    blocks: list[Block] = [("h2", "Mitigation"), ("p", (
        "Each mitigation against none on the same seeds (paired: the same split, model and train group for the "
        "cells, the same split for verification). Differences are mitigated − none, with the Nadeau–Bengio "
        "corrected 95% interval and p-value (the seeds' training sets overlap), Holm-adjusted within each table "
        "per mitigation (docs/REPORT.md, Mitigation: the comparison).")), ("table", _methods_table(meth))]
    skipped = meth[meth["skipped_train_groups"] != ""]
    for r in skipped.itertuples():
        blocks.append(("note", f"{r.mitigation}: no job for train group(s) {r.skipped_train_groups} (a mitigation "
                               f"needs training rows of several groups; single-group train groups are skipped)"))
    labelled = meth[(meth["mitigation"] != NONE) & (meth["uses_group_labels"] == False)]   # noqa: E712
    if len(labelled):
        blocks.append(("note", "Label-free (no group labels used): " + ", ".join(labelled["mitigation"]) + "."))
    points = s["mitigation_tradeoff"]
    if (meth["side"] == "classifier").any():
        blocks.append(("h3", "Classifier mitigations"))
        gaps = s["mitigation_gaps"]
        if gaps.empty:
            blocks.append(("note", "No mitigated cell results to pair with none's are stored (the mitigated or "
                                   "the none cells failed or are missing)."))
        else:
            blocks.append(("table", Table(overview(points, "classifier", gaps), "Accuracy and spread per "
                                          "mitigation (mean ± std over seeds)")))
            fig = plot_tradeoff(points, "classifier")
            if fig is not None:
                blocks.append(("figure", FigureBlock("mitigation_classifier.png", "Spread across test groups "
                                                     "against accuracy, one point per mitigation; error bars ± one "
                                                     "std over seeds", png(fig))))
            blocks.append(("p", "Gaps per model and train group, per seed across the test groups: accuracy = mean "
                                "of the test groups' accuracies, spread = max − min, SER = max error / min error, "
                                "equalized-odds difference from the stored predictions (female positive)."))
            blocks.append(("table", diff_table(gaps, {"model": "model", "train_group": "trained on"},
                                               "Classifier gaps, mitigated − none")))
            blocks.append(("table", diff_table(s["mitigation_accuracy"], {
                "model": "model", "train_group": "trained on", "test_group": "tested on"},
                "Accuracy per cell, mitigated − none")))
    if (meth["side"] == "score").any():
        blocks.append(("h3", "Score mitigations (verification)"))
        summ = s["mitigation_verification"]
        if summ.empty:
            blocks.append(("note", "No mitigated verification results to pair with none's are stored (the jobs "
                                   "failed or are missing, or verification is disabled)."))
        else:
            blocks.append(("table", Table(overview(points, "score", summ), "FNMR and FDR per mitigation (mean ± "
                                          "std over seeds)")))
            fig = plot_tradeoff(points, "score")
            if fig is not None:
                blocks.append(("figure", FigureBlock("mitigation_scores.png", "FDR against the FNMR at the global "
                                                     "threshold, one point per mitigation; error bars ± one std "
                                                     "over seeds", png(fig))))
            blocks.append(("p", "At the one global threshold (FMR = target over all impostor pairs) of each "
                                "mitigation's scores: the pooled FNMR and the demographic groups' differential "
                                "summaries (Max/Min, Max/GeoMean, FDR, GARBE, WERM), per seed."))
            blocks.append(("table", diff_table(summ, {}, "Demographic differentials, mitigated − none")))
            blocks.append(("table", diff_table(s["mitigation_group_fnmr"], {"group": "group"},
                                               "FNMR per demographic group at the global threshold, mitigated − "
                                               "none")))
            blocks.append(("p", "Cross-group impostor FMR at the global threshold: the difference per cell "
                                "(pairs of groups; the matrix is symmetric, each pair tested once)."))
            imp = s["mitigation_impostor"]
            blocks += _impostor_tables(imp, order_names(set(imp["group_a"]) | set(imp["group_b"]),
                                                        axis_names(res, "demographic")))
    return blocks


def mitigation_terminal(res: Results) -> list[Block]:
    """What the terminal shows of the section (nothing for a folder without mitigations): the overview tables."""
    s = mitigation_summaries(res)
    if not s:
        return []
    blocks: list[Block] = []
    points = s["mitigation_tradeoff"]
    for side, diffs, title in (("classifier", s["mitigation_gaps"], "Classifier mitigations"),
                               ("score", s["mitigation_verification"], "Score mitigations")):
        frame = overview(points, side, diffs)
        if not frame.empty:
            blocks.append(("table", Table(frame, f"{title}: mean ± std over seeds; Δ = mitigated − none "
                                                 f"[Nadeau–Bengio 95% CI], Holm-adjusted p")))
    return blocks


SECTION = Section("mitigation", mitigation_blocks, mitigation_summaries, terminal=mitigation_terminal)
