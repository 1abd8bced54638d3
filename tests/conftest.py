"""Shared test set-up: TensorFlow kept quiet, and small shared fixtures."""

import os

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


@pytest.fixture(scope="module")
def digits() -> dict[str, np.ndarray]:
    """sklearn's bundled digits, flat features in [0, 1], with one fixed permutation."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.data / 16.0).astype(np.float32)
    perm = np.random.default_rng(0).permutation(len(x))
    return {"x": x, "y": d.target.astype(np.int64), "perm": perm}
