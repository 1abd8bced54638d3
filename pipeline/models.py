"""Targets: architecture and recipe from params, training, utility metrics."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.config import Defense, ModelParams
from pipeline.ensemble import Architecture, Recipe, keras_logits, to_keras, train_stack
from pipeline.errors import PipelineError
from pipeline.types import Dataset, Splits


def architecture_for(dataset: Dataset, params: ModelParams) -> Architecture:
    """The target's architecture for this dataset; shadows reuse it."""
    shape = tuple(int(d) for d in dataset.x.shape[1:])
    if params.architecture == "cnn" and len(shape) != 3:
        raise PipelineError(
            f"target.architecture: cnn needs image data shaped (N, height, width, channels); "
            f"{dataset.name} has samples shaped {shape}"
        )
    return Architecture(
        kind=params.architecture,
        input_shape=shape,
        n_classes=dataset.n_classes,
        hidden_units=params.hidden_units,
        conv_filters=tuple(params.conv_filters),
    )


def recipe_for(params: ModelParams, defense: Defense | None = None) -> Recipe:
    """The training recipe, changed by a training-time defense if one is given."""
    recipe = Recipe(epochs=params.epochs, batch_size=params.batch_size, learning_rate=params.learning_rate)
    if defense is None:
        return recipe
    from pipeline.defenses import apply_defense

    return apply_defense(recipe, defense)


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy of (N, C) logits against integer labels."""
    return float(np.mean(np.argmax(logits, axis=-1) == labels))


def utility_metrics(train_logits: np.ndarray, train_y: np.ndarray, test_logits: np.ndarray, test_y: np.ndarray) -> dict[str, float]:
    """Train and test accuracy and their gap, the usual overfitting signal."""
    train_acc, test_acc = accuracy(train_logits, train_y), accuracy(test_logits, test_y)
    return {
        "train_accuracy": train_acc,
        "test_accuracy": test_acc,
        "generalization_gap": train_acc - test_acc,
    }


@dataclass(frozen=True)
class TrainedTarget:
    """A trained target as deployed: the Keras model, its utility and curves."""

    model: Any
    utility: dict[str, float]
    history: dict[str, np.ndarray]


def train_target(
    dataset: Dataset, splits: Splits, architecture: Architecture, recipe: Recipe, seed: int, label: str
) -> TrainedTarget:
    """Train one model on exactly the members; measure it as the saved Keras model."""
    members, test = splits.members, splits.test
    stack = train_stack(
        architecture,
        recipe,
        dataset.x[members],
        dataset.y[members],
        np.ones((1, len(members)), dtype=bool),
        seed=seed,
        eval_data=(dataset.x[test], dataset.y[test]),
        progress=label,
    )
    model = to_keras(stack, 0)
    utility = utility_metrics(
        keras_logits(model, dataset.x[members]), dataset.y[members],
        keras_logits(model, dataset.x[test]), dataset.y[test],
    )
    return TrainedTarget(model=model, utility=utility, history={k: v[0] for k, v in stack.history.items()})
