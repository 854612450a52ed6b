"""Standard verification pair protocols (LFW, RFW, a plain CSV): parsing, mapping to table rows, 10-fold accuracy.

**Files.** A pairs text file (LFW ``pairs.txt``, RFW ``txts/<Group>/<Group>_pairs.txt``) has one pair per line:
``name i j`` (genuine: images i and j of ``name``) or ``name1 i name2 j`` (impostor); image index i is the image
``{name}_{i:04d}`` (LFW's naming). An optional first line ``F P`` (LFW: ``10 300``) says F folds of P genuine
then P impostor pairs, in file order (a single number P, as in LFW's pairsDevTrain.txt, is one fold); without
it the pairs form ``n_folds`` consecutive blocks of equal size (RFW lists its 6000 pairs as 10 folds of
300 + 300). A CSV has columns ``image_a, image_b, same`` (same: 1/0,
true/false) and optionally ``fold``; an image is ``identity/image`` or an image name unique in the table; without
a fold column the k-th genuine and k-th impostor pair go to fold k mod n_folds.

**Accuracy (the protocol's 10-fold threshold selection).** For each fold f: on the other folds, the candidate
thresholds are the lowest training score, the midpoints between consecutive distinct training scores and the next
float above the highest; the threshold with the highest training accuracy (pairs accepted when s >= t; ties: the
lowest) is applied to fold f. Reported: mean and std (ddof = 1, as LFW's README defines it) of the 10 held-out
accuracies and the standard error std / sqrt(folds). Across groups (RFW's way): the std of the groups' mean
accuracies (ddof = 0, all groups of interest) and the skewed error ratio max_g err_g / min_g err_g,
err_g = 1 - mean accuracy_g.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from storage.errors import InputError
from tasks.stats import rates

PAIR_COLUMNS = ["source", "line", "fold", "identity_a", "image_a", "identity_b", "image_b", "same"]
RFW_GROUPS = ("African", "Asian", "Caucasian", "Indian")


def _image_name(name: str, index: str, where: str) -> str:
    try:
        i = int(index)
    except ValueError:
        raise InputError(f"{where}: image index {index!r} is not an integer") from None
    return f"{name}_{i:04d}"


def parse_pairs_txt(path: str | os.PathLike[str], n_folds: int = 10) -> pd.DataFrame:
    """Pairs of an LFW/RFW pairs file: columns :data:`PAIR_COLUMNS` (line = 1-based line number)."""
    path = str(path)
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as e:
        raise InputError(f"{path}: cannot read the pairs file ({e.strerror})") from None
    rows, header = [], None
    for no, text in enumerate(lines, 1):
        tok = text.split()
        if not tok:
            continue
        where = f"{path}:{no}"
        if not rows and header is None and len(tok) <= 2 and all(t.isdigit() for t in tok):
            header = (int(tok[0]), int(tok[1])) if len(tok) == 2 else (1, int(tok[0]))   # "1100": LFW's View 1
            continue
        if len(tok) == 3:
            rows.append((path, no, tok[0], _image_name(tok[0], tok[1], where), tok[0],
                         _image_name(tok[0], tok[2], where), True))
        elif len(tok) == 4:
            rows.append((path, no, tok[0], _image_name(tok[0], tok[1], where), tok[2],
                         _image_name(tok[2], tok[3], where), False))
        else:
            raise InputError(f"{where}: expected 'name i j' (genuine) or 'name1 i name2 j' (impostor), "
                             f"got {len(tok)} fields")
    if not rows:
        raise InputError(f"{path}: no pairs")
    n = len(rows)
    if header is not None:
        folds, per = header
        if folds * 2 * per != n:
            raise InputError(f"{path}:1: header says {folds} folds x 2 x {per} pairs = {folds * 2 * per}, "
                             f"the file has {n}")
        fold = np.arange(n) // (2 * per)
    else:
        if n < n_folds:
            raise InputError(f"{path}: {n} pairs cannot form {n_folds} folds")
        fold = np.arange(n) * n_folds // n
    out = pd.DataFrame(rows, columns=["source", "line", "identity_a", "image_a", "identity_b", "image_b", "same"])
    out["fold"] = fold
    return out[PAIR_COLUMNS]


def read_rfw(root: str | os.PathLike[str], groups: Sequence[str] = RFW_GROUPS, n_folds: int = 10) -> pd.DataFrame:
    """RFW's per-group files ``root/txts/<G>/<G>_pairs.txt``: the pairs of every group with a ``group`` column."""
    frames = []
    for g in groups:
        p = Path(root) / "txts" / g / f"{g}_pairs.txt"
        if not p.is_file():
            raise InputError(f"{p}: no such RFW pairs file (expected root/txts/<Group>/<Group>_pairs.txt)")
        f = parse_pairs_txt(p, n_folds)
        f["group"] = g
        frames.append(f)
    return pd.concat(frames, ignore_index=True)


