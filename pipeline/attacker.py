"""The attacker's models: shadow and reference models trained like the target, and their label queries.

Each set of K models trains on complementary random halves of its points
(every point IN for exactly half of them), the target's recipe and, under
adaptive evaluation, its defense.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from pipeline.augment import robustness_by_setting
from pipeline.data import complementary_keep
from pipeline.defenses.base import DefendedModels, TrainingJob
from pipeline.seeding import derive_seed, rng_for
from pipeline.stack import Architecture, Recipe
from pipeline.types import Dataset, Signals, Splits


@dataclass(frozen=True)
class ModelSet:
    """How a set of K attacker-side models is trained: recipe, trainer (defended or not), count, seed."""

    architecture: Architecture
    recipe: Recipe
    train: Callable[[TrainingJob], DefendedModels]
    n_models: int
    seed: int
    tag: str  # names the random streams and the progress bar, e.g. "shadows"


def _train_on_halves(dataset: Dataset, points: np.ndarray, models: ModelSet) -> tuple[np.ndarray, DefendedModels]:
    """K models on complementary random halves of `points`, trained the set's way."""
    keep = complementary_keep(len(points), models.n_models, rng_for(models.seed, models.tag, "keep"))
    job = TrainingJob(
        models.architecture,
        models.recipe,
        dataset.x[points],
        dataset.y[points],
        keep,
        seed=derive_seed(models.seed, models.tag, "train"),
        label=f"{models.tag}: {models.n_models} models",
    )
    return keep, models.train(job)


def train_shadows(dataset: Dataset, splits: Splits, models: ModelSet) -> tuple[Signals, np.ndarray, DefendedModels]:
    """Train K shadow models on complementary halves of the attacker's pool.

    Returns their signals on the pool, their outputs on the candidates
    (none of which any shadow saw) and the trained models.
    """
    pool = splits.shadow_pool
    keep, trained = _train_on_halves(dataset, pool, models)
    signals = Signals(logits=trained.observe(dataset.x[pool]), keep=keep, labels=dataset.y[pool], index=pool)
    return signals, trained.observe(dataset.x[splits.candidates]), trained


def train_reference(dataset: Dataset, splits: Splits, models: ModelSet) -> Signals:
    """Reference models for online attacks, and their signals on the candidates.

    They train on complementary halves of the candidates plus the pool, so
    every candidate is IN for exactly half of them.
    """
    candidates = splits.candidates
    points = np.concatenate([candidates, splits.shadow_pool])
    keep, trained = _train_on_halves(dataset, points, models)
    return Signals(
        logits=trained.observe(dataset.x[candidates]),
        keep=keep[:, : len(candidates)],
        labels=dataset.y[candidates],
        index=candidates,
    )


def robustness_signal(
    observe: Callable[[np.ndarray], np.ndarray], dataset: Dataset, index: np.ndarray, seed: int
) -> np.ndarray:
    """(S, K, P) share of perturbed copies of the points each model still labels right, per setting."""
    return robustness_by_setting(observe, dataset.x[index], dataset.y[index], rng_for(seed, "augment"))
