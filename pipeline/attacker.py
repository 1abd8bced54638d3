"""The attacker's models: shadow and reference models trained exactly like the target, and their label queries.

Every attacker model reproduces the target's training: as many training
points as the target's members, the target's recipe and, under adaptive
evaluation, its defense, which then sees the same training-set size (so
DP-SGD calibrates the same noise for the same sampling rate and steps)
and as many defender reference points as the target's defender holds.
Models come in pairs trained on disjoint sets, so a point is IN for at
most half of them (exactly half for the candidates of reference models).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from pipeline.augment import robustness_by_setting
from pipeline.data import defender_mask, paired_keep
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


def _train_like_target(
    dataset: Dataset, splits: Splits, points: np.ndarray, scored: int, models: ModelSet
) -> tuple[np.ndarray, DefendedModels]:
    """K models in disjoint pairs, each on len(members) of the first `scored` points, trained the set's way.

    Each model's defender data (as much as the target's defender holds) is
    drawn from `points` it does not train on, among the unscored ones when
    there are any (reference models: the pool, never a candidate); shadows
    have only scored points, so theirs are some of their scored non-members.
    """
    rng = rng_for(models.seed, models.tag, "keep")
    keep = np.zeros((models.n_models, len(points)), dtype=bool)
    keep[:, :scored] = paired_keep(scored, len(splits.members), models.n_models, rng)
    eligible = np.arange(len(points)) >= scored if scored < len(points) else np.ones(len(points), dtype=bool)
    job = TrainingJob(
        models.architecture,
        models.recipe,
        dataset.x[points],
        dataset.y[points],
        keep,
        seed=derive_seed(models.seed, models.tag, "train"),
        label=f"{models.tag}: {models.n_models} models",
        defender=defender_mask(keep, eligible, len(splits.defender_reference), rng),
    )
    return keep, models.train(job)


def train_shadows(dataset: Dataset, splits: Splits, models: ModelSet) -> tuple[Signals, np.ndarray, DefendedModels]:
    """Train K shadow models on the attacker's pool, each on as many points as the target.

    Returns their signals on the pool, their outputs on the candidates
    (none of which any shadow saw) and the trained models. The pool is all
    the attacker has, so a shadow's defender data are pool points it does
    not train on (scored as its non-members).
    """
    pool = splits.shadow_pool
    keep, trained = _train_like_target(dataset, splits, pool, len(pool), models)
    signals = Signals(logits=trained.observe(dataset.x[pool]), keep=keep, labels=dataset.y[pool], index=pool)
    return signals, trained.observe(dataset.x[splits.candidates]), trained


def train_reference(dataset: Dataset, splits: Splits, models: ModelSet) -> Signals:
    """Reference models for online attacks, and their signals on the candidates.

    Each trains on one half of the candidates (as many points as the
    target's members), the two models of a pair on complementary halves,
    so every candidate is IN for exactly half of them; defender data come
    from the pool.
    """
    candidates = splits.candidates
    points = np.concatenate([candidates, splits.shadow_pool])
    keep, trained = _train_like_target(dataset, splits, points, len(candidates), models)
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
