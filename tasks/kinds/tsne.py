"""t-SNE job: 2-D map of (a target-class subset, e.g. one gender, of) the training embeddings, as in the study's
figures. The table's ``ethnicity`` and ``gender`` columns hold each image's group-axis and target values (named
after the defaults, ``[grid] group`` and ``[grid] target``). No jobs in a verification-only study (no models).

PCA to ``pca_dims`` dimensions (scikit-learn, randomized solver), then scikit-learn's Barnes-Hut t-SNE (PCA
initialisation, automatic learning rate, 1000 iterations), both seeded. scikit-learn's TSNE was chosen over
openTSNE after measuring both here (same speed within noise at 1500-3000 rows on one thread, same quality;
docs/PERFORMANCE.md, bench/bench_tsne.py), so no extra dependency is needed.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import pandas as pd

from storage.attributes import group_labels
from storage.errors import InputError
from storage.schema import result_table
from storage.vocab import ALL, GENDERS
from tasks.kinds import ConfigPart, JobKind, PlannedJob, Where, parse_seeds, register
from tasks.runtime import check_rows, job_threads, limit_threads

_SAFE_EXPONENT = 32   # data whose largest |value| lies outside 2^-32 .. 2^32 are scaled into [0.5, 1) first

SUBSETS: tuple[str, ...] = (*GENDERS, ALL)   # the training images of one gender (target class), or all of them
TABLES = (result_table("tsne", "subset", {
    "seed": "int", "subset": "string", "x": "float", "y": "float", "ethnicity": "string", "gender": "string",
    "identity": "string"}),)
DEFAULTS: dict[str, Any] = {
    "enabled": True,
    "seeds": [],       # [] = the first grid seed
    "subsets": list(SUBSETS),
    "perplexity": 30.0,
    "pca_dims": 50,
}


def _names(values: np.ndarray, vocabulary: tuple[str, ...], what: str) -> np.ndarray:
    """Labels as strings: integer codes are mapped through ``vocabulary``; strings must belong to it."""
    values = np.asarray(values)
    if np.issubdtype(values.dtype, np.integer):
        if values.size and (values.min() < 0 or values.max() >= len(vocabulary)):
            raise InputError(f"{what} codes must lie in 0..{len(vocabulary) - 1} ({', '.join(vocabulary)})")
        return np.asarray(vocabulary, dtype=object)[values]
    values = values.astype(object)
    bad = ~np.isin(values, vocabulary)
    if bad.any():
        raise InputError(f"unknown {what} {values[bad][0]!r}; allowed: {', '.join(vocabulary)}")
    return values


def tsne_job(X: np.ndarray, rows: np.ndarray, ethnicity: np.ndarray, gender: np.ndarray, identity: np.ndarray, *,
             ethnicities: tuple[str, ...], subset: str, seed: int, perplexity: float = 30.0, pca_dims: int = 50,
             threads: int = 1, classes: tuple[str, ...] = GENDERS) -> pd.DataFrame:
    """2-D t-SNE coordinates of the ``rows`` of X whose gender (target class) is ``subset`` (one of ``classes``,
    or "all").

    ethnicity (group axis), gender (target) and identity have one entry per row of X (names, or integer codes
    into ``ethnicities``, the table's own groups, / ``classes``). Returns columns ``subset, x, y, ethnicity,
    gender, identity``, one row per embedded image."""
    if subset not in (*classes, ALL):
        raise InputError(f"unknown t-SNE subset {subset!r}; allowed: {', '.join((*classes, ALL))}")
    if X.ndim != 2:
        raise InputError(f"embedding matrix must be 2-D, got shape {X.shape}")
    for what, values in (("ethnicity", ethnicity), ("gender", gender), ("identity", identity)):
        if np.shape(values) != (len(X),):
            raise InputError(f"{what} must have one entry per embedding row ({len(X)}), got shape "
                             f"{np.shape(values)}")
    rows = check_rows(rows, len(X), f"t-SNE subset {subset!r}")
    eth = _names(np.asarray(ethnicity)[rows], tuple(ethnicities), "ethnicity")
    gen = _names(np.asarray(gender)[rows], tuple(classes), "gender")
    if subset != "all":
        keep = gen == subset
        rows, eth, gen = rows[keep], eth[keep], gen[keep]
    if not 0 < perplexity < len(rows):
        raise InputError(f"t-SNE subset {subset!r} has {len(rows)} rows; perplexity must be > 0 and less than "
                         f"that, got {perplexity}")
    if isinstance(pca_dims, bool) or not isinstance(pca_dims, (int, np.integer)) or pca_dims < 2:
        raise InputError(f"pca_dims must be an integer >= 2, got {pca_dims!r}")

    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    limit_threads(threads)  # after the imports, so that threadpoolctl also sees scikit-learn's OpenMP

    data = np.asarray(X[rows], dtype=np.float32)
    exponent = int(np.frexp(np.abs(data).max(initial=0))[1])
    if abs(exponent) > _SAFE_EXPONENT:   # huge or tiny values (x 1e20, x 1e-42): scaled exactly, by a power of two,
        data = np.ldexp(data, -exponent)  # so PCA's float32 products neither overflow nor underflow
    dims = min(int(pca_dims), data.shape[0], data.shape[1])
    if dims < data.shape[1]:
        data = PCA(dims, svd_solver="randomized", random_state=seed).fit_transform(data)
    xy = TSNE(2, perplexity=perplexity, init="pca", learning_rate="auto", random_state=seed,
              n_jobs=threads).fit_transform(data)
    return pd.DataFrame({"subset": subset, "x": xy[:, 0].astype(np.float64), "y": xy[:, 1].astype(np.float64),
                         "ethnicity": eth.astype(str), "gender": gen.astype(str),
                         "identity": np.asarray(identity, dtype=object)[rows].astype(str)})


# ------------------------------------------------------------------------------------------------- the kind ---
def _plan(cfg: Mapping[str, Any]) -> Iterator[PlannedJob]:
    """One t-SNE job per t-SNE seed x subset (when t-SNE is enabled)."""
    t = cfg["tsne"]
    if not t["enabled"] or not cfg["grid"]["models"]:   # verification-only: no training images to map
        return
    for seed, subset in itertools.product(t["seeds"], t["subsets"]):
        params = {"subset": subset, "perplexity": t["perplexity"], "pca_dims": t["pca_dims"],
                  "threads": cfg["run"]["threads_per_job"]}
        yield PlannedJob(seed, params, f"tsne {subset} seed={seed}")


def run(payload: Mapping[str, Any], data: Mapping[str, np.ndarray]) -> dict[str, pd.DataFrame]:
    """Worker entry of a t-SNE job: the 2-D map of the ``all`` training images (of the subset's gender)."""
    p, seed = payload["params"], payload["seed"]
    df = tsne_job(data["X"], payload["rows"], data["group"], data["target"], data["identity"],
                  ethnicities=tuple(data["group_names"]), subset=p["subset"], seed=seed, perplexity=p["perplexity"],
                  pca_dims=p["pca_dims"], threads=job_threads(payload), classes=tuple(data["target_names"]))
    return {"tsne": df.assign(seed=seed)}


def _check_config(cfg: dict[str, Any], where: Where) -> None:
    t = cfg["tsne"]
    t["seeds"] = (parse_seeds(t["seeds"], where("tsne.seeds"), max(cfg["run"]["max_jobs"], 1)) if t["seeds"]
                  else [cfg["grid"]["seeds"][0]])
    for subset in t["subsets"]:
        if not isinstance(subset, str) or (subset not in SUBSETS and cfg["grid"]["target"] == "gender"):
            raise InputError(f"{where('tsne.subsets')} has {subset!r}; allowed: {', '.join(SUBSETS)}")
    if len(set(t["subsets"])) != len(t["subsets"]):
        raise InputError(f"{where('tsne.subsets')} repeats a name: {t['subsets']!r}")
    if t["perplexity"] <= 0 or t["pca_dims"] < 2:
        raise InputError(f"{where('tsne.perplexity')} must be > 0 and 'tsne.pca_dims' >= 2")


def _check_jobs(cfg: Mapping[str, Any], table: Any, splits: Mapping[int, Any], jobs: list[Any]) -> None:
    """Before any job runs: each t-SNE subset is a class of the target (or all) with more training images than the
    perplexity."""
    target = group_labels(table, [cfg["grid"]["target"]], cfg["attributes"]["bins"]) if jobs else None
    for job in jobs:
        rows, subset = splits[job.seed].train_rows(ALL), job.params["subset"]
        if subset != ALL and subset not in target.names:
            raise InputError(f"tsne.subsets has {subset!r}, not a class of the target {cfg['grid']['target']!r} "
                             f"({', '.join(target.names)}); set [tsne] subsets = {[*target.names, ALL]} or "
                             f"enabled = false")
        n = len(rows) if subset == ALL else int((target.codes[rows] == target.names.index(subset)).sum())
        if not job.params["perplexity"] < n:
            raise InputError(f"tsne.perplexity must be less than the {n} training images of t-SNE subset "
                             f"{subset!r} (seed {job.seed}), got {job.params['perplexity']:g}")


KIND = register(JobKind(
    "tsne", plan=_plan, rows=lambda p, split: {"rows": split.train_rows(ALL)}, run="tasks.kinds.tsne:run",
    tables=TABLES, order=2, cost=lambda p: 3 if p["subset"] == ALL else 1,
    config=ConfigPart("tsne", DEFAULTS, _check_config, extend=("seeds", "subsets")), record=("subset",),
    check=_check_jobs,
    report=("grid.report.sections.tsne:SECTION",)))
