"""Built-in synthetic DiveFace-like embeddings (the default data when the user names none).

THE DATA IS SYNTHETIC. It exists so that biasgrid runs end to end out of the box, so that tests and benchmarks
have realistic data, and so that the effect of each bias parameter can be studied in a controlled setting. It
says nothing about real faces: for findings, import real embeddings.

The model (a latent Gaussian model pushed through a random ReLU layer, like ``avg_pool`` features):

* Latent space: ``shared_dims`` axes common to every ethnicity plus ``private_dims`` axes private to each
  ethnicity. A face of ethnicity e lives in the shared axes plus e's private axes.
* Identity centre: ethnicity centre + (±1/2) ``gender_separation[e]`` x e's gender direction + N(0, 1) per axis.
  The ethnicity centre lies on one of e's private axes, ``ethnicity_separation`` away from the other centres.
  e's gender direction is ``sqrt(a)`` x a shared axis + ``sqrt(1-a)`` x one of e's private axes, so any two
  ethnicities' gender directions have cosine ``a = gender_alignment``. ``gender_offset[e]`` shifts e's centre
  along the shared gender axis, so a classifier trained on another ethnicity errs more on one gender.
* Image: identity centre + N(0, ``image_noise[e]``²) per axis, times a per-image quality factor
  (log-normal with ``quality_spread``) that gives the genuine scores a realistic tail of hard pairs.
* Embedding: ReLU(latent @ W + bias + N(0, ``feature_noise``²)) with a random W (latent -> ``dim``), the bias
  chosen so that about ``active_fraction`` of the features are non-zero; then L2-normalised.

So identities are tight clusters (EER of a few percent, differing between ethnicities through ``image_noise``),
ethnicity and gender form t-SNE clusters, a gender classifier trained on one ethnicity transfers only partly to
the others (through ``gender_alignment``), and one trained on all ethnicities can use every group's own
direction. Images per identity follow DiveFace's real distribution (``storage/data``), at least 3 per identity.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from statistics import NormalDist
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from storage.errors import InputError
from storage.table import EmbeddingTable, validate_table
from storage.vocab import DIVEFACE_GROUPS, ETHNICITIES, GENDERS

_STREAM = 0x5E17  # separates the generator's random streams from other users of the same seed
# (ethnicity, gender) -> DiveFace's own group name, as the images-per-identity distribution names it.
_DIVEFACE_NAME = {labels: name for name, labels in DIVEFACE_GROUPS.items()}


@dataclass(frozen=True)
class SynthParams:
    """Parameters of the synthetic DiveFace-like data; the defaults reproduce the study's pattern.

    Per-ethnicity fields are tuples in :data:`storage.vocab.ETHNICITIES` order (asian, caucasian, black).
    Distances are in units of the spread of identity centres (1 per latent axis). Each field's
    ``metadata["help"]`` says what it does (see also :data:`PARAM_HELP`).
    """

    identities_per_group: int = field(default=1000, metadata={"help": (
        "identities per ethnicity x gender group (6 groups)")})
    dim: int = field(default=2048, metadata={"help": "embedding dimension"})
    seed: int = field(default=0, metadata={"help": "random seed: the same parameters give the same bytes"})
    images_per_identity: int = field(default=0, metadata={"help": (
        "images per identity; 0 = drawn from DiveFace's real distribution (3 to several hundred, mean ~6)")})
    gender_separation: tuple[float, float, float] = field(default=(5.3, 5.5, 6.0), metadata={"help": (
        "per ethnicity: distance between male and female identity centres along the ethnicity's gender "
        "direction; larger = gender easier to tell within that ethnicity")})
    gender_offset: tuple[float, float, float] = field(default=(0.3, -0.3, 0.0), metadata={"help": (
        "per ethnicity: shift of the ethnicity's centre along the shared gender axis (positive = towards "
        "female); a classifier trained on another ethnicity then errs more on one gender")})
    gender_alignment: float = field(default=0.4, metadata={"help": (
        "cosine between any two ethnicities' gender directions (0 = unrelated, 1 = one shared direction); "
        "lower = a classifier trained on one ethnicity transfers worse to the others")})
    ethnicity_separation: float = field(default=4.0, metadata={"help": (
        "distance between ethnicity centres (how clearly ethnicities cluster)")})
    image_noise: tuple[float, float, float] = field(default=(0.85, 0.75, 0.9), metadata={"help": (
        "per ethnicity: spread of an identity's images around its centre; larger = higher verification EER")})
    quality_spread: float = field(default=0.25, metadata={"help": (
        "log-normal spread of per-image quality (scales the image noise): the tail of hard genuine pairs")})
    shared_dims: int = field(default=24, metadata={"help": "latent axes shared by all ethnicities"})
    private_dims: int = field(default=24, metadata={"help": (
        "latent axes private to each ethnicity (at least 2: its gender and ethnicity axes)")})
    feature_noise: float = field(default=0.3, metadata={"help": (
        "independent noise per embedding feature before the ReLU, relative to the latent signal")})
    active_fraction: float = field(default=0.6, metadata={"help": (
        "approximate fraction of non-zero features after the ReLU")})
    fta: tuple[float, float, float] = field(default=(0.0, 0.0, 0.0), metadata={"help": (
        "per ethnicity: probability that an image is marked face_detected = false (a failure to acquire; its "
        "embedding is unchanged); all 0 = no face_detected column")})


PARAM_HELP: dict[str, str] = {f.name: f.metadata["help"] for f in dataclasses.fields(SynthParams)}
PER_ETHNICITY_PARAMS: tuple[str, ...] = ("gender_separation", "gender_offset", "image_noise", "fta")


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) and math.isfinite(v)


def check_params(params: SynthParams, source: str = "synth") -> None:
    """Raise InputError naming the first field of ``params`` with a bad value and the allowed range."""
    def bad(name: str, expected: str) -> InputError:
        return InputError(f"{source}: '{name}' must be {expected}, got {getattr(params, name)!r}")

    ints = {"identities_per_group": 1, "dim": 2, "seed": 0, "images_per_identity": 0,
            "shared_dims": 1, "private_dims": 2}
    for name, low in ints.items():
        v = getattr(params, name)
        if not _is_int(v) or v < low:
            raise bad(name, f"an integer >= {low}")
    for name in PER_ETHNICITY_PARAMS:
        v = getattr(params, name)
        if not (isinstance(v, tuple) and len(v) == len(ETHNICITIES) and all(_is_num(x) for x in v)):
            raise bad(name, f"{len(ETHNICITIES)} numbers ({', '.join(ETHNICITIES)})")
    if any(x < 0 for x in params.gender_separation):
        raise bad("gender_separation", "non-negative")
    if any(x <= 0 for x in params.image_noise):
        raise bad("image_noise", "positive")
    if any(not 0 <= x <= 1 for x in params.fta):
        raise bad("fta", "probabilities from 0 to 1")
    ranges = {"gender_alignment": (0.0, 1.0, "a number from 0 to 1"),
              "ethnicity_separation": (0.0, math.inf, "a number >= 0"),
              "quality_spread": (0.0, math.inf, "a number >= 0"),
              "feature_noise": (0.0, math.inf, "a number >= 0"),
              "active_fraction": (0.01, 0.999, "a number from 0.01 to 0.999")}
    for name, (low, high, expected) in ranges.items():
        v = getattr(params, name)
        if not _is_num(v) or not low <= v <= high:
            raise bad(name, expected)


def _per_ethnicity(value: Any, default: tuple[float, ...], key: str, source: str) -> tuple[float, ...]:
    if _is_num(value):
        return tuple(float(value) for _ in ETHNICITIES)
    if isinstance(value, Mapping):
        unknown = [k for k in value if k not in ETHNICITIES]
        if unknown:
            raise InputError(f"{source}: '{key}' has unknown ethnicity {unknown[0]!r}; expected keys "
                             f"{', '.join(ETHNICITIES)}")
        out = list(default)
        for k, v in value.items():
            if not _is_num(v):
                raise InputError(f"{source}: '{key}.{k}' must be a number, got {v!r}")
            out[ETHNICITIES.index(k)] = float(v)
        return tuple(out)
    if isinstance(value, (list, tuple)) and len(value) == len(ETHNICITIES) and all(_is_num(v) for v in value):
        return tuple(float(v) for v in value)
    raise InputError(f"{source}: '{key}' must be a number (all ethnicities), a list of {len(ETHNICITIES)} numbers "
                     f"({', '.join(ETHNICITIES)}) or a table such as {{asian = 4.0}}, got {value!r}")


def synth_params_from_dict(d: Mapping[str, Any], source: str) -> SynthParams:
    """SynthParams from a config table (missing keys keep their defaults).

    Per-ethnicity fields accept a number (every ethnicity), a list in (asian, caucasian, black) order or a
    mapping of some ethnicities to numbers. Unknown keys and bad values raise InputError naming ``source``.
    """
    if not isinstance(d, Mapping):
        raise InputError(f"{source}: expected a table of generator parameters, got {d!r}")
    fields = {f.name: f for f in dataclasses.fields(SynthParams)}
    values: dict[str, Any] = {}
    for key, value in d.items():
        if key not in fields:
            raise InputError(f"{source}: unknown parameter {key!r}; allowed: {', '.join(fields)}")
        if key in PER_ETHNICITY_PARAMS:
            value = _per_ethnicity(value, fields[key].default, key, source)
        elif isinstance(fields[key].default, float) and _is_int(value):
            value = float(value)
        values[key] = value
    params = SynthParams(**values)
    check_params(params, source)
    return params


@lru_cache(maxsize=None)
def diveface_images_per_identity() -> dict[tuple[str, str], tuple[np.ndarray, np.ndarray]]:
    """DiveFace's images-per-identity distribution: (ethnicity, gender) -> (counts k, probability of k)."""
    text = (resources.files("storage") / "data" / "diveface_images_per_identity.csv").read_text()
    rows: dict[str, list[tuple[int, int]]] = {}
    for line in text.splitlines()[1:]:
        if line.strip():
            group, k, identities = line.split(",")
            rows.setdefault(group, []).append((int(k), int(identities)))
    out = {}
    for e in ETHNICITIES:
        for g in GENDERS:
            pairs = sorted(rows[_DIVEFACE_NAME[e, g]])
            k = np.array([p[0] for p in pairs], dtype=np.int64)
            w = np.array([p[1] for p in pairs], dtype=np.float64)
            out[e, g] = (k, w / w.sum())
    return out


