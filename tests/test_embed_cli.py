"""``biasgrid data embed`` end to end, with real models: dlib on scikit-image's photographs and a small Keras
model built here. Each label source through the command; kill -9 midway then the same command resumes to the
table of an uninterrupted run; undecodable images (exit 1, listed; --strict exit 2); bad input (exit 2, nothing
written); the embedded table through ``biasgrid run --data``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from skimage import data

from conftest import kill_midway
from grid.cli import main
from storage.table import read_table

# Under xdist this module's tests run on one worker: its module fixture (keras_models) is built once.
pytestmark = pytest.mark.xdist_group("embed_cli")

LOCAL = ["--executor", "local", "--workers", "1"]


def save(path: Path, pixels: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(pixels)).save(path)
    return path


def astronaut(k: int) -> np.ndarray:
    """A 360 x 360 crop of the astronaut photograph, shifted by k pixels: the same face, other bytes."""
    return data.astronaut()[k:k + 360, k + 20:k + 380]


def diveface(root: Path, identities: int = 2, images: int = 2) -> Path:
    """DiveFace layout: asian men (faces) and one asian woman whose 'photos' have no face (coffee)."""
    for i in range(identities):
        for j in range(images):
            save(root / "HA4K_120" / f"id{i}" / f"img{j}.png", astronaut(3 * (i * images + j)))
    save(root / "MA4K_120" / "cup" / "coffee.jpg", data.coffee())
    return root


def written(folder: Path) -> list[str]:
    """Every file and folder under ``folder`` (to show that nothing was written)."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_diveface_folder_on_ray(tmp_path, capsys):
    root = diveface(tmp_path / "DiveFace" / "4K_120")
    out = tmp_path / "t.parquet"
    # as a user runs it: a process of its own (Ray reads its token once per process, when it is imported)
    done = subprocess.run([sys.executable, "-m", "grid.cli", "data", "embed", str(tmp_path / "DiveFace"), "--out",
                           str(out), "--model", "dlib", "--executor", "ray", "--workers", "2", "--shard-size", "2",
                           "--quiet"], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert done.returncode == 0, done.stderr
    table = read_table(out)
    assert len(table) == 5 and table.dim == 128
    assert sorted(zip(table.identity, table.image)) == [("cup", "coffee"), ("id0", "img0"), ("id0", "img1"),
                                                        ("id1", "img0"), ("id1", "img1")]
    face = dict(zip(table.image + "/" + table.identity, table.face_detected))
    assert face == {"img0/id0": True, "img1/id0": True, "img0/id1": True, "img1/id1": True, "coffee/cup": False}
    assert np.allclose(np.linalg.norm(table.embeddings, axis=1), 1, atol=1e-6)
    assert not (tmp_path / "t.parquet.shards").exists() and not (tmp_path / "t.parquet.errors.csv").exists()
    text = done.stdout
    assert "5 rows, dim 128, 3 identities (asian_male 2, asian_female 1)" in text
    assert "face detected: asian_male 4 of 4, asian_female 0 of 1" in text
    # --skip-undetected leaves the coffee out, --no-normalise keeps raw features (same directions)
    raw = tmp_path / "raw.parquet"
    assert main(["data", "embed", str(root), "--out", str(raw), "--model", "dlib", "--skip-undetected",
                 "--no-normalise", *LOCAL]) == 0
    kept = read_table(raw)
    assert len(kept) == 4 and kept.face_detected.all()
    assert "1 images without a detected face left out" in capsys.readouterr().out
    unit = kept.embeddings / np.linalg.norm(kept.embeddings, axis=1, keepdims=True)
    assert np.allclose(unit, table.embeddings[table.face_detected], atol=1e-5)


def test_manifest_with_mapped_columns_and_value_maps(tmp_path, capsys):
    images = tmp_path / "images"
    rows = []
    for i, (race, sex) in enumerate([("C", 1), ("C", 1), ("B", 0), ("B", 0)]):
        save(images / "faces" / f"f{i}.png", astronaut(4 * i))
        rows.append({"file": f"faces/f{i}.png", "person": f"p{i // 2}", "race": race, "sex": sex})
    manifest = tmp_path / "labels.csv"
    pd.DataFrame(rows).to_csv(manifest, index=False)
    out = tmp_path / "m.parquet"
    code = main(["data", "embed", str(images), "--manifest", str(manifest), "--out", str(out), "--model", "dlib",
                 "--map", "path=file,identity=person", "--map", "ethnicity=race", "--map", "gender=sex",
                 "--values", "gender=0:male,1:female", "--values", "ethnicity=C:caucasian,B:black", *LOCAL])
    assert code == 0, capsys.readouterr().err
    table = read_table(out)
    frame = pd.DataFrame({"identity": table.identity, "image": table.image, "eth": table.ethnicity,
                          "gender": table.gender})
    assert frame.values.tolist() == [["p0", "f0", 1, 1], ["p0", "f1", 1, 1], ["p1", "f2", 2, 0], ["p1", "f3", 2, 0]]
    assert "caucasian_female 1" in capsys.readouterr().out


def test_file_name_pattern_without_identities(tmp_path, capsys):
    folder = tmp_path / "utk"
    for k, name in enumerate(["26_0_2_20170104023102422", "31_1_0_20170104023102423", "8_1_2_20170104023"]):
        save(folder / f"{name}.jpg.chip.jpg", astronaut(5 * k))
    out = tmp_path / "utk.parquet"
    code = main(["data", "embed", str(folder), "--name-pattern", "{age}_{gender}_{ethnicity}_{*}", "--out",
                 str(out), "--model", "dlib", "--values", "gender=0:male,1:female",
                 "--values", "ethnicity=0:caucasian,1:black,2:asian", *LOCAL])
    assert code == 0, capsys.readouterr().err
    table = read_table(out)
    assert sorted(table.identity) == ["26_0_2_20170104023102422.jpg.chip", "31_1_0_20170104023102423.jpg.chip",
                                      "8_1_2_20170104023.jpg.chip"]
    assert sorted(zip(table.ethnicity.tolist(), table.gender.tolist())) == [(0, 0), (0, 1), (1, 1)]
    assert "each image is its own identity" in capsys.readouterr().out


def test_any_group_names_are_embedded_into_the_table(tmp_path, capsys):
    """Free group names (RFW's, FairFace's) go into the table as they are (normalised); a name that cannot be a
    group ('all', a '+' union) is refused before embedding anything."""
    save(tmp_path / "a.png", astronaut(0))
    save(tmp_path / "b.png", astronaut(1))
    manifest = tmp_path / "rfw.csv"
    manifest.write_text("path,identity,ethnicity,gender\na.png,m.01,Indian,male\nb.png,m.02,African,female\n")
    out = tmp_path / "rfw.parquet"
    assert main(["data", "embed", str(manifest), "--out", str(out), "--model", "dlib", *LOCAL]) == 0
    table = read_table(out)
    assert table.ethnicities == ("african", "indian")
    assert sorted(table.present_ethnicities()) == ["african", "indian"]
    bad = tmp_path / "bad.csv"
    bad.write_text("path,identity,ethnicity,gender\na.png,m.01,all,male\n")
    assert main(["data", "embed", str(bad), "--out", str(tmp_path / "x.parquet"), "--model", "dlib", *LOCAL]) == 2
    assert "'all' cannot name an ethnicity group" in capsys.readouterr().err
    assert not (tmp_path / "x.parquet").exists()


def test_undecodable_images_are_listed_and_strict_refuses(tmp_path, capsys):
    root = diveface(tmp_path / "df", identities=1)
    bad = root / "HA4K_120" / "id0" / "truncated.jpg"
    bad.write_bytes((root / "MA4K_120" / "cup" / "coffee.jpg").read_bytes()[:400])
    strict = tmp_path / "strict.parquet"
    assert main(["data", "embed", str(root), "--out", str(strict), "--model", "dlib", "--strict", *LOCAL]) == 2
    err = capsys.readouterr().err
    assert f"{bad}: cannot decode the image" in err and "--strict" in err
    assert not strict.exists() and not (tmp_path / "strict.parquet.errors.csv").exists()
    out = tmp_path / "t.parquet"
    assert main(["data", "embed", str(root), "--out", str(out), "--model", "dlib", *LOCAL]) == 1
    assert len(read_table(out)) == 3   # every image that could be read
    listed = pd.read_csv(tmp_path / "t.parquet.errors.csv")
    assert listed["path"].tolist() == [str(bad)] and "Truncated" in listed["reason"][0]
    assert "1 images could not be read" in capsys.readouterr().out
    assert not (tmp_path / "t.parquet.shards").exists()


def test_a_dangling_symlink_among_the_images_is_listed_with_its_reason(tmp_path, capsys):
    """Issue 21 item 7: a dangling symbolic link was left out silently; now it is listed in errors.csv (exit 1,
    like any unreadable image), named by the link, with the missing target as the reason."""
    root = diveface(tmp_path / "df", identities=1)
    link = root / "HA4K_120" / "id0" / "gone.jpg"
    link.symlink_to(tmp_path / "deleted.jpg")
    out = tmp_path / "t.parquet"
    assert main(["data", "embed", str(root), "--out", str(out), "--model", "dlib", *LOCAL]) == 1
    assert len(read_table(out)) == 3
    listed = pd.read_csv(tmp_path / "t.parquet.errors.csv")
    assert listed["path"].tolist() == [str(link)]
    assert listed["reason"][0] == f"a symbolic link to a missing file ({tmp_path / 'deleted.jpg'})"
    assert "1 images could not be read" in capsys.readouterr().out


@pytest.fixture(scope="module")
def keras_models(tmp_path_factory) -> dict[str, Path]:
    keras = pytest.importorskip("keras")
    root = tmp_path_factory.mktemp("models")
    keras.utils.set_random_seed(0)
    inp = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(8, 3, activation="relu", name="conv")(inp)
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    keras.Model(inp, keras.layers.Dense(4, name="head")(x)).save(root / "cnn.keras")
    (root / "broken.keras").write_bytes(b"not a keras archive")
    return {"cnn": root / "cnn.keras", "broken": root / "broken.keras"}


def bad_inputs(tmp: Path, models: dict[str, Path]) -> dict[str, tuple[list[str], str]]:
    """Each bad input: (arguments after 'data embed', what the message names)."""
    root = diveface(tmp / "df", identities=1, images=1)
    save(tmp / "p" / "26_0_2_x.jpg", astronaut(0))
    save(tmp / "p" / "holiday.jpg", astronaut(1))
    (tmp / "unknown.csv").write_text(f"path,identity,ethnicity,gender\n{root}/HA4K_120/id0/img0.png,a,asian,robot\n")
    (tmp / "gone.csv").write_text("path,identity,ethnicity,gender\nnowhere.png,a,asian,male\n")
    (tmp / "twice.csv").write_text(f"path,identity,ethnicity,gender,path\n{root}/HA4K_120/id0/img0.png,a,asian,male,"
                                   f"{root}/MA4K_120/cup/coffee.jpg\n")
    return {
        "missing source": ([str(tmp / "nothing"), "--model", "dlib"], "nothing: no such file or folder"),
        "model file that does not load": ([str(root), "--model", f"keras:{models['broken']}", "--preprocess",
                                           "unit"], "broken.keras"),
        "layer the model lacks": ([str(root), "--model", f"keras:{models['cnn']}", "--preprocess", "unit",
                                   "--layer", "avg_pool2"], "avg_pool2"),
        "unknown label": ([str(tmp / "unknown.csv"), "--model", "dlib"], "unknown.csv line 2, column 'gender'"),
        "missing file": ([str(tmp / "gone.csv"), "--model", "dlib"], "gone.csv line 2: path 'nowhere.png'"),
        "name not matching": ([str(tmp / "p"), "--model", "dlib", "--name-pattern", "{age}_{gender}_{ethnicity}_{*}"],
                              "holiday.jpg: name 'holiday' does not match"),
        "unknown option": ([str(root), "--model", "dlib", "--option", "upsampel=2"], "takes no option 'upsampel'"),
        "negative batch size": ([str(root), "--model", "dlib", "--batch-size", "-1"],
                                "option --batch-size -1: expected a positive integer"),
        "manifest with two path columns": ([str(tmp / "twice.csv"), "--model", "dlib"],
                                           "twice.csv: column 'path' appears twice (columns 1 and 5)"),
    }


def test_bad_input_exits_2_before_any_work_and_writes_nothing(tmp_path, keras_models, capsys):
    cases = bad_inputs(tmp_path / "in", keras_models)
    for name, (argv, named) in cases.items():
        out = tmp_path / "out" / f"{name.replace(' ', '_')}.parquet"
        out.parent.mkdir(exist_ok=True)
        assert main(["data", "embed", *argv, "--out", str(out), *LOCAL]) == 2, name
        assert named in capsys.readouterr().err, name
    assert written(tmp_path / "out") == []


def embed_args(src: Path, out: Path) -> list[str]:
    return ["data", "embed", str(src), "--out", str(out), "--model", "dlib", "--shard-size", "1",
            "--executor", "local", "--workers", "1"]


def test_kill_9_midway_then_the_same_command_embeds_only_what_is_missing(tmp_path, capsys):
    root = tmp_path / "df"
    n = 36
    for k in range(n):
        save(root / ("HA4K_120" if k // 4 % 2 else "MB4K_120") / f"id{k // 4}" / f"img{k}.png", astronaut(k))
    out = tmp_path / "t.parquet"
    shards = tmp_path / "t.parquet.shards"
    kill_midway(embed_args(root, out), lambda: shards.exists() and len(list(shards.glob("*.parquet"))) >= 3)
    assert not out.exists()
    stored = len(list(shards.glob("*.parquet")))
    assert 3 <= stored < n
    for file in shards.glob("*.parquet"):   # only whole files are visible
        pd.read_parquet(file)
    assert main(embed_args(root, out)) == 0
    assert f"{n} images in {n} shards, {stored} already embedded, {n - stored} to run" in capsys.readouterr().err
    whole = tmp_path / "whole.parquet"
    assert main(embed_args(root, whole)) == 0
    a, b = read_table(out), read_table(whole)
    assert np.array_equal(a.embeddings, b.embeddings) and np.array_equal(a.face_detected, b.face_detected)
    for field in ("identity", "image", "ethnicity", "gender"):
        assert np.array_equal(getattr(a, field), getattr(b, field)), field
    assert not shards.exists()


def test_a_changed_model_configuration_never_reuses_shards(tmp_path, capsys):
    root = diveface(tmp_path / "df", identities=1)
    (root / "HA4K_120" / "id0" / "truncated.jpg").write_bytes(b"\xff\xd8\xff not a whole jpeg")
    out = tmp_path / "t.parquet"
    base = ["data", "embed", str(root), "--out", str(out), "--model", "dlib", "--shard-size", "1", *LOCAL]
    # --strict refuses after embedding: the shards stay for the next run
    assert main([*base, "--strict"]) == 2
    assert len(list((tmp_path / "t.parquet.shards").glob("*.parquet"))) == 4
    assert main([*base, "--strict", "--option", "upsample=0"]) == 2
    assert "4 images in 4 shards, 0 already embedded, 4 to run" in capsys.readouterr().err
    assert main(base) == 1
    assert "4 images in 4 shards, 4 already embedded, 0 to run" in capsys.readouterr().err
    assert len(read_table(out)) == 3 and not (tmp_path / "t.parquet.shards").exists()


def test_keras_table_runs_through_biasgrid_run(tmp_path, keras_models, capsys):
    root = tmp_path / "df"
    rng = np.random.default_rng(0)
    for group in ("HA4K_120", "MA4K_120"):
        for i in range(3):
            for j in range(2):
                save(root / group / f"{group}_{i}" / f"img{j}.png", rng.integers(0, 256, (40, 36, 3), dtype=np.uint8))
    table_path = tmp_path / "faces.parquet"
    assert main(["data", "embed", str(root), "--out", str(table_path), "--model", f"keras:{keras_models['cnn']}",
                 "--layer", "avg_pool", "--preprocess", "imagenet", "--input-size", "32", "--shard-size", "4",
                 *LOCAL]) == 0, capsys.readouterr().err
    table = read_table(table_path)
    assert len(table) == 12 and table.dim == 8 and table.face_detected.all()
    config = tmp_path / "tiny.toml"
    config.write_text('[grid]\nseeds = 1\nmodels = ["logreg"]\ntrain_groups = ["asian"]\ntest_groups = ["asian"]\n'
                      '[protocol]\ntrain_per_gender = 2\ntest_per_gender = 1\n[tsne]\nenabled = false\n'
                      '[run]\nreport = false\n')
    code = main(["run", "--config", str(config), "--data", str(table_path), "--out", str(tmp_path / "results"),
                 "--executor", "local", "--workers", "1"])
    assert code == 0, capsys.readouterr().err
    assert "0 failed" in capsys.readouterr().out


def test_an_all_zero_embedding_is_listed_and_the_rest_stored(tmp_path, capsys):
    """An image the model maps to the zero vector cannot be compared (no direction): it goes to errors.csv with
    its reason (exit 1) and the table holds the other images, instead of the whole table being refused."""
    keras = pytest.importorskip("keras")
    inp = keras.Input((8, 8, 3))
    pooled = keras.layers.GlobalAveragePooling2D(name="avg_pool")(inp)
    head = keras.layers.Dense(2, activation="relu", name="head")
    model = keras.Model(inp, head(pooled))
    head.set_weights([np.ones((3, 2), np.float32), np.full(2, -1.5, np.float32)])   # relu(3 * mean - 1.5)
    model.save(tmp_path / "relu.keras")
    root = tmp_path / "df"
    for k, level in enumerate((255, 0, 230, 10)):   # bright images: a positive embedding; dark ones: all zeros
        save(root / "HA4K_120" / f"id{k}" / "img0.png", np.full((8, 8, 3), level, np.uint8))
    out = tmp_path / "t.parquet"
    code = main(["data", "embed", str(root), "--out", str(out), "--model", f"keras:{tmp_path / 'relu.keras'}",
                 "--layer", "head", "--preprocess", "unit", "--input-size", "8", *LOCAL])
    assert code == 1, capsys.readouterr().err
    table = read_table(out)
    assert sorted(table.identity) == ["id0", "id2"] and (np.linalg.norm(table.embeddings, axis=1) > 0).all()
    listed = pd.read_csv(tmp_path / "t.parquet.errors.csv")
    assert [Path(p).parent.name for p in listed["path"]] == ["id1", "id3"]
    assert set(listed["reason"]) == {"the model gave an all-zero embedding (it has no direction to compare)"}
