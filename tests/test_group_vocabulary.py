"""Group names travel with the data: a table's own ethnicity groups (four, five, seven, or other than the study's
three) name every output -- the embedding summary, the accuracy matrices, verification, t-SNE, all-pairs and
pair-protocol rows -- and nothing falls back to the study's names. Real photographs (scikit-image's), labels
from the file names, embedded with dlib."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from skimage import data

from grid.cli import main
from storage.results import load
from storage.table import read_table
from storage.vocab import GENDERS

from conftest import biasgrid

REPO = Path(__file__).resolve().parents[1]
LOCAL = ["--executor", "local", "--workers", "1"]
PATTERN = "{identity}_{ethnicity}_{gender}_{*}"
FOUR = ("white", "black", "asian", "indian")
SEVEN = ("white", "black", "latino hispanic", "east asian", "southeast asian", "indian", "middle eastern")
PHOTOS = (data.astronaut, data.coffee, data.chelsea, data.rocket)


def photo(k: int, shift: int = 0) -> np.ndarray:
    """A 100 x 100 view of one of scikit-image's photographs, chosen and placed by ``k`` (``shift``: a second
    image of the same view, a few pixels off)."""
    p = PHOTOS[k % len(PHOTOS)]()
    y, x = (7 * k) % (p.shape[0] - 200) + shift, (11 * k) % (p.shape[1] - 200)
    return np.asarray(Image.fromarray(np.ascontiguousarray(p[y:y + 200, x:x + 200])).resize((100, 100)))


def photographs(root: Path, groups: tuple[str, ...], identities: int = 3, images: int = 2) -> Path:
    """``identities`` people per group and gender, ``images`` photographs each, named
    ``<identity>_<ethnicity>_<gender>_<n>.png`` (labels from the file names)."""
    root.mkdir(parents=True, exist_ok=True)
    k = 0
    for group in groups:
        for gender in GENDERS:
            for _ in range(identities):
                for j in range(images):
                    Image.fromarray(photo(k, 3 * j)).save(root / f"p{k:03d}_{group}_{gender}_{j}.png")
                k += 1
    return root


def pairs_file(table_path: Path, path: Path) -> Path:
    """A pair protocol over the table: each identity's two images (genuine) and its first image against the next
    identity's (impostor), in two folds."""
    table = read_table(table_path)
    images: dict[str, list[str]] = {}
    for identity, image in zip(table.identity, table.image):
        images.setdefault(identity, []).append(image)
    ids = sorted(images)
    lines = ["image_a,image_b,same,fold"]
    for n, i in enumerate(ids):
        j = ids[(n + 1) % len(ids)]
        lines += [f"{i}/{images[i][0]},{i}/{images[i][1]},1,{n % 2}",
                  f"{i}/{images[i][0]},{j}/{images[j][0]},0,{n % 2}"]
    path.write_text("\n".join(lines) + "\n")
    return path


def cli(*args: str) -> subprocess.CompletedProcess:
    """The command as a user runs it: a process of its own (Ray reads its token once per process)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-m", "grid.cli", *args], capture_output=True, text=True, env=env,
                          timeout=600)


def face_line(text: str) -> str:
    return next(line for line in text.splitlines() if line.startswith("face detected: "))


def face_counts(text: str) -> dict[str, tuple[int, int]]:
    """The summary's "face detected: <group> <k> of <n>, ..." line as {group: (k, n)}."""
    line = face_line(text)[len("face detected: "):].split(" (the others")[0]
    return {m[0]: (int(m[1]), int(m[2])) for m in re.findall(r"(.+?) (\d+) of (\d+)(?:, |$)", line)}


def demographic(groups: tuple[str, ...]) -> set[str]:
    return {f"{e}_{g}" for e in groups for g in GENDERS}


