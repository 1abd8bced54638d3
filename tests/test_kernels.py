"""The same seeded CNN runs give the same answers under oneDNN's kernels and TensorFlow's default ones.

Users' CPUs differ: TensorFlow turns oneDNN on by default only on some, and
only oneDNN differentiates a grouped convolution, which the stack's CNN
uses where it can (`pipeline.stack.conv`). Each kernel set runs in its own
process (`TF_ENABLE_ONEDNN_OPTS` is read when TensorFlow loads), which
stands in for two kinds of CPU. The CNN tests of the stack, DP-SGD and a
user's model also pass under each set, whatever this CPU's default is
(they run in a pytest process of their own per set, except the set this
session's own processes have, when the session runs those tests itself).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).resolve().parent
CNN_TESTS = ("tests/test_stack.py", "tests/test_dp_sgd.py", "tests/test_user_model.py")
N_CNN_TESTS = 11  # what `pytest -k cnn` selects in them


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


def _session_runs_the_cnn_tests(session: pytest.Session) -> bool:
    """Whether this session itself runs every CNN test of `CNN_TESTS` (`make test`, not `make test-kernels`)."""
    return sum(item.nodeid.split("::")[0] in CNN_TESTS and "cnn" in item.name for item in session.items) >= N_CNN_TESTS


@pytest.mark.slow
@pytest.mark.parametrize("flag", ["0", "1"], ids=["onednn-off", "onednn-on"])
def test_the_cnn_tests_pass_under_each_kernel_set(flag: str, runs, request: pytest.FixtureRequest) -> None:
    """`pytest -k cnn` on the stack, DP-SGD and user-model tests, in a process whose TensorFlow has this kernel set.

    Where this process's kernels are the set's (they take its convolution
    path) and the session runs those tests itself, they already run under it.
    """
    from pipeline.stack.conv import grouped_gradients_supported

    if bool(runs[flag]["grouped"]) == grouped_gradients_supported() and _session_runs_the_cnn_tests(request.session):
        pytest.skip("this session runs the CNN tests under this kernel set itself (this CPU's default)")
    env = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": flag}
    env.pop("PYTEST_XDIST_WORKER", None)
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:xdist", *CNN_TESTS, "-k", "cnn"]
    result = subprocess.run(command, env=env, cwd=HERE.parent, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    passed = next(line for line in reversed(result.stdout.splitlines()) if " passed" in line)
    assert int(passed.split(" passed")[0].split()[-1]) >= N_CNN_TESTS and "failed" not in passed and "skipped" not in passed, passed
