"""The plan: every job of a grid, each with a stable id derived from everything that determines its result.

Jobs:
- ``cell``     one per (train group, seed, model): trains once, evaluates on every test group;
- ``scores``   one per (test group, seed): genuine/impostor verification scores of the group's test identities;
- ``impostor`` one per seed: the cross-group impostor FMR matrix over all test groups at one global threshold;
- ``tsne``     one per (t-SNE seed, subset) of the training embeddings.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

# Bump when a job's code changes its numbers, so that old stored results are not mixed with new ones.
JOB_CODE_VERSION = 2   # 2: FNMR@FMR at the one threshold convention (tasks.rates)


@dataclass(frozen=True)
class Job:
    """One unit of work. ``params`` holds everything the worker needs besides the data and the row indices."""

    job_id: str
    kind: str
    seed: int
    description: str
    params: dict[str, Any] = field(default_factory=dict, compare=False)

    def record(self) -> dict[str, Any]:
        """The job's identifiers, as stored in run.json and the ledger."""
        keep = ("model", "train_group", "test_group", "subset")
        return {"job_id": self.job_id, "kind": self.kind, "seed": self.seed, "description": self.description,
                **{k: self.params[k] for k in keep if k in self.params}}


def job_id(identity: dict[str, Any]) -> str:
    """A short stable hash of a job's identity (canonical JSON)."""
    text = json.dumps(identity, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def make_plan(cfg: dict[str, Any], fingerprint: str) -> list[Job]:
    """All jobs of the resolved config ``cfg`` for the data with ``fingerprint``, longest kinds first."""
    g, protocol = cfg["grid"], cfg["protocol"]
    common = {"data": fingerprint, "protocol": protocol, "code": JOB_CODE_VERSION}
    jobs: list[Job] = []
    for model in g["models"]:
        for train_group in g["train_groups"]:
            for seed in g["seeds"]:
                params = {"model": model, "model_config": cfg["model"][model], "train_group": train_group,
                          "test_groups": list(g["test_groups"]), "threads": cfg["run"]["threads_per_job"]}
                ident = {**common, "kind": "cell", "seed": seed,
                         **{k: v for k, v in params.items() if k != "threads"}}
                jobs.append(Job(job_id(ident), "cell", seed, f"cell {model} train={train_group} seed={seed}", params))
    v = cfg["verification"]
    if v["enabled"]:
        for seed in g["seeds"]:
            for test_group in g["test_groups"]:
                params = {"test_group": test_group, "max_impostor_pairs": v["max_impostor_pairs"]}
                ident = {**common, "kind": "scores", "seed": seed, **params}
                jobs.append(Job(job_id(ident), "scores", seed, f"scores test={test_group} seed={seed}", params))
            params = {"test_groups": list(g["test_groups"]), "target_fmr": v["target_fmr"],
                      "max_impostor_pairs": v["max_impostor_pairs"]}
            ident = {**common, "kind": "impostor", "seed": seed, **params}
            jobs.append(Job(job_id(ident), "impostor", seed, f"impostor matrix seed={seed}", params))
    t = cfg["tsne"]
    if t["enabled"]:
        for seed in t["seeds"]:
            for subset in t["subsets"]:
                params = {"subset": subset, "perplexity": t["perplexity"], "pca_dims": t["pca_dims"],
                          "threads": cfg["run"]["threads_per_job"]}
                ident = {**common, "kind": "tsne", "seed": seed,
                         **{k: v for k, v in params.items() if k != "threads"}}
                jobs.append(Job(job_id(ident), "tsne", seed, f"tsne {subset} seed={seed}", params))
    return sorted(jobs, key=_expected_cost, reverse=True)


_KIND_COST = {"cell": 3, "tsne": 2, "impostor": 1, "scores": 0}


def _expected_cost(job: Job) -> tuple[int, int]:
    """Rough cost order (longest first keeps the tail of the run short); stable within a kind."""
    size = 3 if job.params.get("train_group") == "all" or job.params.get("subset") == "all" else 1
    model_cost = 1 if job.params.get("model") == "mlp" else 0
    return (_KIND_COST[job.kind], size + model_cost)
