"""Loaders, input checks and splits on tiny data."""

import io

import numpy as np
import pytest

from pipeline.config import DataParams
from pipeline.core.errors import PipelineError
from pipeline.core.types import Dataset
from pipeline.datasets.loaders import load_dataset
from pipeline.datasets.splits import (
    defender_mask,
    make_splits,
    paired_keep,
    standardized,
)
from pipeline.datasets.tabular import read_table


def test_splits_are_disjoint_and_sized() -> None:
    params = DataParams(n_members=20, n_test=30, n_shadow_pool=40, n_defender_reference=20)
    splits = make_splits(200, params, np.random.default_rng(0))
    parts = [splits.members, splits.nonmembers, splits.test, splits.shadow_pool, splits.defender_reference]
    assert [len(p) for p in parts] == [20, 20, 30, 40, 20]
    joined = np.concatenate(parts)
    assert len(np.unique(joined)) == len(joined)
    assert joined.min() >= 0 and joined.max() < 200


def test_splits_are_seeded() -> None:
    params = DataParams(n_members=10, n_test=10, n_shadow_pool=20, n_defender_reference=10)
    a = make_splits(100, params, np.random.default_rng(7))
    b = make_splits(100, params, np.random.default_rng(7))
    c = make_splits(100, params, np.random.default_rng(8))
    assert np.array_equal(a.members, b.members)
    assert not np.array_equal(a.members, c.members)


def test_sizes_that_do_not_fit_name_the_numbers() -> None:
    params = DataParams(n_members=100, n_test=50, n_shadow_pool=200, n_defender_reference=10)
    with pytest.raises(PipelineError) as info:
        make_splits(300, params, np.random.default_rng(0))
    message = str(info.value)
    assert "460" in message and "300" in message and "data.n_members" in message


def test_paired_keep_trains_every_model_on_as_many_points_as_the_target() -> None:
    keep = paired_keep(40, 20, 6, np.random.default_rng(0))
    assert keep.shape == (6, 40)
    assert (keep.sum(axis=1) == 20).all()  # every model trains on train_size points
    assert (keep.sum(axis=0) == 3).all()  # 2 * train_size points: every point IN for exactly half
    assert not np.any(keep[0] & keep[1]) and not np.array_equal(keep[0], keep[2])
    larger = paired_keep(50, 20, 6, np.random.default_rng(0))
    assert (larger.sum(axis=1) == 20).all() and larger.sum(axis=0).max() <= 3
    with pytest.raises(PipelineError, match="at least 40 points"):
        paired_keep(39, 20, 2, np.random.default_rng(0))


def test_defender_mask_draws_as_many_untrained_eligible_points_per_model() -> None:
    keep = paired_keep(40, 10, 4, np.random.default_rng(1))
    eligible = np.arange(40) >= 30
    mask = defender_mask(keep, eligible, 3, np.random.default_rng(2))
    assert (mask.sum(axis=1) == 3).all()
    assert not np.any(mask & keep) and not np.any(mask & ~eligible)
    with pytest.raises(PipelineError, match="11 points needed"):
        defender_mask(keep, eligible, 11, np.random.default_rng(2))


def test_digits_default_loads_offline() -> None:
    dataset = load_dataset(DataParams())
    assert dataset.x.shape == (1797, 8, 8, 1)
    assert dataset.n_classes == 10
    assert dataset.x.min() >= 0.0 and dataset.x.max() <= 1.0


def _write_csv(path, rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(",".join(map(str, r)) for r in rows) + "\n")


def test_csv_loader(tmp_path) -> None:
    rows = [["f1", "f2", "label"]] + [[i, i * 2 % 7, "ab"[i % 2]] for i in range(40)]
    _write_csv(tmp_path / "data/raw/toy.csv", rows)
    dataset = load_dataset(DataParams(dataset="csv", path="data/raw/toy.csv", min_per_class=5), tmp_path)
    assert dataset.x.shape == (40, 2)
    assert dataset.n_classes == 2
    np.testing.assert_array_equal(dataset.x[:3, 0], [0, 1, 2])  # raw: standardised after the split


