"""Importers: each form on small files made here, and every kind of bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from storage.errors import InputError
from storage.importers import FORMAT_NAMES, FORMATS, Format, detect_format, import_embeddings
from storage.table import EmbeddingTable, write_table
from storage.vocab import ETHNICITIES, GENDERS

D = 6
# Real identity and image names from DiveFace's annotation lists (<identity>/<image>.jpg), per group.
ANNOTATIONS = {
    "Group1_Male": ["100016927@N02_identity_3/9468622319_4.jpg", "100016927@N02_identity_3/9468622901_6.jpg",
                    "100016927@N02_identity_3/9472412398_2.jpg", "100034050@N05_identity_10/12172723905_0.jpg",
                    "100034050@N05_identity_10/12173047734_2.jpg", "100034050@N05_identity_10/12385329564_0.jpg"],
    "Group1_Female": ["100016927@N02_identity_11/9469785289_4.jpg", "100016927@N02_identity_11/9470508847_1.jpg",
                      "100016927@N02_identity_11/9471360370_2.jpg", "100016927@N02_identity_11/9473289386_1.jpg"],
    "Group2_Male": ["100001044@N04_identity_2/11459962594_0.jpg", "100001044@N04_identity_2/11460023086_8.jpg",
                    "100001044@N04_identity_2/11460030936_0.jpg", "100021856@N08_identity_78/11427272856_0.jpg",
                    "100021856@N08_identity_78/11427286586_4.jpg", "100021856@N08_identity_78/11427300044_2.jpg"],
    "Group2_Female": ["100068677@N04_identity_119/9709385290_1.jpg", "100068677@N04_identity_119/9718580249_0.jpg",
                      "100068677@N04_identity_119/9718580793_0.jpg"],
    "Group3_Male": ["10000339@N08_identity_0/4397534106_0.jpg", "10000339@N08_identity_0/4397536026_0.jpg",
                    "10000339@N08_identity_0/4686888961_1.jpg", "100004356@N06_identity_15/9459877829_2.jpg",
                    "100004356@N06_identity_15/9459880827_0.jpg", "100004356@N06_identity_15/9462660400_1.jpg"],
    "Group3_Female": ["100003507@N04_identity_4/9872090876_0.jpg", "100003507@N04_identity_4/9872098154_0.jpg",
                      "100003507@N04_identity_4/9872122665_0.jpg"],
}
GROUP_LABEL = {"Group1_Male": ("asian", "male"), "Group1_Female": ("asian", "female"),
               "Group2_Male": ("black", "male"), "Group2_Female": ("black", "female"),
               "Group3_Male": ("caucasian", "male"), "Group3_Female": ("caucasian", "female")}
STUDY_NAME = {"Group1_Male": "HA4K_120", "Group1_Female": "MA4K_120", "Group2_Male": "HN4K_120",
              "Group2_Female": "MN4K_120", "Group3_Male": "HB4K_120", "Group3_Female": "MB4K_120"}


def vector(line: str) -> np.ndarray:
    """A deterministic embedding per annotation line (so the test can check every value lands in its row)."""
    seed = sum(line.encode()) * 31 + len(line)
    return np.random.default_rng(seed).random(D, dtype=np.float32)


def rows_by_name(table: EmbeddingTable) -> dict[tuple[str, str], int]:
    return {(i, m): r for r, (i, m) in enumerate(zip(table.identity, table.image))}


def check_against_annotations(table: EmbeddingTable, groups) -> None:
    index = rows_by_name(table)
    assert len(table) == sum(len(ANNOTATIONS[g]) for g in groups)
    for g in groups:
        eth, gen = GROUP_LABEL[g]
        for line in ANNOTATIONS[g]:
            identity, image = line.split("/")
            r = index[identity, image[:-4]]
            assert ETHNICITIES[table.ethnicity[r]] == eth and GENDERS[table.gender[r]] == gen
            assert np.array_equal(table.embeddings[r], vector(line))


def diveface_folder(root: Path, naming: dict[str, str] | None = None, groups=tuple(ANNOTATIONS)) -> Path:
    for g in groups:
        folder = root / (naming[g] if naming else g)
        for line in ANNOTATIONS[g]:
            identity, image = line.split("/")
            (folder / identity).mkdir(parents=True, exist_ok=True)
            np.save(folder / identity / image.replace(".jpg", ".npy"), vector(line))
    return root


# ---------------------------------------------------------------------------------------------- diveface


def test_diveface_layout_with_the_study_names(tmp_path):
    root = diveface_folder(tmp_path / "4K_120", STUDY_NAME)
    assert detect_format(root) == "diveface"
    table = import_embeddings(root)
    check_against_annotations(table, ANNOTATIONS)
    assert table.embeddings.dtype == np.float32 and table.dim == D
    assert "9468622319_4" in set(table.image)


def test_diveface_layout_with_dataset_names_under_a_parent_folder(tmp_path):
    diveface_folder(tmp_path / "data" / "4K_120", groups=("Group1_Female", "Group3_Male"))
    # (1, d) vectors are accepted too
    extra = tmp_path / "data" / "4K_120" / "Group3_Male" / "10000339@N08_identity_0" / "extra_1.jpg.npy"
    np.save(extra, np.ones((1, D), np.float32))
    table = import_embeddings(tmp_path / "data", "diveface")
    assert len(table) == 4 + 6 + 1
    r = rows_by_name(table)["10000339@N08_identity_0", "extra_1"]
    assert np.all(table.embeddings[r] == 1)


def test_npy_identities_folder_without_matching_lists_is_refused(tmp_path):
    src = matrices(tmp_path / "m", ["Group1_Female"], sidecar=None)
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "something_else.txt").write_text("a\n")
    with pytest.raises(InputError, match=r"lists: no identity list for Group1_Female; expected <group>.txt"):
        import_embeddings(src, identities=lists)


@pytest.mark.parametrize("damage,pattern", [
    (lambda root: (root / "Group4_Male").mkdir(), r"folder 'Group4_Male' is not a known group; expected group "
                                                  r"folders named HA4K_120, MA4K_120"),
    (lambda root: (root / "MB4K_120").mkdir(), r"MB4K_120: group caucasian_female is empty"),
    (lambda root: (root / "Group1_Male" / "someone").mkdir(), r"someone: identity folder has no .npy files"),
    (lambda root: np.save(root / "Group1_Male" / "100016927@N02_identity_3" / "x.npy", np.ones(D + 1, np.float32)),
     r"x.npy: embedding has 7 values, expected 6"),
    (lambda root: np.save(root / "Group1_Male" / "100016927@N02_identity_3" / "x.npy",
                          np.array([0, np.nan, 0, 0, 0, 0], np.float32)), r"x.npy: embedding has NaN or inf"),
    (lambda root: np.save(root / "Group1_Male" / "100016927@N02_identity_3" / "x.npy",
                          np.array([object(), 1], dtype=object), allow_pickle=True),
     r"x.npy: cannot load without unpickling"),
    (lambda root: np.save(root / "Group1_Male" / "100016927@N02_identity_3" / "x.npy", np.arange(D)),
     r"x.npy: has dtype int64; expected floating-point"),
    (lambda root: (root / "Group1_Female" / "100016927@N02_identity_3").mkdir(),
     r"identity '100016927@N02_identity_3' appears in both"),
])
def test_diveface_bad_input(tmp_path, damage, pattern):
    root = diveface_folder(tmp_path / "root", groups=("Group1_Male", "Group1_Female"))
    damage(root)
    with pytest.raises(InputError, match=pattern):
        import_embeddings(root, "diveface")


def test_diveface_identity_in_two_groups_with_prefix_group(tmp_path):
    root = diveface_folder(tmp_path / "root", groups=("Group1_Male", "Group1_Female"))
    src = root / "Group1_Male" / "100016927@N02_identity_3"
    dst = root / "Group1_Female" / "100016927@N02_identity_3"
    dst.mkdir()
    np.save(dst / "other.npy", np.ones(D, np.float32))
    table = import_embeddings(root, "diveface", prefix_group=True)
    assert "asian_female/100016927@N02_identity_3" in set(table.identity)
    assert "asian_male/100016927@N02_identity_3" in set(table.identity)
    assert len(table) == len(ANNOTATIONS["Group1_Male"]) + len(ANNOTATIONS["Group1_Female"]) + 1
    assert src.exists()


def test_missing_source(tmp_path):
    with pytest.raises(InputError, match="nothing: no such file or folder"):
        import_embeddings(tmp_path / "nothing")
    with pytest.raises(InputError, match="nothing: no such file or folder"):
        detect_format(tmp_path / "nothing")


# ---------------------------------------------------------------------------------------------- npy / npz


def matrices(folder: Path, groups, naming=None, suffix=".npy", sidecar="annotation") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for g in groups:
        name = naming[g] if naming else g
        m = np.stack([vector(line) for line in ANNOTATIONS[g]])
        if suffix == ".npy":
            np.save(folder / f"{name}.npy", m)
        else:
            np.savez(folder / f"{name}.npz", embeddings=m, other=np.zeros(2))
        if sidecar == "annotation":  # DiveFace's own lists, named in DiveFace's naming
            (folder / f"{g}.txt").write_text("\n".join(ANNOTATIONS[g]) + "\n")
        elif sidecar == "identity":
            (folder / f"{name}.txt").write_text("\n".join(line.split("/")[0] for line in ANNOTATIONS[g]))
    return folder


def test_npy_per_group_with_diveface_annotation_lists(tmp_path):
    src = matrices(tmp_path / "m", ANNOTATIONS, STUDY_NAME)
    assert detect_format(src) == "npy"
    check_against_annotations(import_embeddings(src), ANNOTATIONS)


def test_npz_per_group_with_identity_lists(tmp_path):
    src = matrices(tmp_path / "m", ["Group2_Male", "Group3_Female"], suffix=".npz", sidecar="identity")
    table = import_embeddings(src, "npy")
    assert len(table) == 9
    assert sorted(set(table.identity)) == ["100001044@N04_identity_2", "100003507@N04_identity_4",
                                           "100021856@N08_identity_78"]
    first = np.flatnonzero(table.identity == "100021856@N08_identity_78")
    assert list(table.image[first]) == ["3", "4", "5"]  # the row numbers in the group's matrix
    assert np.array_equal(table.embeddings[first[0]], vector(ANNOTATIONS["Group2_Male"][3]))


def test_npy_without_lists_is_one_identity_per_row_and_single_file_with_list(tmp_path):
    src = matrices(tmp_path / "m", ["Group1_Female"], sidecar=None)
    table = import_embeddings(src / "Group1_Female.npy")
    assert list(table.identity) == [f"Group1_Female_{i}" for i in range(4)]
    listing = tmp_path / "who.txt"
    listing.write_text("\n".join(ANNOTATIONS["Group1_Female"]))
    table = import_embeddings(src / "Group1_Female.npy", identities=listing)
    check_against_annotations(table, ["Group1_Female"])


@pytest.mark.parametrize("damage,pattern", [
    (lambda f: np.save(f / "Group9_Male.npy", np.ones((2, D), np.float32)),
     r"Group9_Male.npy: 'Group9_Male' is not a known group; expected files named after the group: HA4K_120"),
    (lambda f: (f / "Group1_Male.txt").write_text("a\nb\n"),
     r"Group1_Male.txt: 2 lines but HA4K_120.npy has 6 rows; expected one line per matrix row"),
    (lambda f: (f / "Group1_Female.txt").unlink(),
     r"identity lists found for .* but not for MA4K_120.npy"),
    (lambda f: np.save(f / "MA4K_120.npy", np.ones((4, D + 2), np.float32)),
     r"MA4K_120.npy: has dimension 8, expected 6"),
    (lambda f: np.save(f / "MA4K_120.npy", np.full((4, D), np.inf, np.float32)),
     r"MA4K_120.npy: embedding of row 0 has inf"),
    (lambda f: np.save(f / "MA4K_120.npy", np.ones((0, D), np.float32)),
     r"MA4K_120.npy: group asian_female is empty \(0 rows\)"),
    (lambda f: np.save(f / "MA4K_120.npy", np.array([[object()]], dtype=object), allow_pickle=True),
     r"MA4K_120.npy: holds Python objects"),
    (lambda f: np.save(f / "Group1_Female.npy", np.ones((4, D), np.float32)),
     r"are both group asian_female"),
    (lambda f: (f / "Group1_Male.txt").write_text("\n".join(["x/1.jpg", "", "x/2.jpg", "x/3.jpg", "y/1.jpg",
                                                             "y/2.jpg"])),
     r"Group1_Male.txt: line 2 is empty"),
    (lambda f: (f / "Group1_Male.txt").write_text("\n".join(["x/1.jpg"] * 6)),
     r"duplicate \(identity, image\) \('x', '1'\)"),
    (lambda f: ((f / "Group1_Male.txt").write_text("x\n" * 6), (f / "Group1_Female.txt").write_text("x\n" * 4)),
     r"duplicate \(identity, image\) \('x', '0'\).*different groups.*--prefix-group"),
])
def test_npy_bad_input(tmp_path, damage, pattern):
    src = matrices(tmp_path / "m", ["Group1_Male", "Group1_Female"], STUDY_NAME)
    damage(src)
    with pytest.raises(InputError, match=pattern):
        import_embeddings(src, "npy")


def test_pickled_npz_is_refused(tmp_path):
    src = tmp_path / "m"
    src.mkdir()
    np.savez(src / "HA4K_120.npz", embeddings=np.array([[object()]], dtype=object))
    with pytest.raises(InputError, match="HA4K_120.npz.*(Python objects|unpickling)"):
        import_embeddings(src, "npy")


# ---------------------------------------------------------------------------------------------- UAM CSV pair


def uam_pair(folder: Path, n_per_group: int = 2, images: int = 3, attr_columns=None) -> tuple[Path, Path]:
    """Embeddings CSV (header, index column, d features) + attributes CSV in UAM's codes."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for eth_code, eth in ((0, "black"), (1, "asian"), (2, "caucasian")):
        for gender_code in (0, 1):
            for i in range(n_per_group):
                for k in range(images):
                    rows.append({"gender": gender_code, "ethnicity": eth_code,
                                 "identity id": f"{eth}{gender_code}_{i}", "pose": k})
    attrs = pd.DataFrame(rows)
    if attr_columns:
        attrs = attrs.rename(columns=attr_columns)
    emb = pd.DataFrame(np.random.default_rng(0).random((len(rows), D), dtype=np.float32))
    emb.to_csv(folder / "embeddings.csv")  # header row ",0,1,...", index column
    attrs.to_csv(folder / "attributes.csv")
    return folder / "embeddings.csv", folder / "attributes.csv"


