"""Label attributes of an embedding table, and the ONE place that turns chosen attributes into per-image group
labels.

A table's attributes are ``gender`` (always), ``ethnicity`` (when the table has it) and any further label column
(:attr:`storage.table.EmbeddingTable.attributes`): **categorical** (strings, normalised as
:func:`storage.vocab.normalise` does; one value per identity) or **numeric** (float64, e.g. an age per image, which
may vary between an identity's images). A numeric attribute becomes categorical through its bin edges
(``[attributes] bins``, e.g. ``age = [0, 20, 30, 40, 50, 65, 200]``): bin k is ``edges[k] <= value < edges[k+1]``,
labelled ``"20-29"`` for integer edges (``"<lo>-<hi>"`` otherwise).

:func:`group_labels` gives, for one attribute or a product of several (``["ethnicity", "gender"]``), each row's
group as a code into ordered names ``"<value>_<value>"`` (``"asian_female"``, ``"20-29_male"``): the grid's group
axis, the classifier's target and the verification's demographic groups all come from it.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from storage import vocab
from storage.errors import InputError

ETHNICITY, GENDER = "ethnicity", "gender"
# Column names an attribute may not take: the table's own columns and an image manifest's.
RESERVED: frozenset[str] = frozenset({"identity", "image", "embedding", "face_detected", "path", ETHNICITY, GENDER})
DEFAULT_TARGET, DEFAULT_GROUP = GENDER, ETHNICITY
DEFAULT_VERIFICATION_GROUPS: tuple[str, ...] = (ETHNICITY, GENDER)


@dataclass(frozen=True, eq=False)
class Labels:
    """Per-row groups: ``codes`` ((n,) int32) index ``names`` (ordered); ``attributes``: what they are made of."""

    codes: np.ndarray
    names: tuple[str, ...]
    attributes: tuple[str, ...]

    def per_row(self) -> np.ndarray:
        """(n,) object array of each row's group name."""
        return np.asarray(self.names, dtype=object)[self.codes]

    def present(self) -> list[str]:
        """The names that have rows, in order."""
        return [self.names[c] for c in np.unique(self.codes)]


def parse_values(values: Sequence[str], field: str, where: str) -> np.ndarray:
    """Raw label text of one attribute -> float64 when every value is a finite number (numeric), else normalised
    strings (categorical); InputError naming ``where`` and ``field`` for an empty value."""
    text = [str(v).strip() for v in values]
    empty = [i for i, t in enumerate(text) if not t or t.lower() == "nan"]
    if empty:
        raise InputError(f"{where}: attribute {field!r} is empty at row {empty[0]}; expected a value in every row "
                         f"({len(empty)} empty)")
    try:
        numbers = np.array([float(t) for t in text], dtype=np.float64)
    except ValueError:
        return np.array([vocab.normalise(t) for t in text], dtype=object)
    return numbers if np.isfinite(numbers).all() else np.array([vocab.normalise(t) for t in text], dtype=object)


def check_attribute_name(name: object, where: str) -> str:
    """``name`` when it can name an extra attribute column; InputError naming ``where`` otherwise."""
    if not isinstance(name, str) or not name.strip() or name != name.strip():
        raise InputError(f"{where}: attribute name {name!r} must be a non-empty name without surrounding spaces")
    if name in RESERVED:
        raise InputError(f"{where}: {name!r} cannot be an extra attribute (it is one of the table's own columns: "
                         f"{', '.join(sorted(RESERVED))})")
    return name


def is_numeric(values: np.ndarray) -> bool:
    """Whether an attribute column is numeric (float64) rather than categorical (strings)."""
    return np.asarray(values).dtype.kind == "f"


def available(table) -> list[str]:  # noqa: ANN001 - an EmbeddingTable (storage.table imports this module)
    """The attributes of ``table``: ethnicity (when it has one), gender, then its extra columns in name order."""
    return [*([ETHNICITY] if table.ethnicity is not None else []), GENDER, *sorted(table.attributes)]


def bin_labels(edges: Sequence[float]) -> tuple[str, ...]:
    """``[0, 20, 30]`` -> ``("0-19", "20-29")``; non-integer edges -> ``"0.5-1.5"``."""
    if all(float(e).is_integer() for e in edges):
        return tuple(f"{int(lo)}-{int(hi) - 1}" for lo, hi in itertools.pairwise(edges))
    return tuple(f"{lo:g}-{hi:g}" for lo, hi in itertools.pairwise(edges))


def check_bins(bins: object, where: str) -> dict[str, list[float]]:
    """``[attributes] bins``: attribute name -> increasing finite edges (at least two); InputError otherwise."""
    if not isinstance(bins, Mapping):
        raise InputError(f"{where} must be a table of attribute = [edges], e.g. {{age = [0, 20, 30, 40, 200]}}")
    out = {}
    for name, edges in bins.items():
        if (not isinstance(edges, list) or len(edges) < 2
                or not all(isinstance(e, (int, float)) and not isinstance(e, bool) and math.isfinite(e) for e in edges)
                or any(b <= a for a, b in itertools.pairwise(edges))):
            raise InputError(f"{where}: the bins of {name!r} must be at least two increasing numbers (bin edges, "
                             f"e.g. [0, 20, 30, 40, 50, 65, 200]), got {edges!r}")
        out[str(name)] = [float(e) for e in edges]
    return out


