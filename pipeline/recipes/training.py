"""One recipe of the recipe audit trained: K models on the shared design, and what an attacker sees of them.

A recipe is the undefended training or a `Defense`. Its K models train as
one job on the design's columns (the audit pool's rows, then the
canaries), model k on the columns `design.keep[k]` marks, with the
defender's reference split as every model's defender data (the data a
defense such as adversarial regularization may use; never a column of
the design). Each model is then queried once on every design column,
through the recipe's release (an output defense's post-processed vector),
and scored on the test split.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from pipeline.core.types import Dataset, Splits
from pipeline.defenses.base import DefendedModels, TrainingJob
from pipeline.recipes.design import RecipeDesign
from pipeline.stack import Architecture, Recipe

__all__ = ["RecipeOutputs", "audit_job", "train_recipe"]


@dataclass(frozen=True)
class RecipeOutputs:
    """A recipe's K models as the audit reads them.

    `logits` (K, P + m, C): released outputs on the design's columns (pool
    rows, then canaries); `test_accuracy` (K,); `info`: numbers the
    recipe reports (a DP-SGD recipe's epsilon, say).
    """

    logits: np.ndarray
    test_accuracy: np.ndarray
    info: dict[str, float]


def audit_job(
    dataset: Dataset, splits: Splits, design: RecipeDesign, architecture: Architecture, recipe: Recipe, seed: int,
    label: str | None = None,
) -> TrainingJob:  # fmt: skip
    """The K models' training job: design columns first, then the defender's reference rows (never trained on)."""
    defender_rows = splits.defender_reference
    x = np.concatenate([dataset.x[design.pool], design.canary_x.astype(dataset.x.dtype), dataset.x[defender_rows]])
    y = np.concatenate([dataset.y[design.pool], design.canary_y, dataset.y[defender_rows]])
    columns = design.keep.shape[1]
    keep = np.zeros((design.n_models, len(x)), bool)
    keep[:, :columns] = design.keep
    defender = np.zeros_like(keep)
    defender[:, columns:] = True
    eval_data = (dataset.x[splits.test], dataset.y[splits.test])
    return TrainingJob(architecture, recipe, x, y, keep, seed, label, eval_data, defender)


def train_recipe(job: TrainingJob, design: RecipeDesign, train: Callable[[TrainingJob], DefendedModels]) -> RecipeOutputs:
    """Train the job with `train` (a defense's, or the undefended one) and query every model once."""
    models = train(job)
    columns = design.keep.shape[1]
    logits = np.asarray(models.observe(job.x[:columns]), np.float32)
    x_test, y_test = job.eval_data
    accuracy = (np.argmax(models.observe(x_test), axis=-1) == y_test[None]).mean(axis=1)
    return RecipeOutputs(logits=logits, test_accuracy=accuracy.astype(np.float64), info=dict(models.info))
