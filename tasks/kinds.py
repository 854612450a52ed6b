"""Job kinds: each kind is declared once, as a :class:`JobKind`, and registered here.

A kind says which jobs a config plans (a product of its axes), how costly each is (longest first keeps a run's
tail short), which row indices of the seed's split its payload carries, which function runs it in a worker and
which result tables it fills. The planner, the runner, the workers (:func:`tasks.run_job.run_job`) and the store
all look kinds up here, so a new kind is one module plus one line in :data:`KINDS` (or :func:`register`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

# Job parameters that shape how a job runs but not its numbers: left out of the job id.
RUNTIME_PARAMS = frozenset({"threads"})


@dataclass(frozen=True)
class PlannedJob:
    """One job of a kind before it gets its id: the seed, its parameters and a human-readable description."""

    seed: int
    params: dict[str, Any]
    description: str


@dataclass(frozen=True)
class JobKind:
    """A kind of job.

    - ``plan(cfg)``: the jobs a resolved config asks for (none when the kind is disabled);
    - ``rows(params, split)``: the row indices the payload carries, from the seed's split (an object with
      ``train``, ``test`` and ``verification`` mappings, see ``grid.splits.Split``);
    - ``run``: ``"module:function"`` run in the worker as ``function(payload, data) -> {table: DataFrame}``;
    - ``tables``: the result tables it fills (names in ``storage.schema.TABLES``);
    - ``order`` and ``cost(params)``: kinds with a higher order run first, then costlier jobs first.
    """

    name: str
    plan: Callable[[Mapping[str, Any]], Iterable[PlannedJob]]
    rows: Callable[[Mapping[str, Any], Any], dict[str, Any]]
    run: str
    tables: tuple[str, ...]
    order: int = 0
    cost: Callable[[Mapping[str, Any]], int] = field(default=lambda params: 1)


KINDS: dict[str, JobKind] = {}


def register(kind: JobKind) -> JobKind:
    """Add ``kind`` to the registry (replacing a kind of the same name) and return it."""
    KINDS[kind.name] = kind
    return kind


def get(name: str) -> JobKind:
    """The registered kind ``name``; KeyError naming the known kinds otherwise."""
    _load_builtin()
    try:
        return KINDS[name]
    except KeyError:
        raise KeyError(f"unknown job kind {name!r}; known: {', '.join(KINDS)}") from None


def all_kinds() -> list[JobKind]:
    """Every registered kind, built-in ones first."""
    _load_builtin()
    return list(KINDS.values())


def _load_builtin() -> None:
    """Register the built-in kinds (on first use: their modules import this one)."""
    if _BUILTIN_LOADED:
        return
    _BUILTIN_LOADED.append(True)
    from tasks import allpairs_kind, cell, pairs_kind, tsne, verification

    for kind in (cell.KIND, verification.SCORES, verification.IMPOSTOR, tsne.KIND, allpairs_kind.KIND,
                 pairs_kind.KIND):
        KINDS.setdefault(kind.name, kind)


_BUILTIN_LOADED: list[bool] = []