def parse_pairs_csv(path: str | os.PathLike[str], n_folds: int = 10) -> pd.DataFrame:
    """Pairs of a CSV ``image_a, image_b, same[, fold]``: columns :data:`PAIR_COLUMNS`; identity_a/_b are the
    part before '/' of an ``identity/image`` entry, else empty (the image name alone must then be unique)."""
    path = str(path)
    try:
        with open(path, newline="") as fh:
            reader = csv.DictReader(fh)
            fields = [f.strip().lower() for f in (reader.fieldnames or [])]
            missing = {"image_a", "image_b", "same"} - set(fields)
            if missing:
                raise InputError(f"{path}:1: missing column(s) {', '.join(sorted(missing))} "
                                 f"(expected image_a, image_b, same[, fold])")
            rows = []
            for no, rec in enumerate(reader, 2):
                rec = {k.strip().lower(): (v or "").strip() for k, v in rec.items() if k is not None}
                same = rec["same"].lower()
                if same not in ("1", "0", "true", "false", "yes", "no"):
                    raise InputError(f"{path}:{no}: same must be 1/0 or true/false, got {rec['same']!r}")
                ia, _, a = rec["image_a"].rpartition("/")
                ib, _, b = rec["image_b"].rpartition("/")
                fold = rec.get("fold", "")
                if "fold" in rec and not fold.isdigit():
                    raise InputError(f"{path}:{no}: fold must be an integer >= 0, got {fold!r}")
                rows.append((path, no, int(fold) if fold else -1, ia, _stem(a), ib, _stem(b),
                             same in ("1", "true", "yes")))
    except OSError as e:
        raise InputError(f"{path}: cannot read the pairs file ({e.strerror})") from None
    out = pd.DataFrame(rows, columns=PAIR_COLUMNS)
    if out.empty:
        raise InputError(f"{path}: no pairs")
    if "fold" not in fields:
        out["fold"] = out.groupby("same").cumcount() % n_folds
    return out


def _stem(image: str) -> str:
    base = os.path.basename(image)
    stem, ext = os.path.splitext(base)
    return stem if ext.lower() in (".jpg", ".jpeg", ".png", ".bmp", ".npy") else base


def map_pairs(pairs: pd.DataFrame, identity: np.ndarray, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Table row of each pair's two images: (row_a, row_b). A table image matches by (identity, image name
    without an image extension); a pair with an empty identity matches the image name alone, which must be
    unique. Unknown or ambiguous images raise InputError naming the pairs file and line."""
    ident = np.asarray(identity).astype(str)
    stems = np.array([_stem(x) for x in np.asarray(image).astype(str)], dtype=object)
    by_key = {(i, s): r for r, (i, s) in enumerate(zip(ident, stems))}
    by_image: dict[str, int] = {}
    for r, s in enumerate(stems):
        by_image[s] = -1 if s in by_image else r
    out = []
    for side in ("a", "b"):
        rows = np.empty(len(pairs), np.int64)
        for k, (src, line, who, img) in enumerate(zip(pairs["source"], pairs["line"], pairs[f"identity_{side}"],
                                                      pairs[f"image_{side}"])):
            r = by_key.get((who, img)) if who else by_image.get(img)
            if r is None or r < 0:
                what = f"{who}/{img}" if who else img
                why = "is not in the table" if r is None else "is ambiguous (several identities have it)"
                raise InputError(f"{src}:{line}: image {what} {why}")
            rows[k] = r
        out.append(rows)
    return out[0], out[1]


# ------------------------------------------------------------------------------------------ 10-fold accuracy ---
def check_folds(same: np.ndarray, fold: np.ndarray, group: np.ndarray, source: str) -> None:
    """InputError naming ``source`` (and the group, when there are several) unless every group's pairs can run
    the protocol: at least 2 folds, and genuine and impostor pairs outside each fold (so also in the group)."""
    y, f, g = np.asarray(same, bool), np.asarray(fold), np.asarray(group).astype(str)
    names = sorted(set(g.tolist()))
    for name in names:
        sel = g == name
        where = f"{source}: group {name}" if len(names) > 1 else source
        ys, fs = y[sel], f[sel]
        folds = np.unique(fs)
        if ys.all() or not ys.any():
            raise InputError(f"{where}: all {ys.size} pairs are {'genuine' if ys.all() else 'impostor'} pairs; the "
                             f"protocol needs genuine and impostor pairs")
        if folds.size < 2:
            raise InputError(f"{where}: all {ys.size} pairs are in fold {folds[0]}; the 10-fold protocol needs at "
                             f"least 2 folds (a fold column, or a header line 'folds pairs_per_fold')")
        for k in folds:
            rest = ys[fs != k]
            if rest.all() or not rest.any():
                only = "genuine" if rest.all() else "impostor"
                raise InputError(f"{where}: outside fold {k} all pairs are {only}; each fold's threshold is chosen on "
                                 f"the other folds, which need both kinds")


def best_threshold(scores: np.ndarray, same: np.ndarray) -> tuple[float, float]:
    """(threshold, accuracy) maximising accuracy on (scores, same) over the module's candidate thresholds."""
    s, y = np.asarray(scores, float), np.asarray(same, bool)
    u = np.unique(s)
    cand = np.r_[u[0], (u[:-1] + u[1:]) / 2, np.nextafter(u[-1], np.inf)]
    gen, imp = np.sort(s[y]), np.sort(s[~y])
    correct = (gen.size - np.searchsorted(gen, cand, side="left")) + np.searchsorted(imp, cand, side="left")
    k = int(np.argmax(correct))
    return float(cand[k]), float(correct[k] / s.size)


