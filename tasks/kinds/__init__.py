"""Job kinds: each kind is one module of this package (or of a user's package) declaring one :class:`JobKind`
and calling :func:`register` on it.

A kind declares everything about itself: which jobs a config plans (a product of its axes), how costly each is
(longest first keeps a run's tail short), which row indices of the seed's split its payload carries, which
function runs it in a worker, the result tables it fills (their :class:`storage.schema.TableSchema`), the keys it
adds to the config (:class:`ConfigPart`: defaults and checks; a results folder fixes them), the parameters that
name a job in run.json, what a worker preloads, a check before a run, and its report sections. The planner, the
config, the runner, the executors, the workers (:func:`tasks.runtime.run_job`), the store and the report only
iterate over this registry. The built-in kinds register themselves when this package is imported (its last
line imports their modules); a user's kind module is named in the config (``[run] kinds = ["pkg.mod"]``) and
imported by :func:`load`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from storage import schema
from storage.errors import InputError

# Job parameters that shape how a job runs but not its numbers: left out of the job id.
RUNTIME_PARAMS = frozenset({"threads"})
BUILTIN = ("cell", "scores", "impostor", "mitigated_cell", "mitigated_verification", "tsne", "allpairs",
           "allpairs_bootstrap", "pairs")   # modules, plan order
Where = Callable[[str], str]   # names who set a dotted config key: "option --seeds" or "FILE: 'grid.seeds'"
SEED_LIMIT = 2 ** 32   # seeds are 0 <= s < 2**32: the range of scikit-learn's random_state and NumPy's legacy seed


@dataclass(frozen=True)
class PlannedJob:
    """One job of a kind before it gets its id: the seed, its parameters and a human-readable description."""

    seed: int
    params: dict[str, Any]
    description: str


@dataclass(frozen=True)
class ConfigPart:
    """The keys a kind adds to config section ``section`` (kinds may share a section, each adding its own keys).

    ``check(cfg, where)`` validates (and may normalise) them in the resolved config, raising InputError naming
    ``where(dotted key)``. A results folder fixes the section's keys once a run had it enabled (its ``enabled``
    key true, or always when it has none), except ``extend``: keys whose lists later runs extend."""

    section: str
    defaults: dict[str, Any]
    check: Callable[[dict[str, Any], Where], None] = lambda cfg, where: None
    extend: tuple[str, ...] = ()


@dataclass(frozen=True)
class JobKind:
    """A kind of job.

    - ``plan(cfg)``: the jobs a resolved config asks for (none when the kind is disabled);
    - ``rows(params, split)``: the row indices the payload carries, from the seed's split (an object with
      ``train``, ``test``, ``verification`` and ``fitting`` mappings, see ``grid.splits.Split``);
    - ``run``: ``"module:function"`` run in the worker as ``function(payload, data) -> {table: DataFrame}``;
    - ``tables``: the schemas of the result tables it fills (registered with the kind);
    - ``order`` and ``cost(params)``: kinds with a higher order run first, then costlier jobs first;
    - ``config``: the config keys it adds, or None when it reads only sections other kinds or the grid own;
    - ``record``: the parameters run.json and the ledger keep to name a job (with kind and seed, they say which
      rows it stores: two planned jobs with the same record values replace each other);
    - ``preload``: modules a worker imports before its first job (besides ``run``'s module);
    - ``check(cfg, table, splits, jobs)``: on the driver before anything is written (``jobs``: the kind's
      planned ``grid.plan.Job``s), InputError when the data cannot give the kind's jobs what they need;
    - ``report``: ``"module:NAME"`` of the report sections showing its tables (``grid.report.sections``:
      a section shared by several kinds is shown once, in the order of the first kind naming it);
    - ``timeout``: the default ``run.job_timeout`` of its jobs, in seconds;
    - ``after``: kinds whose planned jobs must all be done before this kind's jobs start (a later stage of the
      run, :func:`stages`; a kind in ``after`` with no planned job is not waited for);
    - ``inputs(cfg, read)``: for a kind with ``after``, the arrays its jobs read instead of the data's, built on
      the driver from what the earlier kinds stored: ``read(table, columns)`` is a ``pyarrow.Table`` of those
      columns of the table's rows of done jobs. None: its jobs read the data's arrays, as every first-stage job.
    """

    name: str
    plan: Callable[[Mapping[str, Any]], Iterable[PlannedJob]]
    rows: Callable[[Mapping[str, Any], Any], dict[str, Any]]
    run: str
    tables: tuple[schema.TableSchema, ...]
    order: int = 0
    cost: Callable[[Mapping[str, Any]], int] = field(default=lambda params: 1)
    config: ConfigPart | None = None
    record: tuple[str, ...] = ()
    preload: tuple[str, ...] = ()
    check: Callable[[Mapping[str, Any], Any, Mapping[int, Any], list[Any]], None] | None = None
    report: tuple[str, ...] = ()
    timeout: float = 3600.0
    after: tuple[str, ...] = ()
    inputs: Callable[[Mapping[str, Any], Callable[[str, list[str]], Any]], dict[str, Any]] | None = None

    @property
    def table_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.tables)


KINDS: dict[str, JobKind] = {}


def register(kind: JobKind) -> JobKind:
    """Add ``kind`` (and its tables) to the registry, replacing a kind of the same name; return it."""
    for table in kind.tables:
        schema.register_table(table)
    KINDS[kind.name] = kind
    return kind


def unregister(name: str) -> None:
    """Remove kind ``name`` and its tables (tests of plug-in kinds)."""
    kind = KINDS.pop(name, None)
    for table in kind.tables if kind else ():
        schema.TABLES.pop(table.name, None)


def get(name: str) -> JobKind:
    """The registered kind ``name``; KeyError naming the known kinds otherwise."""
    _register_all()
    try:
        return KINDS[name]
    except KeyError:
        raise KeyError(f"unknown job kind {name!r}; known: {', '.join(k.name for k in all_kinds())}") from None


def all_kinds() -> list[JobKind]:
    """Every registered kind: the built-in ones first (in :data:`BUILTIN` order), then the others as registered."""
    _register_all()
    return [KINDS[n] for n in BUILTIN if n in KINDS] + [k for n, k in KINDS.items() if n not in BUILTIN]


def stages(names: Iterable[str]) -> list[list[JobKind]]:
    """The kinds ``names`` grouped in the order they run: first the kinds that follow none of ``names``, then
    those whose ``after`` kinds all ran in earlier stages, and so on (kind order within a stage). A kind that
    follows itself through its ``after`` chain is an error (a kind's own definition)."""
    wanted = set(names)
    todo = [k for k in all_kinds() if k.name in wanted]
    out: list[list[JobKind]] = []
    while todo:
        waiting = {k.name for k in todo}
        ready = [k for k in todo if not set(k.after) & waiting]
        if not ready:
            raise ValueError(f"job kinds {', '.join(sorted(waiting))} wait on each other (their 'after')")
        out.append(ready)
        todo = [k for k in todo if k.name not in {r.name for r in ready}]
    return out


def config_parts() -> list[ConfigPart]:
    """The config keys of every kind, in kind order."""
    return [k.config for k in all_kinds() if k.config is not None]


def load(modules: Iterable[str], where: str = "run.kinds") -> None:
    """Import user kind modules (each registers its kind on import); InputError naming one that fails."""
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001 - any failure of a user module is the config's error
            raise InputError(f"{where}: cannot import job kind module {name!r} ({type(exc).__name__}: {exc}); "
                             f"expected an importable module that calls tasks.kinds.register") from None


def parse_seeds(value: Any, where: str, max_count: int = 100_000) -> list[int]:
    """Seeds as N (meaning 0..N-1, at most ``max_count``), a list of distinct ints 0 <= s < :data:`SEED_LIMIT`, or a
    string "N" / "3,7,9"."""
    if isinstance(value, str):
        text = value.strip()
        try:
            if "," in text:
                value = [int(s) for s in text.split(",") if s.strip()]
            else:
                value = int(text)
        except ValueError:
            raise InputError(f"{where}: seeds must be a count N (seeds 0..N-1) or a comma list such as "
                             f"'3,7,9', got {text!r}") from None
    if isinstance(value, bool):
        raise InputError(f"{where}: seeds must be a count or a list of integers, got {value!r}")
    if isinstance(value, int):
        if value < 1:
            raise InputError(f"{where}: the number of seeds must be at least 1, got {value}")
        if value > max_count:
            raise InputError(f"{where}: the number of seeds must be at most {max_count:,} (run.max_jobs: each seed "
                             f"plans at least one job), got {value:,}")
        return list(range(value))
    if isinstance(value, list) and value and all(isinstance(s, int) and not isinstance(s, bool) for s in value):
        if not all(0 <= s < SEED_LIMIT for s in value):
            raise InputError(f"{where}: seeds must be integers from 0 to 2**32 - 1 ({SEED_LIMIT - 1}), "
                             f"got {next(s for s in value if not 0 <= s < SEED_LIMIT)}")
        if len(set(value)) != len(value):
            raise InputError(f"{where}: seeds must not repeat, got {value}")
        return list(value)
    raise InputError(f"{where}: seeds must be a count N (seeds 0..N-1) or a non-empty list of integers, "
                     f"got {value!r}")


_loaded: list[bool] = []


def _register_all() -> None:
    """Import the built-in kinds' modules, each registering its kind (they import this package's names, all
    defined by now: so importing ``tasks.kinds`` registers the built-in kinds; a kind reusing another's code,
    as mitigated_cell the cell's evaluation, comes after it in :data:`BUILTIN`)."""
    if _loaded:
        return
    _loaded.append(True)
    for name in BUILTIN:
        importlib.import_module(f"{__name__}.{name}")


_register_all()