@pytest.mark.parametrize("groups, executor", [(FOUR, "local"), (SEVEN, "ray")], ids=["four-local", "seven-ray"])
def test_embed_run_and_report_name_the_tables_own_groups(tmp_path, capsys, groups, executor):
    src = photographs(tmp_path / "photos", groups)
    table_path = tmp_path / "faces.parquet"
    assert main(["data", "embed", str(src), "--name-pattern", PATTERN, "--out", str(table_path), "--model", "dlib",
                 "--quiet", *LOCAL]) == 0, capsys.readouterr().err
    text = capsys.readouterr().out
    table = read_table(table_path)
    assert sorted(table.ethnicities) == sorted(groups)
    faces = face_counts(text)
    assert set(faces) == demographic(groups) and {n for _, n in faces.values()} == {6}   # 3 people x 2 photos
    summary = text.splitlines()[0]
    assert all(f"{group} 3" in summary for group in demographic(groups))                 # 3 identities each

    config = tmp_path / "grid.toml"
    config.write_text('[grid]\nseeds = 1\nmodels = ["logreg"]\n[protocol]\ntrain_per_gender = 1\n'
                      'test_per_gender = 2\n[verification]\nidentities = "all"\nallpairs_shards = 2\nbootstrap = 0\n'
                      f'pairs = "{pairs_file(table_path, tmp_path / "pairs.csv")}"\n'
                      '[tsne]\nperplexity = 2.0\npca_dims = 4\n[run]\nreport = false\n')
    out = tmp_path / "results"
    command = biasgrid if executor == "local" else cli   # Ray in a process of its own (conftest.biasgrid)
    run = command("run", "--config", str(config), "--data", str(table_path), "--out", str(out), "--executor",
                  executor, "--workers", "2", "--quiet")
    assert run.returncode == 0, run.stderr[-3000:]
    report = biasgrid("report", str(out))   # Python's warnings shown in its stderr, as in a process of its own
    assert report.returncode == 0, report.stderr[-3000:]
    assert "Warning" not in report.stderr

    k = len(groups)
    acc = pd.read_csv(out / "report" / "accuracy.csv")
    cells = acc[acc["train_group"] != "all"]
    assert set(cells["train_group"]) == set(cells["test_group"]) == set(groups)
    assert len(cells) == k * k and len(acc[acc["train_group"] == "all"]) == k   # k x k matrix, plus 'all'
    md = (out / "report" / "report.md").read_text()
    assert all(f"| {g} " in md for g in groups)
    tables = load(out)
    assert set(tables["verification"]["test_group"]) == set(groups)
    assert set(tables["demographic_rates"]["group"]) <= demographic(groups) | {"all"}
    assert set(tables["tsne"]["ethnicity"]) == set(groups)
    counts = tables["allpairs_counts"]
    assert set(counts["group_a"]) | set(counts["group_b"]) == demographic(groups)
    assert set(tables["pair_groups"]["group"]) == set(groups)
    impostor = pd.read_csv(out / "report" / "impostor_fmr.csv")     # the 2k x 2k cross-group FMR matrix
    assert set(impostor["group_a"]) == set(impostor.columns[1:]) == demographic(groups)


def test_value_maps_with_five_groups_and_non_study_names(tmp_path, capsys):
    """The README's UTKFace example (five groups from codes in the file names) ends with exit 0 and names all
    five; two non-study names, or LFW's single group, are printed as they are, never as the study's."""
    utk = tmp_path / "utk"
    utk.mkdir()
    for k in range(10):
        Image.fromarray(photo(k)).save(utk / f"{20 + k}_{k % 2}_{k % 5}_2017010402310{k}.jpg")
    out = tmp_path / "utk.parquet"
    assert main(["data", "embed", str(utk), "--name-pattern", "{age}_{gender}_{ethnicity}_{*}", "--out", str(out),
                 "--model", "dlib", "--values", "gender=0:male,1:female",
                 "--values", "ethnicity=0:white,1:black,2:asian,3:indian,4:other", "--quiet", *LOCAL]) == 0
    faces = face_counts(capsys.readouterr().out)
    assert set(faces) == demographic(("white", "black", "asian", "indian", "other"))
    assert {n for _, n in faces.values()} == {1}

    rfw = tmp_path / "rfw.csv"
    for i in range(4):
        Image.fromarray(photo(i)).save(tmp_path / f"{i}.png")
    rfw.write_text("path,identity,ethnicity,gender\n0.png,a,African,female\n1.png,a,African,female\n"
                   "2.png,b,Indian,male\n3.png,c,Indian,female\n")
    assert main(["data", "embed", str(rfw), "--out", str(tmp_path / "rfw.parquet"), "--model", "dlib", "--quiet",
                 *LOCAL]) == 0
    text = capsys.readouterr().out
    assert "(african_female 1, indian_male 1, indian_female 1)" in text
    assert {g: n for g, (_, n) in face_counts(text).items()} == {"african_female": 2, "indian_male": 1,
                                                                 "indian_female": 1}
    assert "asian" not in text

    lfw = tmp_path / "lfw.csv"
    lfw.write_text("path,identity,ethnicity,gender\n0.png,a,white,male\n1.png,b,white,male\n")
    assert main(["data", "embed", str(lfw), "--out", str(tmp_path / "lfw.parquet"), "--model", "dlib", "--quiet",
                 *LOCAL]) == 0
    text = capsys.readouterr().out
    assert "(white_male 2)" in text and {g: n for g, (_, n) in face_counts(text).items()} == {"white_male": 2}
    assert "asian" not in text
