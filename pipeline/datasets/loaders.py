"""Dataset loaders and input checks.

The default `digits` dataset ships inside scikit-learn, so the default
pipeline needs no network. `mnist`, `fashion_mnist` and `cifar10` use the
Keras downloaders (internet needed once, or their files placed in Keras's
cache folder); `csv` and `npz` read a user's file under `data/raw/`.
"""

from __future__ import annotations

import contextlib
import os
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from pipeline.config import DataParams
from pipeline.core.errors import PipelineError
from pipeline.core.types import Dataset
from pipeline.datasets.members import rows_from_column, rows_from_index_file
from pipeline.datasets.tabular import read_table

RAW_DIR = "data/raw"  # users' own files; the prepare stage depends on this folder

Loaded = tuple[np.ndarray, np.ndarray, "np.ndarray | None"]  # features, labels, the data.member_column cells


def _digits(params: DataParams, root: Path) -> Loaded:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = (bunch.images / 16.0).astype(np.float32)[..., None]  # (N, 8, 8, 1) in [0, 1]
    return x, bunch.target, None


KERAS_ORIGIN = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/"
KERAS_CACHED = {  # what each Keras loader reads from under its cache folder, so it can run offline
    "mnist": ("datasets", f"mnist.npz (the original, {KERAS_ORIGIN}mnist.npz: Keras checks its sha256)"),
    "fashion_mnist": (
        "datasets/fashion-mnist",
        "train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz and "
        f"t10k-labels-idx1-ubyte.gz (from {KERAS_ORIGIN})",
    ),
    "cifar10": (
        "datasets",
        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz renamed cifar-10-batches-py-target_archive "
        "(Keras checks its sha256)",
    ),
}


def _keras_cache_folder(name: str) -> Path:
    """Where Keras's loader for `name` looks for its files: under $KERAS_HOME, else ~/.keras."""
    home = Path(os.environ.get("KERAS_HOME", "~/.keras")).expanduser()
    return home / KERAS_CACHED[name][0]


def _keras_images(name: str) -> Callable[[DataParams, Path], Loaded]:
    """Loader for a Keras image dataset: train and test parts pooled, scaled to [0, 1]."""

    def load(params: DataParams, root: Path) -> Loaded:
        from pipeline.core.tf_runtime import keras

        try:
            (x_train, y_train), (x_test, y_test) = getattr(keras.datasets, name).load_data()
        except Exception as error:  # the downloader raises many kinds on no network
            reason = " ".join(str(error).split())
            raise PipelineError(
                f"data.dataset: could not load {name!r} with Keras ({reason}); it needs internet once, "
                f"or place {KERAS_CACHED[name][1]} in {_keras_cache_folder(name)}/ to work offline, "
                "or use data.dataset: digits"
            ) from None
        x = np.concatenate([x_train, x_test]).astype(np.float32) / 255.0
        if x.ndim == 3:
            x = x[..., None]
        y = np.concatenate([y_train, y_test]).reshape(-1)
        return x, y, None

    return load


def raw_file(value: str, key: str, root: Path) -> Path:
    """The user's file `value` (relative to the project root), which must lie under data/raw/; `key` names the param."""
    path = (root / value).resolve()
    raw_dir = (root / RAW_DIR).resolve()
    if raw_dir not in path.parents:
        raise PipelineError(f"{key}: must be a file under {RAW_DIR}/ (got {value!r})")
    if not path.is_file():
        raise PipelineError(f"{key}: file not found: {value}")
    return path


def _user_file(params: DataParams, root: Path) -> Path:
    if not params.path:
        raise PipelineError(f"data.path: required when data.dataset is {params.dataset!r}")
    return raw_file(params.path, "data.path", root)


def _csv(params: DataParams, root: Path) -> Loaded:
    """A CSV table (see `pipeline.datasets.tabular`): header row, label column, numeric or categorical features."""
    marker = () if params.member_column is None else (params.member_column,)
    table = read_table(_user_file(params, root), params.path, params.label_column, params.categorical, marker)
    marked = None if params.member_column is None else table.extra[params.member_column]
    return table.features, _class_indices(table.labels, params.path), marked