def test_uam_pair_folder_and_codes(tmp_path):
    emb_csv, _ = uam_pair(tmp_path / "uam")
    assert detect_format(tmp_path / "uam") == "uam-csv"
    table = import_embeddings(tmp_path / "uam")
    assert len(table) == 36 and table.dim == D
    expected = pd.read_csv(emb_csv, index_col=0).to_numpy(np.float32)
    assert np.allclose(table.embeddings, expected, rtol=1e-6)
    index = rows_by_name(table)
    r = index["black1_0", "2"]  # UAM ethnicity 0 = black, gender 1 = female
    assert (ETHNICITIES[table.ethnicity[r]], GENDERS[table.gender[r]]) == ("black", "female")
    r = index["asian0_1", "0"]
    assert (ETHNICITIES[table.ethnicity[r]], GENDERS[table.gender[r]]) == ("asian", "male")
    assert (ETHNICITIES[table.ethnicity[index["caucasian1_1", "1"]]]) == "caucasian"


def test_uam_file_with_attributes_and_mapped_columns(tmp_path):
    emb_csv, attr_csv = uam_pair(tmp_path / "uam", attr_columns={"identity id": "ID_person", "pose": "shot"})
    table = import_embeddings(emb_csv, "uam-csv", attributes=attr_csv, columns={"identity": "id_person",
                                                                                "image": "shot"})
    assert len(table) == 36 and "asian0_1" in set(table.identity) and "2" in set(table.image)
    with pytest.raises(InputError, match=r"attributes.csv: no identity column; expected one named identity"):
        import_embeddings(emb_csv, "uam-csv", attributes=attr_csv)