def test_standardization_uses_only_the_rows_it_is_fit_on() -> None:
    """Changing a member's features must not change any other row's standardised value."""
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 2.0, (100, 4)).astype(np.float32)
    pool = np.arange(50, 100)
    dataset = Dataset(x=x, y=np.zeros(100, np.int64), n_classes=2, name="toy")
    scaled = standardized(dataset, pool).x
    np.testing.assert_allclose(scaled[pool].mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(scaled[pool].std(axis=0), 1, atol=1e-4)
    x_changed = x.copy()
    x_changed[0] = 1e6  # a member with an extreme value
    rescaled = standardized(Dataset(x=x_changed, y=dataset.y, n_classes=2, name="toy"), pool).x
    np.testing.assert_array_equal(rescaled[1:], scaled[1:])
    images = Dataset(x=np.ones((4, 2, 2, 1), np.float32), y=np.zeros(4, np.int64), n_classes=2, name="img")
    assert standardized(images, np.arange(2)) is images


def test_csv_missing_label_column(tmp_path) -> None:
    _write_csv(tmp_path / "data/raw/toy.csv", [["a", "b"], [1, 2]])
    with pytest.raises(PipelineError, match="data.label_column"):
        load_dataset(DataParams(dataset="csv", path="data/raw/toy.csv"), tmp_path)


def test_missing_file_and_path_outside_raw(tmp_path) -> None:
    with pytest.raises(PipelineError, match="file not found"):
        load_dataset(DataParams(dataset="npz", path="data/raw/none.npz"), tmp_path)
    with pytest.raises(PipelineError, match="under data/raw"):
        load_dataset(DataParams(dataset="npz", path="../x.npz"), tmp_path)


def test_npz_loader_and_class_checks(tmp_path) -> None:
    (tmp_path / "data/raw").mkdir(parents=True)
    x = np.random.default_rng(0).normal(size=(30, 3))
    np.savez(tmp_path / "data/raw/ok.npz", x=x, y=np.array([0] * 28 + [1] * 2))
    with pytest.raises(PipelineError, match="label '1' of data/raw/ok.npz has 2 samples"):
        load_dataset(DataParams(dataset="npz", path="data/raw/ok.npz", min_per_class=5), tmp_path)
    np.savez(tmp_path / "data/raw/one.npz", x=x, y=np.zeros(30))
    with pytest.raises(PipelineError, match="at least 2"):
        load_dataset(DataParams(dataset="npz", path="data/raw/one.npz"), tmp_path)


def _npy_bytes() -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.zeros((4, 2)))
    return buffer.getvalue()


@pytest.mark.parametrize("content", [b"not a zip", b"PK\x03\x04cut short", _npy_bytes()])
def test_npz_that_is_not_a_zip_archive_is_one_line(tmp_path, content: bytes) -> None:
    (tmp_path / "data/raw").mkdir(parents=True)
    (tmp_path / "data/raw/bad.npz").write_bytes(content)  # text, a truncated zip, a bare .npy
    with pytest.raises(PipelineError, match=r"^data/raw/bad.npz: not an .npz archive; save .* numpy.savez") as info:
        load_dataset(DataParams(dataset="npz", path="data/raw/bad.npz"), tmp_path)
    assert "\n" not in str(info.value)


def test_csv_with_byte_order_mark_loads(tmp_path) -> None:
    path = tmp_path / "data/raw/bom.csv"
    path.parent.mkdir(parents=True)
    rows = ["label,f1,f2"] + [f"{i % 2},{i},{i * 3 % 5}" for i in range(20)]
    path.write_bytes(b"\xef\xbb\xbf" + "\n".join(rows).encode())  # as Excel saves "CSV UTF-8"
    dataset = load_dataset(DataParams(dataset="csv", path="data/raw/bom.csv", min_per_class=5), tmp_path)
    assert dataset.x.shape == (20, 2)  # the BOM did not hide the label column
    assert dataset.y.tolist() == [i % 2 for i in range(20)]


@pytest.mark.parametrize("content", ["f,label\ncaf\xe9,1\n".encode("latin-1"), bytes(range(256)) * 4])
def test_csv_that_is_not_utf8_is_one_line(tmp_path, content: bytes) -> None:
    path = tmp_path / "data/raw/bad.csv"
    path.parent.mkdir(parents=True)
    path.write_bytes(content)  # latin-1 text, a binary file
    with pytest.raises(PipelineError, match=r"^data/raw/bad.csv: not UTF-8 text; save it as a UTF-8 CSV") as info:
        load_dataset(DataParams(dataset="csv", path="data/raw/bad.csv"), tmp_path)
    assert "\n" not in str(info.value)