def fold_accuracy(scores: np.ndarray, same: np.ndarray, fold: np.ndarray) -> pd.DataFrame:
    """Per held-out fold: fold, threshold (chosen on the other folds), train_accuracy, accuracy, n."""
    s, y, f = np.asarray(scores, float), np.asarray(same, bool), np.asarray(fold)
    if not (s.shape == y.shape == f.shape):
        raise InputError("scores, same and fold need one entry per pair")
    folds = np.unique(f)
    if folds.size < 2:
        raise InputError(f"10-fold accuracy needs at least 2 folds, got {folds.size}")
    rows = []
    for k in folds:
        test = f == k
        if (~test).sum() == 0 or not y[~test].any() or y[~test].all():
            raise InputError(f"fold {k}: the other folds need genuine and impostor pairs")
        t, train_acc = best_threshold(s[~test], y[~test])
        acc = float(((s[test] >= t) == y[test]).mean())
        rows.append({"fold": k, "threshold": t, "train_accuracy": train_acc, "accuracy": acc,
                     "n": int(test.sum())})
    return pd.DataFrame(rows)


def protocol_report(scores: np.ndarray, same: np.ndarray, fold: np.ndarray, group: np.ndarray | None = None,
                    target_fmrs: Sequence[float] = (1e-3,)) -> dict[str, pd.DataFrame]:
    """Per group (and "all" when there is no group): 10-fold accuracy, EER and FNMR at each target FMR on the
    same pairs; across groups: std of the mean accuracies (ddof=0) and the skewed error ratio.

    Returns {"groups": group, n_pairs, n_genuine, n_impostor, accuracy_mean, accuracy_std (ddof=1),
    accuracy_se, eer, eer_threshold, and per target x (<x> = :func:`tasks.stats.rates.fmr_key`, 1e-3 -> 1e_3):
    fnmr_at_fmr_<x>, threshold_at_fmr_<x>,
    false_matches_at_fmr_<x>, resolved_at_fmr_<x>, reason_at_fmr_<x>;
    "across": one row — n_groups, accuracy_std_groups, skewed_error_ratio, best_group, worst_group, note;
    "folds": group, fold, threshold, train_accuracy, accuracy, n}."""
    s, y = np.asarray(scores, float), np.asarray(same, bool)
    g = np.full(s.size, "all", dtype=object) if group is None else np.asarray(group).astype(str)
    rows, fold_frames = [], []
    for name in sorted(set(g.tolist())):
        sel = g == name
        fa = fold_accuracy(s[sel], y[sel], np.asarray(fold)[sel])
        fa.insert(0, "group", name)
        fold_frames.append(fa)
        acc = fa["accuracy"].to_numpy()
        gen, imp = s[sel & y], s[sel & ~y]
        eer, eer_t = rates.ScoreCurve(gen, imp).eer()
        row = {"group": name, "n_pairs": int(sel.sum()), "n_genuine": int(gen.size), "n_impostor": int(imp.size),
               "accuracy_mean": float(acc.mean()), "accuracy_std": float(acc.std(ddof=1)),
               "accuracy_se": float(acc.std(ddof=1) / np.sqrt(acc.size)), "eer": eer, "eer_threshold": eer_t}
        for x in target_fmrs:
            op = rates.operating_point(gen, imp, x)
            key = rates.fmr_key(x)
            row.update({f"fnmr_at_fmr_{key}": op["fnmr"], f"threshold_at_fmr_{key}": op["threshold"],
                        f"false_matches_at_fmr_{key}": op["false_matches"],
                        f"resolved_at_fmr_{key}": op["resolved"], f"reason_at_fmr_{key}": op["reason"]})
        rows.append(row)
    groups = pd.DataFrame(rows)
    err = 1.0 - groups["accuracy_mean"].to_numpy()
    across = {"n_groups": len(groups), "accuracy_std_groups": np.nan, "skewed_error_ratio": np.nan,
              "best_group": "", "worst_group": "", "note": ""}
    if len(groups) < 2:
        across["note"] = "needs at least 2 groups"
    else:
        across.update(accuracy_std_groups=float(groups["accuracy_mean"].std(ddof=0)),
                      best_group=groups["group"].iloc[int(np.argmin(err))],
                      worst_group=groups["group"].iloc[int(np.argmax(err))])
        if err.min() > 0:
            across["skewed_error_ratio"] = float(err.max() / err.min())
        else:
            across["note"] = f"skewed error ratio undefined: {across['best_group']} has no error"
    return {"groups": groups, "across": pd.DataFrame([across]), "folds": pd.concat(fold_frames, ignore_index=True)}
