"""Dataset loaders, input checks and the seeded split into roles.

The default `digits` dataset ships inside scikit-learn, so the default
pipeline needs no network. `mnist`, `fashion_mnist` and `cifar10` use the
Keras downloaders (internet needed once); `csv` and `npz` read a user's
file under `data/raw/`.
"""

from __future__ import annotations

import csv
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
    path = _user_file(params, root)
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))
    if len(rows) < 2:
        raise PipelineError(f"{params.path}: needs a header row and at least one data row")
    header, body = rows[0], rows[1:]
    if params.label_column not in header:
        raise PipelineError(
            f"data.label_column: {params.label_column!r} is not a column of {params.path} "
            f"(columns: {', '.join(header)})"
        )
    label_at = header.index(params.label_column)
    features, labels = [], []
    for line, row in enumerate(body, start=2):
        if len(row) != len(header):
            raise PipelineError(f"{params.path}: line {line} has {len(row)} fields, header has {len(header)}")
        labels.append(row[label_at])
        try:
            features.append([float(v) for i, v in enumerate(row) if i != label_at])
        except ValueError:
            raise PipelineError(f"{params.path}: line {line} has a non-numeric feature value") from None
    x = np.asarray(features, dtype=np.float32)
    _, y = np.unique(np.asarray(labels), return_inverse=True)
    return _standardize(x), y


def _npz(params: DataParams, root: Path) -> tuple[np.ndarray, np.ndarray]:
    from pipeline.io import load_npz

    arrays = load_npz(_user_file(params, root), ("x", "y"))
    x, y = arrays["x"], arrays["y"]
    if x.ndim < 2 or len(x) != len(y):
        raise PipelineError(
            f"{params.path}: x must be (N, ...) and y (N,); got x {x.shape} and y {y.shape}"
        )
    try:
        x = x.astype(np.float32)
    except ValueError:
        raise PipelineError(f"{params.path}: x must be numeric (got dtype {x.dtype})") from None
    _, y = np.unique(y.reshape(-1), return_inverse=True)
    return (_standardize(x) if x.ndim == 2 else x), y


def _standardize(x: np.ndarray) -> np.ndarray:
    """Zero mean, unit variance per tabular feature (constant columns stay 0)."""
    if not np.isfinite(x).all():
        return x  # reported by validate_dataset with the count
    std = x.std(axis=0)
    return ((x - x.mean(axis=0)) / np.where(std > 0, std, 1.0)).astype(np.float32)


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


def complementary_keep(n_points: int, n_models: int, rng: np.random.Generator) -> np.ndarray:
    """A (n_models, n_points) keep matrix built from complementary pairs.

    Model 2i trains on a random half of the points and model 2i+1 on the
    other half, so every point is IN for exactly half of the models and
    every model trains on the same number of points.
    """
    if n_models % 2 or n_points % 2:
        raise PipelineError(
            f"complementary halves need an even number of models and points (got {n_models} and {n_points})"
        )
    keep = np.zeros((n_models, n_points), dtype=bool)
    for pair in range(n_models // 2):
        half = rng.permutation(n_points)[: n_points // 2]
        keep[2 * pair, half] = True
        keep[2 * pair + 1] = ~keep[2 * pair]
    return keep
