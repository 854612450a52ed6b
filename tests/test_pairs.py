"""tasks.stats.pairs: LFW/RFW/CSV parsing, mapping to rows, and the 10-fold accuracy against a direct computation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from storage.errors import InputError
from tasks.stats import pairs, rates


def write(path, text):
    path.write_text(text)
    return path


def test_parse_lfw_with_header(tmp_path):
    lines = ["2 2"]
    for f in range(2):
        lines += [f"Abel_Pacheco {1 + f} 4", "Aaron_Peirsol\t1\t2",
                  "AJ_Cook 1 Marsha_Thomason 1", f"Aaron_Sorkin {f + 1} Aaron_Peirsol 3"]
    p = write(tmp_path / "pairs.txt", "\n".join(lines) + "\n")
    df = pairs.parse_pairs_txt(p)
    assert list(df.columns) == pairs.PAIR_COLUMNS and len(df) == 8
    assert df.fold.tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    assert df.same.tolist() == [True, True, False, False] * 2
    first = df.iloc[0]
    assert (first.identity_a, first.image_a, first.image_b, first.line) == \
        ("Abel_Pacheco", "Abel_Pacheco_0001", "Abel_Pacheco_0004", 2)
    assert df.iloc[3].image_b == "Aaron_Peirsol_0003" and df.iloc[3].identity_b == "Aaron_Peirsol"


def test_single_number_header_is_one_fold(tmp_path):
    p = write(tmp_path / "pairsDevTrain.txt", "2\na 1 2\nb 1 3\na 1 b 1\nc 2 b 1\n")
    df = pairs.parse_pairs_txt(p)
    assert df.fold.tolist() == [0, 0, 0, 0] and df.same.tolist() == [True, True, False, False]


def test_parse_errors_name_file_and_line(tmp_path):
    p = write(tmp_path / "bad.txt", "a 1 2\nb 1 c\n")
    with pytest.raises(InputError, match=r"bad.txt:2: image index 'c'"):
        pairs.parse_pairs_txt(p, n_folds=1)
    p = write(tmp_path / "bad2.txt", "a 1 2\nb 1 c 3 4\n")
    with pytest.raises(InputError, match=r"bad2.txt:2: expected"):
        pairs.parse_pairs_txt(p, n_folds=1)
    p = write(tmp_path / "bad3.txt", "10 300\na 1 2\n")
    with pytest.raises(InputError, match="header says"):
        pairs.parse_pairs_txt(p)


def test_rfw_layout_and_consecutive_folds(tmp_path):
    for g in ("African", "Asian"):
        (tmp_path / "txts" / g).mkdir(parents=True)
        rows = [f"m.{g}{k} 1 2" if k % 2 == 0 else f"m.{g}{k} 1 m.x{k} 1" for k in range(20)]
        write(tmp_path / "txts" / g / f"{g}_pairs.txt", "\n".join(rows))
    df = pairs.read_rfw(tmp_path, groups=("African", "Asian"))
    assert len(df) == 40 and set(df.group) == {"African", "Asian"}
    assert df[df.group == "Asian"].fold.tolist() == [k // 2 for k in range(20)]
    with pytest.raises(InputError, match="Indian_pairs.txt"):
        pairs.read_rfw(tmp_path, groups=("Indian",))


def test_csv_and_mapping(tmp_path):
    identity = np.array(["ann", "ann", "bob", "bob", "cy"])
    image = np.array(["ann_0001.jpg", "ann_0002.jpg", "x1", "x2", "solo"])
    p = write(tmp_path / "p.csv", "image_a,image_b,same\nann/ann_0001.jpg,ann/ann_0002,1\nbob/x1,solo,0\n"
                                  "bob/x1,bob/x2,true\nx2,ann/ann_0001,0\n")
    df = pairs.parse_pairs_csv(p, n_folds=2)
    assert df.same.tolist() == [True, False, True, False] and df.fold.tolist() == [0, 0, 1, 1]
    a, b = pairs.map_pairs(df, identity, image)
    assert a.tolist() == [0, 2, 2, 3] and b.tolist() == [1, 4, 3, 0]
    bad = write(tmp_path / "q.csv", "image_a,image_b,same\nann/ann_0001,ann/ann_0009,1\n")
    with pytest.raises(InputError, match=r"q.csv:2: image ann/ann_0009 is not in the table"):
        pairs.map_pairs(pairs.parse_pairs_csv(bad), identity, image)
    txt = write(tmp_path / "t.txt", "ann 1 2\nann 1 bob 7\n")
    with pytest.raises(InputError, match=r"t.txt:2: image bob/bob_0007 is not in the table"):
        pairs.map_pairs(pairs.parse_pairs_txt(txt, n_folds=1), identity, image)


def direct_ten_fold(s, y, fold):
    """The protocol by plain loops: every candidate threshold's training accuracy, best (lowest on ties)."""
    accs = []
    for f in sorted(set(fold)):
        tr, te = fold != f, fold == f
        u = sorted(set(s[tr].tolist()))
        cands = [u[0]] + [(x + z) / 2 for x, z in zip(u, u[1:])] + [np.nextafter(u[-1], np.inf)]
        best, best_acc = None, -1.0
        for t in cands:
            acc = np.mean((s[tr] >= t) == y[tr])
            if acc > best_acc:
                best, best_acc = t, acc
        accs.append(np.mean((s[te] >= best) == y[te]))
    return np.array(accs)


