"""The embedding table: Parquet round trip, schema, validation and atomic writes."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from storage.errors import InputError
from storage.attributes import default_groups
from storage.table import EmbeddingTable, read_parquet_table, read_table, validate_table, write_table
from storage.vocab import ETHNICITIES, GENDERS


def make_table(n_ids: int = 12, per_id: int = 3, d: int = 8, seed: int = 0) -> EmbeddingTable:
    rng = np.random.default_rng(seed)
    n = n_ids * per_id
    ids = np.repeat(np.arange(n_ids), per_id)
    return EmbeddingTable(
        embeddings=rng.standard_normal((n, d), dtype=np.float32),
        identity=np.array([f"person_{i:03d}" for i in ids], dtype=object),
        image=np.array([f"img_{j}" for j in np.tile(np.arange(per_id), n_ids)], dtype=object),
        ethnicity=(ids % 3).astype(np.int8),
        gender=((ids // 3) % 2).astype(np.int8),
        ethnicities=("asian", "caucasian", "black"),
    )


def replace(table: EmbeddingTable, **changes) -> EmbeddingTable:
    fields = dict(embeddings=table.embeddings, identity=table.identity, image=table.image,
                  ethnicity=table.ethnicity, gender=table.gender, ethnicities=table.ethnicities)
    fields.update(changes)
    return EmbeddingTable(**fields)


def test_round_trip_keeps_every_value_and_label(tmp_path):
    table = make_table()
    path = tmp_path / "t.parquet"
    write_table(table, path)
    back = read_table(path)
    assert back.embeddings.dtype == np.float32 and back.embeddings.flags.c_contiguous
    assert back.embeddings.tobytes() == table.embeddings.tobytes()
    assert list(back.identity) == list(table.identity)
    assert list(back.image) == list(table.image)
    assert np.array_equal(back.ethnicity, table.ethnicity) and back.ethnicity.dtype == np.int8
    assert np.array_equal(back.gender, table.gender) and back.gender.dtype == np.int8
    assert back.fingerprint() == table.fingerprint()
    assert len(back) == 36 and back.dim == 8


def test_parquet_schema_and_row_groups(tmp_path):
    table = make_table(n_ids=3000, per_id=3, d=5)  # 9000 rows -> 2 row groups of at most 8192
    path = tmp_path / "t.parquet"
    write_table(table, path)
    pf = pq.ParquetFile(path)
    schema = pf.schema_arrow
    assert schema.field("identity").type == pa.string()
    assert schema.field("ethnicity").type == pa.string()
    emb = schema.field("embedding").type
    assert pa.types.is_fixed_size_list(emb) and emb.list_size == 5 and emb.value_type == pa.float32()
    assert pf.metadata.num_row_groups == 2
    assert max(pf.metadata.row_group(i).num_rows for i in range(2)) <= 8192
    labels = pq.read_table(path, columns=["ethnicity", "gender"]).to_pydict()
    assert set(labels["ethnicity"]) == set(ETHNICITIES) and set(labels["gender"]) == set(GENDERS)


def test_any_dimension_and_list_float_column(tmp_path):
    table = make_table(d=3)
    path = tmp_path / "list.parquet"
    flat = pa.array(table.embeddings.reshape(-1).astype(np.float64))
    offsets = pa.array(np.arange(0, len(table) * 3 + 1, 3, dtype=np.int32))
    pq.write_table(pa.table({
        "identity": list(table.identity), "image": list(table.image),
        "ethnicity": [ETHNICITIES[c].upper() for c in table.ethnicity],  # case is ignored
        "gender": [GENDERS[c] for c in table.gender],
        "embedding": pa.ListArray.from_arrays(offsets, flat)}), path, row_group_size=7)
    back = read_table(path)
    assert back.dim == 3 and back.embeddings.dtype == np.float32
    assert np.array_equal(back.embeddings, table.embeddings)
    assert np.array_equal(back.ethnicity, table.ethnicity)


def test_list_float_column_with_mixed_lengths_is_refused(tmp_path):
    path = tmp_path / "mixed.parquet"
    pq.write_table(pa.table({
        "identity": ["a", "b", "c"], "image": ["1", "1", "1"], "ethnicity": ["asian"] * 3,
        "gender": ["male"] * 3, "embedding": [[0.1, 0.2], [0.3, 0.4], [0.5]]}), path)
    with pytest.raises(InputError, match=r"mixed\.parquet.*row 2 has 1 values, expected 2"):
        read_table(path)


@pytest.mark.parametrize("column,value,pattern", [
    ("ethnicity", "asian+black", r"column 'ethnicity': 'asian\+black' cannot name an ethnicity group"),
    ("ethnicity", " All ", r"column 'ethnicity': 'all' cannot name an ethnicity group"),
    ("gender", "other", r"'gender' of row 1 is 'other'; expected one of male, female"),
])
def test_labels_outside_the_known_values_are_refused(tmp_path, column, value, pattern):
    table = make_table()
    path = tmp_path / "t.parquet"
    write_table(table, path)
    arrow = pq.read_table(path)
    values = arrow.column(column).to_pylist()
    values[1] = value
    arrow = arrow.set_column(arrow.schema.get_field_index(column), column, pa.array(values))
    pq.write_table(arrow, path)
    with pytest.raises(InputError, match=pattern):
        read_table(path)


def test_missing_file_not_parquet_and_missing_columns(tmp_path):
    with pytest.raises(InputError, match="nope.parquet: no such file"):
        read_table(tmp_path / "nope.parquet")
    bad = tmp_path / "bad.parquet"
    bad.write_text("not parquet")
    with pytest.raises(InputError, match="bad.parquet: not a readable Parquet file"):
        read_table(bad)
    partial = tmp_path / "partial.parquet"
    pq.write_table(pa.table({"identity": ["a"], "embedding": [[1.0]]}), partial)
    with pytest.raises(InputError, match=r"missing column\(s\) image, gender;"):
        read_table(partial)


def test_null_embedding_is_refused(tmp_path):
    path = tmp_path / "null.parquet"
    emb = pa.array([[1.0, 2.0], None], type=pa.list_(pa.float32(), 2))
    pq.write_table(pa.table({"identity": ["a", "b"], "image": ["1", "1"], "ethnicity": ["asian"] * 2,
                             "gender": ["male"] * 2, "embedding": emb}), path)
    with pytest.raises(InputError, match="'embedding' of row 1 is missing"):
        read_table(path)


def test_read_with_column_mapping(tmp_path):
    table = make_table()
    path = tmp_path / "other.parquet"
    write_table(table, path)
    arrow = pq.read_table(path).rename_columns(["subject", "image", "ethnicity", "sex", "features"])
    pq.write_table(arrow, path)
    back = read_parquet_table(path, {"identity": "subject", "gender": "sex", "embedding": "features"})
    assert back.fingerprint() == table.fingerprint()
    with pytest.raises(InputError, match="unknown table column 'age'"):
        read_parquet_table(path, {"age": "years"})


def test_validate_names_the_row_with_nan_or_inf():
    table = make_table()
    emb = table.embeddings.copy()
    emb[7, 2] = np.inf
    with pytest.raises(InputError, match=r"src: embedding of row 7 \(identity 'person_002', image 'img_1'\) has inf"):
        validate_table(replace(table, embeddings=emb), "src")


def test_validate_refuses_duplicates_and_mixed_identities():
    table = make_table()
    image = table.image.copy()
    image[1] = image[0]
    with pytest.raises(InputError, match=r"duplicate \(identity, image\) \('person_000', 'img_0'\) at rows 0, 1"):
        validate_table(replace(table, image=image), "src")
    gender = table.gender.copy()
    gender[1] = 1 - gender[0]
    with pytest.raises(InputError, match="identity 'person_000' is labelled asian_male .*asian_female"):
        validate_table(replace(table, gender=gender), "src")


def test_validate_refuses_bad_types_codes_and_empty_tables():
    table = make_table()
    with pytest.raises(InputError, match="float32"):
        validate_table(replace(table, embeddings=table.embeddings.astype(np.float64)), "src")
    with pytest.raises(InputError, match="code 5 at row 0"):
        validate_table(replace(table, ethnicity=np.full(len(table), 5, dtype=np.int8)), "src")
    with pytest.raises(InputError, match="'identity' of row 3 is ''"):
        identity = table.identity.copy()
        identity[3] = ""
        validate_table(replace(table, identity=identity), "src")
    empty = EmbeddingTable(np.zeros((0, 4), np.float32), np.array([], dtype=object), np.array([], dtype=object),
                           np.array([], np.int8), np.array([], np.int8), ("asian",))
    with pytest.raises(InputError, match="no rows"):
        validate_table(empty, "src")


def test_write_is_atomic_and_refuses_bad_tables(tmp_path):
    good = make_table()
    path = tmp_path / "sub" / "t.parquet"
    write_table(good, path)  # creates the parent folder
    before = path.read_bytes()
    emb = good.embeddings.copy()
    emb[0, 0] = np.nan
    with pytest.raises(InputError, match="NaN"):
        write_table(replace(good, embeddings=emb), path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["t.parquet"]  # no temporary file left


def test_identity_codes_follow_sorted_names_not_row_order():
    table = make_table()
    codes = table.identity_codes()
    assert len(np.unique(codes)) == 12
    order = np.random.default_rng(3).permutation(len(table))
    shuffled = EmbeddingTable(table.embeddings[order], table.identity[order], table.image[order],
                              table.ethnicity[order], table.gender[order], table.ethnicities)
    assert np.array_equal(shuffled.identity_codes(), codes[order])


def test_fingerprint_sees_every_column():
    table = make_table()
    base = table.fingerprint()
    assert make_table().fingerprint() == base
    emb = table.embeddings.copy()
    emb[5, 5] += 1e-3
    image = table.image.copy()
    image[0] = "img_x"
    gender = table.gender.copy()
    gender[:3] = 1 - gender[:3]
    for changed in (replace(table, embeddings=emb), replace(table, image=image), replace(table, gender=gender)):
        assert changed.fingerprint() != base


def test_demographic_groups():
    table = make_table()
    groups = default_groups(table).per_row()
    assert groups[0] == "asian_male" and groups[3] == "caucasian_male" and groups[9 * 3] == "asian_female"


def test_the_vocabulary_is_not_re_exported():
    import storage.table

    assert not {"ETHNICITIES", "GENDERS", "DEMOGRAPHIC_GROUPS"} & set(vars(storage.table))


def test_integer_ids_are_read_as_text_and_float_ids_refused(tmp_path):
    table = make_table()
    path = tmp_path / "t.parquet"
    write_table(table, path)
    arrow = pq.read_table(path)
    ids = pa.array([int(s.split("_")[1]) for s in table.identity], pa.int64())
    pq.write_table(arrow.set_column(0, "identity", ids), path)
    back = read_table(path)
    assert list(back.identity) == [str(int(s.split("_")[1])) for s in table.identity]
    assert np.array_equal(back.embeddings, table.embeddings)
    pq.write_table(arrow.set_column(0, "identity", ids.cast(pa.float64())), path)
    with pytest.raises(InputError, match=r"t.parquet: column 'identity' has type double; expected strings"):
        read_table(path)


def test_any_ethnicity_groups_round_trip_with_their_vocabulary(tmp_path):
    """RFW's four groups (or any names): read back with the table's own ordered vocabulary; the study's names keep
    the study's codes, other names come after them, sorted; the names are part of the fingerprint."""
    table = make_table()
    path = tmp_path / "t.parquet"
    write_table(table, path)
    arrow = pq.read_table(path)
    relabel = {"asian": "Asian", "caucasian": " Indian", "black": "AFRICAN "}
    names = [relabel[v] for v in arrow.column("ethnicity").to_pylist()]
    arrow = arrow.set_column(arrow.schema.get_field_index("ethnicity"), "ethnicity", pa.array(names))
    pq.write_table(arrow, path)
    back = read_table(path)
    assert back.ethnicities == ("asian", "african", "indian")
    expected = [v.strip().lower() for v in names]
    assert list(np.asarray(back.ethnicities, dtype=object)[back.ethnicity]) == expected
    assert back.fingerprint() != table.fingerprint()
    write_table(back, tmp_path / "again.parquet")
    again = read_table(tmp_path / "again.parquet")
    assert again.ethnicities == back.ethnicities and again.fingerprint() == back.fingerprint()


