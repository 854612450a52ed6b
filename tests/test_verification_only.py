"""A verification-only study (issue 18, item 3) on real photographs: scikit-image's astronaut and cameraman photos
and faces of its LFW subset, laid out as LFW is (<Name>/<Name>_0001.jpg), labelled by a manifest with gender and an
age column but no ethnicity, embedded with dlib, then ``biasgrid run`` with ``grid.models = []`` and gender as the
group axis evaluates an LFW-format pairs file: the 10-fold accuracy per gender equals a direct computation from the
table's embeddings, and the report is written."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from skimage import data

from grid.cli import main
from storage.results import load
from storage.table import read_table
from test_pairs import direct_ten_fold

LOCAL = ["--executor", "local", "--workers", "1"]
IMAGES = 5


def faces() -> dict[str, tuple[str, list[np.ndarray]]]:
    """Name -> (gender, IMAGES photographs): shifted crops of the astronaut (Eileen Collins) and the cameraman,
    and four faces of the LFW subset (genders assigned for the test), enlarged, each shifted and mirrored."""
    lfw = (data.lfw_subset()[:4] * 255).astype(np.uint8)
    people = {"Eileen_Collins": ("female", [data.astronaut()[k:k + 300, 80 + k:380 + k] for k in range(0, 25, 5)]),
              "Cameraman": ("male", [np.stack([data.camera()[20 + k:320 + k, 120 + k:420 + k]] * 3, -1)
                                     for k in range(0, 25, 5)])}
    for n, face in enumerate(lfw):
        big = np.asarray(Image.fromarray(face).resize((150, 150)))
        views = [np.roll(big, 3 * k, axis=1 - k % 2) if k < 4 else big[:, ::-1] for k in range(IMAGES)]
        people[f"Lfw_Person_{n}"] = (("female", "male")[n % 2], [np.stack([v] * 3, -1) for v in views])
    return people


def lfw_pairs(names: dict[str, str], path, folds: int = 10) -> None:
    """An LFW pairs file (header "folds n"): per fold n genuine "Name i j" and n impostor "Name i Other j" lines."""
    people = sorted(names)
    lines = [f"{folds} 6"]
    for f in range(folds):
        for k in range(6):
            p = people[(f + k) % len(people)]
            i, j = 1 + (f + k) % IMAGES, 1 + (f + 2 * k + 1) % IMAGES
            lines.append(f"{p} {i} {j if j != i else 1 + i % IMAGES}")
        for k in range(6):
            p, q = people[(f + k) % len(people)], people[(f + k + 1 + f % 3) % len(people)]
            lines.append(f"{p} {1 + k % IMAGES} {q} {1 + (f + k) % IMAGES}")
    path.write_text("\n".join(lines) + "\n")


def test_lfw_style_verification_only_run_by_gender(tmp_path, capsys):
    root = tmp_path / "lfw"
    rows = []
    for name, (gender, photos) in faces().items():
        for k, pixels in enumerate(photos):
            rel = f"{name}/{name}_{k + 1:04d}.jpg"
            (root / name).mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.ascontiguousarray(pixels)).save(root / rel)
            rows.append({"file": rel, "identity": name, "gender": gender, "age": 30 + 5 * k})
    pd.DataFrame(rows).to_csv(root / "labels.csv", index=False)     # no ethnicity; FairFace's 'file' for path
    table_path = tmp_path / "lfw.parquet"
    assert main(["data", "embed", str(root / "labels.csv"), "--out", str(table_path), "--model", "dlib", *LOCAL,
                 "--quiet"]) == 0
    assert "attributes: age (numeric)" in capsys.readouterr().out
    table = read_table(table_path)
    assert table.ethnicity is None and table.attributes["age"].tolist() == [r["age"] for r in
                                                                            sorted(rows, key=lambda r: r["file"])]
    lfw_pairs({n: g for n, (g, _) in faces().items()}, tmp_path / "pairs.txt")
    (tmp_path / "study.toml").write_text(f"""
[data]
path = "{table_path}"
[grid]
models = []
group = "gender"
seeds = 1
[protocol]
train_per_gender = 0
test_per_gender = 3
[verification]
groups = ["gender"]
pairs = "{tmp_path / 'pairs.txt'}"
bootstrap = 0
max_impostor_pairs = 1000
[run]
executor = "local"
workers = 2
""")
    out = tmp_path / "r"
    assert main(["run", "--config", str(tmp_path / "study.toml"), "--out", str(out), "--quiet"]) == 0
    res = load(out)
    assert "accuracy" not in res or res["accuracy"].empty
    groups = res["pair_groups"].set_index("group")
    assert sorted(groups.index) == ["female", "male"]
    # the direct computation: cosine scores from the table, each pair's group = its first image's gender
    index = {(i, m): r for r, (i, m) in enumerate(zip(table.identity, table.image))}
    X = table.embeddings.astype(np.float64)
    lines = (tmp_path / "pairs.txt").read_text().split("\n")[1:-1]
    s, same, fold, group = [], [], [], []
    for n, line in enumerate(lines):
        p = line.split()
        ia, ka, ib, kb = (p[0], p[1], p[0], p[2]) if len(p) == 3 else p
        ra, rb = index[ia, f"{ia}_{int(ka):04d}"], index[ib, f"{ib}_{int(kb):04d}"]
        s.append(X[ra] @ X[rb] / (np.linalg.norm(X[ra]) * np.linalg.norm(X[rb])))
        same.append(len(p) == 3)
        fold.append(n // 12)
        group.append(("male", "female")[table.gender[ra]])
    s, same, fold, group = map(np.asarray, (s, same, fold, group))
    for g in ("female", "male"):
        accs = direct_ten_fold(s[group == g], same[group == g], fold[group == g])
        assert groups.loc[g, "accuracy_mean"] == pytest.approx(accs.mean(), abs=1e-12)
        assert groups.loc[g, "accuracy_std"] == pytest.approx(accs.std(ddof=1), abs=1e-12)
        assert groups.loc[g, "n_pairs"] == (group == g).sum()
    rates = res["demographic_rates"]
    assert sorted(rates["group"]) == ["female", "male"]
    run = json.loads((out / "run.json").read_text())
    assert run["config"]["grid"]["train_groups"] == [] and run["axes"]["group"]["attributes"] == ["gender"]
    report = (out / "report" / "report.md").read_text()
    assert "verification-only study" in report and "Standard pair protocol" in report