@pytest.mark.parametrize("seed", range(3))
def test_ten_fold_accuracy_against_direct_loops(seed):
    rng = np.random.default_rng(seed)
    n = 400
    y = np.tile([True] * 20 + [False] * 20, 10)
    s = np.round(np.where(y, rng.normal(1.2, 1, n), rng.normal(0, 1, n)), 1)      # ties on purpose
    fold = np.repeat(np.arange(10), 40)
    got = pairs.fold_accuracy(s, y, fold)
    assert np.allclose(got.accuracy, direct_ten_fold(s, y, fold))


def test_protocol_report_per_group():
    rng = np.random.default_rng(5)
    names = ["African", "Asian", "Caucasian"]
    s, y, fold, g = [], [], [], []
    for k, name in enumerate(names):
        yy = np.tile([True] * 30 + [False] * 30, 10)
        s.append(np.where(yy, rng.normal(2.0 - 0.3 * k, 1, yy.size), rng.normal(0, 1, yy.size)))
        y.append(yy)
        fold.append(np.repeat(np.arange(10), 60))
        g.append(np.full(yy.size, name))
    s, y, fold, g = map(np.concatenate, (s, y, fold, g))
    out = pairs.protocol_report(s, y, fold, g, target_fmrs=(1e-2, 1e-3))
    grp = out["groups"].set_index("group")
    means = []
    for name in names:
        sel = g == name
        acc = direct_ten_fold(s[sel], y[sel], fold[sel])
        means.append(acc.mean())
        assert grp.loc[name, "accuracy_mean"] == pytest.approx(acc.mean())
        assert grp.loc[name, "accuracy_std"] == pytest.approx(acc.std(ddof=1))
        assert grp.loc[name, "eer"] == pytest.approx(rates.ScoreCurve(s[sel & y], s[sel & ~y]).eer()[0])
        t = rates.threshold_at_fmr(s[sel & ~y], 1e-2)
        assert grp.loc[name, "fnmr_at_fmr_1e_2"] == pytest.approx((s[sel & y] < t).mean())
        assert not grp.loc[name, "resolved_at_fmr_1e_3"]             # 300 impostors cannot resolve 1e-3
    across = out["across"].iloc[0]
    err = 1 - np.array(means)
    assert across.accuracy_std_groups == pytest.approx(np.std(means))
    assert across.skewed_error_ratio == pytest.approx(err.max() / err.min())
    assert across.worst_group == names[int(np.argmax(err))]
    assert len(out["folds"]) == 30 and math.isnan(pairs.protocol_report(s[:600], y[:600], fold[:600])["across"]
                                                   .iloc[0].skewed_error_ratio)


