"""The study's identity-disjoint splits, random by seed.

Per group of the group axis (default: ethnicity) and class of the target (default: gender; the protocol's
``*_per_gender`` keys count identities per target class), ``train_per_gender`` identities are drawn for training
(one random image each) and ``test_per_gender`` other identities for testing: one random image each for
classification, all their images for verification; every image of the training identities is what score
mitigations fit on (``Split.fitting``). When the group axis is the target itself (a
verification-only study by gender), each group is one stratum. The draw for one group x class uses a random
generator seeded from ``(seed, group code, class code)`` and the stratum's identities in sorted order, so it does
not depend on row order or on which other groups are present: the "all" union and the single-group train groups
share their per-group training sets for a given seed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from storage.attributes import Labels, attribute_labels
from storage.errors import InputError
from storage.table import EmbeddingTable
from storage.vocab import ALL, ETHNICITIES, parse_train_group

_SPLIT_STREAM = 0x5B11  # separates the split's random streams from other users of the same seed


@dataclass(frozen=True)
class Protocol:
    """How many identities per target class (gender by default) each group contributes to training and to testing
    (training: 0 in a verification-only study)."""

    train_per_gender: int = 500
    test_per_gender: int = 250


@dataclass(frozen=True, eq=False)
class Split:
    """Row indices (sorted, int64) per group of the group axis."""

    train: dict[str, np.ndarray]         # one image per training identity
    test: dict[str, np.ndarray]          # one image per test identity (classification)
    verification: dict[str, np.ndarray]  # every image of the test identities (verification scores)
    fitting: dict[str, np.ndarray]       # every image of the training identities (score mitigations fit on it)

    def train_rows(self, train_group: str) -> np.ndarray:
        """Sorted training rows of ``train_group``: one ethnicity (``"asian"``), a union (``"asian+black"``) or
        ``"all"`` (the union of every ethnicity in the split). InputError for an unknown or missing group."""
        groups = train_group_ethnicities(train_group, self.train.keys())
        if not groups:
            raise InputError(f"train group {train_group!r}: the split has no ethnicities")
        if len(groups) == 1:
            return self.train[groups[0]]
        return np.sort(np.concatenate([self.train[e] for e in groups]))


def _check_protocol(protocol: Protocol) -> None:
    for name in ("train_per_gender", "test_per_gender"):
        value = getattr(protocol, name)
        least = 0 if name == "train_per_gender" else 1
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least:
            raise InputError(f"protocol: '{name}' must be an integer >= {least}, got {value!r}")


def _check_ethnicities(ethnicities: Sequence[str], vocabulary: Sequence[str]) -> list[str]:
    if isinstance(ethnicities, str):
        ethnicities = [ethnicities]
    chosen = list(ethnicities)
    if not chosen:
        raise InputError(f"split: no groups requested; expected some of {', '.join(vocabulary)}")
    for e in chosen:
        if e not in vocabulary:
            raise InputError(f"split: unknown group {e!r}; expected one of {', '.join(vocabulary)}")
    if len(set(chosen)) != len(chosen):
        raise InputError(f"split: groups repeat: {chosen}")
    return chosen


def _stream(ethnicity: str, code: int) -> int:
    """The random stream of an ethnicity group: the study's code for the study's names (unchanged splits), else
    a hash of the name, so that a group's split does not depend on which other groups the data holds."""
    if ethnicity in ETHNICITIES:
        return code
    return int.from_bytes(hashlib.sha256(ethnicity.encode()).digest()[:4], "little") + len(ETHNICITIES)


