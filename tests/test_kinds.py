"""The job-kind registry: a new kind is one module plus its registration, and runs through the grid like the
built-in kinds: planned, dispatched to workers by lookup, stored in its own table, reported in status; a user's
kind module, named in the config, brings its own config section and report section through `biasgrid run` and
`biasgrid report`; and no grid/ module names a built-in kind."""

from __future__ import annotations

import ast
import dataclasses
import itertools
import json
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import storage
from conftest import REPO
from grid.config import resolve_config
from grid.plan import make_plan
from grid.runner import run_grid
from grid.splits import Protocol, make_split
from storage import schema
from storage.results import ResultStore, job_state, load
from storage.synth import SynthParams, generate
from tasks import kinds

TOY_TABLE = schema.TableSchema("toy_sums", {"train_group": "string", "seed": "int", "n_rows": "int",
                                            "row_sum": "float", "job_id": "string"}, partition="train_group")


def plan(cfg: Mapping[str, Any]) -> Iterator[kinds.PlannedJob]:
    """One toy job per seed x train group."""
    for seed, group in itertools.product(cfg["grid"]["seeds"], cfg["grid"]["train_groups"]):
        yield kinds.PlannedJob(seed, {"train_group": group}, f"toy {group} seed={seed}")


def run(payload: Mapping[str, Any], data: Mapping[str, np.ndarray]) -> dict[str, pd.DataFrame]:
    """The toy's worker: how many training rows the job got and the sum of their embeddings."""
    rows = payload["rows"]
    return {"toy_sums": pd.DataFrame({"train_group": [payload["params"]["train_group"]], "seed": [payload["seed"]],
                                      "n_rows": [len(rows)],
                                      "row_sum": [float(np.asarray(data["X"])[rows].sum(dtype=np.float64))]})}


TOY = kinds.JobKind("toy", plan=plan, rows=lambda params, split: {"rows": split.train_rows(params["train_group"])},
                    run=f"{__name__}:run", tables=(TOY_TABLE,), order=5)


@pytest.fixture
def toy_kind() -> Iterator[kinds.JobKind]:
    kinds.register(TOY)
    try:
        yield TOY
    finally:
        kinds.unregister("toy")


SYNTH = {"identities_per_group": 20, "dim": 16}


def test_a_registered_kind_runs_through_the_grid(tmp_path, toy_kind) -> None:
    out = tmp_path / "r"
    cfg = resolve_config(None, {"data.synth": SYNTH, "grid.models": ["logreg"], "grid.seeds": "2",
                                "grid.train_groups": ["asian", "caucasian", "black", "all"],
                                "grid.test_groups": ["asian", "caucasian", "black"],
                                "protocol.train_per_gender": 6, "protocol.test_per_gender": 4,
                                "verification.enabled": False, "tsne.enabled": False, "run.executor": "local",
                                "run.workers": 2, "run.out": str(out), "run.report": False})
    jobs = make_plan(cfg, "fingerprint")
    assert [j.kind for j in jobs[:8]] == ["toy"] * 8          # its order puts it first
    assert sum(j.kind == "cell" for j in jobs) == 8
    summary = run_grid(cfg, progress=False)
    assert summary.exit_code == 0 and summary.ran == 16
    toy = load(out)["toy_sums"]
    assert len(toy) == 8 and set(toy["train_group"]) == set(cfg["grid"]["train_groups"])
    # the numbers, computed independently from the same data and splits
    table = generate(SynthParams(**SYNTH))
    for row in toy.itertuples():
        split = make_split(table, row.seed, Protocol(6, 4))
        rows = split.train_rows(row.train_group)
        assert row.n_rows == len(rows)
        assert row.row_sum == pytest.approx(float(table.embeddings[rows].sum(dtype=np.float64)), rel=1e-12)
    ledger = ResultStore(out).ledger()
    assert sum(r["kind"] == "toy" and job_state(r) == "done" for r in ledger.values()) == 8
    # a second run finds them stored
    assert run_grid(cfg, progress=False).ran == 0


