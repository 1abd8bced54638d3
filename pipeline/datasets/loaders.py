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
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.config import DataParams
from pipeline.core.errors import PipelineError
from pipeline.core.types import Dataset
from pipeline.datasets.members import rows_from_column, rows_from_index_file
from pipeline.datasets.tabular import read_table

RAW_DIR = "data/raw"  # users' own files; the prepare stage depends on this folder
CONTINUOUS = 0.5  # labels taking more distinct values than this part of the rows look continuous, not like classes


@dataclass(frozen=True)
class Read:
    """What a loader read: features, labels as written, the data.member_column cells, the CSV columns one-hot encoded."""

    x: np.ndarray
    labels: np.ndarray
    marked: np.ndarray | None = None
    one_hot: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Loaded:
    """A checked dataset and what its source said: each class index's label value, the CSV columns one-hot encoded."""

    dataset: Dataset
    classes: tuple[str, ...]
    one_hot: dict[str, int]


def _digits(params: DataParams, root: Path) -> Read:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return Read((bunch.images / 16.0).astype(np.float32)[..., None], bunch.target)  # (N, 8, 8, 1) in [0, 1]


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


def _keras_images(name: str) -> Callable[[DataParams, Path], Read]:
    """Loader for a Keras image dataset: train and test parts pooled, scaled to [0, 1]."""

    def load(params: DataParams, root: Path) -> Read:
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
        return Read(x, np.concatenate([y_train, y_test]).reshape(-1))

    return load


def raw_file(value: str, key: str, root: Path) -> Path:
    """The user's file `value` (relative to the project root), which must lie under data/raw/; `key` names the param."""
    path = (root / value).resolve()
    raw_dir = (root / RAW_DIR).resolve()
    if raw_dir not in path.parents:
        link = _link_out(value, root, raw_dir)
        if link is not None:
            name, lead = link
            raise PipelineError(
                f"{key}: {name} is a symbolic link to {_shown_path(lead, root)}, outside {RAW_DIR}/; "
                f"copy the file into {RAW_DIR}/ instead of linking to it"
            )
        raise PipelineError(f"{key}: must be a file under {RAW_DIR}/ (got {value!r})")
    if not path.is_file():
        raise PipelineError(f"{key}: file not found: {value}")
    return path


def _link_out(value: str, root: Path, raw_dir: Path) -> tuple[str, Path] | None:
    """The first symbolic link on the path `value`, written under data/raw/, that leads out of it, and where it leads."""
    parts = Path(value).parts
    inside = len(Path(RAW_DIR).parts)
    if parts[:inside] != Path(RAW_DIR).parts or ".." in parts:
        return None
    for end in range(inside + 1, len(parts) + 1):
        here = root.joinpath(*parts[:end])
        lead = here.resolve()
        if here.is_symlink() and lead != raw_dir and raw_dir not in lead.parents:
            return "/".join(parts[:end]), lead
    return None


def _shown_path(path: Path, root: Path) -> str:
    """`path` relative to the project root when it lies inside, else as it is."""
    project = root.resolve()
    return str(path.relative_to(project)) if project in path.parents else str(path)


def _user_file(params: DataParams, root: Path) -> Path:
    if not params.path:
        raise PipelineError(f"data.path: required when data.dataset is {params.dataset!r}")
    return raw_file(params.path, "data.path", root)


def _csv(params: DataParams, root: Path) -> Read:
    """A CSV table (see `pipeline.datasets.tabular`): header row, label column, numeric or categorical features."""
    marker = () if params.member_column is None else (params.member_column,)
    table = read_table(_user_file(params, root), params.path, params.label_column, params.categorical, marker)
    marked = None if params.member_column is None else table.extra[params.member_column]
    return Read(table.features, table.labels, marked, table.one_hot)


def _npz_arrays(path: Path, shown: str, member_column: str | None) -> dict[str, np.ndarray]:
    """Arrays x, y and the member marker (if named) from the user's .npz archive, without pickles."""
    if not path.stat().st_size:
        raise PipelineError(f"{shown}: the file is empty; save the arrays with numpy.savez(path, x=x, y=y)")
    if not zipfile.is_zipfile(path):
        raise PipelineError(f"{shown}: not an .npz archive; save the arrays with numpy.savez(path, x=x, y=y)")
    keys = ("x", "y") if member_column is None else ("x", "y", member_column)
    try:
        with np.load(path, allow_pickle=False) as archive:
            found = ", ".join(archive.files) or "none"
            missing = [key for key in ("x", "y") if key not in archive.files]
            if missing:
                raise PipelineError(
                    f"{shown}: has no array {' or '.join(missing)} (arrays: {found}); "
                    "save the arrays with numpy.savez(path, x=x, y=y)"
                )
            if member_column is not None and member_column not in archive.files:
                raise PipelineError(
                    f"data.member_column: {shown} has no array {member_column!r} (arrays: {found}); name one of "
                    f"these, or save the marks with numpy.savez(path, x=x, y=y, {member_column}=marks)"
                )
            return {key: archive[key] for key in keys}
    except (ValueError, OSError, zipfile.BadZipFile) as error:  # pickled objects, a damaged member
        raise PipelineError(
            f"{shown}: not a readable .npz archive ({error}); save numeric arrays with numpy.savez(path, x=x, y=y)"
        ) from None


