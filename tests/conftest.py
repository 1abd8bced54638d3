"""Shared test set-up: TensorFlow kept quiet, small shared fixtures, and the slow tests' shared pipeline runs."""

import os
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from scenarios import Built, Sandbox, Scenarios, shared_folder  # noqa: E402  (TensorFlow's log level first)


@pytest.fixture(scope="module")
def digits() -> dict[str, np.ndarray]:
    """sklearn's bundled digits, flat features in [0, 1], with one fixed permutation."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.data / 16.0).astype(np.float32)
    perm = np.random.default_rng(0).permutation(len(x))
    return {"x": x, "y": d.target.astype(np.int64), "perm": perm}


@pytest.fixture(scope="session")
def scenarios(tmp_path_factory: pytest.TempPathFactory) -> Scenarios:
    """The shared pipeline runs of `tests/scenarios.py`, built on first use."""
    return Scenarios(shared_folder(tmp_path_factory.getbasetemp()))


@pytest.fixture(scope="session")
def tiny(scenarios: Scenarios) -> Built:
    """The tiny preset run as one DVC experiment (read only: copy it to change anything)."""
    return scenarios.get("tiny")


@pytest.fixture(scope="session")
def trimmed(scenarios: Scenarios) -> Built:
    """`tiny` with dp_sgd dropped from the run and the report redone (read only)."""
    return scenarios.get("trimmed")


@pytest.fixture
def tiny_copy(tiny: Built, tmp_path: Path) -> Sandbox:
    """A copy of `tiny` of this test's own."""
    return tiny.copy(tmp_path / "tiny")


@pytest.fixture
def trimmed_copy(trimmed: Built, tmp_path: Path) -> Sandbox:
    """A copy of `trimmed` of this test's own."""
    return trimmed.copy(tmp_path / "trimmed")


SCENARIO_FIXTURES = {"tiny", "trimmed", "tiny_copy", "trimmed_copy"}


def _module(item: pytest.Item) -> str:
    return item.nodeid.split("::")[0]


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Order the test files for pytest-xdist's `--dist loadfile --no-loadscope-reorder` (`make test`).

    A file's tests run on one worker, so its module fixtures are built once.
    The order in which files are handed out: the first file that reads a
    shared scenario (tests/scenarios.py; it builds the scenario while the
    other workers start), the other files with slow tests, the other
    scenario files, then the rest, each file whole.
    """
    scenario = {_module(item) for item in items if SCENARIO_FIXTURES & set(getattr(item, "fixturenames", ()))}
    slow = {_module(item) for item in items if item.get_closest_marker("slow")}
    first = next((_module(item) for item in items if _module(item) in scenario), None)

    def rank(module: str) -> int:
        if module == first:
            return 0
        return 2 if module in scenario else 1 if module in slow else 3

    order = {id(item): (rank(_module(item)), index) for index, item in enumerate(items)}
    items.sort(key=lambda item: order[id(item)])


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    """With TEST_TIMELINE=<file>, append "worker start end test" per test: where a parallel run's time goes."""
    path = os.environ.get("TEST_TIMELINE")
    start = time.time()
    yield
    if path:
        with open(path, "a") as out:
            out.write(f"{os.environ.get('PYTEST_XDIST_WORKER', 'main')}\t{start:.2f}\t{time.time():.2f}\t{item.nodeid}\n")
