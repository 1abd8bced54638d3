"""Dataset loaders, input checks and the seeded split into roles.

The default `digits` dataset ships inside scikit-learn, so the default
pipeline needs no network. `mnist`, `fashion_mnist` and `cifar10` use the
Keras downloaders (internet needed once, or their files placed in Keras's
cache folder); `csv` and `npz` read a user's file under `data/raw/`.
"""

from __future__ import annotations

import os
import sys
import zipfile
from pathlib import Path
from typing import Callable

import numpy as np

from pipeline.config import DataParams
from pipeline.errors import PipelineError
from pipeline.members import rows_from_column, rows_from_index_file
from pipeline.tabular import read_table
from pipeline.types import Dataset, Splits

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
        from pipeline.tf_runtime import keras

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
    """A CSV table (see `pipeline.tabular`): header row, label column, numeric or categorical features."""
    marker = () if params.member_column is None else (params.member_column,)
    table = read_table(_user_file(params, root), params.path, params.label_column, params.categorical, marker)
    marked = None if params.member_column is None else table.extra[params.member_column]
    return table.features, _class_indices(table.labels, params.path), marked


def _npz(params: DataParams, root: Path) -> Loaded:
    """Arrays x (N, features) or (N, H, W[, C]) and y (N,) from an .npz archive, and the member marker array if named."""
    from pipeline.io import load_npz

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


def make_splits(n_samples: int, params: DataParams, rng: np.random.Generator, trained: np.ndarray | None = None) -> Splits:
    """Disjoint random index sets: members, as many non-members, test, shadow pool, defender reference.

    With `trained` (N,) bool, the rows that trained a given model: they are
    the members, all of them, and every other role is drawn from the rest.
    """
    if trained is not None:
        return _splits_around(trained, params, rng)
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


def _splits_around(trained: np.ndarray, params: DataParams, rng: np.random.Generator) -> Splits:
    """Splits whose members are exactly the marked rows; the other roles come from unmarked rows only."""
    members = rng.permutation(np.flatnonzero(trained))
    n = len(members)
    if params.n_shadow_pool < 2 * n:
        raise PipelineError(
            f"data.n_shadow_pool: the model trained on {n} marked rows, so each pair of shadow models needs "
            f"2 x {n} = {2 * n} pool rows to train on as many (got {params.n_shadow_pool})"
        )
    if params.n_defender_reference > params.n_shadow_pool - n:
        raise PipelineError(
            f"data.n_defender_reference: must be at most n_shadow_pool - {n} marked rows = "
            f"{params.n_shadow_pool - n} (got {params.n_defender_reference})"
        )
    sizes = {
        "non-members (= the marked rows)": n,
        "n_test": params.n_test,
        "n_shadow_pool": params.n_shadow_pool,
        "n_defender_reference": params.n_defender_reference,
    }
    rest = rng.permutation(np.flatnonzero(~trained))
    needed = sum(sizes.values())
    if needed > len(rest):
        detail = " + ".join(f"{v} {k}" for k, v in sizes.items())
        raise PipelineError(
            f"data: auditing a model trained on {n} rows needs {needed} rows it did not train on ({detail}) "
            f"but the data has {len(rest)}; lower data.n_test, data.n_shadow_pool or data.n_defender_reference, "
            "or add rows the model never saw"
        )
    bounds = np.cumsum(list(sizes.values()))
    nonmembers, test, pool, reference = np.split(rest[: bounds[-1]], bounds[:-1])
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
