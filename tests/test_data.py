"""Loaders, input checks and splits on tiny data."""

import io

import numpy as np
import pytest

from pipeline.config import DataParams
from pipeline.data import defender_mask, load_dataset, make_splits, paired_keep, standardized
from pipeline.errors import PipelineError
from pipeline.types import Dataset


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
    assert 0.0 <= dataset.x.min() and dataset.x.max() <= 1.0


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


def test_csv_with_nan_is_rejected(tmp_path) -> None:
    rows = [["f", "label"]] + [[("nan" if i == 3 else i), i % 2] for i in range(30)]
    _write_csv(tmp_path / "data/raw/toy.csv", rows)
    with pytest.raises(PipelineError, match="1 NaN"):
        load_dataset(DataParams(dataset="csv", path="data/raw/toy.csv", min_per_class=2), tmp_path)


def test_missing_file_and_path_outside_raw(tmp_path) -> None:
    with pytest.raises(PipelineError, match="file not found"):
        load_dataset(DataParams(dataset="npz", path="data/raw/none.npz"), tmp_path)
    with pytest.raises(PipelineError, match="under data/raw"):
        load_dataset(DataParams(dataset="npz", path="../x.npz"), tmp_path)


def test_npz_loader_and_class_checks(tmp_path) -> None:
    (tmp_path / "data/raw").mkdir(parents=True)
    x = np.random.default_rng(0).normal(size=(30, 3))
    np.savez(tmp_path / "data/raw/ok.npz", x=x, y=np.array([0] * 28 + [1] * 2))
    with pytest.raises(PipelineError, match="class 1 .* 2 samples"):
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


def test_keras_loader_pools_and_scales(monkeypatch) -> None:
    """The real Keras loader code, with the download replaced by a local fixture."""
    from pipeline.tf_runtime import keras

    rng = np.random.default_rng(0)
    train = (rng.integers(0, 256, (20, 6, 6), dtype=np.uint8), np.arange(20) % 2)
    test = (rng.integers(0, 256, (10, 6, 6), dtype=np.uint8), np.arange(10) % 2)
    monkeypatch.setattr(keras.datasets.mnist, "load_data", lambda: (train, test))
    dataset = load_dataset(DataParams(dataset="mnist", min_per_class=5))
    assert dataset.x.shape == (30, 6, 6, 1)
    assert dataset.x.max() <= 1.0 and dataset.n_classes == 2


def test_keras_loader_without_network_is_a_clear_error(monkeypatch) -> None:
    from pipeline.tf_runtime import keras

    def offline():
        raise OSError("no route to host")

    monkeypatch.setattr(keras.datasets.cifar10, "load_data", offline)
    with pytest.raises(PipelineError, match="cifar10.*internet"):
        load_dataset(DataParams(dataset="cifar10"))


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
    from pipeline.models import architecture_for
    from pipeline.types import Dataset

    dataset = Dataset(x=np.zeros((4, 8, 8, 1), np.float32), y=np.arange(4) % 2, n_classes=2, name="digits")
    assert architecture_for(dataset, ModelParams(architecture="cnn", conv_filters=(16, 32, 64))).conv_filters == (16, 32, 64)
    with pytest.raises(PipelineError, match=r"^target.conv_filters: 4 conv blocks .* 8x8 images.* at most 3 fit"):
        architecture_for(dataset, ModelParams(architecture="cnn", conv_filters=(16, 32, 64, 128)))
