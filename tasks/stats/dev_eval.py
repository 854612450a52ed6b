"""The development / evaluation split of verification identities (bob.measure's convention): thresholds are chosen
on the development part's comparisons and applied to the evaluation part's, where FMR and FNMR are measured."""

from __future__ import annotations

import hashlib
import math

import numpy as np

from storage.errors import InputError

_STREAM = 0xDE7E      # separates this split's random stream from other users of the same seed
MIN_PER_PART = 2      # identities of each group in each part: two give the group impostor comparisons


def development(identity: np.ndarray, group: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """True where an entry's identity is in the development part (``identity``: identity codes, ``group``: each
    entry's demographic group name; one group per identity).

    Per group, seeded by (``seed``, the group's name) alone: its distinct identity codes in sorted order, randomly
    permuted; the first n_dev = floor(fraction * n + 1/2) (kept within [2, n - 2]) are development, the others
    evaluation. Identity-disjoint and stratified by group. InputError naming a group with fewer than 4 identities."""
    identity, group = np.asarray(identity), np.asarray(group).astype(str)
    dev = np.zeros(len(identity), bool)
    for name in np.unique(group):
        ids = np.unique(identity[group == name])
        if len(ids) < 2 * MIN_PER_PART:
            raise InputError(f"verification group {name} has {len(ids)} test identities; threshold_split = \"dev\" "
                             f"needs at least {2 * MIN_PER_PART} (two for development, two for evaluation): add "
                             f"test identities (protocol.test_per_gender) or set [verification] threshold_split = "
                             f"\"test\"")
        n_dev = min(max(math.floor(fraction * len(ids) + 0.5), MIN_PER_PART), len(ids) - MIN_PER_PART)
        stream = int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "little")
        chosen = np.random.default_rng([int(seed), _STREAM, stream]).permutation(ids)[:n_dev]
        dev |= np.isin(identity, chosen) & (group == name)
    return dev
