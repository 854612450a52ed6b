"""The grid config: a TOML file in which every field has a default, overridden by command-line options.

``resolve_config(path, overrides)`` returns a plain, JSON-ready dict (stored in ``run.json``). Unknown keys and
bad values are refused with :class:`storage.errors.InputError` naming the key and what is allowed.
"""

from __future__ import annotations

import copy
import math
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from grid import resources, sweep
from grid.executors import EXECUTORS
from storage.errors import InputError
from storage.importers import FORMAT_NAMES
from storage.vocab import ALL, normalise, parse_train_group
from tasks import kinds
from tasks.kinds import parse_seeds  # noqa: F401  (part of this module's API: seeds as the options give them)

# The grid's own sections; each job kind adds its keys (tasks.kinds.ConfigPart), see defaults().
DEFAULTS: dict[str, Any] = {
    "data": {
        "path": "",        # embedding table or importer source; "" = built-in synthetic data
        "format": "",      # importer format; "" = detect from the path
        "synth": {},       # parameters of the built-in generator (storage.synth.SynthParams)
    },
    "attributes": {
        "bins": {},        # numeric attribute -> bin edges, e.g. age = [0, 20, 30, 40, 50, 65, 200]
    },
    "grid": {
        "models": ["mlp", "xgboost"],   # [] = a verification-only study (no classifier, no t-SNE)
        "target": "gender",  # the classifier's target: any binary attribute
        "group": "ethnicity",  # the group axis: the train and test groups are its values
        "seeds": 5,        # N (seeds 0..N-1) or an explicit list of seeds
        "train_groups": [],  # [] = every group of the group axis in the data, then "all" (if several)
        "test_groups": [],   # [] = every group of the group axis in the data
        "mitigations": ["none"],   # the mitigation axis: "none" (always there) + methods, variants, user builders
    },
    "protocol": {           # identities per group and per target class (the names say gender, the default target)
        "train_per_gender": 500,   # 0 allowed in a verification-only study (grid.models = [])
        "test_per_gender": 250,
    },
    "model": {},           # per-model overrides, e.g. [model.mlp] epochs = 50; variants: [model."mlp-256"] base = "mlp"
    "mitigation": {},      # per-mitigation config, e.g. [mitigation.fsn] n_clusters = 50; variants: base = "fsn"
    "sweep": {},           # "MODEL.KEY" = [values]: the model replaced by one variant per value (grid/sweep.py)
    "tracking": {
        "mlflow": "",      # MLflow tracking URI; "local" = a SQLite store in the results folder; "" = off
        "experiment": "biasgrid",   # the MLflow experiment of the runs
    },
    "run": {
        "executor": "ray",
        "workers": 0,      # 0 = the number of CPUs
        "address": "",     # Ray cluster address; "" = start Ray locally
        "out": "results",
        "threads_per_job": 1,
        "max_retries": 3,  # Ray retries of jobs lost to system failures (a dead worker or node)
        "report": True,
        "max_jobs": 100_000,       # a grid planning more jobs is refused (a typo in --seeds, say)
        "connect_timeout": 30.0,   # seconds to wait for a Ray cluster at run.address before giving up
        "kinds": [],       # modules of user job kinds ("pkg.mod"), imported before the config is checked
        # seconds a job may run before it is recorded as failed and its worker replaced: one number for every
        # kind, or a table per kind (kinds it does not name keep these: each kind's JobKind.timeout)
        "job_timeout": {},
        # what each job kind's jobs ask for (grid/resources.py), e.g. {embed = {GPU = 1}, cell = {custom_x = 1}};
        # every kind not named asks for CPU = run.threads_per_job
        "resources": {},
    },
}

_INT_LIMIT = 2 ** 63 - 1   # any integer key: what NumPy, Arrow and the job ids can hold
MAX_PARALLEL = 4096        # run.workers and run.threads_per_job
MAX_RETRIES = 100          # run.max_retries