def test_numeric_labels_compare_as_numbers(tmp_path) -> None:
    """"1" and "1.0" are one class, and "10" sorts after "2", in a CSV and in an .npz."""
    labels = ["1", "1.0", "2", "10"] * 5
    _write_csv(tmp_path / "data/raw/toy.csv", [["f", "label"]] + [[i, v] for i, v in enumerate(labels)])
    np.savez(tmp_path / "data/raw/toy.npz", x=np.arange(20.0)[:, None], y=np.array(labels))
    expected = [0, 0, 1, 2] * 5
    for dataset in ("csv", "npz"):
        loaded = load_dataset(DataParams(dataset=dataset, path=f"data/raw/toy.{dataset}", min_per_class=5), tmp_path)
        assert loaded.n_classes == 3
        assert loaded.y.tolist() == expected


def test_csv_empty_label_names_the_line(tmp_path) -> None:
    rows = [["f", "label"]] + [[i, "" if i == 2 else "a"] for i in range(6)]
    _write_csv(tmp_path / "data/raw/toy.csv", rows)
    with pytest.raises(PipelineError, match=r"^data/raw/toy.csv: line 4 has an empty 'label' cell"):
        load_dataset(DataParams(dataset="csv", path="data/raw/toy.csv"), tmp_path)


def test_npz_labels_must_be_one_per_sample(tmp_path) -> None:
    (tmp_path / "data/raw").mkdir(parents=True)
    x, y = np.arange(40.0).reshape(20, 2), np.arange(20) % 2
    np.savez(tmp_path / "data/raw/column.npz", x=x, y=y[:, None])
    loaded = load_dataset(DataParams(dataset="npz", path="data/raw/column.npz", min_per_class=5), tmp_path)
    assert loaded.y.tolist() == y.tolist()  # (N, 1) is flattened
    np.savez(tmp_path / "data/raw/onehot.npz", x=x, y=np.eye(3)[y])
    with pytest.raises(PipelineError, match=r"^data/raw/onehot.npz: y must .* got \(20, 3\)"):
        load_dataset(DataParams(dataset="npz", path="data/raw/onehot.npz"), tmp_path)


def test_npz_without_rows_is_rejected(tmp_path) -> None:
    (tmp_path / "data/raw").mkdir(parents=True)
    np.savez(tmp_path / "data/raw/empty.npz", x=np.zeros((0, 3)), y=np.zeros(0))
    with pytest.raises(PipelineError, match=r"^data/raw/empty.npz: x and y have 0 rows"):
        load_dataset(DataParams(dataset="npz", path="data/raw/empty.npz"), tmp_path)


def test_npz_non_numeric_x_is_rejected(tmp_path) -> None:
    (tmp_path / "data/raw").mkdir(parents=True)
    np.savez(tmp_path / "data/raw/text.npz", x=np.array([["a", "b"]] * 4), y=np.arange(4))
    with pytest.raises(PipelineError, match=r"^data/raw/text.npz: x must be numeric"):
        load_dataset(DataParams(dataset="npz", path="data/raw/text.npz"), tmp_path)


def test_npz_uint8_images_are_scaled_to_unit_range(tmp_path, capsys) -> None:
    (tmp_path / "data/raw").mkdir(parents=True)
    x = np.random.default_rng(0).integers(0, 256, (20, 4, 4), dtype=np.uint8)
    x[0, 0, 0] = 255
    np.savez(tmp_path / "data/raw/images.npz", x=x, y=np.arange(20) % 2)
    loaded = load_dataset(DataParams(dataset="npz", path="data/raw/images.npz", min_per_class=5), tmp_path)
    assert loaded.x.shape == (20, 4, 4, 1)  # (N, H, W) gets its channel axis
    assert loaded.x.max() == 1.0 and loaded.x.min() >= 0.0
    assert np.allclose(loaded.x[..., 0], x / 255.0)
    assert capsys.readouterr().err == "data/raw/images.npz: uint8 images scaled by 1/255 to [0, 1]\n"


