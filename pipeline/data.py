"""Dataset loaders, input checks and the seeded split into roles.

The default `digits` dataset ships inside scikit-learn, so the default
pipeline needs no network. `mnist`, `fashion_mnist` and `cifar10` use the
Keras downloaders (internet needed once); `csv` and `npz` read a user's
file under `data/raw/`.
"""

from __future__ import annotations

import csv
import sys
import zipfile
from pathlib import Path
from typing import Callable

import numpy as np

from pipeline.config import DataParams
from pipeline.errors import PipelineError
from pipeline.types import Dataset, Splits

RAW_DIR = "data/raw"  # users' own files; the prepare stage depends on this folder


def _digits(params: DataParams, root: Path) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = (bunch.images / 16.0).astype(np.float32)[..., None]  # (N, 8, 8, 1) in [0, 1]
    return x, bunch.target


def _keras_images(name: str) -> Callable[[DataParams, Path], tuple[np.ndarray, np.ndarray]]:
    """Loader for a Keras image dataset: train and test parts pooled, scaled to [0, 1]."""

    def load(params: DataParams, root: Path) -> tuple[np.ndarray, np.ndarray]:
        from pipeline.tf_runtime import keras

        try:
            (x_train, y_train), (x_test, y_test) = getattr(keras.datasets, name).load_data()
        except Exception as error:  # the downloader raises many kinds on no network
            raise PipelineError(
                f"data.dataset: could not load {name!r} with Keras ({error}); it needs internet "
                "once, or use data.dataset: digits"
            ) from None
        x = np.concatenate([x_train, x_test]).astype(np.float32) / 255.0
        if x.ndim == 3:
            x = x[..., None]
        y = np.concatenate([y_train, y_test]).reshape(-1)
        return x, y

    return load


def _user_file(params: DataParams, root: Path) -> Path:
    if not params.path:
        raise PipelineError(f"data.path: required when data.dataset is {params.dataset!r}")
    path = (root / params.path).resolve()
    raw_dir = (root / RAW_DIR).resolve()
    if raw_dir not in path.parents:
        raise PipelineError(f"data.path: must be a file under {RAW_DIR}/ (got {params.path!r})")
    if not path.is_file():
        raise PipelineError(f"data.path: file not found: {params.path}")
    return path


def _csv(params: DataParams, root: Path) -> tuple[np.ndarray, np.ndarray]:
    """A UTF-8 CSV (byte-order mark allowed): header row, label column, numeric features."""
    path = _user_file(params, root)
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            rows = [(reader.line_num, row) for row in reader if row]  # blank lines carry no sample
    except UnicodeDecodeError:
        raise PipelineError(f"{params.path}: not UTF-8 text; save it as a UTF-8 CSV file") from None
    except csv.Error as error:
        raise PipelineError(f"{params.path}: not a readable UTF-8 CSV file ({error})") from None
    if len(rows) < 2:
        raise PipelineError(f"{params.path}: needs a header row and at least one data row")
    header, body = rows[0][1], rows[1:]
    if params.label_column not in header:
        raise PipelineError(
            f"data.label_column: {params.label_column!r} is not a column of {params.path} "
            f"(columns: {', '.join(header)})"
        )
    label_at = header.index(params.label_column)
    features, labels = [], []
    for line, row in body:
        if len(row) != len(header):
            raise PipelineError(f"{params.path}: line {line} has {len(row)} fields, header has {len(header)}")
        label = row[label_at].strip()
        if not label:
            raise PipelineError(
                f"{params.path}: line {line} has an empty {params.label_column!r} cell; give every row a label"
            )
        labels.append(label)
        try:
            features.append([float(v) for i, v in enumerate(row) if i != label_at])
        except ValueError as error:  # names the value: could not convert string to float: 'abc'
            raise PipelineError(f"{params.path}: line {line} has a non-numeric feature value ({error})") from None
    x = np.asarray(features, dtype=np.float32)
    return x, _class_indices(np.asarray(labels), params.path)


def _npz(params: DataParams, root: Path) -> tuple[np.ndarray, np.ndarray]:
    """Arrays x (N, features) or (N, H, W[, C]) and y (N,) from an .npz archive."""
    from pipeline.io import load_npz

    path = _user_file(params, root)
    if not zipfile.is_zipfile(path):
        raise PipelineError(
            f"{params.path}: not an .npz archive; save the arrays with numpy.savez(path, x=x, y=y)"
        )
    try:
        arrays = load_npz(path, ("x", "y"))
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
    if x.ndim == 2:
        return features, y
    if x.ndim == 3:
        features = features[..., None]  # (N, H, W) grayscale gets its channel axis, as Keras data does
    return _unit_range_images(features, x.dtype, params.path), y


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
        try:
            labels = labels.astype(np.float64)
        except ValueError:
            pass  # some label is not a number: the labels are text
    if labels.dtype.kind == "f" and not np.isfinite(labels).all():
        raise PipelineError(f"{name}: some labels are NaN or infinite; give every sample a class")
    return np.unique(labels, return_inverse=True)[1].reshape(-1)


