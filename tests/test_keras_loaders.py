"""The real Keras loaders, offline, on tiny files placed in a temporary Keras cache.

Keras reads KERAS_HOME once, when it is imported, so the loads run in a
fresh interpreter per Keras home (fixture `offline`, three homes: the
files placed for every dataset, a CIFAR-10 archive, nothing). Downloads
go through a proxy that refuses connections (localhost port 9), so no
test reaches the network or waits on it, wherever it runs.

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
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Offline:
    folder: Path
    fashion: dict[str, np.ndarray]  # the arrays of the placed Fashion-MNIST files
    placed: dict[str, list[Path]]  # the files placed for mnist and cifar10, by how they were placed
    results: dict[str, dict[str, str | None]]  # per Keras home: each dataset's error message, or None when it loaded


@pytest.fixture(scope="module")
def offline(tmp_path_factory: pytest.TempPathFactory) -> Offline:
    """Each dataset loaded offline from three Keras homes: files placed for all three, a CIFAR-10 archive, nothing.

    The placed files do not interfere: each loader reads its own names.
    """
    folder = tmp_path_factory.mktemp("keras-loaders")
    cache = folder / "placed/keras/datasets"
    fashion = _fashion_files(cache / "fashion-mnist")
    placed = {
        "mnist": _mnist_npz(cache),
        "cifar_extracted": _cifar_extracted(cache),
        "cifar_archive": _cifar_archive(folder / "archive/keras/datasets"),
    }
    (folder / "empty").mkdir()
    results = {
        home: _load_offline(folder / home / "keras", folder / home, *names)
        for home, names in (
            ("placed", ("fashion_mnist", "mnist", "cifar10")), ("archive", ("cifar10",)),
            ("empty", ("mnist", "fashion_mnist", "cifar10")),
        )
    }  # fmt: skip
    return Offline(folder, fashion, placed, results)


def _fashion_files(cache: Path) -> dict[str, np.ndarray]:
    """Fashion-MNIST's four IDX files, 30 train and 10 test images, in `cache`; their arrays."""
    rng = np.random.default_rng(0)
    x_train = rng.integers(0, 256, (30, 28, 28), dtype=np.uint8)
    x_test = rng.integers(0, 256, (10, 28, 28), dtype=np.uint8)
    y_train, y_test = rng.permutation(30) % 10, rng.permutation(10)
    x_train[0, 0, 0], x_test[-1, -1, -1] = 255, 0  # both ends of the pixel range
    cache.mkdir(parents=True)
    for prefix, x, y in (("train", x_train, y_train), ("t10k", x_test, y_test)):
        _idx_gz(cache / f"{prefix}-images-idx3-ubyte.gz", x)
        _idx_gz(cache / f"{prefix}-labels-idx1-ubyte.gz", y)
    return {"x_train": x_train, "x_test": x_test, "y_train": y_train, "y_test": y_test}


def test_fashion_mnist_loads_from_cached_idx_files(offline: Offline) -> None:
    arrays = offline.fashion
    assert offline.results["placed"]["fashion_mnist"] is None
    loaded = np.load(offline.folder / "placed/fashion_mnist.npz")
    assert loaded["x"].shape == (40, 28, 28, 1) and loaded["x"].dtype == np.float32
    expected = np.concatenate([arrays["x_train"], arrays["x_test"]]).astype(np.float32)[..., None] / 255
    np.testing.assert_array_equal(loaded["x"], expected)  # train then test, scaled by 1/255
    assert loaded["x"].max() == 1.0 and loaded["x"].min() == 0.0
    np.testing.assert_array_equal(loaded["y"], np.concatenate([arrays["y_train"], arrays["y_test"]]))
    assert int(loaded["n_classes"]) == 10


def test_empty_cache_without_network_names_the_files_to_place(offline: Offline) -> None:
    home = offline.folder / "empty/keras"
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
    for name, files in placed.items():
        message = offline.results["empty"][name]
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
    cache.mkdir(parents=True, exist_ok=True)
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
    "home, name, placed, kept",
    [
        ("placed", "mnist", "mnist", False),
        ("placed", "cifar10", "cifar_extracted", True),
        ("archive", "cifar10", "cifar_archive", False),
    ],
)
def test_keras_downloads_again_unless_its_sha256_matches(offline: Offline, home: str, name: str, placed: str, kept: bool) -> None:
    """Why `mnist` and `cifar10` have no fixture test: Keras verifies the cached download's sha256.

    A cached file that differs (any tiny fixture) is downloaded again and
    deleted when that fails; an extracted CIFAR-10 folder is not looked at
    without the archive beside it.
    """
    message = offline.results[home][name]
    assert message is not None and message.startswith(f"data.dataset: could not load {name!r} with Keras")
    assert "Connection refused" in message  # it tried the network
    assert all(path.exists() == kept for path in offline.placed[placed])