def _edit_csv(path: Path, row: int, column: str, value) -> None:
    frame = pd.read_csv(path, index_col=0, dtype=str, keep_default_na=False)
    frame.loc[frame.index[row], column] = value
    frame.to_csv(path)


@pytest.mark.parametrize("damage,pattern", [
    (lambda e, a: _edit_csv(a, 4, "gender", "3"),
     r"attributes.csv: column 'gender' is '3' at data row 4 \(line 6\); expected 0 \(male\), 1 \(female\)"),
    (lambda e, a: _edit_csv(a, 0, "ethnicity", "7"), r"column 'ethnicity' is '7' at data row 0"),
    (lambda e, a: _edit_csv(e, 5, "2", "nan"), r"embeddings.csv: embedding of data row 5 \(line 7\) has nan"),
    (lambda e, a: _edit_csv(e, 5, "2", ""), r"embeddings.csv: column '2' is empty at data row 5"),
    (lambda e, a: _edit_csv(e, 5, "2", "abc"), r"embeddings.csv: cannot read the CSV .*abc"),
    (lambda e, a: pd.read_csv(a, index_col=0).iloc[:-1].to_csv(a),
     r"embeddings.csv has 36 rows but .*attributes.csv has 35"),
    (lambda e, a: pd.read_csv(a, index_col=0).iloc[::-1].to_csv(a), r"disagree at data row 0: index '0' vs '35'"),
    (lambda e, a: _edit_csv(a, 1, "gender", "1"), r"identity 'black0_0' is labelled black_male .*black_female"),
    (lambda e, a: _edit_csv(a, 1, "pose", "0"), r"duplicate \(identity, image\) \('black0_0', '0'\)"),
])
def test_uam_bad_input(tmp_path, damage, pattern):
    emb_csv, attr_csv = uam_pair(tmp_path / "uam")
    damage(emb_csv, attr_csv)
    with pytest.raises(InputError, match=pattern):
        import_embeddings(tmp_path / "uam", "uam-csv")