def defaults() -> dict[str, Any]:
    """Every field's default: the grid's sections, with each registered kind's keys in its section (kind order),
    the kinds' own sections placed before ``run``, and each kind's ``run.job_timeout``."""
    out = copy.deepcopy({k: v for k, v in DEFAULTS.items() if k != "run"})
    for part in kinds.config_parts():
        section = out.setdefault(part.section, {})
        twice = sorted(set(section) & set(part.defaults))
        if twice or part.section in DEFAULTS:
            raise ValueError(f"job kind config: '{part.section}.{(twice or ['*'])[0]}' is defined twice")
        section.update(copy.deepcopy(part.defaults))
    out["run"] = copy.deepcopy(DEFAULTS["run"])
    out["run"]["job_timeout"] = {kind.name: kind.timeout for kind in kinds.all_kinds()}
    return out


# Sections whose keys are free-form (validated elsewhere).
_OPEN_SECTIONS = {("data", "synth"), ("model",), ("attributes", "bins"), ("sweep",), ("mitigation",)}


def _type_name(value: Any) -> str:
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string",
            list: "a list", dict: "a table"}.get(type(value), type(value).__name__)


def _merge(base: dict[str, Any], update: Mapping[str, Any], where: tuple[str, ...], source: str) -> None:
    for key, value in update.items():
        path = (*where, key)
        dotted = ".".join(path)
        if key not in base:
            allowed = ", ".join(sorted(base)) or "(none)"
            raise InputError(f"{source}: unknown key '{dotted}'; allowed keys here: {allowed}")
        default = base[key]
        if path == ("run", "job_timeout"):
            base[key] = _job_timeouts(value, default, source)
        elif path == ("run", "resources"):
            if not isinstance(value, Mapping):
                raise InputError(f"{source}: 'run.resources' must be a table of job kind = {resources.EXAMPLE}, "
                                 f"got {value!r}")
            base[key] = {**default, **{kind: resources.check_ask(kind, ask, f"{source}: ")
                                       for kind, ask in value.items()}}
        elif path in _OPEN_SECTIONS:
            if not isinstance(value, Mapping):
                raise InputError(f"{source}: '{dotted}' must be a table")
            base[key] = copy.deepcopy(dict(value))
        elif isinstance(default, dict):
            if not isinstance(value, Mapping):
                raise InputError(f"{source}: '{dotted}' must be a table, got {value!r}")
            _merge(default, value, path, source)
        else:
            base[key] = _check_type(value, default, dotted, source)


def _job_timeouts(value: Any, default: dict[str, float], source: str) -> dict[str, float]:
    """``run.job_timeout`` per job kind: one number of seconds for every kind, or a table of kind = seconds over
    ``default``; each a positive finite number, each kind a known one."""
    from tasks import kinds

    known = [k.name for k in kinds.all_kinds()]
    given = dict(value) if isinstance(value, Mapping) else dict.fromkeys([*default, *known], value)
    for kind, seconds in given.items():
        name = "run.job_timeout" + (f".{kind}" if isinstance(value, Mapping) else "")
        if kind not in known:
            raise InputError(f"{source}: '{name}' names no job kind; known kinds: {', '.join(known)}")
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 < seconds < float("inf"):
            raise InputError(f"{source}: '{name}' must be a positive number of seconds (one for every kind, or a "
                             f"table such as {{cell = 600, allpairs = 3600}}), got {seconds!r}")
    return {**default, **{kind: float(seconds) for kind, seconds in given.items()}}


def _check_type(value: Any, default: Any, dotted: str, source: str) -> Any:
    if dotted == "grid.seeds":
        return value  # int or list, checked in _normalise
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
        if ok and abs(value) > _INT_LIMIT:
            raise InputError(f"{source}: '{dotted}' must be an integer of at most {_INT_LIMIT:,}, got {value}")
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if ok and not (math.isfinite(value) if isinstance(value, float) else abs(value) < 1e308):
            raise InputError(f"{source}: '{dotted}' must be a finite number, got {value}")
        value = float(value) if ok else value
    elif isinstance(default, list):
        ok = isinstance(value, list)
    else:
        ok = isinstance(value, type(default))
    if not ok:
        raise InputError(f"{source}: '{dotted}' must be {_type_name(default)}, got {value!r}")
    return value


