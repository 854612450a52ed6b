"""Attributes beyond ethnicity and gender (issue 18, items 1-2): they survive every importer and the image listers,
one value per identity is enforced, numeric ones are binned, and the chosen axes (target, group axis, demographic
groups) give what a direct computation gives: a scikit-learn loop for the matrices, a brute-force count for an
age-group x gender verification breakdown."""

from __future__ import annotations

import dataclasses
import itertools
import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.linear_model import LogisticRegression

from conftest import accepted
from grid.config import resolve_config
from grid.runner import run_grid
from grid.splits import Protocol, make_split
from storage.attributes import attribute_labels, bin_labels, group_labels
from storage.errors import InputError
from storage.images import list_images, parse_value_maps
from storage.importers import import_embeddings
from storage.results import load
from storage.synth import generate, synth_params_from_dict
from storage.table import EmbeddingTable, read_table, validate_table, write_table
from tasks.stats import rates

SKIN = ("i-ii", "iii-iv", "v-vi")


def labelled(n_ids: int = 10, per_id: int = 3, d: int = 6, seed: int = 0) -> EmbeddingTable:
    """A table with a categorical attribute per identity (skin tone) and a numeric one per image (age)."""
    rng = np.random.default_rng(seed)
    ids = np.repeat(np.arange(n_ids), per_id)
    return EmbeddingTable(rng.normal(size=(n_ids * per_id, d)).astype(np.float32),
                          np.array([f"p{i}" for i in ids], dtype=object),
                          np.array([f"img{k % per_id}" for k in range(len(ids))], dtype=object),
                          (ids % 3).astype(np.int8), (ids % 2).astype(np.int8), ("asian", "caucasian", "black"),
                          attributes={"skin_tone": np.array([SKIN[i % 3] for i in ids], dtype=object),
                                      "age": np.round(rng.uniform(18, 80, len(ids)))})


def same_attributes(a: EmbeddingTable, b: EmbeddingTable) -> None:
    order = lambda t: np.lexsort((t.image.astype(str), t.identity.astype(str)))   # noqa: E731
    ia, ib = order(a), order(b)
    assert sorted(a.attributes) == sorted(b.attributes)
    for name, values in a.attributes.items():
        assert values.dtype == b.attributes[name].dtype
        assert values[ia].tolist() == b.attributes[name][ib].tolist()


def test_attributes_survive_parquet_csv_uam_and_prefix_group(tmp_path):
    table = labelled()
    write_table(table, tmp_path / "t.parquet")
    back = read_table(tmp_path / "t.parquet")
    same_attributes(table, back)
    assert back.fingerprint() == table.fingerprint() != dataclasses.replace(table, attributes={}).fingerprint()
    # CSV table format: the attribute columns beside e0..e5 (numbers read as numeric)
    frame = pd.DataFrame({"identity": table.identity, "image": table.image, "ethnicity": "asian",
                          "gender": np.where(table.gender == 0, "male", "female"),
                          "skin_tone": table.attributes["skin_tone"], "age": table.attributes["age"],
                          **{f"e{k}": table.embeddings[:, k] for k in range(table.dim)}})
    frame.to_csv(tmp_path / "t.csv", index=False)
    same_attributes(table, import_embeddings(tmp_path / "t.csv"))
    # UAM CSV pair: an extra column of the attributes CSV (UAM's codes for gender and ethnicity)
    uam = tmp_path / "uam"
    uam.mkdir()
    pd.DataFrame(table.embeddings).to_csv(uam / "emb.csv")
    pd.DataFrame({"id": table.identity, "gender": table.gender, "ethnicity": 1, "Skin Tone": [s.upper() for s in
                  table.attributes["skin_tone"]], "age": table.attributes["age"]}).to_csv(uam / "attr.csv", index=False)
    got = import_embeddings(uam, prefix_group=True)
    assert got.attributes["Skin Tone"].tolist() == table.attributes["skin_tone"].tolist()   # normalised values
    assert got.attributes["age"].tolist() == table.attributes["age"].tolist()
    assert got.identity[0].endswith("/p0")
    # no ethnicity column at all (LFW): read back without one
    write_table(dataclasses.replace(table, ethnicity=None, ethnicities=()), tmp_path / "lfw.parquet")
    lfw = read_table(tmp_path / "lfw.parquet")
    assert lfw.ethnicity is None and lfw.present_ethnicities() == [] and "age" in lfw.attributes


