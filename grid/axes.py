"""The study's axes, resolved against the data once per run: the classifier's **target** (``[grid] target``, a
binary attribute, default gender), the grid's **group axis** (``[grid] group``: the train/test groups, default
ethnicity) and the verification's **demographic groups** (``[verification] groups``: a product of attributes,
default ethnicity x gender). Each is a :class:`storage.attributes.Labels` from
:func:`storage.attributes.group_labels` (numeric attributes binned by ``[attributes] bins``); the workers get their
codes and names as shared arrays (:meth:`Axes.arrays`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from storage.attributes import (DEFAULT_GROUP, DEFAULT_TARGET, DEFAULT_VERIFICATION_GROUPS, Labels, available,
                                default_groups, group_labels)
from storage.errors import InputError
from storage.table import EmbeddingTable
from storage.vocab import check_group_name

DEFAULT_AXES: dict[str, Any] = {"target": DEFAULT_TARGET, "group": DEFAULT_GROUP, "bins": {}}


def axis_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """What of the config fixes the target and the group axis: target, group and the bins (part of a results
    folder's experiment, and of the job ids when it differs from :data:`DEFAULT_AXES`)."""
    return {"target": cfg["grid"]["target"], "group": cfg["grid"]["group"],
            "bins": dict(cfg["attributes"]["bins"])}


def verification_groups(cfg: dict[str, Any]) -> list[str]:
    """The attributes of the demographic groups: ``[verification] groups``."""
    return list((cfg.get("verification") or {}).get("groups", DEFAULT_VERIFICATION_GROUPS))


@dataclass(frozen=True, eq=False)
class Axes:
    """Per-row labels of the target (codes 0/1), the group axis and the demographic groups."""

    target: Labels
    group: Labels
    demographic: Labels

    def arrays(self) -> dict[str, np.ndarray]:
        """The workers' label arrays: ``target`` (int8 0/1), ``group``, ``demographic`` (int32 codes) and each's
        ``<name>_names`` (object arrays of the ordered names)."""
        out: dict[str, np.ndarray] = {}
        for key, labels in (("target", self.target), ("group", self.group), ("demographic", self.demographic)):
            out[key] = labels.codes.astype(np.int8) if key == "target" else labels.codes
            out[f"{key}_names"] = np.asarray(labels.names, dtype=object)
        return out

    def record(self) -> dict[str, Any]:
        """What run.json records (the report's names and orders): each axis's attributes and ordered names."""
        return {key: {"attributes": list(labels.attributes), "names": list(labels.names)}
                for key, labels in (("target", self.target), ("group", self.group),
                                    ("demographic", self.demographic))}


def _labels(table: EmbeddingTable, attributes: list[str], bins: dict[str, Any], key: str) -> Labels:
    try:
        return group_labels(table, attributes, bins, per_identity=key)
    except InputError as exc:
        hint = ("" if all(a in available(table) for a in attributes)
                else f" (set {key} to some of: {', '.join(available(table))})")
        raise InputError(f"{key}: {exc}{hint}") from None


def resolve_axes(cfg: dict[str, Any], table: EmbeddingTable) -> Axes:
    """The axes of ``cfg`` on ``table``; InputError naming the config key when an attribute is missing, numeric
    without bins, not one value per identity, a target that is not binary, or a group name that cannot be one."""
    bins = cfg["attributes"]["bins"]
    g = cfg["grid"]
    target = _labels(table, [g["target"]], bins, "[grid] target")
    if len(target.names) != 2:
        raise InputError(f"[grid] target: attribute {g['target']!r} has {len(target.names)} values "
                         f"({', '.join(target.names[:6])}); the target of a binary classifier needs exactly 2")
    group = _labels(table, [g["group"]], bins, "[grid] group")
    for name in group.present():
        check_group_name(name, f"[grid] group: attribute {g['group']!r}")
    verification = cfg.get("verification") or {}
    demographic = (_labels(table, verification_groups(cfg), bins, "[verification] groups")
                   if verification.get("enabled", True) else default_groups(table))
    return Axes(target, group, demographic)