def _npz(params: DataParams, root: Path) -> Loaded:
    """Arrays x (N, features) or (N, H, W[, C]) and y (N,) from an .npz archive, and the member marker array if named."""
    from pipeline.core.io import load_npz

    path = _user_file(params, root)
    if not zipfile.is_zipfile(path):
        raise PipelineError(
            f"{params.path}: not an .npz archive; save the arrays with numpy.savez(path, x=x, y=y)"
        )
    marker = () if params.member_column is None else (params.member_column,)
    try:
        arrays = load_npz(path, ("x", "y", *marker))
    except zipfile.BadZipFile as error:  # a damaged member, found only when read
        raise PipelineError(f"{params.path}: damaged .npz archive ({error}); save it again") from None
    x, y = arrays["x"], arrays["y"]
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise PipelineError(
            f"{params.path}: y must hold one label per sample, shaped (N,); got {y.shape} "
            "(for one-hot labels save y.argmax(axis=1))"
        )
    if x.ndim < 2 or len(x) != len(y):
        raise PipelineError(
            f"{params.path}: x must be (N, ...) and y (N,); got x {x.shape} and y {y.shape}"
        )
    if len(x) == 0:
        raise PipelineError(f"{params.path}: x and y have 0 rows; the file holds no samples")
    try:
        features = x.astype(np.float32)
    except ValueError:
        raise PipelineError(f"{params.path}: x must be numeric (got dtype {x.dtype})") from None
    y = _class_indices(y, params.path)
    marked = arrays[params.member_column] if marker else None
    if x.ndim == 2:
        return features, y, marked
    if x.ndim == 3:
        features = features[..., None]  # (N, H, W) grayscale gets its channel axis, as Keras data does
    return _unit_range_images(features, x.dtype, params.path), y, marked


def _unit_range_images(x: np.ndarray, stored: np.dtype, name: str) -> np.ndarray:
    """Images in [0, 1], as the models expect: unsigned integers are scaled by their dtype's maximum.

    Other values outside [0, 1] are kept but warned about on stderr.
    """
    if np.issubdtype(stored, np.unsignedinteger):
        top = np.iinfo(stored).max
        print(f"{name}: {stored} images scaled by 1/{top} to [0, 1]", file=sys.stderr)
        return x / np.float32(top)
    low, high = float(x.min()), float(x.max())
    if low < 0 or high > 1:
        print(
            f"warning: {name}: image values range over [{low:g}, {high:g}] but the models expect "
            "[0, 1]; divide 0-255 pixels by 255",
            file=sys.stderr,
        )
    return x


def _class_indices(labels: np.ndarray, name: str) -> np.ndarray:
    """Class index per label, classes in sorted order.

    Labels that all read as numbers compare as numbers, so "1" and "1.0"
    are one class and "10" sorts after "2"; other labels compare as text.
    """
    if labels.dtype.kind in "US":
        with contextlib.suppress(ValueError):  # some label is not a number: the labels are text
            labels = labels.astype(np.float64)
    if labels.dtype.kind == "f" and not np.isfinite(labels).all():
        raise PipelineError(f"{name}: some labels are NaN or infinite; give every sample a class")
    return np.unique(labels, return_inverse=True)[1].reshape(-1)


LOADERS: dict[str, Callable[[DataParams, Path], Loaded]] = {
    "digits": _digits,
    "csv": _csv,
    "npz": _npz,
    "mnist": _keras_images("mnist"),
    "fashion_mnist": _keras_images("fashion_mnist"),
    "cifar10": _keras_images("cifar10"),
}


def load_dataset(params: DataParams, root: str | Path = ".") -> Dataset:
    """Load and check the dataset named in params (see `validate_dataset`), with the rows marked as trained on."""
    root = Path(root)
    if params.member_column is not None and params.dataset not in ("csv", "npz"):
        raise PipelineError(
            f"data.member_column: {params.dataset} has no columns to mark members with; "
            "list the rows that trained target.model in a file and set data.member_index"
        )
    x, y, marked = LOADERS[params.dataset](params, root)
    trained = None
    if marked is not None:
        trained = rows_from_column(marked, f"{params.path} column {params.member_column!r}")
        if len(trained) != len(y):
            raise PipelineError(
                f"data.member_column: {params.path} array {params.member_column!r} has {len(trained)} marks "
                f"but the data has {len(y)} rows; give one 1/0 mark per row"
            )
    elif params.member_index is not None:
        trained = rows_from_index_file(raw_file(params.member_index, "data.member_index", root), params.member_index, len(y))
    if trained is not None and not 0 < trained.sum() < len(trained):
        raise PipelineError(
            f"data.{'member_column' if marked is not None else 'member_index'}: marks {int(trained.sum())} of "
            f"{len(trained)} rows as trained on; an audit needs members and rows the model never saw"
        )
    name = params.dataset
    dataset = Dataset(x=x, y=y.astype(np.int64), n_classes=int(y.max()) + 1, name=name, trained=trained)
    validate_dataset(dataset, params)
    return dataset


def validate_dataset(dataset: Dataset, params: DataParams) -> None:
    """Reject non-finite values, fewer than two classes, or classes too small."""
    bad = int((~np.isfinite(dataset.x)).sum())
    if bad:
        raise PipelineError(f"data: {dataset.name} has {bad} NaN or infinite feature values")
    counts = np.bincount(dataset.y, minlength=dataset.n_classes)
    if dataset.n_classes < 2:
        raise PipelineError(f"data: {dataset.name} has {dataset.n_classes} class; at least 2 are needed")
    small = np.flatnonzero(counts < params.min_per_class)
    if small.size:
        raise PipelineError(
            f"data.min_per_class: class {int(small[0])} of {dataset.name} has {int(counts[small[0]])} "
            f"samples, fewer than the {params.min_per_class} required"
        )
