"""The job-kind registry: a new kind is one module (this one) plus one registration, and runs through the grid
like the built-in kinds: planned, dispatched to workers by lookup, stored in its own table, reported in status."""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import pandas as pd
import pytest

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
                    run=f"{__name__}:run", tables=("toy_sums",), order=5)


@pytest.fixture
def toy_kind() -> Iterator[kinds.JobKind]:
    schema.register_table(TOY_TABLE)
    kinds.register(TOY)
    try:
        yield TOY
    finally:
        kinds.KINDS.pop("toy", None)
        schema.TABLES.pop("toy_sums", None)


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


def test_unknown_kind_and_table_are_named() -> None:
    with pytest.raises(KeyError, match="unknown job kind 'nope'; known: cell"):
        kinds.get("nope")
    with pytest.raises(KeyError, match="unknown results table 'nope'"):
        schema.schema("nope")
    with pytest.raises(ValueError, match="already defined"):
        schema.register_table(schema.TableSchema("accuracy", {"x": "float"}, "x"))