def test_uam_groups_with_no_rows_are_just_absent(tmp_path):
    emb_csv, attr_csv = uam_pair(tmp_path / "uam")
    attrs = pd.read_csv(attr_csv, index_col=0)
    keep = attrs["ethnicity"] != 0
    attrs[keep].to_csv(attr_csv)
    pd.read_csv(emb_csv, index_col=0)[keep.to_numpy()].to_csv(emb_csv)
    table = import_embeddings(emb_csv, attributes=attr_csv)
    assert set(table.ethnicity) == {0, 1} and len(table) == 24


# ---------------------------------------------------------------------------------------------- tables


def small_table() -> EmbeddingTable:
    lines = [(g, line) for g in ANNOTATIONS for line in ANNOTATIONS[g]]
    return EmbeddingTable(
        np.stack([vector(line) for _, line in lines]),
        np.array([line.split("/")[0] for _, line in lines], dtype=object),
        np.array([line.split("/")[1][:-4] for _, line in lines], dtype=object),
        np.array([ETHNICITIES.index(GROUP_LABEL[g][0]) for g, _ in lines], dtype=np.int8),
        np.array([GENDERS.index(GROUP_LABEL[g][1]) for g, _ in lines], dtype=np.int8), ETHNICITIES)


def table_csv(table: EmbeddingTable, path: Path, prefix: str = "e", names=None) -> Path:
    frame = pd.DataFrame({"identity": table.identity, "image": table.image,
                          "ethnicity": [ETHNICITIES[c].capitalize() for c in table.ethnicity],
                          "gender": [GENDERS[c] for c in table.gender]})
    features = pd.DataFrame(table.embeddings.astype(np.float64), columns=[f"{prefix}{k}" for k in range(table.dim)])
    frame = pd.concat([frame, features[features.columns[::-1]]], axis=1)  # embedding columns in any order
    if names:
        frame = frame.rename(columns=names)
    frame.to_csv(path, index=False, float_format="%.9g")
    return path


