"""Issue 21, adversarial inputs: embeddings of any finite size give the same verification numbers, and what
cannot be used is refused (exit 2, one sentence naming the file, row, key or option) before anything is written."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from grid.config import resolve_config
from grid.runner import run_grid
from storage.errors import InputError
from storage.results import load
from storage.synth import SynthParams, generate
from storage.table import write_table

from conftest import biasgrid

# Under xdist this module's tests run on one worker: its module fixture (scaled_runs) is built once.
pytestmark = pytest.mark.xdist_group("adversarial_inputs")

REPO = Path(__file__).resolve().parents[1]

VERIFICATION_TABLES = ["verification", "verification_curve", "verification_hist", "impostor_matrix",
                       "demographic_rates", "group_eer", "operating_points", "verification_ci", "allpairs_counts",
                       "allpairs_tail", "allpairs_identities", "pair_groups", "pair_operating_points", "pair_across"]
SCALED_GRID = {"grid.models": ["logreg"], "grid.seeds": [1], "grid.train_groups": ["asian"],
               "protocol.train_per_gender": 6, "protocol.test_per_gender": 6, "verification.bootstrap": 20,
               "verification.identities": "all", "verification.allpairs_shards": 2,
               "verification.target_fmrs": [1e-1, 1e-2], "tsne.subsets": ["all"], "tsne.perplexity": 5.0,
               "run.executor": "local", "run.workers": 2, "run.report": False}


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """``biasgrid ARGS`` in this process (conftest.biasgrid): exit code, stdout and stderr."""
    return biasgrid(*args, cwd=cwd)


def cli_process(*args: str) -> subprocess.CompletedProcess:
    """``python -m grid.cli ARGS`` in a process of its own (the Ray executor starts Ray before the data is read)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-m", "grid.cli", *args], capture_output=True, text=True, env=env,
                          timeout=300)


def error_line(proc: subprocess.CompletedProcess) -> str:
    """The command's one-sentence error (the line that starts with "error"), asserting there is no traceback."""
    assert "Traceback" not in proc.stderr, proc.stderr
    return next(line for line in proc.stderr.splitlines() if "error" in line.lower()[:30])


def quantised_table():
    """A small synthetic table with values on a grid of 1/64, so that x 2^-140 (float32 denormals) is exact."""
    t = generate(SynthParams(identities_per_group=24, dim=12, seed=4))
    return dataclasses.replace(t, embeddings=np.ascontiguousarray(np.round(t.embeddings * 64) / 64, np.float32))


def pairs_csv(table, path: Path) -> None:
    """Per identity with two images: one genuine pair and one impostor pair (with the next identity)."""
    frame = pd.DataFrame({"identity": table.identity, "image": table.image})
    ids = list(dict.fromkeys(frame["identity"]))
    rows = []
    for k, who in enumerate(ids):
        mine = frame.loc[frame["identity"] == who, "image"].tolist()
        other = ids[(k + 1) % len(ids)]
        theirs = frame.loc[frame["identity"] == other, "image"].iloc[0]
        if len(mine) >= 2:
            rows += [(f"{who}/{mine[0]}", f"{who}/{mine[1]}", 1), (f"{who}/{mine[0]}", f"{other}/{theirs}", 0)]
    pd.DataFrame(rows, columns=["image_a", "image_b", "same"]).to_csv(path, index=False)


def comparable(tables: dict[str, pd.DataFrame], name: str) -> pd.DataFrame:
    df = tables[name].drop(columns=["job_id", "node", "finished_at", "seconds"], errors="ignore").reset_index(drop=True)
    keys = [c for c in df.columns if df[c].dtype == object or str(df[c].dtype) in ("string", "category")]
    return df.sort_values(keys + [c for c in df.columns if c not in keys]).reset_index(drop=True)


@pytest.fixture(scope="module")
def scaled_runs(tmp_path_factory):
    """One run per scale of the same table: x1, x 2^66 (squares overflow float32), x 2^-140 (squares underflow),
    x 1e20 and x 1e-42 (the issue's factors)."""
    tmp = tmp_path_factory.mktemp("scaled")
    base = quantised_table()
    pairs_csv(base, tmp / "pairs.csv")
    out = {}
    for label, scale in [("1", 1.0), ("2^66", 2.0 ** 66), ("2^-140", 2.0 ** -140), ("1e20", 1e20), ("1e-42", 1e-42)]:
        emb = base.embeddings * np.float32(scale)
        assert np.isfinite(emb).all() and emb.any(axis=1).all()
        write_table(dataclasses.replace(base, embeddings=np.ascontiguousarray(emb)), tmp / f"x{label}.parquet")
        cfg = resolve_config(None, {**SCALED_GRID, "data.path": str(tmp / f"x{label}.parquet"),
                                    "verification.pairs": str(tmp / "pairs.csv"), "run.out": str(tmp / label)})
        summary = run_grid(cfg, progress=False)
        assert summary.exit_code == 0 and summary.failed == [], (label, summary.failed)
        out[label] = load(tmp / label)
    return out


