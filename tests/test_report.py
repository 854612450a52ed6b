"""The report: files, a self-contained HTML page, the terminal table, partial results and the CLI."""

import argparse
import base64
import re
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest

from grid.cli import report as cli_report
from grid.report import load_results, write_report
from grid.report.render import format_matrices, format_status
from storage.errors import InputError
from storage.results import ResultStore

# Under xdist this module's tests run on one worker: its module fixture (full) is built once.
pytestmark = pytest.mark.xdist_group("report")

ETH = ["asian", "caucasian", "black"]
TRAIN = ETH + ["all"]
SEEDS = [0, 1, 2]
DIAG = {"asian": 0.99, "caucasian": 0.985, "black": 0.96}


def plant(out, models=("mlp",), skip=frozenset(), fail=frozenset()):
    """A small complete results folder (accuracy, verification, impostor, t-SNE) with planted numbers."""
    rng = np.random.default_rng(3)
    store = ResultStore(out)
    jobs, truth = [], []

    def job(record, tables):
        jobs.append(record)
        if record["job_id"] in skip:
            return
        if record["job_id"] in fail:
            store.write_failure(record["job_id"], record, f"MemoryError: planted failure of {record['job_id']}",
                                "Traceback (most recent call last):\n  ...\nMemoryError")
            return
        store.write_job(record["job_id"], tables, record)

    for model in models:
        for train in TRAIN:
            for seed in SEEDS:
                rows = []
                for test in ETH:
                    acc = DIAG[test] - (0 if train in (test, "all") else 0.1) + rng.normal(0, 0.004)
                    rows.append({"model": model, "train_group": train, "test_group": test, "seed": seed,
                                 "accuracy": acc, "accuracy_male": acc + 0.005, "accuracy_female": acc - 0.005,
                                 "balanced_accuracy": acc, "n_test": 500, "n_train": 1000,
                                 "train_seconds": 1.0, "job_id": f"cell-{model}-{train}-{seed}",
                                 "node": "local", "finished_at": "t"})
                job({"job_id": f"cell-{model}-{train}-{seed}", "kind": "cell", "model": model, "train_group": train,
                     "seed": seed, "description": f"cell {model} train={train} seed={seed}"},
                    {"accuracy": pd.DataFrame(rows)})
                if f"cell-{model}-{train}-{seed}" not in skip | fail:
                    truth += rows
    thresholds = np.linspace(-0.2, 1.0, 61)
    bins = np.linspace(-0.2, 1.0, 31)
    for test in ETH:
        for seed in SEEDS:
            jid = f"scores-{test}-{seed}"
            genuine, impostor = rng.normal(0.6, 0.1, 500), rng.normal(0.2, 0.1, 5000)
            fmr = (impostor[None] >= thresholds[:, None]).mean(1)
            fnmr = (genuine[None] < thresholds[:, None]).mean(1)
            k = int(np.argmin(np.abs(fmr - fnmr)))
            ver = pd.DataFrame([{"test_group": test, "seed": seed, "eer": (fmr[k] + fnmr[k]) / 2,
                                 "eer_threshold": thresholds[k], "fnmr_at_fmr_1e_2": 0.05, "fnmr_at_fmr_1e_3": 0.1,
                                 "genuine_mean": genuine.mean(), "impostor_mean": impostor.mean(), "n_genuine": 500,
                                 "n_impostor": 5000, "impostor_sampled": True, "job_id": jid, "node": "local",
                                 "finished_at": "t"}])
            ver = ver.assign(eer_ci_low=ver["eer"] - 0.01, eer_ci_high=ver["eer"] + 0.02,
                             fnmr_at_fmr_1e_2_ci_low=0.04, fnmr_at_fmr_1e_2_ci_high=0.06,
                             fnmr_at_fmr_1e_3_ci_low=0.08 + 0.001 * seed, fnmr_at_fmr_1e_3_ci_high=0.13,
                             n_resamples=100)
            curve = pd.DataFrame({"test_group": test, "seed": seed, "threshold": thresholds, "fmr": fmr,
                                  "fnmr": fnmr, "job_id": jid})
            hist = pd.concat([pd.DataFrame({"test_group": test, "seed": seed, "kind": kind, "bin_left": bins[:-1],
                                            "bin_right": bins[1:], "count": np.histogram(x, bins)[0], "job_id": jid})
                              for kind, x in (("genuine", genuine), ("impostor", impostor))])
            job({"job_id": jid, "kind": "scores", "test_group": test, "seed": seed,
                 "description": f"scores test={test} seed={seed}"},
                {"verification": ver, "verification_curve": curve, "verification_hist": hist})
    groups = [f"{e}_{g}" for e in ETH for g in ("male", "female")]
    for seed in SEEDS:
        jid = f"impostor-{seed}"
        matrix = pd.DataFrame([{"seed": seed, "group_a": a, "group_b": b, "fmr": 1e-3 if a == b else 1e-5,
                                "n_pairs": 100, "threshold": 0.5, "job_id": jid} for a in groups for b in groups])
        matrix = matrix.assign(false_matches=(matrix["fmr"] * 100).round().astype(int), ci_low=0.0, ci_high=0.04,
                               display="<= 3.00e-02 (0/100)", resolved=False, reason="0 false matches")
        # asian_female has FMR 0 in seed 0: the ratios are undefined there
        rates = pd.DataFrame([{"seed": seed, "group": g, "fmr": 0.0 if (g == "asian_female" and seed == 0)
                               else 1e-3 * (1 + i), "fnmr": 0.01 * (1 + i % 3), "threshold": 0.5, "n_genuine": 100,
                               "n_impostor": 1000, "job_id": jid} for i, g in enumerate(groups)])
        rates = rates.assign(false_matches=(rates["fmr"] * 1000).round().astype(int),
                             false_non_matches=(rates["fnmr"] * 100).round().astype(int), fmr_ci_low=0.0,
                             fmr_ci_high=0.01, fnmr_ci_low=0.0, fnmr_ci_high=0.1, resolved=True, reason="")
        job({"job_id": jid, "kind": "impostor", "seed": seed, "description": f"impostor seed={seed}"},
            {"impostor_matrix": matrix, "demographic_rates": rates})
    for subset in ("male", "female", "all"):
        jid = f"tsne-{subset}-0"
        frames = []
        for i, eth in enumerate(ETH):
            for gender in ("male", "female"):
                if subset not in ("all", gender):
                    continue
                xy = rng.normal(0, 1, (40, 2)) + 5 * i
                frames.append(pd.DataFrame({"seed": 0, "subset": subset, "x": xy[:, 0], "y": xy[:, 1],
                                            "ethnicity": eth, "gender": gender,
                                            "identity": [f"{eth}-{gender}-{j}" for j in range(40)], "job_id": jid}))
        job({"job_id": jid, "kind": "tsne", "subset": subset, "seed": 0, "description": f"tsne subset={subset}"},
            {"tsne": pd.concat(frames)})
    store.write_run({"config": {"grid": {"models": list(models), "seeds": SEEDS, "train_groups": TRAIN,
                                         "test_groups": ETH}, "protocol": {"train_per_gender": 500}},
                     "data_fingerprint": "c0ffee1234", "versions": {"biasgrid": "0.1.0"},
                     "created_at": "2026-01-01T00:00:00", "jobs": jobs})
    return pd.DataFrame(truth)