TOTAL_TABLE = schema.TableSchema("toy_totals", {"block": "int", "total": "float", "n_sums": "int",
                                                "job_id": "string"}, partition="block")


def total_inputs(cfg: Mapping[str, Any], read) -> dict[str, np.ndarray]:
    """The toy jobs' stored sums, read on the driver (only the column it needs)."""
    return {"sums": read("toy_sums", ["row_sum"]).column("row_sum").to_numpy()}


def total_run(payload: Mapping[str, Any], data: Mapping[str, np.ndarray]) -> dict[str, pd.DataFrame]:
    return {"toy_totals": pd.DataFrame({"block": [payload["params"]["block"]], "n_sums": [len(data["sums"])],
                                        "total": [float(np.sum(data["sums"]))]})}


TOTAL = kinds.JobKind("toy_total", plan=lambda cfg: (kinds.PlannedJob(0, {"block": b}, f"total {b}") for b in (0, 1)),
                      rows=lambda params, split: {}, run=f"{__name__}:total_run", tables=(TOTAL_TABLE,), order=9,
                      after=("toy",), inputs=total_inputs)


def test_a_kind_after_another_reads_what_it_stored(tmp_path, toy_kind) -> None:
    """A kind declaring ``after`` runs in a later stage, once every job of the kind it follows is done, on the
    arrays its ``inputs`` built from their stored rows (not the data's); its order cannot put it first."""
    kinds.register(TOTAL)
    try:
        assert [[k.name for k in st] for st in kinds.stages(["toy_total", "cell", "toy"])] == \
            [["cell", "toy"], ["toy_total"]]
        out = tmp_path / "r"
        cfg = resolve_config(None, {"data.synth": SYNTH, "grid.models": ["logreg"], "grid.seeds": "2",
                                    "grid.train_groups": ["asian", "all"], "grid.test_groups": ["asian"],
                                    "protocol.train_per_gender": 6, "protocol.test_per_gender": 4,
                                    "verification.enabled": False, "tsne.enabled": False, "run.executor": "local",
                                    "run.workers": 2, "run.out": str(out), "run.report": False})
        summary = run_grid(cfg, progress=False)
        assert summary.exit_code == 0 and summary.ran == 4 + 4 + 2
        tables = load(out)
        totals = tables["toy_totals"]
        assert sorted(totals["block"]) == [0, 1] and (totals["n_sums"] == 4).all()
        assert totals["total"].tolist() == pytest.approx([tables["toy_sums"]["row_sum"].sum()] * 2, rel=1e-12)
        ledger = ResultStore(out).ledger().values()
        toy_end = max(r["started"] + r["seconds"] for r in ledger if r["kind"] == "toy")
        assert min(r["started"] for r in ledger if r["kind"] == "toy_total") >= toy_end - 0.01
    finally:
        kinds.unregister("toy_total")


def test_kinds_that_wait_on_each_other_are_refused(toy_kind) -> None:
    kinds.register(dataclasses.replace(TOTAL, name="loop_a", after=("loop_b",)))
    kinds.register(dataclasses.replace(TOTAL, name="loop_b", after=("loop_a",)))
    try:
        with pytest.raises(ValueError, match="loop_a, loop_b wait on each other"):
            kinds.stages(["toy", "loop_a", "loop_b"])
        assert [[k.name for k in st] for st in kinds.stages(["toy", "loop_a"])] == [["toy", "loop_a"]]
    finally:
        kinds.unregister("loop_a")
        kinds.unregister("loop_b")


def test_unknown_kind_and_table_are_named() -> None:
    with pytest.raises(KeyError, match="unknown job kind 'nope'; known: cell"):
        kinds.get("nope")
    with pytest.raises(KeyError, match="unknown results table 'nope'"):
        schema.schema("nope")
    with pytest.raises(ValueError, match="already defined"):
        schema.register_table(schema.TableSchema("accuracy", {"x": "float"}, "x"))


