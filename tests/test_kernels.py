"""The same seeded CNN runs give the same answers under oneDNN's kernels and TensorFlow's default ones.

Users' CPUs differ: TensorFlow turns oneDNN on by default only on some, and
only oneDNN differentiates a grouped convolution, which the stack's CNN
uses where it can (`pipeline.stack.conv`). Each kernel set runs in its own
process (`TF_ENABLE_ONEDNN_OPTS` is read when TensorFlow loads), which
stands in for two kinds of CPU.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, dict[str, np.ndarray]]:
    out = {}
    for flag in ("0", "1"):
        path = tmp_path_factory.mktemp("kernels") / f"onednn{flag}.npz"
        env = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": flag}
        subprocess.run([sys.executable, str(HERE / "kernel_run.py"), str(path)], env=env, check=True, cwd=HERE.parent)
        out[flag] = dict(np.load(path))
    return out


def test_each_kernel_set_takes_its_own_convolution_path(runs):
    """oneDNN on: the grouped op; off: the per-model split (the grouped one has no gradient there)."""
    assert bool(runs["1"]["grouped"]) and not bool(runs["0"]["grouped"])


@pytest.mark.parametrize("kind", ["plain", "private"])
def test_one_step_gives_the_same_logits_to_float32_noise(runs, kind):
    """After one step (plain, or DP-SGD with its ghost and materialised conv layers), logits agree to ~1e-5."""
    on, off = runs["1"][kind], runs["0"][kind]
    assert on.shape == off.shape == (4, 797, 10)
    np.testing.assert_allclose(on, off, rtol=1e-4, atol=1e-5)


def test_trained_models_reach_the_same_test_accuracy(runs):
    """15 epochs later, each model's test accuracy agrees within 0.02 (a handful of the 797 test digits)."""
    on, off = runs["1"]["accuracy"], runs["0"]["accuracy"]
    assert on.min() > 0.8  # they learned
    np.testing.assert_allclose(on, off, atol=0.02)