def test_npz_float_images_outside_unit_range_warn(tmp_path, capsys) -> None:
    (tmp_path / "data/raw").mkdir(parents=True)
    x = np.linspace(0.0, 255.0, 20 * 16).reshape(20, 4, 4, 1)
    np.savez(tmp_path / "data/raw/images.npz", x=x, y=np.arange(20) % 2)
    loaded = load_dataset(DataParams(dataset="npz", path="data/raw/images.npz", min_per_class=5), tmp_path)
    assert loaded.x.max() == 255.0  # kept as given
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("warning: data/raw/images.npz: image values range over [0, 255]")


def test_cnn_with_more_conv_blocks_than_the_image_allows() -> None:
    from pipeline.config import ModelParams
    from pipeline.core.types import Dataset
    from pipeline.training.target import architecture_for

    dataset = Dataset(x=np.zeros((4, 8, 8, 1), np.float32), y=np.arange(4) % 2, n_classes=2, name="digits")
    assert architecture_for(dataset, ModelParams(architecture="cnn", conv_filters=(16, 32, 64))).conv_filters == (16, 32, 64)
    with pytest.raises(PipelineError, match=r"^target.conv_filters: 4 conv blocks .* 8x8 images.* at most 3 fit"):
        architecture_for(dataset, ModelParams(architecture="cnn", conv_filters=(16, 32, 64, 128)))


def _csv_text(tmp_path, text: str, **params) -> Dataset:
    """Load `text` as data/raw/t.csv (written byte for byte) with csv params."""
    path = tmp_path / "data/raw/t.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode("utf-8") if isinstance(text, str) else text)
    return load_dataset(DataParams(dataset="csv", path="data/raw/t.csv", min_per_class=1, **params), tmp_path)


def _one_line_error(tmp_path, text: str, **params) -> str:
    with pytest.raises(PipelineError) as info:
        _csv_text(tmp_path, text, **params)
    assert "\n" not in str(info.value)
    return str(info.value)


@pytest.mark.parametrize("bom", [b"", b"\xef\xbb\xbf"])
@pytest.mark.parametrize("delimiter", [",", ";", "\t"])
def test_csv_delimiter_is_detected(tmp_path, delimiter: str, bom: bytes) -> None:
    rows = [["f1", "label", "f2"], ["0.5", "1", "-2"], ["1.25", "0", "3e2"], ["7", "1", "0"]]
    text = "\r\n".join(delimiter.join(row) for row in rows) + "\r\n"  # as Excel writes it
    dataset = _csv_text(tmp_path, bom + text.encode())
    np.testing.assert_array_equal(dataset.x, np.array([[0.5, -2], [1.25, 300], [7, 0]], np.float32))
    assert dataset.x.dtype == np.float32
    assert dataset.y.tolist() == [1, 0, 1]


def test_csv_delimiter_that_cannot_be_told_is_one_line(tmp_path) -> None:
    assert _one_line_error(tmp_path, "label\na\nb\n") == (
        "data/raw/t.csv: cannot tell the delimiter from the first 100 lines (candidates: ',', ';', tab); "
        "save the file with one of them between every two columns"
    )


def test_csv_blank_lines_are_skipped_anywhere(tmp_path) -> None:
    """Empty lines, and lines of only delimiters or whitespace, carry no sample; line numbers stay the file's."""
    text = "\nf,label\n\n1,a\n ,\n2,b\n\t\n,,\n3,a\n\n \n"
    dataset = _csv_text(tmp_path, text)
    np.testing.assert_array_equal(dataset.x, [[1], [2], [3]])
    assert dataset.y.tolist() == [0, 1, 0]
    assert _one_line_error(tmp_path, text + "4\n") == (
        "data/raw/t.csv: line 12 has 1 fields, header has 2 (delimiter ','); give every row one value per column"
    )


