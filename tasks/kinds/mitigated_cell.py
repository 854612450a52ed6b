"""Job kind "mitigated_cell": a cell (:mod:`tasks.kinds.cell`) trained with a classifier-side mitigation
(:mod:`tasks.mitigation`): one job per model x train group x seed x classifier mitigation of ``[grid]
mitigations`` (``none`` is the cell kind's, unchanged). The method is fitted on the train group's rows with their
group labels on the group axis (``[grid] group``) and identities, and predicts every test group as the cell does
(its evaluation loop: :func:`tasks.kinds.cell.run_cell`). Its rows go to ``mitigated_accuracy`` and
``mitigated_predictions`` (:func:`storage.schema.mitigated_table` of the cell's tables: a ``mitigation`` column
first, the partition).

A mitigation compares groups, so a train group of one group (``"asian"``) plans no mitigated job: only ``all``
and unions (``"asian+black"``) do. ``all`` over data of a single group is refused before the run (every train
group of such data is single-group: no mitigation can run), as is a mitigation that trains with sample weights
(``needs_sample_weight``) paired with a model whose ``fit`` takes none."""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import pandas as pd

from storage.errors import InputError
from storage.schema import mitigated_table
from storage.vocab import ALL, parse_train_group
from tasks.kinds import JobKind, PlannedJob, register
from tasks.kinds.cell import TABLES as CELL_TABLES
from tasks.kinds.cell import cell_cost, cell_rows, run_cell
from tasks.mitigation import describe, method_of, mitigations_of
from tasks.models import MODEL_TYPES, build_model, model_type, takes_sample_weight
from tasks.runtime import job_threads, row_groups

TABLES = tuple(mitigated_table(t) for t in CELL_TABLES)   # mitigated_accuracy, mitigated_predictions


def several_groups(train_group: str) -> bool:
    """Whether ``train_group`` trains on several groups of the group axis: ``all`` (on data of several groups)
    or a union ``"a+b"``."""
    parts = parse_train_group(train_group)
    return parts == (ALL,) or len(parts) > 1


def _plan(cfg: Mapping[str, Any]) -> Iterator[PlannedJob]:
    """One mitigated cell per model x train group of several groups x seed x classifier mitigation (not none)."""
    g = cfg["grid"]
    mitigations = mitigations_of(cfg, "classifier")[1:]
    train_groups = [t for t in g["train_groups"] if several_groups(t)]
    for model, train_group, seed, mitigation in itertools.product(g["models"], train_groups, g["seeds"],
                                                                   mitigations):
        params = {"model": model, "model_config": cfg["model"][model], "train_group": train_group,
                  "test_groups": list(g["test_groups"]), "mitigation": mitigation,
                  "mitigation_config": cfg["mitigation"][mitigation], "threads": cfg["run"]["threads_per_job"]}
        yield PlannedJob(seed, params, f"cell {model} train={train_group} seed={seed} mitigation={mitigation}")


def run(payload: Mapping[str, Any], data: Mapping[str, np.ndarray]) -> dict[str, pd.DataFrame]:
    """Worker entry of a mitigated cell: the cell's rows of the mitigated model, with its ``mitigation``."""
    p = payload["params"]
    out = run_cell(data["X"], data["target"], payload["train_idx"], payload["test_sets"], model=p["model"],
                   model_config=p["model_config"], train_group=p["train_group"], seed=payload["seed"],
                   threads=job_threads(payload), identity_codes=data.get("identity_codes"),
                   mitigation=p["mitigation"], mitigation_config=p["mitigation_config"],
                   group_labels=row_groups(data, axis="group"))
    tables = {}
    for name, frame in out.items():
        frame.insert(0, "mitigation", p["mitigation"])
        tables[f"mitigated_{name}"] = frame
    return tables


def model_takes_sample_weight(model: str, config: Mapping) -> bool:
    """Whether grid model ``model`` trains with per-sample weights: every built-in type does (logreg and xgboost
    natively, the mlp with Keras' arithmetic); a user builder's model is built, untrained, and its ``fit``
    inspected (:func:`tasks.models.takes_sample_weight`)."""
    if model_type(model, config) in MODEL_TYPES:
        return True
    return takes_sample_weight(build_model(model, config, seed=0, threads=1))


def _check(cfg: Mapping[str, Any], table: Any, splits: Mapping[int, Any], jobs: list[Any]) -> None:
    """InputError before the run for a mitigation needing sample weights with a model whose fit takes none, and
    for ``all`` over data of one group."""
    for model, mitigation in dict.fromkeys((j.params["model"], j.params["mitigation"]) for j in jobs):
        config = cfg["model"][model]
        if describe(mitigation, cfg["mitigation"][mitigation]).needs_sample_weight and \
                not model_takes_sample_weight(model, config):
            raise InputError(f"grid.mitigations: mitigation {mitigation!r} trains the model with sample weights, "
                             f"but the fit of model {model!r} takes no sample_weight; remove {mitigation!r} or "
                             f"{model!r} from the grid, or give the model's fit a sample_weight argument")
    present = next(iter(splits.values())).train.keys() if splits else ()
    if len(present) < 2 and any(j.params["train_group"] == ALL for j in jobs):
        mitigation = next(j.params["mitigation"] for j in jobs)
        raise InputError(f"grid.mitigations: mitigation {mitigation!r} needs training rows of several groups, but "
                         f"train group '{ALL}' is the data's one group ({', '.join(present)}) of "
                         f"[grid] group {cfg['grid']['group']!r}; remove the classifier mitigations or use data "
                         f"with several groups")


_METHOD_COST = {"reductions": lambda config: int(config["max_iter"])}   # ExponentiatedGradient: a fit per iteration


def _cost(params: Mapping[str, Any]) -> int:
    """The cell's cost times the method's: the fits it makes (reductions: up to ``max_iter``; the others one)."""
    method = method_of(params["mitigation"], params["mitigation_config"])
    return cell_cost(params) * _METHOD_COST.get(method, lambda config: 1)(params["mitigation_config"])


KIND = register(JobKind(
    "mitigated_cell", plan=_plan, rows=cell_rows, run="tasks.kinds.mitigated_cell:run", tables=TABLES, order=3,
    cost=_cost, record=("model", "train_group", "mitigation"), preload=("tasks.models", "tasks.mitigation"),
    check=_check, report=("grid.report.sections.mitigation:SECTION",)))