# ------------------------------------------------------------------------------- a plug-in kind, one module ---
TOY_MODULE = '''"""A toy job kind in one module: its jobs, table, config section [toy] and report section."""

import dataclasses
import itertools

import numpy as np
import pandas as pd

from grid.report.blocks import Table
from grid.report.sections import Section
from storage.errors import InputError
from storage.schema import result_table
from tasks.kinds import ConfigPart, JobKind, PlannedJob, register

TABLE = result_table("toy_scaled", "train_group", {"train_group": "string", "seed": "int", "n_rows": "int",
                                                   "scaled_sum": "float"})


def check(cfg, where):
    if not cfg["toy"]["scale"] > 0:
        raise InputError(f"{where('toy.scale')} must be a positive number, got {cfg['toy']['scale']}")


def plan(cfg):
    if cfg["toy"]["enabled"]:
        for seed, group in itertools.product(cfg["grid"]["seeds"], cfg["grid"]["train_groups"]):
            yield PlannedJob(seed, {"train_group": group, "scale": cfg["toy"]["scale"]}, f"toy {group} seed={seed}")


def run(payload, data):
    rows = payload["rows"]
    total = float(np.asarray(data["X"])[rows].sum(dtype=np.float64)) * payload["params"]["scale"]
    return {"toy_scaled": pd.DataFrame({"train_group": [payload["params"]["train_group"]],
                                        "seed": [payload["seed"]], "n_rows": [len(rows)], "scaled_sum": [total]})}


def summaries(res):
    toy = res.tables["toy_scaled"]
    return {"toy_summary": toy.groupby("train_group", as_index=False, sort=True)["scaled_sum"].mean()}


def blocks(res, s):
    frame = s["toy_summary"].astype(str)
    return [("h2", "Toy sums"), ("p", "The mean scaled sum of the training rows per train group."),
            ("table", Table(frame, "Toy: scaled sum per train group"))]


REPORT = Section("toy", blocks, summaries)
register(JobKind("toy", plan=plan, rows=lambda params, split: {"rows": split.train_rows(params["train_group"])},
                 run=f"{__name__}:run", tables=(TABLE,), order=5,
                 config=ConfigPart("toy", {"enabled": True, "scale": 2.0}, check), record=("train_group",),
                 report=(f"{__name__}:REPORT",)))
'''

BUILTIN_CONFIG = ("verification", "tsne")   # the config sections the built-in kinds own
CORE = ("grid/config.py", "grid/experiment.py", "grid/executors.py", "grid/plan.py", "grid/runner.py",
        "grid/report/__init__.py", "grid/report/document.py", "grid/report/results.py", "grid/report/stats.py",
        "grid/report/render.py", "grid/report/blocks.py", "grid/report/figures.py",
        "grid/report/sections/__init__.py", "grid/report/sections/jobs.py")


def kind_mentions(path: Path, strict: bool) -> list[str]:
    """Where the module at ``path`` names a built-in kind: it imports a kind's module, or compares a job's kind
    with a built-in kind's name; ``strict`` (the modules that only iterate over the registry): any string equal to
    a built-in kind's name or to a config section a built-in kind owns."""
    names = set(kinds.BUILTIN)
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        where = f"{path.name}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.ImportFrom) and node.module:
            modules = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            found += [f"{where} imports {m}" for m in modules if m.split(".")[:3][-1:] and
                      m.startswith("tasks.kinds.") and m.split(".")[2] in names]
        elif isinstance(node, ast.Import):
            found += [f"{where} imports {a.name}" for a in node.names
                      if a.name.startswith("tasks.kinds.") and a.name.split(".")[2] in names]
        elif isinstance(node, ast.Attribute) and node.attr in names and ast.unparse(node.value).endswith("kinds"):
            found.append(f"{where} uses {ast.unparse(node)}")
        elif isinstance(node, ast.Compare):
            parts = [node.left, *node.comparators]
            about_kind = any("kind" in ast.unparse(p) for p in parts)
            literals = {p.value for p in ast.walk(node) if isinstance(p, ast.Constant)}
            if about_kind and literals & names:
                found.append(f"{where} compares a kind with {sorted(literals & names)}")
        elif isinstance(node, ast.Call) and ast.unparse(node.func).endswith(("kinds.get", ".isin")):
            literals = {p.value for p in ast.walk(node) if isinstance(p, ast.Constant)}
            if literals & names:
                found.append(f"{where} looks up {sorted(literals & names)}")
        if strict and isinstance(node, ast.Constant) and node.value in names | set(BUILTIN_CONFIG):
            found.append(f"{where} spells {node.value!r}")
    return found


