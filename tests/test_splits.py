"""The study's splits: balance, identity-disjointness, determinism and independence of other groups."""

from __future__ import annotations

import numpy as np
import pytest

from storage.errors import InputError
from grid.splits import Protocol, check_groups, make_split, train_group_ethnicities
from storage.synth import SynthParams, generate
from storage.table import EmbeddingTable
from storage.vocab import ETHNICITIES

PROTOCOL = Protocol(train_per_gender=10, test_per_gender=5)


@pytest.fixture(scope="module")
def table():
    return generate(SynthParams(identities_per_group=40, dim=16))


def subset(table: EmbeddingTable, rows: np.ndarray) -> EmbeddingTable:
    return EmbeddingTable(np.ascontiguousarray(table.embeddings[rows]), table.identity[rows], table.image[rows],
                          table.ethnicity[rows], table.gender[rows], table.ethnicities)


def pairs(table: EmbeddingTable, rows: np.ndarray) -> set[tuple[str, str]]:
    return {(table.identity[r], table.image[r]) for r in rows}


def test_balance_and_one_image_per_identity(table):
    split = make_split(table, 0, PROTOCOL)
    for e, name in enumerate(ETHNICITIES):
        for rows, per_gender in ((split.train[name], 10), (split.test[name], 5)):
            assert np.all(table.ethnicity[rows] == e)
            assert np.sum(table.gender[rows] == 0) == per_gender and np.sum(table.gender[rows] == 1) == per_gender
            assert len(np.unique(table.identity_codes()[rows])) == len(rows)  # one image per identity
            assert np.all(np.diff(rows) > 0) and rows.dtype == np.int64


def test_identity_disjoint_and_verification_holds_all_test_images(table):
    split = make_split(table, 3, PROTOCOL)
    codes = table.identity_codes()
    for name in ETHNICITIES:
        train_ids = set(codes[split.train[name]])
        test_ids = set(codes[split.test[name]])
        assert not train_ids & test_ids
        expected = np.flatnonzero(np.isin(codes, list(test_ids)))
        assert np.array_equal(split.verification[name], expected)
        assert set(split.test[name]) <= set(split.verification[name])
    all_train = [set(codes[split.train[e]]) for e in ETHNICITIES]
    assert not (all_train[0] & all_train[1]) and not (all_train[1] & all_train[2])


def test_deterministic_by_seed_and_seeds_differ(table):
    a, b, c = make_split(table, 7, PROTOCOL), make_split(table, 7, PROTOCOL), make_split(table, 8, PROTOCOL)
    for name in ETHNICITIES:
        assert np.array_equal(a.train[name], b.train[name]) and np.array_equal(a.test[name], b.test[name])
        assert np.array_equal(a.verification[name], b.verification[name])
        assert not np.array_equal(a.train[name], c.train[name])


def test_split_of_an_ethnicity_ignores_other_ethnicities_and_row_order(table):
    full = make_split(table, 1, PROTOCOL)
    only_asian = make_split(table, 1, PROTOCOL, groups=["asian"])
    assert list(only_asian.train) == ["asian"]
    assert np.array_equal(only_asian.train["asian"], full.train["asian"])
    # Drop the black rows and shuffle the rest: the same (identity, image) pairs are drawn.
    keep = np.flatnonzero(table.ethnicity != ETHNICITIES.index("black"))
    rows = np.random.default_rng(0).permutation(keep)
    other = subset(table, rows)
    split = make_split(other, 1, PROTOCOL, groups=["asian", "caucasian"])
    for name in ("asian", "caucasian"):
        assert pairs(other, split.train[name]) == pairs(table, full.train[name])
        assert pairs(other, split.test[name]) == pairs(table, full.test[name])
        assert pairs(other, split.verification[name]) == pairs(table, full.verification[name])


def test_too_few_identities_names_group_count_and_need(table):
    rows = np.flatnonzero(~((table.ethnicity == 2) & (table.gender == 1)) | (table.identity_codes() % 4 == 0))
    small = subset(table, rows)  # black_female keeps 10 of its 40 identities
    with pytest.raises(InputError, match=r"black_female has 10 identities; the split needs 15 per group "
                                         r"\(10 training \+ 5 test"):
        make_split(small, 0, PROTOCOL)
    with pytest.raises(InputError, match="asian_male has 40 identities.*needs 100 per group"):
        make_split(table, 0, Protocol(60, 40))
    split = make_split(small, 0, PROTOCOL, groups=["asian"])  # black not needed: fine
    assert len(split.train["asian"]) == 20


def test_bad_protocol_seed_and_ethnicity(table):
    with pytest.raises(InputError, match="'test_per_gender' must be an integer >= 1"):
        make_split(table, 0, Protocol(5, 0))
    with pytest.raises(InputError, match="'train_per_gender' must be an integer >= 0"):
        make_split(table, 0, Protocol(-1, 5))
    with pytest.raises(InputError, match="seed must be a non-negative integer"):
        make_split(table, -1, PROTOCOL)
    with pytest.raises(InputError, match="unknown group 'martian'"):
        make_split(table, 0, PROTOCOL, groups=["martian"])


def test_train_rows_unions(table):
    split = make_split(table, 0, PROTOCOL)
    everything = np.sort(np.concatenate([split.train[e] for e in ETHNICITIES]))
    assert np.array_equal(split.train_rows("all"), everything)
    assert np.array_equal(split.train_rows("black+asian"),
                          np.sort(np.concatenate([split.train["asian"], split.train["black"]])))
    assert np.array_equal(split.train_rows("caucasian"), split.train["caucasian"])
    for bad, pattern in (("martian", "'martian', which is not in the data"),
                         ("asian+asian", "names an ethnicity twice"), ("", "expected an ethnicity group")):
        with pytest.raises(InputError, match=pattern):
            split.train_rows(bad)
    partial = make_split(table, 0, PROTOCOL, groups=["asian"])
    with pytest.raises(InputError, match="needs 'black', which is not in the data"):
        partial.train_rows("asian+black")


def test_train_group_ethnicities_is_canonical():
    assert train_group_ethnicities("black+asian", ETHNICITIES) == ("asian", "black")
    assert train_group_ethnicities("all", ETHNICITIES) == ETHNICITIES
    rfw = ("asian", "caucasian", "african", "indian")          # any groups, in the data's order
    assert train_group_ethnicities("indian+asian", rfw) == ("asian", "indian")
    assert train_group_ethnicities("all", rfw) == rfw


def test_check_groups():
    check_groups(["asian", "caucasian", "black", "all", "asian+black"], ["asian", "caucasian", "black"], ETHNICITIES)
    cases = [
        (["asain"], ["asian"], ETHNICITIES, "'asain', which is not in the data"),
        (["asian"], ["all"], ETHNICITIES, "test group 'all' is not in the data"),
        (["black"], ["asian"], ["asian", "caucasian"], "train group 'black' needs 'black'"),
        (["asian"], ["black"], ["asian", "caucasian"], "test group 'black' is not in the data"),
        (["asian+black", "black+asian"], ["asian"], ETHNICITIES, "train group 'black\\+asian' repeats 'asian\\+black'"),
        ([], ["asian"], ETHNICITIES, "train groups: none given"),
    ]
    for train, test, available, pattern in cases:
        with pytest.raises(InputError, match=pattern):
            check_groups(train, test, available)