@pytest.mark.parametrize("scale", ["2^66", "2^-140"])
def test_power_of_two_scales_give_the_same_verification_numbers_on_every_path(scaled_runs, scale):
    """Issue 21 item 1: x 1e20 used to give every score 0 with exit 0, x 1e-42 a late "all zeros" failure.
    Scores, impostor matrix, all pairs (counts and tail) and the pair protocol: the same rows, bit for bit."""
    for name in VERIFICATION_TABLES:
        assert len(scaled_runs["1"][name]), name
        pd.testing.assert_frame_equal(comparable(scaled_runs[scale], name), comparable(scaled_runs["1"], name),
                                      obj=f"{name} at x{scale}")
    assert np.isfinite(scaled_runs[scale]["tsne"][["x", "y"]].to_numpy()).all()


@pytest.mark.parametrize("scale,atol", [("1e20", 1e-5), ("1e-42", 2e-2)])
def test_the_issues_scales_give_the_same_verification_numbers(scaled_runs, scale, atol):
    """x 1e20 rounds each value once (float32), x 1e-42 leaves denormals of a few bits: the same numbers up to
    that rounding, never 0 scores or a refusal."""
    for name, columns in [("verification", ["eer", "genuine_mean", "impostor_mean"]),
                          ("group_eer", ["eer"]), ("pair_groups", ["accuracy_mean", "eer"])]:
        got, want = comparable(scaled_runs[scale], name), comparable(scaled_runs["1"], name)
        present = [c for c in columns if c in want]
        assert present, (name, list(want.columns))
        np.testing.assert_allclose(got[present].to_numpy(float), want[present].to_numpy(float), atol=atol,
                                   err_msg=f"{name} at x{scale}")
    assert (scaled_runs[scale]["verification"]["genuine_mean"] > 0.1).all()


@pytest.mark.parametrize("executor", ["local", "ray"])
def test_all_zero_rows_are_refused_at_read_time_and_nothing_is_written(tmp_path, executor):
    base = quantised_table()
    emb = base.embeddings.copy()
    emb[[3, 40, 41, 77]] = 0.0
    emb[41] = -0.0
    table = dataclasses.replace(base, embeddings=emb)
    pq = tmp_path / "zeros.parquet"
    import pyarrow as pa
    import pyarrow.parquet as papq

    from storage.table import _labels_arrow   # write past write_table's own check, as another tool would
    arrays = {**_labels_arrow(table), "embedding": pa.FixedSizeListArray.from_arrays(pa.array(emb.ravel()), 12)}
    papq.write_table(pa.table(arrays), pq)
    proc = (cli if executor == "local" else cli_process)("run", "--data", str(pq), "--out", str(tmp_path / "r"),
                                                         "--executor", executor, "--workers", "1",
               "--models", "logreg", "--no-report")
    assert proc.returncode == 2, proc.stderr
    line = error_line(proc)
    assert str(pq) in line and "4 embedding row(s) are all zeros" in line, line
    assert f"image {base.image[3]!r}" in line and ", ..." in line, line
    assert not (tmp_path / "r").exists()
    with pytest.raises(InputError, match="all zeros"):
        write_table(table, tmp_path / "w.parquet")
    assert not (tmp_path / "w.parquet").exists()


