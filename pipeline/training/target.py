"""Targets: architecture and recipe from params, training, utility metrics."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.config import ModelParams
from pipeline.core.errors import PipelineError
from pipeline.core.types import Dataset, Splits
from pipeline.defenses.base import DefendedModels, TrainingJob
from pipeline.stack import Architecture, Recipe, released_logits


def architecture_for(dataset: Dataset, params: ModelParams) -> Architecture:
    """The target's architecture for this dataset; shadows reuse it."""
    shape = tuple(int(d) for d in dataset.x.shape[1:])
    if params.architecture == "cnn":
        if len(shape) != 3:
            raise PipelineError(
                f"target.architecture: cnn needs image data shaped (N, height, width, channels); "
                f"{dataset.name} has samples shaped {shape}"
            )
        # each block's 2x2 max-pool floors height and width to half; k blocks fit while 2**k <= side
        height, width = shape[:2]
        most = min(height, width).bit_length() - 1
        if len(params.conv_filters) > most:
            raise PipelineError(
                f"target.conv_filters: {len(params.conv_filters)} conv blocks are too many for "
                f"{height}x{width} images; each halves height and width, so at most {most} fit"
            )
    return Architecture(
        kind=params.architecture,
        input_shape=shape,
        n_classes=dataset.n_classes,
        hidden_units=params.hidden_units,
        conv_filters=tuple(params.conv_filters),
    )


def recipe_for(params: ModelParams) -> Recipe:
    """The target's training recipe; defenses change it inside their own trainers."""
    return Recipe(epochs=params.epochs, batch_size=params.batch_size, learning_rate=params.learning_rate)


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy of (N, C) logits against integer labels."""
    return float(np.mean(np.argmax(logits, axis=-1) == labels))


def utility_metrics(
    train_logits: np.ndarray, train_y: np.ndarray, test_logits: np.ndarray, test_y: np.ndarray
) -> dict[str, float]:
    """Train and test accuracy and their gap, the usual overfitting signal."""
    train_acc, test_acc = accuracy(train_logits, train_y), accuracy(test_logits, test_y)
    return {
        "train_accuracy": train_acc,
        "test_accuracy": test_acc,
        "generalization_gap": train_acc - test_acc,
    }


@dataclass(frozen=True)
class TrainedTarget:
    """A trained target as deployed: its network, what it releases, utility, curves."""

    model: Any
    defended: DefendedModels
    utility: dict[str, float]
    history: dict[str, np.ndarray]

    def observe(self, x: np.ndarray) -> np.ndarray:
        """The outputs the target releases on `x`, (N, C)."""
        return self.defended.observe(x)[0]


def audited_target(model: Any, dataset: Dataset, splits: Splits) -> TrainedTarget:
    """A user's trained model as the target, exactly as given: nothing is trained, its outputs are released."""

    def observe(x: np.ndarray) -> np.ndarray:
        return released_logits(model, x)[None]

    defended = DefendedModels(observe=observe, network=lambda k: model, history={})
    utility = utility_metrics(
        observe(dataset.x[splits.members])[0], dataset.y[splits.members],
        observe(dataset.x[splits.test])[0], dataset.y[splits.test],
    )  # fmt: skip
    return TrainedTarget(model=model, defended=defended, utility=utility, history={})


def train_target(
    dataset: Dataset,
    splits: Splits,
    architecture: Architecture,
    recipe: Recipe,
    train: Callable[[TrainingJob], DefendedModels],
    seed: int,
    label: str,
) -> TrainedTarget:
    """Train one model on exactly the members with `train` (a defense's trainer, or the undefended one).

    The defender's reference split rides along as non-member data that
    only defenses needing it (adversarial regularization) look at.
    """
    members, test = splits.members, splits.test
    points = np.concatenate([members, splits.defender_reference])
    keep = (np.arange(len(points)) < len(members))[None]
    job = TrainingJob(
        architecture, recipe, dataset.x[points], dataset.y[points], keep, seed, label,
        (dataset.x[test], dataset.y[test]), defender=~keep,
    )  # fmt: skip
    defended = train(job)
    utility = utility_metrics(
        defended.observe(dataset.x[members])[0], dataset.y[members],
        defended.observe(dataset.x[test])[0], dataset.y[test],
    )
    utility.update(defended.info)
    return TrainedTarget(
        model=defended.network(0),
        defended=defended,
        utility=utility,
        history={k: v[0] for k, v in defended.history.items()},
    )