def _npz(params: DataParams, root: Path) -> Read:
    """Arrays x (N, features) or (N, H, W[, C]) and y (N,) from an .npz archive, and the member marker array if named."""
    arrays = _npz_arrays(_user_file(params, root), params.path, params.member_column)
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
    marked = None if params.member_column is None else arrays[params.member_column]
    if x.ndim == 2:
        return Read(features, y, marked)
    if x.ndim == 3:
        features = features[..., None]  # (N, H, W) grayscale gets its channel axis, as Keras data does
    return Read(_unit_range_images(features, x.dtype, params.path), y, marked)


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


def _class_indices(labels: np.ndarray, name: str) -> tuple[np.ndarray, tuple[str, ...]]:
    """Class index per label, classes in sorted order, and each class's label value as first written.

    Labels that all read as numbers compare as numbers, so "1" and "1.0"
    are one class and "10" sorts after "2"; other labels compare as text.
    """
    values = labels
    if labels.dtype.kind in "US":
        with contextlib.suppress(ValueError):  # some label is not a number: the labels are text
            values = labels.astype(np.float64)
    if values.dtype.kind == "f" and not np.isfinite(values).all():
        row = int(np.flatnonzero(~np.isfinite(values))[0])
        raise PipelineError(f"{name}: label y[{row}] is {labels[row]}, not a class; give every sample a class")
    _, first, indices = np.unique(values, return_index=True, return_inverse=True)
    return indices.reshape(-1), tuple(str(labels[at]) for at in first)


LOADERS: dict[str, Callable[[DataParams, Path], Read]] = {
    "digits": _digits,
    "csv": _csv,
    "npz": _npz,
    "mnist": _keras_images("mnist"),
    "fashion_mnist": _keras_images("fashion_mnist"),
    "cifar10": _keras_images("cifar10"),
}


def load_dataset(params: DataParams, root: str | Path = ".") -> Dataset:
    """Load and check the dataset named in params (see `load_data`)."""
    return load_data(params, root).dataset


def load_data(params: DataParams, root: str | Path = ".") -> Loaded:
    """Load and check the dataset named in params (see `validate_dataset`), with the rows marked as trained on."""
    root = Path(root)
    if params.member_column is not None and params.dataset not in ("csv", "npz"):
        raise PipelineError(
            f"data.member_column: {params.dataset} has no columns to mark members with; "
            "list the rows that trained target.model in a file and set data.member_index"
        )
    read = LOADERS[params.dataset](params, root)
    x, marked = read.x, read.marked
    y, classes = _class_indices(read.labels, params.path or params.dataset)
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
    validate_dataset(dataset, params, classes)
    return Loaded(dataset, classes, read.one_hot)


def validate_dataset(dataset: Dataset, params: DataParams, classes: tuple[str, ...] = ()) -> None:
    """Reject non-finite values, fewer than two classes, or classes too small; `classes` names each class's label."""
    shown = params.path or dataset.name
    bad = ~np.isfinite(dataset.x)
    if bad.any():
        at, n_bad = tuple(int(i) for i in np.argwhere(bad)[0]), int(bad.sum())
        raise PipelineError(
            f"data: {shown} has {n_bad} NaN or infinite feature value{'s' * (n_bad > 1)}, the first "
            f"x[{', '.join(map(str, at))}] = {dataset.x[at]}; replace them or drop their rows (nothing is imputed)"
        )
    if dataset.n_classes < 2:
        raise PipelineError(f"data: {shown} has {dataset.n_classes} class; at least 2 are needed")
    counts = np.bincount(dataset.y, minlength=dataset.n_classes)
    small = np.flatnonzero(counts < params.min_per_class)
    if small.size:
        at = int(small[0])
        which, count = f"label {classes[at]!r}" if at < len(classes) else f"class {at}", int(counts[at])
        problem = (
            f"data.min_per_class: {which} of {shown} has {count} sample{'s' * (count != 1)}, "
            f"fewer than the {params.min_per_class} required"
        )
        if len(classes) > CONTINUOUS * len(dataset.y):
            column, fix = (
                (f"column {params.label_column!r}", "set data.label_column to the column holding the class")
                if params.dataset == "csv"
                else ("y", "save each sample's class in y")
            )
            raise PipelineError(
                f"{problem}; the labels ({column}) take {len(classes)} values in {len(dataset.y)} rows, so they look "
                f"continuous, not like classes: {fix}, or bin the values into classes"
            )
        raise PipelineError(f"{problem}; drop or relabel its rows, or lower data.min_per_class")