def test_parquet_table_and_mapped_columns(tmp_path):
    table = small_table()
    path = tmp_path / "t.parquet"
    write_table(table, path)
    assert detect_format(path) == "table"
    assert import_embeddings(path).fingerprint() == table.fingerprint()
    arrow = pq.read_table(path).rename_columns(["subject_id", "image", "race", "gender", "embedding"])
    pq.write_table(arrow, path)
    back = import_embeddings(path, columns={"identity": "subject_id", "ethnicity": "race"})
    assert back.fingerprint() == table.fingerprint()


def test_csv_table_with_e_columns_and_prefix_mapping(tmp_path):
    table = small_table()
    path = table_csv(table, tmp_path / "t.csv")
    assert detect_format(path) == "table"
    back = import_embeddings(path)
    assert np.array_equal(back.embeddings, table.embeddings)
    assert list(back.identity) == list(table.identity) and np.array_equal(back.ethnicity, table.ethnicity)
    other = table_csv(table, tmp_path / "o.csv", prefix="emb_", names={"identity": "person"})
    back = import_embeddings(other, "table", columns={"identity": "person", "embedding": "emb_"})
    assert back.fingerprint() == table.fingerprint()
    # the mapped prefix is enough to detect the form
    assert detect_format(other) == "uam-csv" and detect_format(other, "emb_") == "table"
    back = import_embeddings(other, columns={"identity": "person", "embedding": "emb_"})
    assert back.fingerprint() == table.fingerprint()


