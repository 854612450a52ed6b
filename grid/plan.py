"""The plan: every job of a grid, each with a stable id derived from everything that determines its result.

Which jobs a config asks for is declared by each job kind (``tasks.kinds``: one module per kind, each a
product of its axes). A job's id hashes the data fingerprint, the protocol, the job code version, the study's
target and group axis when they are not the defaults (:func:`grid.axes.axis_config`), the kind, the seed and the
job's parameters (except those that only shape how it runs, such as its thread budget).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from grid.axes import DEFAULT_AXES, axis_config
from tasks import kinds

# Bump when a job's code changes its numbers, so that old stored results are not mixed with new ones.
JOB_CODE_VERSION = 4   # 2: FNMR@FMR at the one threshold convention (tasks.stats.rates); 3: predictions,
#                        balanced accuracy, counts, intervals, operating points (issue 12); 4: scores jobs'
#                        bootstrap intervals, stratified impostor sampling


@dataclass(frozen=True)
class Job:
    """One unit of work. ``params`` holds everything the worker needs besides the data and the row indices."""

    job_id: str
    kind: str
    seed: int
    description: str
    params: dict[str, Any] = field(default_factory=dict, compare=False)

    def record(self) -> dict[str, Any]:
        """The job's identifiers, as stored in run.json and the ledger (with its kind's ``record`` parameters)."""
        return {"job_id": self.job_id, "kind": self.kind, "seed": self.seed, "description": self.description,
                **{k: self.params[k] for k in kinds.get(self.kind).record if k in self.params}}

    def payload(self, split: Any) -> dict[str, Any]:
        """What a worker gets: the job, its kind's worker function and the row indices from the seed's split."""
        kind = kinds.get(self.kind)
        return {"job_id": self.job_id, "kind": self.kind, "seed": self.seed, "params": self.params,
                "run": kind.run, **kind.rows(self.params, split)}


def job_id(identity: dict[str, Any]) -> str:
    """A short stable hash of a job's identity (canonical JSON)."""
    text = json.dumps(identity, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def count_jobs(cfg: dict[str, Any]) -> int:
    """How many jobs ``cfg`` plans, counted without keeping them (memory independent of the count)."""
    return sum(1 for kind in kinds.all_kinds() for _ in kind.plan(cfg))


def make_plan(cfg: dict[str, Any], fingerprint: str) -> list[Job]:
    """All jobs of the resolved config ``cfg`` for the data with ``fingerprint``, longest kinds first."""
    common = {"data": fingerprint, "protocol": cfg["protocol"], "code": JOB_CODE_VERSION}
    axes = axis_config(cfg)
    if axes != DEFAULT_AXES:   # the defaults keep the ids of folders written before the axes could change
        common["axes"] = axes
    jobs: list[tuple[tuple[int, int], Job]] = []
    for kind in kinds.all_kinds():
        for planned in kind.plan(cfg):
            ident = {**common, "kind": kind.name, "seed": planned.seed,
                     **{k: v for k, v in planned.params.items() if k not in kinds.RUNTIME_PARAMS}}
            job = Job(job_id(ident), kind.name, planned.seed, planned.description, planned.params)
            jobs.append(((kind.order, kind.cost(planned.params)), job))
    jobs.sort(key=lambda pair: pair[0], reverse=True)  # stable: within a cost, the plan's own order
    return [job for _, job in jobs]