def test_optional_face_detected_column(tmp_path):
    table = make_table()
    flags = np.arange(len(table)) % 3 != 0
    marked = replace(table, face_detected=flags)
    write_table(marked, tmp_path / "faces.parquet")
    back = read_table(tmp_path / "faces.parquet")
    assert np.array_equal(back.face_detected, flags) and back.fingerprint() == marked.fingerprint()
    # the failures are data (the verification's failure to acquire reads them); a column of True says nothing more
    assert marked.fingerprint() != table.fingerprint()
    assert replace(table, face_detected=~flags).fingerprint() not in (table.fingerprint(), marked.fingerprint())
    assert replace(table, face_detected=np.ones(len(table), bool)).fingerprint() == table.fingerprint()
    write_table(table, tmp_path / "plain.parquet")
    assert read_table(tmp_path / "plain.parquet").face_detected is None
    assert "face_detected" not in pq.read_schema(tmp_path / "plain.parquet").names
    with pytest.raises(InputError, match="'face_detected' must be a 1-D bool array"):
        validate_table(replace(table, face_detected=flags.astype(np.int8)), "t")
    t = pq.read_table(tmp_path / "faces.parquet")
    pq.write_table(t.set_column(t.schema.get_field_index("face_detected"), "face_detected",
                                pa.array(flags.astype(np.int32))), tmp_path / "ints.parquet")
    with pytest.raises(InputError, match="column 'face_detected' has type int32"):
        read_table(tmp_path / "ints.parquet")