class _Balance(HTMLParser):
    VOID = {"meta", "img", "br", "hr", "link", "input"}

    def __init__(self):
        super().__init__()
        self.stack, self.errors = [], []

    def handle_starttag(self, tag, attrs):
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes <{self.stack[-1] if self.stack else None}>")
        else:
            self.stack.pop()


def _check_html(text):
    parser = _Balance()
    parser.feed(text)
    assert not parser.errors and not parser.stack, (parser.errors, parser.stack)
    # self-contained: no external resources, no scripts
    assert not re.search(r'(src|href)="(?!data:|#)', text)
    assert "<script" not in text and "http://" not in text and "https://" not in text


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    out = tmp_path_factory.mktemp("full")
    truth = plant(out, models=("mlp", "xgboost"))
    return out, truth, write_report(load_results(out))


def test_full_report_files(full):
    out, truth, html_path = full
    folder = out / "report"
    assert html_path == folder / "report.html"
    for name in ("report.md", "tables.tex", "accuracy.csv", "accuracy_male.csv", "accuracy_female.csv",
                 "paired_differences.csv", "row_spread.csv", "fairness.csv", "verification.csv", "jobs.csv"):
        assert (folder / name).stat().st_size > 0, name
    figures = sorted(p.name for p in (folder / "figures").glob("*.png"))
    assert figures == sorted(["accuracy_mlp.png", "accuracy_xgboost.png", "accuracy_gender_mlp.png",
                              "accuracy_gender_xgboost.png", "scores.png", "error_rates.png", "impostor_fmr.png", "group_rates.png",
                              "tsne.png"])
    for name in figures:
        assert (folder / "figures" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # CSV: mean, std and n as separate columns, equal to an independent computation
    csv = pd.read_csv(folder / "accuracy.csv").set_index(["model", "train_group", "test_group"])
    expected = truth.groupby(["model", "train_group", "test_group"]).accuracy.agg(["mean", "std", "count"])
    csv = csv.loc[expected.index]
    np.testing.assert_allclose(csv["mean"], expected["mean"])
    np.testing.assert_allclose(csv["std"], expected["std"])
    assert (csv["n"] == expected["count"]).all()
    tex = (folder / "tables.tex").read_text()
    assert r"\toprule" in tex and r"$\pm$" in tex and tex.count(r"\begin{table}") == tex.count(r"\end{table}")
    md = (folder / "report.md").read_text()
    assert "| trained on \\\\ tested on | asian | caucasian | black |" in md   # the backslash escaped
    ver = pd.read_csv(folder / "verification.csv").set_index("test_group")   # the lowest seed's intervals
    stored = load_results(out).tables["verification"]
    first = stored[stored["seed"] == 0].set_index("test_group")
    np.testing.assert_allclose(ver.loc[first.index, "eer_seed"], first["eer"])
    for col in ("eer_ci_low", "eer_ci_high", "fnmr_at_fmr_1e_3_ci_low", "fnmr_at_fmr_1e_3_ci_high"):
        np.testing.assert_allclose(ver.loc[first.index, col], first[col])
    e = first.loc["asian"]
    assert "EER, seed 0 [95% CI] (%)" in md
    assert f"{100 * e.eer:.3g} [{100 * e.eer_ci_low:.3g}, {100 * e.eer_ci_high:.3g}]" in md
    assert "![" in md and "figures/tsne.png" in md


def test_html_is_self_contained_and_complete(full):
    out, truth, html_path = full
    text = html_path.read_text(encoding="utf-8")
    _check_html(text)
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', text)
    assert len(images) == 9
    assert all(base64.b64decode(i)[:4] == b"\x89PNG" for i in images)
    assert "c0ffee1234" in text and "train_per_gender" in text            # fingerprint and config
    cell = truth[(truth.model == "mlp") & (truth.train_group == "black") & (truth.test_group == "asian")]
    assert f"{cell.accuracy.mean():.3f} ± {cell.accuracy.std():.3f}" in text
    assert "All 39 planned jobs finished." in text                      # 24 cells + 9 scores + 3 impostor + 3 tsne
    for heading in ("Accuracy matrices", "Bias summaries", "Verification", "Demographic differentials",
                    "t-SNE", "Configuration and provenance", "Failed and missing jobs"):
        assert heading in text
    # the zero FMR of seed 0 is reported as undefined there, not as inf or 0
    assert "undefined in seed 0: lowest FMR is 0" in text
    assert not re.search(r"\binf\b", re.sub(r"data:image/png;base64,[^\"]+", "", text), re.IGNORECASE)


def test_format_matrices(full):
    out, truth, _ = full
    text = format_matrices(load_results(out))
    lines = text.splitlines()
    assert lines[0].startswith("Accuracy: mean ± std over 3 seeds")
    assert "[mlp]" in lines and "[xgboost]" in lines
    start = lines.index("[xgboost]")
    assert [line.split()[0] for line in lines[start + 3:start + 7]] == TRAIN       # rows in order, all last
    for train in TRAIN:
        for test in ETH:
            cell = truth[(truth.model == "xgboost") & (truth.train_group == train) & (truth.test_group == test)]
            assert f"{cell.accuracy.mean():.3f} ± {cell.accuracy.std():.3f}" in text
    assert "†" not in text


def test_partial_results_still_give_a_report(tmp_path, tmp_path_factory):
    fail = {"cell-mlp-asian-2", "scores-black-1", "impostor-0", "impostor-1", "impostor-2"}
    skip = {"cell-mlp-black-0", "cell-mlp-black-1", "tsne-male-0", "tsne-female-0", "tsne-all-0"}
    plant(tmp_path, skip=skip, fail=fail)
    elsewhere = tmp_path_factory.mktemp("elsewhere")   # outside the results folder (inside it is refused)
    html_path = write_report(load_results(tmp_path), elsewhere)
    assert html_path == elsewhere / "report.html"
    text = html_path.read_text(encoding="utf-8")
    _check_html(text)
    assert "Incomplete run: 5 failed and 5 missing jobs" in text
    for job in sorted(fail | skip):
        assert job in text
    assert "MemoryError: planted failure of cell-mlp-asian-2" in text
    assert "cell mlp train=black seed=0" in text                     # the missing job's description
    assert "mlp train=asian (every test group): 2 of 3 seeds" in text
    assert "mlp train=black (every test group): 1 of 3 seeds" in text
    assert "No demographic rates are stored" in text and "No t-SNE results are stored" in text
    assert "No impostor matrix is stored" in text
    assert "0.9" in format_matrices(load_results(tmp_path)) and "†" in format_matrices(load_results(tmp_path))
    status = format_status(load_results(tmp_path))
    assert status.startswith("jobs: 17 done, 5 failed, 5 missing (of 27)") and "planted failure" in status


def test_nothing_done_yet(tmp_path):
    ResultStore(tmp_path).write_run({"config": {"grid": {"models": ["mlp"], "seeds": [0],
                                                         "train_groups": ["asian", "all"],
                                                         "test_groups": ["asian"]}},
                                     "data_fingerprint": "abc",
                                     "jobs": [{"job_id": "c1", "kind": "cell", "model": "mlp", "train_group": "asian",
                                               "seed": 0, "description": "cell mlp train=asian seed=0"}]})
    text = write_report(load_results(tmp_path)).read_text(encoding="utf-8")
    _check_html(text)
    assert "No accuracy results: nothing to summarise." in text
    assert "No verification results are stored" in text and "cell mlp train=asian seed=0" in text
    assert "data:image/png" not in text


def _parser():
    parser = argparse.ArgumentParser(prog="biasgrid")
    sub = parser.add_subparsers(dest="command", required=True)
    cli_report.register(sub)
    return parser


def test_cli_report(tmp_path, capsys):
    plant(tmp_path / "run", skip={"cell-mlp-asian-0"})
    args = _parser().parse_args(["report", str(tmp_path / "run"), "--out", str(tmp_path / "rep")])
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    assert "[mlp]" in printed and "missing cell mlp train=asian seed=0" in printed
    assert f"report: {tmp_path / 'rep' / 'report.html'}" in printed
    assert (tmp_path / "rep" / "report.html").exists()
    for bad in (tmp_path / "absent", tmp_path / "rep"):
        args = _parser().parse_args(["report", str(bad)])
        with pytest.raises(InputError, match=str(bad)):
            args.func(args)
    assert not (tmp_path / "rep" / "report").exists()                 # nothing written on bad input


def test_report_is_reproducible(full, tmp_path):
    out, _, html_path = full
    again = write_report(load_results(out), tmp_path / "again")
    assert again.read_bytes() == html_path.read_bytes()


def test_a_group_without_impostor_comparisons_is_left_out_of_the_rates_figure(full):
    """A demographic group with no impostor comparison (e.g. one test identity) has an undefined FMR: the figure
    draws no FMR point for it, and no numpy division warning leaks to the terminal."""
    import warnings

    from grid.report.sections.differentials import plot_group_rates

    res = load_results(full[0])
    dr = res.tables["demographic_rates"]
    if dr.empty or dr["false_matches"].isna().any():
        pytest.skip("the planted results have no demographic_rates with counts")
    gone = dr["group"].iloc[0]
    drawn = plot_group_rates(res)
    points = len(drawn.axes[0].containers)
    res.tables["demographic_rates"] = dr.assign(
        n_impostor=np.where(dr["group"] == gone, 0, dr["n_impostor"]),
        false_matches=np.where(dr["group"] == gone, 0, dr["false_matches"]),
        fmr=np.where(dr["group"] == gone, np.nan, dr["fmr"]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fig = plot_group_rates(res)
    assert fig is not None and len(fig.axes[0].containers) == points - 1
    assert len(fig.axes[1].containers) == len(drawn.axes[1].containers)


def test_equalized_odds_of_one_test_group_is_undefined_and_warns_nothing() -> None:
    """One test group: no spread across groups, so the TPR and FPR differences are NaN in every seed; their means
    are NaN too, without numpy's "Mean of empty slice" warning (which would reach the user's terminal)."""
    import warnings

    from grid.report.results import Results, Tables
    from grid.report.sections.equalized_odds import equalized_odds

    pred = pd.DataFrame({"model": "logreg", "train_group": "asian", "test_group": "asian", "seed": [0, 0, 1, 1],
                         "y_true": [0, 1, 0, 1], "y_pred": [0, 1, 1, 1]})
    res = Results("unused", Tables(frames={"predictions": pred}), {}, {}, ["logreg"], ["asian"], ["asian"], [0, 1])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        eo = equalized_odds(res)
    assert len(eo) == 1 and np.isnan(eo.loc[0, "tpr_difference_mean"]) and np.isnan(eo.loc[0, "fpr_difference_mean"])