def test_a_single_group_table_trains_on_that_group(tmp_path):
    """Issue 21 item 7: a table with one ethnicity was refused with "train group 'all' repeats 'asian'" though
    no train group was set. By default it now trains on its one group (no redundant "all"); a user's explicit
    repeat is refused naming grid.train_groups."""
    t = generate(SynthParams(identities_per_group=24, dim=8))
    keep = t.ethnicity == 0
    one = dataclasses.replace(t, embeddings=np.ascontiguousarray(t.embeddings[keep]), identity=t.identity[keep],
                              image=t.image[keep], ethnicity=t.ethnicity[keep], gender=t.gender[keep],
                              ethnicities=("asian",))
    write_table(one, tmp_path / "one.parquet")
    (tmp_path / "g.toml").write_text("[protocol]\ntrain_per_gender = 5\ntest_per_gender = 5\n[verification]\n"
                                     "bootstrap = 0\n[tsne]\nenabled = false\n")
    base = ["run", "--config", str(tmp_path / "g.toml"), "--data", str(tmp_path / "one.parquet"), "--seeds", "1",
            "--models", "logreg", "--executor", "local", "--workers", "1", "--quiet"]
    proc = cli(*base, "--out", str(tmp_path / "r"))
    assert proc.returncode == 0, proc.stderr
    acc = load(tmp_path / "r", ["accuracy"])["accuracy"]
    assert acc["train_group"].tolist() == ["asian"] and acc["test_group"].tolist() == ["asian"]
    assert (tmp_path / "r" / "report" / "report.md").exists()
    (tmp_path / "h.toml").write_text((tmp_path / "g.toml").read_text() + "[grid]\ntrain_groups = ['asian', 'all']\n")
    proc = cli(*base, "--config", str(tmp_path / "h.toml"), "--out", str(tmp_path / "r2"))
    assert proc.returncode == 2
    assert error_line(proc).startswith("biasgrid: error: grid.train_groups: train group 'all' repeats 'asian'")
    assert not (tmp_path / "r2").exists()


def test_hostile_group_names_are_escaped_in_the_markdown_report(tmp_path):
    """Issue 21 item 8: a group named <script>alert(1)</script> appeared verbatim in report.md. Now every text of
    the Markdown report is escaped (HTML entities, backslash before | and other specials), so no raw HTML and no
    split table cells; report.html and tables.tex escape it as before."""
    import re

    t = generate(SynthParams(identities_per_group=24, dim=8))
    hostile = ("asian", "<script>alert(1)</script>", "x|y")
    write_table(dataclasses.replace(t, ethnicities=hostile), tmp_path / "h.parquet")
    (tmp_path / "g.toml").write_text("[protocol]\ntrain_per_gender = 5\ntest_per_gender = 5\n[verification]\n"
                                     "bootstrap = 0\n[tsne]\nenabled = false\n")
    proc = cli("run", "--config", str(tmp_path / "g.toml"), "--data", str(tmp_path / "h.parquet"), "--seeds", "2",
               "--models", "logreg", "--executor", "local", "--workers", "2", "--quiet", "--out", str(tmp_path / "r"))
    assert proc.returncode == 0, proc.stderr
    report = tmp_path / "r" / "report"
    md = (report / "report.md").read_text()
    assert "<script" not in md and "&lt;script&gt;alert(1)&lt;/script&gt;" in md and "x\\|y" in md
    for block in re.split(r"\n\n+", md):   # every Markdown table: each row has as many cells as its header
        rows = [r for r in block.splitlines() if r.startswith("|")]
        cells = {len(re.split(r"(?<!\\)\|", r)) for r in rows}
        assert len(cells) <= 1, block
    config = re.search(r"```json\n(.*?)\n```", md, re.S).group(1)
    assert "<script>alert(1)</script>" in json.loads(config)["grid"]["test_groups"]   # JSON escapes: same config
    page = (report / "report.html").read_text()
    assert "<script>alert(1)" not in page and "&lt;script&gt;alert(1)" in page
    tex = (report / "tables.tex").read_text()
    assert "<script>" not in tex and "$<$script$>$alert(1)" in tex


def test_a_perplexity_beyond_the_training_images_is_refused_before_any_job(tmp_path):
    """The same class as issue 21 item 6: t-SNE's perplexity must be below its subset's image count, known from the
    split; it used to fail the t-SNE jobs after the grid (exit 1)."""
    (tmp_path / "g.toml").write_text("[data.synth]\nidentities_per_group = 24\ndim = 8\n[protocol]\n"
                                     "train_per_gender = 5\ntest_per_gender = 5\n[verification]\nenabled = false\n"
                                     "[tsne]\nperplexity = 40.0\n")
    proc = cli("run", "--config", str(tmp_path / "g.toml"), "--seeds", "1", "--models", "logreg", "--executor",
               "local", "--quiet", "--out", str(tmp_path / "r"))
    assert proc.returncode == 2
    assert error_line(proc).startswith("biasgrid: error: tsne.perplexity must be less than the 30 training images "
                                       "of t-SNE subset 'all' (seed 0), got 40"), proc.stderr
    assert not (tmp_path / "r").exists()
