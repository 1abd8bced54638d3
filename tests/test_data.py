"""Loaders, input checks and splits on tiny data."""

import numpy as np
import pytest

from pipeline.config import DataParams
from pipeline.data import complementary_keep, load_dataset, make_splits
from pipeline.errors import PipelineError


def test_splits_are_disjoint_and_sized() -> None:
    params = DataParams(n_members=50, n_test=30, n_shadow_pool=40, n_defender_reference=20)
    splits = make_splits(200, params, np.random.default_rng(0))
    parts = [splits.members, splits.nonmembers, splits.test, splits.shadow_pool, splits.defender_reference]
    assert [len(p) for p in parts] == [50, 50, 30, 40, 20]
    joined = np.concatenate(parts)
    assert len(np.unique(joined)) == len(joined)
    assert joined.min() >= 0 and joined.max() < 200


def test_splits_are_seeded() -> None:
    params = DataParams(n_members=10, n_test=10, n_shadow_pool=10, n_defender_reference=10)
    a = make_splits(100, params, np.random.default_rng(7))
    b = make_splits(100, params, np.random.default_rng(7))
    c = make_splits(100, params, np.random.default_rng(8))
    assert np.array_equal(a.members, b.members)
    assert not np.array_equal(a.members, c.members)


def test_sizes_that_do_not_fit_name_the_numbers() -> None:
    params = DataParams(n_members=100, n_test=50, n_shadow_pool=100, n_defender_reference=10)
    with pytest.raises(PipelineError) as info:
        make_splits(300, params, np.random.default_rng(0))
    message = str(info.value)
    assert "360" in message and "300" in message and "data.n_members" in message


def test_keep_matrix_is_balanced_both_ways() -> None:
    keep = complementary_keep(40, 6, np.random.default_rng(0))
    assert keep.shape == (6, 40)
    assert (keep.sum(axis=0) == 3).all()  # every point IN for exactly half the models
    assert (keep.sum(axis=1) == 20).all()  # every model trains on half the points
    assert not np.array_equal(keep[0], keep[2])


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
    assert abs(float(dataset.x[:, 0].mean())) < 1e-5  # standardized


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
    (tmp_path / "data/raw/bad.npz").write_bytes(b"not a zip")
    with pytest.raises(PipelineError, match="not a readable"):
        load_dataset(DataParams(dataset="npz", path="data/raw/bad.npz"), tmp_path)


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
