"""Groups come from the data: a table with RFW's four ethnicity groups runs through `biasgrid run` and
`biasgrid report` — a 5 x 4 accuracy matrix per model (4 groups + all), 8 demographic groups in verification."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from grid.splits import Protocol, make_split
from storage.synth import SynthParams, generate
from storage.table import EmbeddingTable, read_table, write_table
from storage.vocab import ethnicity_vocabulary

from conftest import biasgrid

RFW = ("asian", "caucasian", "african", "indian")


def rfw_like_table(path: Path) -> EmbeddingTable:
    """The synthetic data relabelled with RFW's groups: black identities split into african and indian."""
    base = generate(SynthParams(identities_per_group=24, dim=16))
    names = np.asarray(base.ethnicities, dtype=object)[base.ethnicity]
    odd = base.identity_codes() % 2 == 1
    names = np.where((names == "black") & odd, "indian", np.where(names == "black", "african", names))
    vocabulary = ethnicity_vocabulary(set(names))
    codes = np.array([vocabulary.index(n) for n in names], dtype=np.int8)
    write_table(EmbeddingTable(base.embeddings, base.identity, base.image, codes, base.gender, vocabulary), path)
    return read_table(path)


def test_four_groups_through_run_and_report(tmp_path: Path) -> None:
    data = tmp_path / "rfw.parquet"
    table = rfw_like_table(data)
    assert table.ethnicities == ("asian", "caucasian", "african", "indian")
    config = tmp_path / "grid.toml"
    config.write_text("[grid]\nmodels = ['logreg']\nseeds = 2\n[protocol]\ntrain_per_gender = 4\n"
                      "test_per_gender = 3\n[verification]\nmax_impostor_pairs = 20000\nbootstrap = 50\n"
                      "[tsne]\nperplexity = 5.0\npca_dims = 8\nsubsets = ['all']\n[run]\nexecutor = 'local'\n"
                      "workers = 2\nreport = false\n")
    out = tmp_path / "r"
    run = biasgrid("run", "--config", str(config), "--data", str(data), "--out", str(out), "--quiet")
    assert run.returncode == 0, run.stderr
    acc = pd.read_parquet(out / "accuracy")
    assert len(acc) == 5 * 4 * 2 and not acc.duplicated(["train_group", "test_group", "seed"]).any()
    assert set(acc["train_group"]) == {*RFW, "all"} and set(acc["test_group"]) == set(RFW)
    # the cell's test set is the split's: the same rows counted independently
    split = make_split(table, 0, Protocol(4, 3))
    for group in RFW:
        assert int(acc[(acc["test_group"] == group) & (acc["seed"] == 0)]["n_test"].iloc[0]) == len(split.test[group])
    imp = pd.read_parquet(out / "impostor_matrix")
    assert len(imp) == 8 * 8 * 2 and "indian_female" in set(imp["group_a"])

    report = biasgrid("report", str(out))
    assert report.returncode == 0, report.stderr
    lines = report.stdout.splitlines()
    header = next(line for line in lines if line.startswith("trained on"))
    assert header.split()[-4:] == list(RFW)                       # 4 columns, in the data's order
    start = lines.index(header) + 2
    rows = [line.split()[0] for line in lines[start:start + 5]]
    assert rows == [*RFW, "all"]                                  # 5 rows
    matrix = pd.read_csv(out / "report" / "accuracy.csv")
    assert len(matrix) == 20 and set(matrix["test_group"]) == set(RFW)
    assert (out / "report" / "figures" / "tsne.png").exists()
    assert (out / "report" / "figures" / "impostor_fmr.png").exists()