def _geometry(params: SynthParams) -> tuple[np.ndarray, np.ndarray]:
    """The random ReLU layer: W (latent axes x dim) and the bias per feature."""
    rng = np.random.default_rng([params.seed, _STREAM, 99])
    k = params.shared_dims + len(ETHNICITIES) * params.private_dims
    m = params.shared_dims + params.private_dims
    w = rng.standard_normal((k, params.dim), dtype=np.float32)
    w *= np.float32(1.0 / math.sqrt(m))
    # Typical spread of a pre-activation: identity spread + image noise + the group structure + feature noise.
    mean_sep = float(np.mean(params.gender_separation))
    latent_var = 1.0 + float(np.mean(np.square(params.image_noise))) + (
        (mean_sep / 2) ** 2 + params.ethnicity_separation ** 2 / 2) / m
    spread = math.sqrt(latent_var + params.feature_noise ** 2 * latent_var)
    bias = NormalDist().inv_cdf(params.active_fraction) * spread
    b = (bias + 0.25 * spread * rng.standard_normal(params.dim)).astype(np.float32)
    return w, b


def generate(params: SynthParams = SynthParams()) -> EmbeddingTable:
    """The synthetic embedding table of ``params``.

    Deterministic: the same parameters give the same bytes on the same machine type and library versions (BLAS
    kernels differ between CPU types, so another machine may differ in the last bits, and so in the table's
    fingerprint). Each ethnicity x gender group has its own random stream. Rows are ordered by ethnicity,
    gender, identity, image; identities are named ``asian_male_0000`` ..., images ``img000`` ...
    """
    check_params(params)
    p = params
    ks, kp = p.shared_dims, p.private_dims
    m = ks + kp
    a = p.gender_alignment
    w, bias = _geometry(p)
    noise_scale = np.float32(p.feature_noise * math.sqrt(float(np.mean(w.astype(np.float64) ** 2)) * m
                                                         * (1.0 + float(np.mean(np.square(p.image_noise))))))
    dist = diveface_images_per_identity()
    width = max(4, len(str(p.identities_per_group - 1)))

    group_counts = {}
    for ec, e in enumerate(ETHNICITIES):
        for gc, g in enumerate(GENDERS):
            rng = np.random.default_rng([p.seed, _STREAM, 0, ec, gc])
            if p.images_per_identity:
                counts = np.full(p.identities_per_group, p.images_per_identity, dtype=np.int64)
            else:
                k, prob = dist[e, g]
                counts = rng.choice(k, size=p.identities_per_group, p=prob)
            group_counts[e, g] = counts
    total = int(sum(c.sum() for c in group_counts.values()))
    img_width = max(3, len(str(max(int(c.max()) for c in group_counts.values()) - 1)))
    out = np.empty((total, p.dim), dtype=np.float32)
    identity = np.empty(total, dtype=object)
    image = np.empty(total, dtype=object)
    ethnicity = np.empty(total, dtype=np.int8)
    gender = np.empty(total, dtype=np.int8)

    pos = 0
    with threadpool_limits(limits=1, user_api="blas"):  # same bytes whatever the machine's core count
        for ec, e in enumerate(ETHNICITIES):
            rows_w = np.concatenate([w[:ks], w[ks + ec * kp: ks + (ec + 1) * kp]])  # (m, dim)
            for gc, g in enumerate(GENDERS):
                rng = np.random.default_rng([p.seed, _STREAM, 1, ec, gc])
                counts = group_counts[e, g]
                n_id, n = len(counts), int(counts.sum())
                sign = 1.0 if gc == 1 else -1.0
                centres = rng.standard_normal((n_id, m), dtype=np.float32)
                centres[:, 0] += np.float32(sign * p.gender_separation[ec] / 2 * math.sqrt(a)
                                            + p.gender_offset[ec])
                centres[:, ks] += np.float32(sign * p.gender_separation[ec] / 2 * math.sqrt(1 - a))
                centres[:, ks + 1] += np.float32(p.ethnicity_separation / math.sqrt(2))
                quality = np.exp(p.quality_spread * rng.standard_normal(n) - p.quality_spread ** 2 / 2)
                latent = rng.standard_normal((n, m), dtype=np.float32)
                latent *= (p.image_noise[ec] * quality).astype(np.float32)[:, None]
                latent += np.repeat(centres, counts, axis=0)
                block = out[pos:pos + n]
                np.matmul(latent, rows_w, out=block)
                block += bias
                if p.feature_noise:
                    noise = rng.standard_normal((n, p.dim), dtype=np.float32)
                    noise *= noise_scale
                    block += noise
                    del noise
                np.maximum(block, 0, out=block)
                norms = np.sqrt(np.einsum("ij,ij->i", block, block))
                dead = norms == 0  # every feature cut by the ReLU: only plausible for tiny dims
                block[dead] = np.float32(1.0)
                norms[dead] = np.float32(math.sqrt(p.dim))
                block /= norms[:, None]

                names = np.array([f"{e}_{g}_{i:0{width}d}" for i in range(n_id)], dtype=object)
                identity[pos:pos + n] = np.repeat(names, counts)
                image[pos:pos + n] = np.array([f"img{j:0{img_width}d}" for c in counts for j in range(c)],
                                              dtype=object)
                ethnicity[pos:pos + n] = ec
                gender[pos:pos + n] = gc
                pos += n
    table = EmbeddingTable(out, identity, image, ethnicity, gender, ETHNICITIES, _failures(p, ethnicity))
    validate_table(table, "synthetic data")
    return table


def _failures(params: SynthParams, ethnicity: np.ndarray) -> np.ndarray | None:
    """``face_detected`` per row: False with probability ``fta[e]`` (a random stream of its own, so the embeddings
    do not depend on it); None when every ``fta`` is 0."""
    if not any(params.fta):
        return None
    u = np.random.default_rng([params.seed, _STREAM, 2]).random(len(ethnicity))
    return u >= np.asarray(params.fta)[ethnicity]