@pytest.mark.parametrize("edit,pattern", [
    (lambda f: f.drop(columns=["e3"]), r"t.csv: embedding column e3 is missing; expected e0 ... e5"),
    (lambda f: f.drop(columns=[f"e{k}" for k in range(D)]), r"t.csv: no embedding columns; expected columns e0"),
    (lambda f: f.assign(gender=["other"] + list(f["gender"][1:])),
     r"t.csv: column 'gender' of row 0 is 'other'; expected one of male, female"),
    (lambda f: f.assign(image=["same"] * len(f)), r"duplicate \(identity, image\) \('100016927@N02_identity_3', "
                                                  r"'same'\)"),
    (lambda f: f.assign(e2=[np.inf] + list(f["e2"][1:])), r"t.csv: embedding of data row 0 \(line 2\) has inf"),
    (lambda f: f.drop(columns=["image"]), r"t.csv: no image column"),
    (lambda f: f.assign(ethnicity=["asian"] + list(f["ethnicity"][1:]), gender=["female"] + list(f["gender"][1:])),
     r"identity '100016927@N02_identity_3' is labelled asian_female \(row 0\), asian_male"),
])
def test_csv_table_bad_input(tmp_path, edit, pattern):
    path = table_csv(small_table(), tmp_path / "t.csv")
    edit(pd.read_csv(path)).to_csv(path, index=False)
    with pytest.raises(InputError, match=pattern):
        import_embeddings(path, "table")


def _repeat_header_column(path: Path, column: str) -> None:
    """Append a copy of ``column`` under the same name (pandas would rename it "column.1")."""
    lines = path.read_text().splitlines()
    k = lines[0].split(",").index(column)
    path.write_text("\n".join(f"{line},{line.split(',')[k]}" for line in lines) + "\n")


@pytest.mark.parametrize("form", ["csv table", "csv table embedding", "parquet table", "uam attributes"])
def test_a_repeated_column_is_refused_naming_the_file_and_column(tmp_path, form):
    """Issue 21 item 7: a repeated column was silently read as its first (or renamed) copy."""
    if form.startswith("csv table"):
        path = table_csv(small_table(), tmp_path / "t.csv")
        column = "e0" if form.endswith("embedding") else "identity"
        _repeat_header_column(path, column)
        src, fmt = path, "table"
    elif form == "parquet table":
        path = tmp_path / "t.parquet"
        write_table(small_table(), path)
        arrow = pq.read_table(path)
        pq.write_table(arrow.append_column("identity", arrow.column("identity")), path)
        src, fmt, column = path, "table", "identity"
    else:
        _, path = uam_pair(tmp_path / "uam")
        column = "gender"
        _repeat_header_column(path, column)
        src, fmt = tmp_path / "uam", "uam-csv"
    with pytest.raises(InputError) as err:
        import_embeddings(src, fmt)
    assert str(err.value).startswith(f"{path}: column {column!r} appears twice"), str(err.value)


def test_options_that_do_not_apply_are_refused(tmp_path):
    root = diveface_folder(tmp_path / "root", groups=("Group1_Male",))
    with pytest.raises(InputError, match="column mapping .* applies to the table and uam-csv formats, not diveface"):
        import_embeddings(root, columns={"identity": "x"})
    with pytest.raises(InputError, match="format 'hdf5' is unknown"):
        import_embeddings(root, "hdf5")
    path = table_csv(small_table(), tmp_path / "t.csv")
    with pytest.raises(InputError, match="'age' is not a column of the table format"):
        import_embeddings(path, columns={"age": "years"})