def standardized(dataset: Dataset, fit_rows: np.ndarray) -> Dataset:
    """Tabular features scaled to zero mean and unit variance with the statistics of `fit_rows` only.

    The prepare stage fits on the attacker's shadow pool, data disjoint
    from the target's members and non-members standing in for public data,
    so no member's value reaches the preprocessing (nor needs DP
    accounting). Images are returned as they are (scaled by constants).
    Constant columns are only centred.
    """
    if dataset.x.ndim != 2:
        return dataset
    fit = dataset.x[fit_rows]
    std = fit.std(axis=0)
    x = ((dataset.x - fit.mean(axis=0)) / np.where(std > 0, std, 1.0)).astype(np.float32)
    return Dataset(x=x, y=dataset.y, n_classes=dataset.n_classes, name=dataset.name)


LOADERS: dict[str, Callable[[DataParams, Path], tuple[np.ndarray, np.ndarray]]] = {
    "digits": _digits,
    "csv": _csv,
    "npz": _npz,
    "mnist": _keras_images("mnist"),
    "fashion_mnist": _keras_images("fashion_mnist"),
    "cifar10": _keras_images("cifar10"),
}


def load_dataset(params: DataParams, root: str | Path = ".") -> Dataset:
    """Load and check the dataset named in params (see `validate_dataset`)."""
    x, y = LOADERS[params.dataset](params, Path(root))
    dataset = Dataset(x=x, y=y.astype(np.int64), n_classes=int(y.max()) + 1, name=params.dataset)
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


def make_splits(n_samples: int, params: DataParams, rng: np.random.Generator) -> Splits:
    """Disjoint random index sets: members, as many non-members, test, shadow pool, defender reference."""
    sizes = {
        "n_members": params.n_members,
        "non-members (= n_members)": params.n_members,
        "n_test": params.n_test,
        "n_shadow_pool": params.n_shadow_pool,
        "n_defender_reference": params.n_defender_reference,
    }
    needed = sum(sizes.values())
    if needed > n_samples:
        detail = " + ".join(f"{v} {k}" for k, v in sizes.items())
        raise PipelineError(
            f"data: the requested sizes need {needed} samples ({detail}) but the dataset has "
            f"only {n_samples}; lower data.n_members, data.n_test, data.n_shadow_pool or data.n_defender_reference"
        )
    order = rng.permutation(n_samples)
    bounds = np.cumsum(list(sizes.values()))
    members, nonmembers, test, pool, reference = np.split(order[: bounds[-1]], bounds[:-1])
    return Splits(members=members, nonmembers=nonmembers, test=test, shadow_pool=pool, defender_reference=reference)


def paired_keep(n_points: int, train_size: int, n_models: int, rng: np.random.Generator) -> np.ndarray:
    """A (n_models, n_points) keep matrix of disjoint pairs: every model trains on `train_size` points.

    Models 2i and 2i+1 train on two disjoint random sets of `train_size`
    points, so each model trains on as many points as the target and a
    point is IN for at most half of the models; when n_points is exactly
    2 * train_size, every point is IN for exactly half of them.
    """
    if n_models % 2:
        raise PipelineError(f"paired training sets need an even number of models (got {n_models})")
    if 2 * train_size > n_points:
        raise PipelineError(
            f"paired training sets of {train_size} points need at least {2 * train_size} points (got {n_points})"
        )
    keep = np.zeros((n_models, n_points), dtype=bool)
    for pair in range(n_models // 2):
        chosen = rng.permutation(n_points)[: 2 * train_size]
        keep[2 * pair, chosen[:train_size]] = True
        keep[2 * pair + 1, chosen[train_size:]] = True
    return keep


def defender_mask(keep: np.ndarray, eligible: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """(K, N) bool: for each model, `size` random eligible points it does not train on.

    They stand in for the defender's reference split (non-member data a
    defense such as adversarial regularization may use), so the attacker's
    models get exactly as much of it as the target.
    """
    mask = np.zeros_like(keep, dtype=bool)
    for k, row in enumerate(keep):
        free = np.flatnonzero(eligible & ~row)
        if free.size < size:
            raise PipelineError(f"defender data: {size} points needed per model, only {free.size} available")
        mask[k, rng.choice(free, size, replace=False)] = True
    return mask
