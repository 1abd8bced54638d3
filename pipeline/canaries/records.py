"""Canaries for a one-run privacy audit: which records, and which of them train.

Two kinds, both records a model can only fit by memorising them:

- "ood": out-of-distribution inputs, every feature uniform between the
  lowest and highest value it takes in the dataset, with a uniform label.
- "mislabeled": real records that train no target (drawn from the
  non-members, test set and attacker's pool), each with a label moved to
  another class at random.

Each canary then joins the canary run's training set on its own fair coin
(`coins`), so that the audit's theorem (see `pipeline.measures.one_run`) applies.
"""

from __future__ import annotations

import numpy as np

from pipeline.core.errors import PipelineError
from pipeline.core.types import Dataset, Splits

__all__ = ["KINDS", "make_canaries", "coins", "canary_sources"]

KINDS = ("ood", "mislabeled")


def canary_sources(splits: Splits) -> np.ndarray:
    """The rows mislabeled canaries may come from: every row no target trains on."""
    return np.sort(np.concatenate([splits.nonmembers, splits.test, splits.shadow_pool, splits.defender_reference]))


def make_canaries(
    kind: str, m: int, dataset: Dataset, sources: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """m canaries (x float32, y int64) of `kind`, drawn from `rng`."""
    if kind == "ood":
        low, high = dataset.x.min(axis=0), dataset.x.max(axis=0)
        x = rng.uniform(low, high, size=(m, *dataset.x.shape[1:])).astype(np.float32)
        return x, rng.integers(0, dataset.n_classes, size=m)
    if kind == "mislabeled":
        if m > len(sources):
            raise PipelineError(
                f"canaries.n: {m} mislabeled canaries need as many records outside the target's members, "
                f"and {dataset.name} has {len(sources)}; lower canaries.n or use canaries.kind: ood"
            )
        rows = rng.choice(sources, size=m, replace=False)
        shift = rng.integers(1, dataset.n_classes, size=m)
        return dataset.x[rows].astype(np.float32), (dataset.y[rows] + shift) % dataset.n_classes
    raise PipelineError(f"canaries.kind must be one of {', '.join(KINDS)}, got {kind!r}")


def coins(m: int, rng: np.random.Generator) -> np.ndarray:
    """Each canary's inclusion, an independent fair coin: (m,) bool."""
    return rng.random(m) < 0.5
