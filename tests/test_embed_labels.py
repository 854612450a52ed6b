"""Image listing and labels for `biasgrid data embed`: each source on small folders made here, and bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from storage.errors import InputError
from storage.images import (compile_pattern, list_diveface, list_images, list_manifest, list_pattern,
                            parse_value_maps)

# Real identity and image names from DiveFace's annotation lists (../shared/seed/diveface-annotations-excerpt).
DIVEFACE = {
    "HA4K_120": ["100016927@N02_identity_3/9468622319_4.jpg", "100016927@N02_identity_3/9468622901_6.jpg",
                 "100034050@N05_identity_10/12172723905_0.jpg"],
    "Group3_Female": ["100003507@N04_identity_4/9872090876_0.jpg", "100003507@N04_identity_4/9872098154_0.jpg"],
    "black_male": ["100001044@N04_identity_2/11459962594_0.jpg"],
}


def write_image(path: Path, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def diveface(root: Path) -> Path:
    for group, lines in DIVEFACE.items():
        for k, line in enumerate(lines):
            write_image(root / group / line, k)
    return root


def as_rows(images) -> set[tuple[str, str, str, str]]:
    return set(zip(images.identity, images.image, images.ethnicity, images.gender))


# ------------------------------------------------------------------------------------------------ diveface


def test_diveface_layout_any_group_naming_and_parent_folder(tmp_path):
    root = diveface(tmp_path / "DiveFace" / "4K_120")
    (root / "HA4K_120" / "100016927@N02_identity_3" / "notes.txt").write_text("ignored")
    for src in (root, tmp_path / "DiveFace"):  # the groups' folder, or its parent holding only it
        images = list_images(src)
        assert len(images) == 6 and not images.own_identities
        assert as_rows(images) == {
            ("100016927@N02_identity_3", "9468622319_4", "asian", "male"),
            ("100016927@N02_identity_3", "9468622901_6", "asian", "male"),
            ("100034050@N05_identity_10", "12172723905_0", "asian", "male"),
            ("100003507@N04_identity_4", "9872090876_0", "caucasian", "female"),
            ("100003507@N04_identity_4", "9872098154_0", "caucasian", "female"),
            ("100001044@N04_identity_2", "11459962594_0", "black", "male")}
        assert all(Path(p).is_file() and Path(p).is_absolute() for p in images.path)
        assert list(images.path) == sorted(images.path)
        assert images.groups() == {"asian_male": 3, "black_male": 1, "caucasian_female": 2}


@pytest.mark.parametrize("make, message", [
    (lambda r: write_image(r / "Group9_Male" / "id" / "a.jpg"), "'Group9_Male' is not a known group"),
    (lambda r: (write_image(r / "HA4K_120" / "id" / "a.jpg"), write_image(r / "Group1_Male" / "id2" / "b.jpg")),
     "are the same group asian_male"),
    (lambda r: write_image(r / "HA4K_120" / "a.jpg"), "lies directly in the group folder"),
    (lambda r: (r / "HA4K_120" / "id").mkdir(parents=True), "identity folder has no images"),
    (lambda r: (write_image(r / "HA4K_120" / "id" / "a.jpg"), write_image(r / "MA4K_120" / "id" / "b.jpg")),
     "identity 'id' appears in both"),
    (lambda r: write_image(r / "HA4K_120" / "id" / "sub" / "a.jpg"), "unexpected folder 'sub'"),
])
def test_diveface_refusals(tmp_path, make, message):
    root = tmp_path / "faces"
    root.mkdir()
    make(root)
    with pytest.raises(InputError, match=message):
        list_diveface(root)


def test_missing_source_is_refused(tmp_path):
    with pytest.raises(InputError, match="no such file or folder"):
        list_images(tmp_path / "nowhere")


# ------------------------------------------------------------------------------------------------ manifest


def test_manifest_csv_with_mapped_columns_and_value_maps(tmp_path):
    for k in range(4):
        write_image(tmp_path / "img" / f"{k}.png", k)
    pd.DataFrame({"file": ["img/0.png", "img/1.png", "img/2.png", str(tmp_path / "img" / "3.png")],
                  "subject": ["s1", "s1", "s2", "s3"],
                  "race": ["  East   Asian ", "east asian", "Black", "Latino_Hispanic"],
                  "sex": ["0", "0", "1", "0"]}).to_csv(tmp_path / "faces.csv", index=False)
    images = list_manifest(tmp_path / "faces.csv", columns={"path": "file", "identity": "subject",
                                                             "ethnicity": "race", "gender": "sex"},
                           values=parse_value_maps(["gender=0:male,1:female"]))
    assert as_rows(images) == {("s1", "0", "east asian", "male"), ("s1", "1", "east asian", "male"),
                               ("s2", "2", "black", "female"), ("s3", "3", "latino_hispanic", "male")}
    assert not images.own_identities


def test_manifest_parquet_without_identity_each_image_is_its_own(tmp_path):
    for k in range(3):
        write_image(tmp_path / "a" / f"x{k}.jpg", k)
    pd.DataFrame({"path": ["a/x0.jpg", "a/x1.jpg", "a/x2.jpg"], "ethnicity": ["Indian", "white", "asian"],
                  "gender": ["M", "woman", "Female"]}).to_parquet(tmp_path / "m.parquet")
    images = list_images(tmp_path / "m.parquet")
    assert images.own_identities
    assert as_rows(images) == {("a/x0", "x0", "indian", "male"), ("a/x1", "x1", "white", "female"),
                               ("a/x2", "x2", "asian", "female")}


@pytest.mark.parametrize("rows, kwargs, message", [
    ({"path": ["0.png"], "ethnicity": ["asian"], "gender": ["x"]}, {},
     r"line 2, column 'gender': gender is 'x'; expected male or female"),
    ({"path": ["0.png"], "ethnicity": ["asian"], "gender": ["1"]}, {}, "0/1 codes need a value map"),
    ({"path": ["0.png"], "ethnicity": ["asian"], "gender": ["2"]}, {"values": {"gender": {"0": "male", "1": "female"}}},
     r"line 2, column 'gender': gender is '2'; expected one of the value map's keys '0', '1'"),
    ({"path": ["0.png"], "ethnicity": [" "], "gender": ["m"]}, {}, r"line 2, column 'ethnicity': ethnicity is empty"),
    ({"path": ["0.png", "nope.png"], "ethnicity": ["a", "a"], "gender": ["m", "m"]}, {},
     r"line 3: path 'nope.png': no such file"),
    ({"path": ["0.png"], "race": ["asian"], "sex": ["m"]}, {}, r"no column 'gender' \(gender\)"),
    ({"path": ["0.png"], "ethnicity": ["asian"], "gender": ["m"]}, {"columns": {"subject": "id"}},
     "'subject' is not a manifest column"),
    ({"path": ["0.png", "1.png"], "identity": ["p", "p"], "ethnicity": ["asian", "black"], "gender": ["m", "m"]}, {},
     r"identity 'p' is asian male at .*line 2 but black male at .*line 3; expected one ethnicity"),
    ({"path": ["0.png", "0.png"], "ethnicity": ["a", "a"], "gender": ["m", "m"]}, {}, "name the same file"),
])
def test_manifest_refusals_name_the_row_and_field(tmp_path, rows, kwargs, message):
    write_image(tmp_path / "0.png")
    write_image(tmp_path / "1.png", 1)
    pd.DataFrame(rows).to_csv(tmp_path / "m.csv", index=False)
    with pytest.raises(InputError, match=message):
        list_manifest(tmp_path / "m.csv", **kwargs)


# ------------------------------------------------------------------------------------------------ pattern

UTK_VALUES = ["gender=0:male,1:female", "ethnicity=0:white,1:black,2:asian,3:indian,4:other"]


def test_utkface_style_pattern(tmp_path):
    names = ["26_0_2_20170104023102422.jpg.chip.jpg", "54_1_0_20170109012317431.jpg.chip.jpg",
             "1_1_4_20161221193022127.jpg.chip.jpg"]
    for k, name in enumerate(names):
        write_image(tmp_path / "UTKFace" / "part1" / name, k)
    images = list_pattern(tmp_path / "UTKFace", "{age}_{gender}_{ethnicity}_{*}", values=parse_value_maps(UTK_VALUES))
    assert images.own_identities
    assert as_rows(images) == {
        ("part1/26_0_2_20170104023102422.jpg.chip", "26_0_2_20170104023102422.jpg.chip", "asian", "male"),
        ("part1/54_1_0_20170109012317431.jpg.chip", "54_1_0_20170109012317431.jpg.chip", "white", "female"),
        ("part1/1_1_4_20161221193022127.jpg.chip", "1_1_4_20161221193022127.jpg.chip", "other", "female")}


def test_pattern_with_identity_field(tmp_path):
    for k, name in enumerate(["p01-F-African-1.png", "p01-F-African-2.png", "p02-m-Asian-1.png"]):
        write_image(tmp_path / name, k)
    images = list_images(tmp_path, pattern="{identity}-{gender}-{ethnicity}-{n}")
    assert not images.own_identities
    assert as_rows(images) == {("p01", "p01-F-African-1", "african", "female"),
                               ("p01", "p01-F-African-2", "african", "female"),
                               ("p02", "p02-m-Asian-1", "asian", "male")}


def test_pattern_refusals(tmp_path):
    write_image(tmp_path / "39_1_20170116174525125.jpg.chip.jpg")  # a real UTKFace name with a field missing
    with pytest.raises(InputError, match=r"39_1_20170116174525125.jpg.chip' does not match the pattern "
                                         r"'\{age\}_\{gender\}_\{ethnicity\}_\{\*\}' \(1 of 1 files"):
        list_pattern(tmp_path, "{age}_{gender}_{ethnicity}_{*}", values=parse_value_maps(UTK_VALUES))
    (tmp_path / "39_1_20170116174525125.jpg.chip.jpg").unlink()
    write_image(tmp_path / "20_7_0_1.jpg")
    with pytest.raises(InputError, match=r"20_7_0_1.jpg .*gender is '7'; expected one of the value map's keys"):
        list_pattern(tmp_path, "{age}_{gender}_{ethnicity}_{*}", values=parse_value_maps(UTK_VALUES))
    with pytest.raises(InputError, match=r"no \{gender\} field"):
        compile_pattern("{age}_{ethnicity}")
    with pytest.raises(InputError, match=r"field \{age\} appears twice"):
        compile_pattern("{age}_{age}_{gender}_{ethnicity}")
    with pytest.raises(InputError, match="unbalanced brace"):
        compile_pattern("{gender}_{ethnicity}_{x")


def test_value_map_refusals():
    with pytest.raises(InputError, match="not ethnicity, gender or an attribute"):
        parse_value_maps(["path=0:young"])
    with pytest.raises(InputError, match="'0-male' is not RAW:VALUE"):
        parse_value_maps(["gender=0-male"])
    with pytest.raises(InputError, match="'x' is not a gender"):
        parse_value_maps(["gender=0:x"])


def test_parquet_manifest_with_integer_codes_and_a_root(tmp_path):
    for k in range(2):
        write_image(tmp_path / "pics" / f"{k}.jpg", k)
    pd.DataFrame({"path": ["0.jpg", "1.jpg"], "identity": [7, 8], "ethnicity": [0, 2],
                  "gender": [1, 0]}).to_parquet(tmp_path / "m.parquet")
    images = list_images(tmp_path / "m.parquet", root=tmp_path / "pics",
                         values=parse_value_maps(["gender=0:male,1:female", "ethnicity=0:white,2:asian"]))
    assert as_rows(images) == {("7", "0", "white", "female"), ("8", "1", "asian", "male")}
    with pytest.raises(InputError, match=r"m.parquet row 0, column 'gender': gender is '1'; expected male or female"):
        list_images(tmp_path / "m.parquet", root=tmp_path / "pics")


def test_options_that_do_not_fit_the_layout_are_refused(tmp_path):
    diveface(tmp_path / "df")
    with pytest.raises(InputError, match="value maps apply to manifests and name patterns"):
        list_images(tmp_path / "df", values={"gender": {"0": "male"}})
    with pytest.raises(InputError, match="a column mapping applies to manifests"):
        list_images(tmp_path / "df", columns={"path": "file"})
    with pytest.raises(InputError, match="image layout 'utkface' is unknown"):
        list_images(tmp_path / "df", layout="utkface")
    with pytest.raises(InputError, match="the pattern layout needs a name pattern"):
        list_images(tmp_path / "df", layout="pattern")