def grid_kind_mentions(root: Path) -> list[str]:
    return [m for path in sorted((root / "grid").rglob("*.py"))
            for m in kind_mentions(path, path.relative_to(root).as_posix() in CORE)]


def test_no_grid_module_names_a_built_in_kind(tmp_path: Path) -> None:
    assert grid_kind_mentions(REPO) == []
    # the check sees each way of naming one
    (tmp_path / "grid").mkdir()
    (tmp_path / "grid" / "runner.py").write_text(
        "from tasks.kinds import cell\nimport tasks.kinds.tsne\n"
        "def f(job, status, cfg):\n    return job.kind == 'scores' or cfg['verification']\n")
    (tmp_path / "grid" / "other.py").write_text(
        "from tasks import kinds\ndef g(status):\n    return kinds.get('impostor'), status['kind'].isin(['pairs'])\n")
    found = grid_kind_mentions(tmp_path)
    assert any("imports tasks.kinds.cell" in m for m in found) and any("imports tasks.kinds.tsne" in m for m in found)
    assert any("compares a kind with ['scores']" in m for m in found)
    assert any("spells 'verification'" in m for m in found)
    assert any("looks up ['impostor']" in m for m in found) and any("looks up ['pairs']" in m for m in found)


def cli(*args: str, cwd: Path, pythonpath: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(pythonpath), str(REPO),
                                                                      os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-m", "grid.cli", *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=600)


def test_a_kind_from_one_module_runs_through_run_and_report(tmp_path: Path) -> None:
    """The toy kind's module is the only file written: config section [toy] (defaults, a checked key), its own
    table, its report section; `biasgrid run` plans, runs and stores it, `biasgrid report` shows it."""
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "toy_kind.py").write_text(TOY_MODULE)
    config = tmp_path / "grid.toml"
    config.write_text('[data.synth]\nidentities_per_group = 20\ndim = 16\n[grid]\nmodels = ["logreg"]\nseeds = 2\n'
                      '[protocol]\ntrain_per_gender = 6\ntest_per_gender = 4\n[verification]\nenabled = false\n'
                      '[tsne]\nenabled = false\n[run]\nexecutor = "local"\nworkers = 2\nkinds = ["toy_kind"]\n'
                      '[toy]\nscale = 0.5\n')
    bad = tmp_path / "bad.toml"
    bad.write_text(config.read_text().replace("scale = 0.5", "scale = -1.0"))
    refused = cli("run", "--config", str(bad), "--out", str(tmp_path / "bad"), "--quiet", cwd=tmp_path,
                  pythonpath=plugins)
    assert refused.returncode == 2 and "'toy.scale' must be a positive number, got -1.0" in refused.stderr
    assert not (tmp_path / "bad").exists()

    out = tmp_path / "r"
    ran = cli("run", "--config", str(config), "--out", str(out), "--quiet", "--no-report", cwd=tmp_path,
              pythonpath=plugins)
    assert ran.returncode == 0, ran.stderr
    run = json.loads((out / "run.json").read_text())
    assert run["config"]["toy"] == {"enabled": True, "scale": 0.5} and run["experiment"]["toy"] == {"scale": 0.5}
    assert run["tables"]["toy_scaled"]["partition"] == "train_group"
    toy = pd.read_parquet(out / "toy_scaled")
    assert len(toy) == 2 * 4                               # seeds x train groups (3 groups and all)
    table = generate(SynthParams(**SYNTH))
    for row in toy.itertuples():                           # the numbers, computed independently
        rows = make_split(table, row.seed, Protocol(6, 4)).train_rows(row.train_group)
        assert row.n_rows == len(rows)
        assert row.scaled_sum == pytest.approx(0.5 * float(table.embeddings[rows].sum(dtype=np.float64)), rel=1e-12)

    again = cli("run", "--config", str(config), "--out", str(out), "--no-report", cwd=tmp_path, pythonpath=plugins)
    assert again.returncode == 0 and "16 already stored" in again.stderr and "0 to run" in again.stderr
    other = tmp_path / "other.toml"
    other.write_text(config.read_text().replace("scale = 0.5", "scale = 0.25"))
    moved = cli("run", "--config", str(other), "--out", str(out), "--quiet", cwd=tmp_path, pythonpath=plugins)
    assert moved.returncode == 2 and "toy.scale: stored 0.5, new 0.25" in moved.stderr   # the folder fixes [toy]

    report = cli("report", str(out), cwd=tmp_path, pythonpath=plugins)
    assert report.returncode == 0, report.stderr
    md = (out / "report" / "report.md").read_text()
    assert "## Toy sums" in md and "Toy: scaled sum per train group" in md
    assert md.index("## Failed and missing jobs") < md.index("## Accuracy matrices") < md.index("## Toy sums")
    summary = pd.read_csv(out / "report" / "toy_summary.csv")
    expected = toy.groupby("train_group")["scaled_sum"].mean()
    assert dict(zip(summary["train_group"], summary["scaled_sum"])) == pytest.approx(expected.to_dict())
    assert storage.load(out, ["toy_scaled"])["toy_scaled"]["scaled_sum"].sum() == pytest.approx(toy["scaled_sum"].sum())


