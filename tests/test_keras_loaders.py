"""The real Keras loaders, offline, on tiny files placed in a temporary Keras cache.

Keras reads KERAS_HOME once, when it is imported, so every load runs in a
fresh interpreter with KERAS_HOME set. Downloads go through a proxy that
refuses connections (localhost port 9), so no test reaches the network or
waits on it, wherever it runs.

Only `fashion_mnist` reads its cached files as they are (no hash). `mnist`
and `cifar10` pass Keras's `get_file` a sha256: a cached file that does not
match is downloaded again (and deleted once that fails), so no tiny fixture
can stand in for them; the last test pins that behaviour. (CIFAR-10's
loader also fills fixed 50,000-image buffers, 10,000 per batch.)
"""

from __future__ import annotations

import gzip
import json
import os
import pickle
import re
import subprocess
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from pipeline.tools.sandbox import PROJECT

OFFLINE_PROXY = "http://127.0.0.1:9"
LOAD = """
import json, sys
import numpy as np
from pipeline.config import DataParams
from pipeline.datasets.loaders import load_dataset
from pipeline.core.errors import PipelineError
out, results = sys.argv[1], {}
for name in sys.argv[2:]:
    try:
        d = load_dataset(DataParams(dataset=name, min_per_class=1))
    except PipelineError as error:
        results[name] = str(error)
    else:
        np.savez(f"{out}/{name}.npz", x=d.x, y=d.y, n_classes=d.n_classes)
        results[name] = None
print(json.dumps(results))
"""


def _load_offline(keras_home: Path, out: Path, *names: str) -> dict[str, str | None]:
    """Each dataset's PipelineError message, or None when it loaded (then saved to out/<name>.npz)."""
    env = {**os.environ, "KERAS_HOME": str(keras_home), "NO_PROXY": "", "no_proxy": ""}
    env.update(dict.fromkeys(("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"), OFFLINE_PROXY))
    done = subprocess.run(
        [sys.executable, "-c", LOAD, str(out), *names],
        cwd=PROJECT, env=env, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def _idx_gz(path: Path, array: np.ndarray) -> None:
    """An IDX file as Fashion-MNIST ships it: magic, big-endian sizes, uint8 data, gzipped."""
    magic = 0x0800 + array.ndim
    header = magic.to_bytes(4, "big") + b"".join(n.to_bytes(4, "big") for n in array.shape)
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))


def test_fashion_mnist_loads_from_cached_idx_files(tmp_path) -> None:
    rng = np.random.default_rng(0)
    x_train = rng.integers(0, 256, (30, 28, 28), dtype=np.uint8)
    x_test = rng.integers(0, 256, (10, 28, 28), dtype=np.uint8)
    y_train, y_test = rng.permutation(30) % 10, rng.permutation(10)
    x_train[0, 0, 0], x_test[-1, -1, -1] = 255, 0  # both ends of the pixel range
    cache = tmp_path / "keras/datasets/fashion-mnist"
    cache.mkdir(parents=True)
    for prefix, x, y in (("train", x_train, y_train), ("t10k", x_test, y_test)):
        _idx_gz(cache / f"{prefix}-images-idx3-ubyte.gz", x)
        _idx_gz(cache / f"{prefix}-labels-idx1-ubyte.gz", y)
    assert _load_offline(tmp_path / "keras", tmp_path, "fashion_mnist") == {"fashion_mnist": None}
    loaded = np.load(tmp_path / "fashion_mnist.npz")
    assert loaded["x"].shape == (40, 28, 28, 1) and loaded["x"].dtype == np.float32
    expected = np.concatenate([x_train, x_test]).astype(np.float32)[..., None] / 255
    np.testing.assert_array_equal(loaded["x"], expected)  # train then test, scaled by 1/255
    assert loaded["x"].max() == 1.0 and loaded["x"].min() == 0.0
    np.testing.assert_array_equal(loaded["y"], np.concatenate([y_train, y_test]))
    assert int(loaded["n_classes"]) == 10


def test_empty_cache_without_network_names_the_files_to_place(tmp_path) -> None:
    home = tmp_path / "keras"
    origin = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/"
    placed = {
        "mnist": f"mnist.npz (the original, {origin}mnist.npz: Keras checks its sha256) in {home}/datasets/",
        "fashion_mnist": (
            "train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz and "
            f"t10k-labels-idx1-ubyte.gz (from {origin}) in {home}/datasets/fashion-mnist/"
        ),
        "cifar10": (
            "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz renamed cifar-10-batches-py-target_archive "
            f"(Keras checks its sha256) in {home}/datasets/"
        ),
    }
    results = _load_offline(home, tmp_path, *placed)
    for name, files in placed.items():
        message = results[name]
        assert message is not None and "\n" not in message
        head = re.escape(f"data.dataset: could not load {name!r} with Keras (URL fetch failure on ")
        tail = re.escape(
            f"Connection refused); it needs internet once, or place {files} to work offline, "
            "or use data.dataset: digits"
        )
        assert re.fullmatch(f"{head}.*{tail}", message), message


def _mnist_npz(cache: Path) -> list[Path]:
    """mnist.npz in Keras's format, but not the original file."""
    rng = np.random.default_rng(1)
    cache.mkdir(parents=True)
    path = cache / "mnist.npz"
    arrays = {f"x_{part}": rng.integers(0, 256, (n, 28, 28), dtype=np.uint8) for part, n in (("train", 30), ("test", 10))}
    np.savez(path, **arrays, y_train=np.arange(30) % 10, y_test=np.arange(10))
    return [path]


def _cifar_batches(folder: Path) -> list[Path]:
    """CIFAR-10's python batches data_batch_1..5 and test_batch (pickled dicts with bytes keys), 6 images each."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(2)
    paths = [folder / f"data_batch_{i}" for i in range(1, 6)] + [folder / "test_batch"]
    for path in paths:
        batch = {b"data": rng.integers(0, 256, (6, 3 * 32 * 32), dtype=np.uint8), b"labels": list(range(6))}
        path.write_bytes(pickle.dumps(batch))
    return paths


def _cifar_extracted(cache: Path) -> list[Path]:
    """The batches in the folder Keras extracts to, without the archive it checks."""
    return _cifar_batches(cache / "cifar-10-batches-py-target/cifar-10-batches-py")


def _cifar_archive(cache: Path) -> list[Path]:
    """The batches as a .tar.gz under the name Keras keeps the download by, but not the original archive."""
    _cifar_batches(cache / "build/cifar-10-batches-py")
    path = cache / "cifar-10-batches-py-target_archive"
    with tarfile.open(path, "w:gz") as archive:
        archive.add(cache / "build/cifar-10-batches-py", arcname="cifar-10-batches-py")
    return [path]


@pytest.mark.parametrize(
    "name, place, kept",
    [("mnist", _mnist_npz, False), ("cifar10", _cifar_extracted, True), ("cifar10", _cifar_archive, False)],
)
def test_keras_downloads_again_unless_its_sha256_matches(
    tmp_path, name: str, place: Callable[[Path], list[Path]], kept: bool
) -> None:
    """Why `mnist` and `cifar10` have no fixture test: Keras verifies the cached download's sha256.

    A cached file that differs (any tiny fixture) is downloaded again and
    deleted when that fails; an extracted CIFAR-10 folder is not looked at
    without the archive beside it.
    """
    placed = place(tmp_path / "keras/datasets")
    message = _load_offline(tmp_path / "keras", tmp_path, name)[name]
    assert message is not None and message.startswith(f"data.dataset: could not load {name!r} with Keras")
    assert "Connection refused" in message  # it tried the network
    assert all(path.exists() == kept for path in placed)