def load_toml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a TOML config file, refusing a missing or malformed file with InputError."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"config file {p} does not exist")
    try:
        with p.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"config file {p} is not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise InputError(f"config file {p} is not UTF-8 text (byte {exc.start}); expected a TOML file") from None


def _normalise(cfg: dict[str, Any], source: str, options: Mapping[str, str] | None = None) -> None:
    """Check values that go beyond types, and put lists in canonical form. A [model.X] section for a model
    not in 'grid.models' is refused, unless the model list came from an option (``--models`` narrowing a
    file's grid), in which case it is checked and left out."""
    options = options or {}

    def where(key: str) -> str:
        """Who set ``key``: the option that did, or the config file."""
        return options.get(key) or f"{source}: '{key}'"

    models_from_option = "grid.models" in options
    g = cfg["grid"]
    g["seeds"] = parse_seeds(g["seeds"], where("grid.seeds"), max(cfg["run"]["max_jobs"], 1))
    for key in ("target", "group"):
        if not g[key].strip():
            raise InputError(f"{where(f'grid.{key}')} must name an attribute of the data, e.g. gender")
        g[key] = g[key].strip()
    for key in ("models", "train_groups", "test_groups"):
        items = g[key]
        if not all(isinstance(s, str) and s.strip() for s in items):
            raise InputError(f"{where(f'grid.{key}')} must be a list of names, got {items!r}")
        if key != "models":   # group names as the data's labels are read: spaces and case ignored
            g[key] = items = [ALL if i.strip().lower() == ALL else "+".join(normalise(p) for p in i.split("+"))
                              for i in items]
        if len(set(items)) != len(items):
            raise InputError(f"{where(f'grid.{key}')} repeats a name: {items!r}")
    for group in g["train_groups"]:
        try:
            parse_train_group(group)
        except InputError as exc:
            raise InputError(f"{where('grid.train_groups')}: {exc}") from None
    if ALL in g["test_groups"] or any("+" in t for t in g["test_groups"]):
        raise InputError(f"{where('grid.test_groups')}: test groups are single ethnicity groups (no 'all', no "
                         f"unions), got {g['test_groups']!r}")
    # "all" last, as in the study's table.
    g["train_groups"] = [t for t in g["train_groups"] if t != ALL] + ([ALL] if ALL in g["train_groups"] else [])

    for key in ("train_per_gender", "test_per_gender"):
        least = 0 if key == "train_per_gender" and not g["models"] else 1   # no classifier: no training identities
        if cfg["protocol"][key] < least:
            raise InputError(f"{where(f'protocol.{key}')} must be at least {least}"
                             f"{' (0 only without models)' if key == 'train_per_gender' else ''}, "
                             f"got {cfg['protocol'][key]}")
    from storage.attributes import check_bins

    cfg["attributes"]["bins"] = check_bins(cfg["attributes"]["bins"], where("attributes.bins"))

    from tasks.models import resolve_model_config  # light import: no TensorFlow at module level

    unselected = sorted(set(cfg["model"]) - set(g["models"]))
    if unselected and not models_from_option:
        raise InputError(f"{source}: [model.{unselected[0]}] configures a model that is not in "
                         f"'grid.models' ({', '.join(g['models'])}); a variant runs when 'grid.models' names it")
    for m in unselected:  # narrowed by --models: still checked, then left out of this run
        resolve_model_config(m, cfg["model"][m])
    axes = sweep.sweep_axes(cfg["sweep"], source)
    unswept = sorted(set(axes) - set(g["models"]))
    if unswept and not models_from_option:
        raise InputError(f"{source}: [sweep] sweeps model '{unswept[0]}', which is not in 'grid.models' "
                         f"({', '.join(g['models'])})")
    g["models"], sections = sweep.expand(g["models"], cfg["model"], {m: axes[m] for m in axes if m in g["models"]},
                                         source, max(cfg["run"]["max_jobs"], 1))
    cfg["model"] = {m: resolve_model_config(m, sections.get(m)) for m in g["models"]}
    from tasks.mitigation import check_mitigations

    check_mitigations(cfg, where)

    for part in kinds.config_parts():
        part.check(cfg, where)

    r = cfg["run"]
    if r["executor"] not in EXECUTORS:
        raise InputError(f"{where('run.executor')} must be one of {', '.join(EXECUTORS)}, got {r['executor']!r}")
    if not 0 <= r["workers"] <= MAX_PARALLEL:
        raise InputError(f"{where('run.workers')} must be from 0 (the number of CPUs) to {MAX_PARALLEL:,}, "
                         f"got {r['workers']:,}")
    if r["workers"] == 0:
        r["workers"] = os.cpu_count() or 1
    if not 1 <= r["threads_per_job"] <= MAX_PARALLEL:
        raise InputError(f"{where('run.threads_per_job')} must be from 1 to {MAX_PARALLEL:,}, "
                         f"got {r['threads_per_job']:,}")
    r["resources"] = resources.resolve(r["resources"], r["threads_per_job"])
    if r["max_jobs"] < 1:
        raise InputError(f"{where('run.max_jobs')} must be at least 1, got {r['max_jobs']}")
    if not 0 < r["connect_timeout"] <= 86400:
        raise InputError(f"{where('run.connect_timeout')} must be > 0 and at most 86400 seconds (a day), "
                         f"got {r['connect_timeout']:g}")
    if not 0 <= r["max_retries"] <= MAX_RETRIES:
        raise InputError(f"{where('run.max_retries')} must be from 0 to {MAX_RETRIES}, got {r['max_retries']:,}")
    if not r["out"]:
        raise InputError(f"{where('run.out')} must name a results folder")

    d = cfg["data"]
    if d["format"] and d["format"] not in FORMAT_NAMES:
        raise InputError(f"{where('data.format')} is {d['format']!r}; allowed: {', '.join(FORMAT_NAMES)} "
                         f"(or empty: detected from 'data.path')")
    if d["format"] and not d["path"]:
        raise InputError(f"{where('data.format')} is {d['format']!r} but 'data.path' names no data; "
                         f"the built-in data needs no format")
    if d["synth"] and d["path"]:
        raise InputError(f"{source}: [data.synth] sets the built-in generator, but 'data.path' names your data "
                         f"({d['path']}); remove one of them")
    if d["synth"]:
        from storage.synth import synth_params_from_dict

        synth_params_from_dict(d["synth"], f"{source}: [data.synth]")


