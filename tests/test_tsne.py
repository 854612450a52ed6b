"""t-SNE jobs: subsets, labels, seeding, and that planted clusters stay apart in 2-D."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from storage.errors import InputError
from storage.schema import TABLES
from tasks.kinds.tsne import tsne_job

STUDY = ("asian", "caucasian", "black")


def data() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """150 rows (+10 unused), 3 ethnicities as well-separated clusters, genders alternating; labels as codes."""
    rng = np.random.default_rng(0)
    n, d = 160, 64
    ethnicity = (np.arange(n) // 2) % 3
    gender = np.arange(n) % 2
    X = np.abs(rng.normal(0, 0.1, (n, d)))
    X[np.arange(n), ethnicity] += 2.0
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    return X.astype(np.float32), ethnicity.astype(np.int8), gender.astype(np.int8), np.array(
        [f"id{i:03d}" for i in range(n)], dtype=object)


def nearest_neighbour_agreement(xy: np.ndarray, labels: np.ndarray) -> float:
    dist = ((xy[:, None, :] - xy[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(dist, np.inf)
    return float((labels[dist.argmin(1)] == labels).mean())


def test_all_subset_keeps_clusters_apart_and_labels_rows():
    X, eth, gen, ident = data()
    rows = np.arange(150)
    out = tsne_job(X, rows, eth, gen, ident, ethnicities=STUDY, subset="all", seed=0, perplexity=10, pca_dims=20)
    assert list(out.columns) == [c for c in TABLES["tsne"].names if c not in ("seed", "job_id")] and len(out) == 150
    assert set(out["subset"]) == {"all"}
    assert out["identity"].tolist() == ident[:150].tolist()
    assert out["ethnicity"].tolist() == np.array(["asian", "caucasian", "black"])[eth[:150]].tolist()
    assert set(out["gender"]) == {"male", "female"}
    assert np.isfinite(out[["x", "y"]].to_numpy()).all()
    assert nearest_neighbour_agreement(out[["x", "y"]].to_numpy(), eth[:150]) == 1.0


@pytest.mark.parametrize("subset,code", [("male", 0), ("female", 1)])
def test_gender_subsets_keep_only_that_gender(subset, code):
    X, eth, gen, ident = data()
    out = tsne_job(X, np.arange(150), eth, gen, ident, ethnicities=STUDY, subset=subset, seed=0, perplexity=10)
    assert len(out) == 75 and set(out["gender"]) == {subset}
    assert out["identity"].tolist() == ident[:150][gen[:150] == code].tolist()


def test_same_seed_same_numbers_and_names_work_like_codes():
    X, eth, gen, ident = data()
    rows = np.arange(0, 150, 2)
    a = tsne_job(X, rows, eth, gen, ident, ethnicities=STUDY, subset="all", seed=4, perplexity=8)
    eth_names = np.array(["asian", "caucasian", "black"], dtype=object)[eth]
    gen_names = np.array(["male", "female"], dtype=object)[gen]
    b = tsne_job(X, rows, eth_names, gen_names, ident, ethnicities=STUDY, subset="all", seed=4, perplexity=8)
    pd.testing.assert_frame_equal(a, b)
    c = tsne_job(X, rows, eth, gen, ident, ethnicities=STUDY, subset="all", seed=5, perplexity=8)
    assert not np.allclose(a[["x", "y"]], c[["x", "y"]])


@pytest.mark.parametrize("kwargs,message", [
    ({"subset": "women"}, r"unknown t-SNE subset 'women'; allowed: male, female, all"),
    ({"perplexity": 200.0}, "has 150 rows; perplexity must be > 0 and less than that"),
    ({"pca_dims": 1}, "pca_dims must be an integer >= 2"),
    ({"rows": np.array([], dtype=int)}, "has no rows"),
    ({"ethnicity": np.full(160, 7, dtype=np.int8)}, "ethnicity codes must lie in 0..2"),
    ({"ethnicities": ("white", "black", "asian", "indian")}, "unknown ethnicity 'caucasian'; allowed: white"),
    ({"gender": np.full(160, 5)}, r"gender codes must lie in 0..1"),
    ({"identity": np.array(["x"])}, "identity must have one entry per embedding row"),
])
def test_bad_arguments(kwargs, message):
    X, eth, gen, ident = data()
    args = dict(X=X, rows=np.arange(150), ethnicity=np.asarray(STUDY, dtype=object)[eth], gender=gen,
                identity=ident, ethnicities=STUDY, subset="all", seed=0)
    with pytest.raises(InputError, match=message):
        tsne_job(**{**args, **kwargs})