def test_one_value_per_identity_and_bins():
    table = labelled()
    skin = table.attributes["skin_tone"].copy()
    skin[1] = "v-vi"                                   # p0's second image: another skin tone
    with pytest.raises(InputError, match=r"attribute 'skin_tone': identity 'p0' has images in groups i-ii, v-vi"):
        validate_table(dataclasses.replace(table, attributes={"skin_tone": skin}), "t")
    validate_table(table, "t")                         # age varies within identities: numeric attributes may
    with pytest.raises(InputError, match=r"'age' is numeric .*bins.age"):
        attribute_labels(table, "age")
    edges = [0, 20, 30, 40, 50, 65, 200]
    assert bin_labels(edges) == ("0-19", "20-29", "30-39", "40-49", "50-64", "65-199")
    age = attribute_labels(table, "age", {"age": edges})
    expected = [next(k for k in range(6) if edges[k] <= a < edges[k + 1]) for a in table.attributes["age"]]
    assert age.codes.tolist() == expected
    with pytest.raises(InputError, match=r"'age' of identity 'p\d+' .* is \d+, outside the bins"):
        attribute_labels(table, "age", {"age": [30, 40]})
    both = group_labels(table, ["skin_tone", "gender"])
    assert both.names[:2] == ("i-ii_male", "i-ii_female") and len(both.names) == 6
    assert both.per_row()[3] == f"{SKIN[1]}_female"
    with pytest.raises(InputError, match=r"\[verification\] groups: identity 'p\d+' has images in groups"):
        group_labels(table, ["age"], {"age": edges}, per_identity="[verification] groups")
    with pytest.raises(InputError, match="no attribute 'hair'; their attributes: ethnicity, gender, age, skin_tone"):
        group_labels(table, ["hair"])


def write_image(path, k: int = 0):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8, 3), 20 * k, np.uint8)).save(path)


def test_fairface_manifest_and_utkface_names_keep_their_attributes(tmp_path):
    """FairFace's CSV (file, age as bins, gender, race, service_test) and UTKFace's names age_gender_race_date."""
    for k in range(3):
        write_image(tmp_path / "train" / f"{k + 1}.jpg", k)
    pd.DataFrame({"file": [f"train/{k + 1}.jpg" for k in range(3)], "age": ["50-59", "30-39", "more than 70"],
                  "gender": ["Male", "Female", "Female"], "race": ["East Asian", "Indian", "Latino_Hispanic"],
                  "service_test": [True, False, True]}).to_csv(tmp_path / "fairface_label_train.csv", index=False)
    images = list_images(tmp_path / "fairface_label_train.csv")
    assert images.ethnicity.tolist() == ["east asian", "indian", "latino_hispanic"]
    assert images.attributes["age"].tolist() == ["50-59", "30-39", "more than 70"]
    assert images.attributes["service_test"].tolist() == ["true", "false", "true"]
    utk = tmp_path / "utk"
    for k, name in enumerate(["26_0_2_20170104023102422.jpg.chip.jpg", "61_1_0_20170109150557335.jpg.chip.jpg"]):
        write_image(utk / name, k)
    images = list_images(utk, pattern="{age}_{gender}_{ethnicity}_{*}",
                         values=parse_value_maps(["gender=0:male,1:female", "ethnicity=0:white,1:black,2:asian"]))
    assert images.attributes["age"].tolist() == [26.0, 61.0] and images.ethnicity.tolist() == ["asian", "white"]
    # a categorical attribute that differs within an identity is refused before any image is read
    pd.DataFrame({"path": ["train/1.jpg", "train/2.jpg"], "identity": ["x", "x"], "gender": ["m", "m"],
                  "skin": ["light", "dark"]}).to_csv(tmp_path / "m.csv", index=False)
    with pytest.raises(InputError, match=r"m.csv: attribute 'skin': identity 'x' has images in groups"):
        list_images(tmp_path / "m.csv")


def glasses_table() -> EmbeddingTable:
    """Synthetic identities with a binary attribute per identity ('glasses') that the embeddings carry."""
    t = generate(synth_params_from_dict({"identities_per_group": 24, "dim": 16, "images_per_identity": 2}, "t"))
    codes = t.identity_codes()
    wears = (codes * 7919 % 13) % 2                     # per identity, about half
    X = t.embeddings.copy()
    X[:, 0] += 1.5 * wears                              # something a linear model can learn
    return dataclasses.replace(t, embeddings=X,
                               attributes={"glasses": np.where(wears == 1, "yes", "no").astype(object)})