def test_csv_trailing_blank_line_after_a_digits_sized_table(tmp_path) -> None:
    """A 1,797-row table whose last line holds only whitespace loads all its rows (issue 11: "line 1799")."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    header = ",".join([f"p{i}" for i in range(64)] + ["label"])
    rows = [",".join([*map(str, x.astype(int)), str(y)]) for x, y in zip(digits.data, digits.target)]
    dataset = _csv_text(tmp_path, "\n".join([header, *rows]) + "\n \n\n")
    assert dataset.x.shape == (1797, 64)
    np.testing.assert_array_equal(dataset.x, digits.data.astype(np.float32))
    np.testing.assert_array_equal(dataset.y, digits.target)


def test_csv_string_labels_are_classes_in_sorted_order(tmp_path) -> None:
    dataset = _csv_text(tmp_path, "f,label\n1,dog\n2,cat\n3, emu \n4,cat\n5,Dog\n")
    assert dataset.y.tolist() == [2, 1, 3, 1, 0]  # Dog < cat < dog < emu; cells are stripped
    assert dataset.n_classes == 4


def test_csv_categorical_columns_are_one_hot_encoded_in_sorted_order(tmp_path) -> None:
    text = "size,colour,label,grade\n1.5,red,a,A\n2,blue,b,x\n3,red ,a,10\n4,green,b,A\n"
    dataset = _csv_text(tmp_path, text)
    expected = [  # size, colour=blue, colour=green, colour=red, grade=10, grade=A, grade=x
        [1.5, 0, 0, 1, 0, 1, 0],
        [2.0, 1, 0, 0, 0, 0, 1],
        [3.0, 0, 0, 1, 1, 0, 0],
        [4.0, 0, 1, 0, 0, 1, 0],
    ]
    np.testing.assert_array_equal(dataset.x, np.array(expected, np.float32))
    table = read_table(tmp_path / "data/raw/t.csv", "t.csv", "label")
    assert table.feature_names == ("size", "colour=blue", "colour=green", "colour=red", "grade=10", "grade=A", "grade=x")
    assert table.labels.tolist() == ["a", "b", "a", "b"]
    assert table.one_hot == {"colour": 3, "grade": 3}  # a column mostly of text, one number among its values


def test_csv_categorical_error_names_line_column_value_and_fix(tmp_path) -> None:
    text = "size,colour,label\n1,blue,a\n2,3,b\n3,red,a\n"
    assert _one_line_error(tmp_path, text, categorical="error") == (
        "data/raw/t.csv: line 2 has the non-numeric 'colour' value 'blue'; make the column numeric, "
        "or set data.categorical: one_hot to one-hot encode it"
    )
    numeric = text.replace("blue", "2").replace("red", "4")
    assert _csv_text(tmp_path, numeric, categorical="error").x[:, 1].tolist() == [2, 3, 4]


def test_csv_empty_feature_cell_names_line_and_column(tmp_path) -> None:
    assert _one_line_error(tmp_path, "f,g,label\n1,2,a\n3, ,b\n") == (
        "data/raw/t.csv: line 3 has an empty 'g' cell; fill it in or drop the row (nothing is imputed)"
    )


def test_csv_extra_columns_are_returned_raw_and_kept_out_of_the_features(tmp_path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("f,member,label,note\n1,1,a, x\n2,0,b,y\n")
    table = read_table(path, "t.csv", "label", extra_columns=("member", "note"))
    np.testing.assert_array_equal(table.features, np.array([[1], [2]], np.float32))
    assert table.feature_names == ("f",)
    assert table.extra["member"].tolist() == ["1", "0"] and table.extra["note"].tolist() == [" x", "y"]
    with pytest.raises(PipelineError) as info:
        read_table(path, "t.csv", "label", extra_columns=("in_training",))
    assert str(info.value) == (
        "t.csv: has no column 'in_training' (columns: f, member, label, note); add it or name one of these"
    )


@pytest.mark.parametrize(
    "text, message",
    [
        (",f,label\n0,1,a\n", "column 1 has no name in the header; name it or drop it (pandas writes its row index so: save with to_csv(index=False))"),
        ("f,f,label\n0,1,a\n", "column 'f' appears twice in the header; rename one of them"),
        ("f,g,label\n1,2,a\n3,b\n", "line 3 has 2 fields, header has 3 (delimiter ','); give every row one value per column"),
        ('f,label\n1,"a\n2,b\n', "line 3 is not readable CSV (unexpected end of data); fix its quotes"),
        ("f,label\n\n", "needs a header row and at least one data row"),
    ],
)
def test_csv_malformed_tables_are_one_line(tmp_path, text: str, message: str) -> None:
    assert _one_line_error(tmp_path, text) == f"data/raw/t.csv: {message}"


def test_csv_without_feature_columns_is_one_line(tmp_path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("member,label\n1,a\n0,b\n")
    with pytest.raises(PipelineError, match=r"^t.csv: no feature columns besides 'label', 'member'; add some$"):
        read_table(path, "t.csv", "label", extra_columns=("member",))