# ------------------------------------------------------------------------- issue 21: refused before any job ---
def _lfw_named_table(tmp_path):
    """A small synthetic table whose images are named as LFW's (identity_0001, ...), written to a Parquet file."""
    import dataclasses

    import pandas as pd

    from storage.synth import SynthParams, generate
    from storage.table import write_table

    t = generate(SynthParams(identities_per_group=24, dim=8))
    k = pd.Series(t.identity).groupby(t.identity).cumcount().to_numpy() + 1
    t = dataclasses.replace(t, image=np.array([f"{i}_{n:04d}" for i, n in zip(t.identity, k)], dtype=object))
    write_table(t, tmp_path / "t.parquet")
    return t


def _pairs(t, n=10):
    """n genuine pairs (images 1 and 2 of an asian identity) and n impostor pairs (image 1 of it and of the next)."""
    ids = [i for i in dict.fromkeys(t.identity) if i.startswith("asian") and (t.identity == i).sum() >= 2][:n + 1]
    return ([(a, 1, a, 2, 1) for a in ids[:n]], [(a, 1, b, 1, 0) for a, b in zip(ids[:n], ids[1:n + 1])])


def _csv(path, rows, folds=None):
    lines = ["image_a,image_b,same" + (",fold" if folds is not None else "")]
    for k, (a, i, b, j, same) in enumerate(rows):
        lines.append(f"{a}/{a}_{i:04d},{b}/{b}_{j:04d},{same}" + (f",{folds[k]}" if folds is not None else ""))
    return write(path, "\n".join(lines) + "\n")


def _txt(path, genuine, impostor, header=""):
    body = [f"{a} {i} {j}" for a, i, _, j, _ in genuine] + [f"{a} {i} {b} {j}" for a, i, b, j, _ in impostor]
    return write(path, "\n".join(([header] if header else []) + body) + "\n")


@pytest.mark.parametrize("case", ["csv unknown image", "txt unknown identity", "csv single fold",
                                  "txt single fold", "csv fold -1", "csv only genuine", "txt only impostor"])
def test_a_pairs_file_that_cannot_run_is_refused_before_any_job(tmp_path, case):
    """Issue 21 item 6: these ran the whole grid, then failed the pairs job (exit 1). Now exit 2 naming the file
    (and line) before the results folder is created."""
    import subprocess
    import sys
    from pathlib import Path

    t = _lfw_named_table(tmp_path)
    gen, imp = _pairs(t)
    both = [r for pair in zip(gen, imp) for r in pair]
    if case == "csv unknown image":
        path = _csv(tmp_path / "p.csv", both[:7] + [("ghost", 1, gen[0][0], 1, 0)] + both[7:])
        words = [":9: image ghost/ghost_0001 is not in the table"]
    elif case == "txt unknown identity":
        path = _txt(tmp_path / "p.txt", gen[:4] + [("ghost", 1, "ghost", 2, 1)] + gen[4:], imp)
        words = [":5: image ghost/ghost_0001 is not in the table"]
    elif case == "csv single fold":
        path, words = _csv(tmp_path / "p.csv", both, folds=[0] * len(both)), ["all 20 pairs are in fold 0", "2 folds"]
    elif case == "txt single fold":
        path, words = _txt(tmp_path / "p.txt", gen, imp, header="1 10"), ["all 20 pairs are in fold 0"]
    elif case == "csv fold -1":
        path, words = _csv(tmp_path / "p.csv", both, folds=[k % 10 if k != 3 else -1 for k in range(20)]), [
            ":5: fold must be an integer >= 0, got '-1'"]
    elif case == "csv only genuine":
        path, words = _csv(tmp_path / "p.csv", gen), ["all 10 pairs are genuine pairs"]
    else:
        path, words = _txt(tmp_path / "p.txt", [], imp), ["all 10 pairs are impostor pairs"]
    write(tmp_path / "g.toml", f"[verification]\npairs = '{path}'\n[protocol]\ntrain_per_gender = 5\n"
                               "test_per_gender = 5\n[tsne]\nenabled = false\n")
    proc = subprocess.run([sys.executable, "-m", "grid.cli", "run", "--config", str(tmp_path / "g.toml"), "--data",
                           str(tmp_path / "t.parquet"), "--out", str(tmp_path / "r"), "--executor", "local",
                           "--models", "logreg", "--no-report"], capture_output=True, text=True, timeout=300,
                          cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith(f"biasgrid: error: {path}") and all(w in line for w in words), line
    assert not (tmp_path / "r").exists()