@pytest.mark.parametrize("axes", [{}, {"grid.target": "glasses", "grid.group": "gender"}])
def test_matrices_equal_a_direct_scikit_learn_loop(tmp_path, axes):
    """Default axes (ethnicity groups, gender target: the labels read straight from the table, as before the axes
    existed) and gender as the group axis with another binary attribute as the target."""
    table = glasses_table()
    write_table(table, tmp_path / "g.parquet")
    options = {"data.path": str(tmp_path / "g.parquet"), "grid.models": ["logreg"], "grid.seeds": "2",
               "protocol.train_per_gender": 5, "protocol.test_per_gender": 4, "verification.enabled": False,
               "tsne.enabled": False, "run.executor": "local", "run.workers": 2, "run.out": str(tmp_path / "r"),
               "run.report": False}
    assert run_grid(resolve_config(None, {**options, **axes}), progress=False).exit_code == 0
    if axes:   # the folder fixes its axes
        with pytest.raises(InputError, match=r"axes.group: stored 'gender', new 'ethnicity'; axes.target: stored "
                                             r"'glasses', new 'gender'"):
            run_grid(resolve_config(None, options), progress=False)
    got = load(tmp_path / "r")["accuracy"].set_index(["train_group", "test_group", "seed"])["accuracy"]
    if axes:
        names = np.array(["male", "female"])[table.gender]                     # group axis: gender
        y_all = (table.attributes["glasses"] == "yes").astype(int)            # target: no = 0, yes = 1
        group, target = attribute_labels(table, "gender"), attribute_labels(table, "glasses")
    else:
        names = np.array(table.ethnicities)[table.ethnicity]
        y_all, group, target = table.gender.astype(int), None, None
    groups = sorted(set(names))
    n = 0
    for seed in (0, 1):
        split = make_split(table, seed, Protocol(5, 4), group=group, target=target)
        for train in [*groups, "all"]:
            rows = np.concatenate([split.train[g] for g in groups]) if train == "all" else split.train[train]
            assert set(names[rows]) == (set(groups) if train == "all" else {train})
            model = LogisticRegression(C=1.0, max_iter=1000, tol=1e-4, random_state=seed).fit(table.embeddings[
                np.sort(rows)], y_all[np.sort(rows)])
            for test in groups:
                te = split.test[test]
                assert got[train, test, seed] == np.mean(model.predict(table.embeddings[te]) == y_all[te])
                n += 1
    assert n == len(got)


def test_age_group_by_gender_breakdown_equals_a_brute_force_count(tmp_path):
    t = generate(synth_params_from_dict({"identities_per_group": 12, "dim": 16, "images_per_identity": 3}, "t"))
    age = (20 + t.identity_codes() * 37 % 50).astype(np.float64)          # one age per identity, 20..69
    table = dataclasses.replace(t, attributes={"age": age})
    write_table(table, tmp_path / "a.parquet")
    edges = [0, 30, 50, 200]
    cfg = resolve_config(None, {"data.path": str(tmp_path / "a.parquet"), "grid.models": [], "grid.seeds": "1",
                                "protocol.train_per_gender": 0, "protocol.test_per_gender": 8,
                                "verification.groups": ["age", "gender"], "attributes.bins": {"age": edges},
                                "verification.bootstrap": 0, "verification.target_fmr": 0.05,
                                "run.executor": "local", "run.workers": 2, "run.out": str(tmp_path / "r"),
                                "run.report": False})
    assert run_grid(cfg, progress=False).exit_code == 0
    res = load(tmp_path / "r")
    split = make_split(table, 0, Protocol(0, 8))
    rows = np.sort(np.concatenate(list(split.verification.values())))
    label = {r: f"{bin_labels(edges)[np.searchsorted(edges, age[r], side='right') - 1]}_"
                f"{('male', 'female')[table.gender[r]]}" for r in rows}
    X = table.embeddings[rows] / np.linalg.norm(table.embeddings[rows], axis=1, keepdims=True)
    gen, imp = [], []
    for i, j in itertools.combinations(range(len(rows)), 2):
        s = float(np.dot(X[i].astype(np.float64), X[j].astype(np.float64)))
        a, b = rows[i], rows[j]
        (gen if table.identity[a] == table.identity[b] else imp).append((s, label[a], label[b]))
    threshold = res["demographic_rates"]["threshold"].iloc[0]
    assert threshold == pytest.approx(rates.threshold_at_fmr(np.array([s for s, _, _ in imp]), 0.05), abs=1e-6)
    matrix = res["impostor_matrix"].set_index(["group_a", "group_b"])
    names = sorted(set(label.values()))
    assert set(matrix.index) == set(itertools.product(names, names))
    for ga, gb in itertools.product(names, names):
        pairs = [s for s, a, b in imp if {a, b} == {ga, gb}]
        assert matrix.loc[(ga, gb), "n_pairs"] == len(pairs)
        assert matrix.loc[(ga, gb), "false_matches"] in accepted(np.array(pairs), threshold)
    per_group = res["demographic_rates"].set_index("group")
    for g in names:
        genuine = [s for s, a, _ in gen if a == g]
        assert per_group.loc[g, "n_genuine"] == len(genuine)
        assert len(genuine) - per_group.loc[g, "false_non_matches"] in accepted(np.array(genuine), threshold)
    run = json.loads((tmp_path / "r" / "run.json").read_text())      # the report's group order
    assert run["axes"]["demographic"]["names"][:3] == ["0-29_male", "0-29_female", "30-49_male"]