def make_split(table: EmbeddingTable, seed: int, protocol: Protocol = Protocol(),
               groups: Sequence[str] | None = None, *, group: Labels | None = None,
               target: Labels | None = None) -> Split:
    """Draw the identity-disjoint train/test split of ``seed`` for each of ``groups`` (default: every group of the
    group axis with rows in the table).

    ``group`` and ``target``: each row's group-axis and target labels, one per identity (default: ethnicity and
    gender, :func:`grid.axes.resolve_axes` gives the configured ones). Pure and deterministic: the same table
    content and seed give the same rows. Raises InputError when a stratum (group_class) has fewer identities
    than ``train_per_gender + test_per_gender``, naming it, how many it has and how many the split needs (every
    short stratum is listed).
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(f"split: seed must be a non-negative integer, got {seed!r}")
    _check_protocol(protocol)
    group = group or attribute_labels(table, "ethnicity")
    target = target or attribute_labels(table, "gender")
    vocabulary = list(group.names)
    chosen = _check_ethnicities(group.present() if groups is None else groups, vocabulary)
    need = protocol.train_per_gender + protocol.test_per_gender
    one_stratum = group.attributes == target.attributes   # the group axis is the target: each group one stratum
    classes = ("",) if one_stratum else target.names

    # Rows ordered by (identity, image name): a row-order-independent view of every identity's images.
    id_codes = table.identity_codes()
    img_codes, _ = pd.factorize(np.asarray(table.image, dtype=object), sort=True)
    order = np.lexsort((img_codes, id_codes))
    n_ids = int(id_codes.max()) + 1 if len(id_codes) else 0
    counts = np.bincount(id_codes, minlength=n_ids)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    id_eth = np.empty(n_ids, dtype=np.int32)
    id_gen = np.zeros(n_ids, dtype=np.int32)
    id_eth[id_codes] = group.codes  # one label per identity (validate_table / resolve_axes guarantee it)
    if not one_stratum:
        id_gen[id_codes] = target.codes

    short = []
    group_ids: dict[tuple[int, int], np.ndarray] = {}
    for e in chosen:
        ec = vocabulary.index(e)
        for gc, g in enumerate(classes):
            ids = np.flatnonzero((id_eth == ec) & (id_gen == gc))  # sorted by identity string
            group_ids[ec, gc] = ids
            if len(ids) < need:
                short.append(f"{e}{'_' * bool(g)}{g} has {len(ids)} identities")
    if short:
        raise InputError(f"split: too few identities: {'; '.join(short)}; the split needs {need} per group "
                         f"({protocol.train_per_gender} training + {protocol.test_per_gender} test identities "
                         f"per {'group' if one_stratum else target.attributes[0]}). Lower "
                         f"protocol.train_per_gender / protocol.test_per_gender or add data")

    train: dict[str, np.ndarray] = {}
    test: dict[str, np.ndarray] = {}
    verification: dict[str, np.ndarray] = {}
    fitting: dict[str, np.ndarray] = {}
    for e in chosen:
        ec = vocabulary.index(e)
        parts: dict[str, list[np.ndarray]] = {"train": [], "test": [], "verification": [], "fitting": []}
        for gc in range(len(classes)):
            ids = group_ids[ec, gc]
            rng = np.random.default_rng([int(seed), _SPLIT_STREAM, _stream(e, ec), gc])
            perm = rng.permutation(len(ids))
            train_ids = ids[perm[:protocol.train_per_gender]]
            test_ids = ids[perm[protocol.train_per_gender:need]]
            parts["train"].append(order[starts[train_ids] + rng.integers(0, counts[train_ids])])
            parts["test"].append(order[starts[test_ids] + rng.integers(0, counts[test_ids])])
            parts["verification"].append(_images(order, starts[test_ids], counts[test_ids]))
            parts["fitting"].append(_images(order, starts[train_ids], counts[train_ids]))
        train[e], test[e], verification[e], fitting[e] = (
            np.sort(np.concatenate(parts[k])).astype(np.int64) for k in ("train", "test", "verification", "fitting"))
    return Split(train=train, test=test, verification=verification, fitting=fitting)


def _images(order: np.ndarray, starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Every row of the identities whose rows are ``order[start:start + count]``."""
    return np.concatenate([np.empty(0, np.int64)] + [order[s:s + c] for s, c in zip(starts, counts)])


def train_group_ethnicities(train_group: str, available: Iterable[str]) -> tuple[str, ...]:
    """The ethnicity groups a train group stands for, in the order of ``available`` (the data's groups):
    ``"asian"`` -> ``("asian",)``, ``"all"`` -> every available group, ``"black+asian"`` -> ``("asian",
    "black")``. InputError when the group needs an ethnicity not in ``available``."""
    avail = list(available)
    parts = parse_train_group(train_group)
    if parts == (ALL,):
        return tuple(avail)
    for p in parts:
        if p not in avail:
            raise InputError(f"train group {train_group!r} needs {p!r}, which is not in the data "
                             f"(its groups: {', '.join(avail) or 'none'})")
    return tuple(e for e in avail if e in parts)


def check_groups(train_groups: Sequence[str], test_groups: Sequence[str], available: Sequence[str],
                 need_train: bool = True) -> None:
    """Raise InputError naming the first train or test group that is malformed, repeated, or needs a group missing
    from the data (``available``, in the data's order). ``"all"`` is every group of the data; test groups are
    single groups; no train groups are needed without models (``need_train`` False)."""
    avail = list(available)
    if need_train and not list(train_groups):
        raise InputError("train groups: none given; expected ethnicity groups, 'all' or unions such as 'asian+black'")
    if not list(test_groups):
        raise InputError(f"test groups: none given; expected some of {', '.join(avail)}")
    seen: dict[tuple[str, ...], str] = {}
    for group in train_groups:
        key = train_group_ethnicities(group, avail)
        if key in seen:
            raise InputError(f"grid.train_groups: train group {group!r} repeats {seen[key]!r} (both train on "
                             f"{'+'.join(key)}, in data whose groups are {', '.join(avail)})")
        seen[key] = group
    for group in dict.fromkeys(test_groups):
        if group not in avail:
            raise InputError(f"test group {group!r} is not in the data (its groups: {', '.join(avail) or 'none'})")
    if len(set(test_groups)) != len(list(test_groups)):
        raise InputError(f"test groups repeat: {list(test_groups)}")
