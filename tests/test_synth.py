"""The built-in synthetic DiveFace-like generator."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from storage.errors import InputError
from grid.splits import Protocol, make_split
from storage.synth import SynthParams, diveface_images_per_identity, generate, synth_params_from_dict
from storage.vocab import ETHNICITIES

SMALL = SynthParams(identities_per_group=40, dim=64)


@pytest.fixture(scope="module")
def small():
    return generate(SMALL)


def test_shape_dtype_norms_and_non_negativity(small):
    X = small.embeddings
    assert X.dtype == np.float32 and X.flags.c_contiguous and X.shape[1] == 64
    assert (X >= 0).all()
    assert np.allclose(np.linalg.norm(X, axis=1), 1.0, atol=1e-5)
    assert 0.0 < np.mean(X == 0) < 0.9  # sparse-ish like ReLU features, but not empty


def test_groups_identities_and_images_per_identity(small):
    codes = small.identity_codes()
    for e in range(3):
        for g in range(2):
            mask = (small.ethnicity == e) & (small.gender == g)
            assert len(np.unique(codes[mask])) == 40
    counts = np.bincount(codes)
    assert counts.min() >= 3  # DiveFace's minimum
    assert len(small) == counts.sum()
    fixed = generate(SynthParams(identities_per_group=5, dim=8, images_per_identity=4))
    assert np.all(np.bincount(fixed.identity_codes()) == 4) and len(fixed) == 6 * 5 * 4


def test_diveface_distribution_is_loaded():
    dist = diveface_images_per_identity()
    assert len(dist) == 6
    for k, p in dist.values():
        assert k.min() == 3 and np.isclose(p.sum(), 1.0)
    k, p = dist["caucasian", "female"]  # Group3_Female: 7.07 images per identity on average
    assert abs(float((k * p).sum()) - 7.07) < 0.01


def test_same_seed_same_bytes_other_seed_other_data(small):
    again = generate(SMALL)
    assert again.embeddings.tobytes() == small.embeddings.tobytes()
    assert list(again.identity) == list(small.identity) and list(again.image) == list(small.image)
    assert again.fingerprint() == small.fingerprint()
    other = generate(SynthParams(identities_per_group=40, dim=64, seed=1))
    assert other.fingerprint() != small.fingerprint()
    n = min(len(other), len(small))
    assert not np.allclose(other.embeddings[:n], small.embeddings[:n])


def test_genuine_similarity_above_impostor_in_every_ethnicity():
    table = generate(SynthParams(identities_per_group=40, dim=256))
    codes = table.identity_codes()
    for e, name in enumerate(ETHNICITIES):
        rows = np.flatnonzero(table.ethnicity == e)
        X = table.embeddings[rows]
        S = X @ X.T
        same = codes[rows][:, None] == codes[rows][None, :]
        upper = np.triu(np.ones_like(same), 1)
        genuine, impostor = S[same & upper], S[~same & upper]
        assert genuine.mean() > impostor.mean() + 0.1, name
        # overlapping but separable: most genuine pairs beat most impostor pairs
        assert np.mean(genuine > np.quantile(impostor, 0.95)) > 0.7, name


def test_default_bias_pattern_same_group_training_transfers_best():
    """With the default bias parameters a gender classifier is best on the ethnicity it was trained on, and
    training on all ethnicities is about as good as same-group training (the study's pattern)."""
    table = generate(SynthParams(identities_per_group=300, dim=256))
    split = make_split(table, 0, Protocol(train_per_gender=200, test_per_gender=100))
    X, y = table.embeddings, table.gender
    acc = {}
    for train in (*ETHNICITIES, "all"):
        rows = split.train_rows(train)
        clf = LogisticRegression(max_iter=2000).fit(X[rows], y[rows])
        for test in ETHNICITIES:
            acc[train, test] = clf.score(X[split.test[test]], y[split.test[test]])
    for test in ETHNICITIES:
        diag = acc[test, test]
        others = [acc[t, test] for t in ETHNICITIES if t != test]
        assert diag > max(others), (test, acc)
        assert diag - np.mean(others) > 0.03, (test, acc)
        assert acc["all", test] > diag - 0.03, (test, acc)


def test_ethnicity_and_gender_form_clusters():
    table = generate(SynthParams(identities_per_group=40, dim=256))
    X = table.embeddings
    group = table.ethnicity * 2 + table.gender
    centres = np.stack([X[group == k].mean(axis=0) for k in range(6)])
    nearest = np.argmax(X @ centres.T, axis=1)
    assert np.mean(nearest // 2 == table.ethnicity) > 0.95
    assert np.mean(nearest == group) > 0.9


def test_params_from_dict_forms():
    p = synth_params_from_dict({"gender_separation": 4, "image_noise": [1, 2, 3],
                                "gender_offset": {"black": 0.5}, "gender_alignment": 1}, "cfg")
    assert p.gender_separation == (4.0, 4.0, 4.0)
    assert p.image_noise == (1.0, 2.0, 3.0)
    assert p.gender_offset == (SynthParams().gender_offset[0], SynthParams().gender_offset[1], 0.5)
    assert p.gender_alignment == 1.0
    assert synth_params_from_dict({}, "cfg") == SynthParams()


@pytest.mark.parametrize("given,pattern", [
    ({"colour": 1}, "cfg: unknown parameter 'colour'; allowed: identities_per_group"),
    ({"identities_per_group": 0}, "'identities_per_group' must be an integer >= 1"),
    ({"dim": 10.5}, "'dim' must be an integer"),
    ({"gender_alignment": 1.5}, "'gender_alignment' must be a number from 0 to 1"),
    ({"image_noise": [1, 2]}, "'image_noise' must be a number"),
    ({"image_noise": 0}, "'image_noise' must be positive"),
    ({"gender_separation": {"martian": 1}}, "unknown ethnicity 'martian'"),
    ({"active_fraction": "lots"}, "'active_fraction' must be a number"),
    ({"seed": -1}, "'seed' must be an integer >= 0"),
])
def test_params_from_dict_refuses_bad_input(given, pattern):
    with pytest.raises(InputError, match=pattern):
        synth_params_from_dict(given, "cfg")


def test_generate_checks_params_built_by_hand():
    with pytest.raises(InputError, match="'private_dims' must be an integer >= 2"):
        generate(SynthParams(identities_per_group=2, dim=8, private_dims=1))


def test_the_generator_and_its_data_live_in_storage_without_grid():
    """Layering: storage never imports grid; the distribution file ships with the storage package."""
    code = ("import sys, storage.synth, storage.importers; storage.synth.diveface_images_per_identity(); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'grid'))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