# Options whose name is not the config key's last part.
_OPTION_NAMES = {"data.path": "--data", "data.format": "--format", "run.out": "--out", "run.report": "--no-report"}


def option_name(dotted: str) -> str:
    """How the command line names the option that sets config key ``dotted`` ("option --seeds")."""
    return "option " + _OPTION_NAMES.get(dotted, "--" + dotted.rsplit(".", 1)[-1].replace("_", "-"))


def _load_kinds(text: Mapping[str, Any], overrides: Mapping[str, Any], source: str) -> None:
    """Import the user job kinds named by ``run.kinds`` (in the file or an option), so that their config keys
    exist before the config is read."""
    from_option = overrides.get("run.kinds")
    names = from_option if from_option is not None else (text.get("run") or {}).get("kinds", [])
    where = option_name("run.kinds") if from_option is not None else f"{source}: 'run.kinds'"
    if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
        raise InputError(f"{where} must be a list of module names, got {names!r}")
    kinds.load(names, where)


def resolve_config(path: str | os.PathLike[str] | Mapping[str, Any] | None = None,
                   overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Defaults, then the TOML file at ``path`` (if any; or a dict shaped like one), then ``overrides`` (dotted keys
    such as ``"run.out"``, from command-line options); validated and normalised."""
    given = isinstance(path, Mapping)
    source = "config" if given or not path else str(path)
    text = dict(path) if given else load_toml(path) if path else {}
    _load_kinds(text, overrides or {}, source)
    cfg = defaults()
    if text:
        _merge(cfg, text, (), source)
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        *parents, leaf = dotted.split(".")
        nested: dict[str, Any] = {leaf: value}
        for parent in reversed(parents):
            nested = {parent: nested}
        _merge(cfg, nested, (), option_name(dotted))
    options = {k: option_name(k) for k, v in (overrides or {}).items() if v is not None}
    _normalise(cfg, source, options)
    return cfg