def test_detect_format_refuses_what_it_cannot_tell(tmp_path):
    (tmp_path / "x.h5").write_text("?")
    with pytest.raises(InputError, match="cannot tell the format from the suffix '.h5'"):
        detect_format(tmp_path / "x.h5")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="cannot tell the format: no group folders"):
        detect_format(empty)


@pytest.mark.parametrize("fmt,option,message", [
    ("diveface", {"columns": {"identity": "x"}},
     r"^column mapping \(identity=x\) applies to the table and uam-csv formats, not diveface$"),
    ("table", {"identities": "lists"}, r"^identities \(lists\) applies to the npy format, not table$"),
    ("npy", {"attributes": "a.csv"}, r"^attributes \(a.csv\) applies to the uam-csv format, not npy$"),
])
def test_declared_options_decide_what_is_refused(tmp_path, fmt, option, message):
    assert FORMAT_NAMES == tuple(FORMATS) == ("diveface", "npy", "uam-csv", "table")
    src = tmp_path / "anything"
    src.mkdir()
    with pytest.raises(InputError, match=message):
        import_embeddings(src, fmt, **option)


# ---------------------------------------------------------------------------------------------- the registry


def read_jsonl(src: Path, columns: dict[str, str]) -> EmbeddingTable:
    """A toy format: one JSON object per line with identity, image, ethnicity, gender and embedding."""
    rows = [json.loads(line) for line in src.read_text().splitlines()]
    key = {k: columns.get(k, k) for k in ("identity", "image", "ethnicity", "gender", "embedding")}

    def column(name: str) -> np.ndarray:
        return np.array([r[key[name]] for r in rows], dtype=object)

    return EmbeddingTable(np.array([r[key["embedding"]] for r in rows], dtype=np.float32), column("identity"),
                          column("image"), np.array([ETHNICITIES.index(e) for e in column("ethnicity")], np.int8),
                          np.array([GENDERS.index(g) for g in column("gender")], np.int8), ETHNICITIES)


TOY = Format("toy", read_jsonl, "JSON lines", frozenset({"columns"}),
             lambda src, embedding_prefix: src.suffix == ".jsonl")


def test_a_registered_format_is_detected_imported_and_checked_then_gone(tmp_path, monkeypatch):
    table = small_table()
    src = tmp_path / "faces.jsonl"
    src.write_text("\n".join(json.dumps({"person": i, "image": m, "ethnicity": ETHNICITIES[e], "gender": GENDERS[g],
                                         "embedding": v.tolist()})
                             for i, m, e, g, v in zip(table.identity, table.image, table.ethnicity, table.gender,
                                                      table.embeddings)))
    npy_src = matrices(tmp_path / "m", ["Group1_Male"], sidecar=None)
    with monkeypatch.context() as m:
        m.setitem(FORMATS, "toy", TOY)
        assert detect_format(src) == "toy"
        back = import_embeddings(src, columns={"identity": "person"})
        assert back.fingerprint() == table.fingerprint()
        prefixed = import_embeddings(src, "toy", columns={"identity": "person"}, prefix_group=True)
        assert prefixed.identity[0] == "asian_male/" + table.identity[0]
        # Refusals follow the declared options: the toy takes a column mapping, not attributes ...
        with pytest.raises(InputError, match=r"^attributes \(a.csv\) applies to the uam-csv format, not toy$"):
            import_embeddings(src, "toy", attributes="a.csv")
        # ... and the messages of the other formats now name it.
        with pytest.raises(InputError, match=r"column mapping \(identity=x\) applies to the table, toy and uam-csv "
                                             r"formats, not npy$"):
            import_embeddings(npy_src, "npy", columns={"identity": "x"})
        with pytest.raises(InputError, match="expected one of diveface, npy, uam-csv, table, toy"):
            import_embeddings(src, "hdf5")
    assert "toy" not in FORMATS
    with pytest.raises(InputError, match="format 'toy' is unknown; expected one of diveface, npy, uam-csv, table$"):
        import_embeddings(src, "toy")
    with pytest.raises(InputError, match="cannot tell the format from the suffix '.jsonl'"):
        detect_format(src)
