"""Model outputs on the points an attack needs, computed once and saved.

Training models is the expensive part of an audit; every attack then reads
these saved logits and keep matrices, so changing an attack parameter never
retrains a model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from pipeline.augment import robustness, variants
from pipeline.config import Defense, LabelOnlyParams
from pipeline.data import complementary_keep
from pipeline.defenses import DefendedModels, TrainingJob, train_models
from pipeline.ensemble import Architecture, Recipe
from pipeline.seeding import derive_seed, rng_for
from pipeline.types import AttackInput, Dataset, Signals, Splits


def candidate_membership(splits: Splits) -> np.ndarray:
    """Ground truth for the candidates: members first, then non-members."""
    return np.concatenate([np.ones(len(splits.members), bool), np.zeros(len(splits.nonmembers), bool)])


def target_signals(candidate_logits: np.ndarray, dataset: Dataset, splits: Splits) -> Signals:
    """The target's (K=1) signals on the candidates, keep = true membership."""
    index = splits.candidates
    return Signals(
        logits=candidate_logits[None].astype(np.float32),
        keep=candidate_membership(splits)[None],
        labels=dataset.y[index],
        index=index,
    )


@dataclass(frozen=True)
class ModelSet:
    """How a set of K attacker-side models is trained: recipe, defense, count, seed."""

    architecture: Architecture
    recipe: Recipe
    defense: Defense | None
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
    return keep, train_models(job, models.defense)


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


SIGNAL_FIELDS = ("logits", "keep", "labels", "index")
ROLES = ("shadow", "target", "reference")
ARRAYS = ("shadow_on_candidates", "shadow_robustness", "target_robustness")
ATTACK_INPUT_KEYS = ARRAYS + tuple(f"{role}_{field}" for role in ROLES for field in SIGNAL_FIELDS)


def attack_input_to_arrays(data: AttackInput) -> dict[str, np.ndarray]:
    """Flat arrays for an .npz file (no pickles)."""
    if data.reference is None or data.shadow_robustness is None or data.target_robustness is None:
        raise ValueError("the saved attack dataset always holds reference signals and robustness arrays")
    arrays = {name: getattr(data, name) for name in ARRAYS}
    for role in ROLES:
        for field in SIGNAL_FIELDS:
            arrays[f"{role}_{field}"] = getattr(getattr(data, role), field)
    return arrays


def attack_input_from_arrays(arrays: dict[str, np.ndarray]) -> AttackInput:
    """Inverse of `attack_input_to_arrays`."""

    def signals(role: str) -> Signals:
        return Signals(**{field: arrays[f"{role}_{field}"] for field in SIGNAL_FIELDS})

    return AttackInput(
        shadow=signals("shadow"),
        target=signals("target"),
        reference=signals("reference"),
        **{name: arrays[name] for name in ARRAYS},
    )


def shadow_accuracy(signals: Signals) -> dict[str, float]:
    """Mean accuracy of the models on points they trained on (IN) and did not (OUT)."""
    correct = np.argmax(signals.logits, axis=-1) == signals.labels[None]
    return {
        "in_accuracy": float(correct[signals.keep].mean()),
        "out_accuracy": float(correct[~signals.keep].mean()),
    }


def robustness_signal(
    observe: Callable[[np.ndarray], np.ndarray], dataset: Dataset, index: np.ndarray, params: LabelOnlyParams, seed: int
) -> np.ndarray:
    """(K, P) share of perturbed copies of the points each model still labels right."""
    copies = variants(dataset.x[index], params.n_noise, params.noise_scale, rng_for(seed, "augment"))
    return robustness(observe, copies, dataset.y[index])