def _describe(table, row: int) -> str:  # noqa: ANN001
    return f"identity {table.identity[row]!r} (image {table.image[row]!r})"


def attribute_labels(table, name: str, bins: Mapping[str, Sequence[float]] | None = None) -> Labels:  # noqa: ANN001
    """One attribute of ``table`` as :class:`Labels`: ethnicity in the table's own order, gender as
    :data:`storage.vocab.GENDERS`, another categorical attribute in sorted order, a numeric one binned by
    ``bins[name]`` (bins in edge order). InputError naming the attribute when the table lacks it, when a
    categorical one is given bins, a numeric one has none, or a value lies outside its bins."""
    bins = bins or {}
    if name == ETHNICITY and table.ethnicity is not None:
        codes, names = table.ethnicity, tuple(table.ethnicities)
    elif name == GENDER:
        codes, names = table.gender, vocab.GENDERS
    elif name in table.attributes:
        values = table.attributes[name]
        if is_numeric(values):
            if name not in bins:
                raise InputError(f"attribute {name!r} is numeric (e.g. {values[0]:g}); give its bin edges, e.g. "
                                 f"[attributes] bins.{name} = [0, 20, 30, 40, 50, 65, 200]")
            edges = np.asarray(bins[name], dtype=np.float64)
            codes = np.searchsorted(edges, values, side="right") - 1
            outside = np.flatnonzero((codes < 0) | (codes >= len(edges) - 1))
            if len(outside):
                r = outside[0]
                raise InputError(f"attribute {name!r} of {_describe(table, r)} is {values[r]:g}, outside the bins "
                                 f"[attributes] bins.{name} = {list(bins[name])} ({len(outside)} rows outside); "
                                 f"widen the edges")
            names = bin_labels(bins[name])
        else:
            if name in bins:
                raise InputError(f"[attributes] bins.{name}: attribute {name!r} is categorical (e.g. {values[0]!r}); "
                                 f"bins apply to numeric attributes")
            codes, uniques = pd.factorize(np.asarray(values, dtype=object), sort=True)
            names = tuple(str(u) for u in uniques)
    else:
        raise InputError(f"the data have no attribute {name!r}; their attributes: {', '.join(available(table))}")
    return Labels(np.asarray(codes, dtype=np.int32), tuple(names), (name,))


def group_labels(table, attributes: Sequence[str], bins: Mapping[str, Sequence[float]] | None = None,  # noqa: ANN001
                 *, per_identity: str | None = None) -> Labels:
    """Each row's group of the product of ``attributes`` (e.g. ``["ethnicity", "gender"]`` -> ``"asian_female"``),
    names in product order of each attribute's own order (:func:`attribute_labels`), all combinations listed.

    ``per_identity`` (what needs it, for the message, e.g. ``"[verification] groups"``): InputError naming the
    first identity whose images lie in two groups (an age binned per image, say)."""
    attributes = list(attributes)
    if not attributes:
        raise InputError("group labels: expected at least one attribute")
    if len(set(attributes)) != len(attributes):
        raise InputError(f"group labels: attributes repeat: {attributes}")
    parts = [attribute_labels(table, a, bins) for a in attributes]
    codes = np.zeros(len(table), dtype=np.int64)
    for p in parts:
        codes = codes * len(p.names) + p.codes
    names = tuple("_".join(c) for c in itertools.product(*(p.names for p in parts)))
    out = Labels(codes.astype(np.int32), names, tuple(attributes))
    if per_identity:
        check_per_identity(table.identity, table.identity_codes(), out, per_identity)
    return out


def check_per_identity(identity: np.ndarray, identity_codes: np.ndarray, labels: Labels, what: str) -> None:
    """InputError naming ``what`` and the first identity (``identity``: names per row) whose rows have two
    different ``labels``."""
    spans = pd.Series(labels.codes).groupby(identity_codes).nunique()
    mixed = spans.index[spans.to_numpy() > 1]
    if len(mixed):
        rows = np.flatnonzero(identity_codes == mixed[0])
        seen = list(dict.fromkeys(labels.names[c] for c in labels.codes[rows]))
        raise InputError(f"{what}: identity {identity[rows[0]]!r} has images in groups {', '.join(seen[:3])} of "
                         f"{' x '.join(labels.attributes)}; expected one group per identity ({len(mixed)} identities "
                         f"span several)")


def default_groups(table) -> Labels:  # noqa: ANN001
    """The demographic groups a table's summaries show: ethnicity x gender (gender alone without ethnicity)."""
    return group_labels(table, [a for a in DEFAULT_VERIFICATION_GROUPS if a in available(table)])


def order_names(found: Iterable[str], ordered: Sequence[str]) -> list[str]:
    """``found`` in the order of ``ordered``, then any others sorted."""
    found = set(found)
    return [n for n in ordered if n in found] + sorted(found - set(ordered))
