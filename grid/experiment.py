"""One experiment per results folder.

The first run on a folder fixes its experiment: the data (fingerprint), the protocol, the axes (target, group
axis, bins; a folder written before they existed has the defaults), each model's configuration, and - once they
are first run - the keys of the job kinds' config sections (``tasks.kinds.
ConfigPart``: a section is fixed once a run had it enabled, except the keys it extends). Later runs may add
seeds, models, train or test groups, or a kind's jobs; a run that would change anything already fixed
is refused before anything is written, naming each differing key with its stored and its new value. The folder's
grid is the union of every run's grid, and each run completes it: a cell is evaluated on every test group the
folder holds, so no cell is stored twice with different test groups and no matrix has holes.
"""

from __future__ import annotations

from typing import Any

from grid.axes import DEFAULT_AXES, axis_config
from grid.plan import JOB_CODE_VERSION
from storage.errors import InputError
from tasks import kinds

GRID_LISTS = ("models", "seeds", "train_groups", "test_groups", "mitigations")


def kind_sections() -> dict[str, tuple[str, ...]]:
    """Each job kind config section and the keys later runs extend (the union of its kinds' ``extend``)."""
    out: dict[str, tuple[str, ...]] = {}
    for part in kinds.config_parts():
        out[part.section] = (*out.get(part.section, ()), *part.extend)
    return out


def fixed_part(cfg: dict[str, Any], fingerprint: str) -> dict[str, Any]:
    """What a run fixes in its folder: the job code version, data fingerprint, protocol, model configurations, and
    each kind section that is enabled (no ``enabled`` key: always), without ``enabled`` and its extended keys."""
    fixed: dict[str, Any] = {"job_code": JOB_CODE_VERSION, "data_fingerprint": fingerprint,
                             "protocol": dict(cfg["protocol"]), "axes": axis_config(cfg),
                             "model": {m: cfg["model"][m] for m in cfg["grid"]["models"]}}
    if cfg.get("mitigation"):   # only with mitigations: the fixed part of folders without them stays as it was
        fixed["mitigation"] = dict(cfg["mitigation"])
    for name, extend in kind_sections().items():
        section = cfg.get(name) or {}
        if section.get("enabled", True):
            fixed[name] = {k: val for k, val in section.items() if k != "enabled" and k not in extend}
    return fixed


_UNSET = object()


def _show(value: Any) -> str:
    return "(unset)" if value is _UNSET else repr(value)


def _differences(stored: Any, new: Any, where: str) -> list[str]:
    """Every leaf where ``stored`` and ``new`` differ, as "key: stored X, new Y"."""
    if isinstance(stored, dict) and isinstance(new, dict):
        return [d for key in sorted(set(stored) | set(new), key=str)
                for d in _differences(stored.get(key, _UNSET), new.get(key, _UNSET), f"{where}.{key}")]
    return [] if stored == new else [f"{where}: stored {_show(stored)}, new {_show(new)}"]


def _with_later_keys(stored: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """``stored`` with the keys added to biasgrid after the folder was written (the axes, a kind section's new
    keys) at their defaults: what the folder's numbers were computed with, since a new key's default keeps the
    numbers of before."""
    from grid.config import defaults   # grid.config imports the executors: only when a folder is compared

    base = defaults()
    out = {"axes": DEFAULT_AXES, **stored}
    for name in kind_sections():
        if isinstance(out.get(name), dict) and isinstance(new.get(name), dict):
            later = {k: v for k, v in base.get(name, {}).items() if k in new[name] and k not in out[name]}
            out[name] = {**later, **out[name]}
    return out


def merge_fixed(stored: dict[str, Any] | None, new: dict[str, Any], out: str) -> dict[str, Any]:
    """The folder's fixed part after this run: ``stored`` extended by what ``new`` adds (models, kind
    sections). InputError listing every key whose new value differs from the stored one."""
    if not stored:
        return new
    stored = _with_later_keys(stored, new)
    if stored.get("job_code") != new["job_code"]:
        raise InputError(f"{out} was written by another version of biasgrid's jobs (job code "
                         f"{stored.get('job_code', 1)}, this one {new['job_code']}): its numbers are not comparable "
                         f"with this version's; use another --out")
    differences = []
    for key, value in new.items():
        if key in ("model", "mitigation"):
            for name, config in value.items():
                if name in stored.get(key, {}):
                    differences += _differences(stored[key][name], config, f"{key}.{name}")
        elif key in stored:
            differences += _differences(stored[key], value, "data" if key == "data_fingerprint" else key)
    if differences:
        raise InputError(f"{out} holds another experiment; this run would change: " + "; ".join(differences)
                         + ". A results folder holds one experiment (its data, protocol and model "
                           "configurations): use another --out for this one")
    merged = {**stored, **{k: v for k, v in new.items() if k not in stored}}
    merged["model"] = {**stored.get("model", {}), **new["model"]}
    if stored.get("mitigation") or new.get("mitigation"):
        merged["mitigation"] = {**stored.get("mitigation", {}), **new.get("mitigation", {})}
    return merged


def merged_config(stored_config: dict[str, Any] | None, cfg: dict[str, Any], fixed: dict[str, Any]) -> dict[str, Any]:
    """The config a run on the folder runs: its grid is the union of the stored grid and this run's (stored
    entries first, ``all`` last), with the folder's model configurations; a kind section stays on once a run
    turned it on, with the folder's parameters (its extended lists: the union). A run thus completes the
    folder's whole grid."""
    stored = (stored_config or {}).get("grid") or {}
    grid = dict(cfg["grid"])
    for key in GRID_LISTS:
        before = [v for v in stored.get(key) or [] if isinstance(v, (str, int)) and not isinstance(v, bool)]
        grid[key] = before + [v for v in cfg["grid"][key] if v not in before]
    if "all" in grid["train_groups"]:
        grid["train_groups"] = [g for g in grid["train_groups"] if g != "all"] + ["all"]
    merged = {**cfg, "grid": grid, "model": {m: fixed["model"][m] for m in grid["models"]},
              "mitigation": {m: fixed.get("mitigation", {})[m] for m in grid["mitigations"] if m != "none"}}
    stored_cfg = stored_config or {}
    for name, extend in kind_sections().items():
        if name not in fixed:
            continue
        before = stored_cfg.get(name) or {}
        merged[name] = {**cfg[name], **fixed[name], **({"enabled": True} if "enabled" in cfg[name] else {}),
                        **{k: list(dict.fromkeys([*(before.get(k) or []), *cfg[name][k]])) for k in extend}}
    return merged