LOAD_SCRIPT = """
import sys, storage
tables = storage.load(sys.argv[1])
print(sorted(name for name, frame in tables.items() if len(frame)))
print(list(tables["accuracy"].columns), tables["accuracy"]["accuracy"].sum(), str(tables["accuracy"]["seed"].dtype))
"""


def test_storage_load_reads_a_folder_without_importing_the_kinds(tmp_path: Path) -> None:
    """A notebook's ``storage.load`` (no job kind imported) reads the tables run.json records, and, for a folder
    written before run.json recorded them, what the files say: the same rows, columns and types."""
    out = tmp_path / "r"
    cfg = resolve_config(None, {"data.synth": SYNTH, "grid.models": ["logreg"], "grid.seeds": "2",
                                "protocol.train_per_gender": 6, "protocol.test_per_gender": 4,
                                "verification.enabled": False, "tsne.enabled": False, "run.executor": "local",
                                "run.workers": 2, "run.out": str(out), "run.report": False})
    assert run_grid(cfg, progress=False).exit_code == 0
    accuracy = load(out)["accuracy"]
    expected = (f"['accuracy', 'predictions']\n{list(accuracy.columns)} {accuracy['accuracy'].sum()} int64\n")

    def fresh_load() -> str:
        done = subprocess.run([sys.executable, "-c", LOAD_SCRIPT, str(out)], capture_output=True, text=True,
                              env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120)
        assert done.returncode == 0, done.stderr
        return done.stdout

    assert fresh_load() == expected
    run = json.loads((out / "run.json").read_text())
    del run["tables"]                                     # as written before run.json recorded the tables
    (out / "run.json").write_text(json.dumps(run))
    assert fresh_load() == expected
