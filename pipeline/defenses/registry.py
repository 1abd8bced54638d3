"""Registry of defenses by the `type` written in `params.yaml`.

Each entry trains the K models of a `TrainingJob` the defended way and
returns `DefendedModels`. Adding a defense is one module, one line here and
its params model in `pipeline/config.py`. `train_models(job, None)` is the
undefended baseline, so every row of the report is trained by one path.
Only the defense stages import this module: the undefended training stages
use `base.train_undefended` and so do not depend on any defense's code.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable

from pipeline.defenses.base import DefendedModels, TrainingJob, train_undefended

REGISTRY: dict[str, str] = {
    "dropout": "pipeline.defenses.regularization:dropout",
    "l2": "pipeline.defenses.regularization:l2",
    "dp_sgd": "pipeline.defenses.dp_sgd:train",
    "label_smoothing": "pipeline.defenses.regularization:label_smoothing",
    "early_stopping": "pipeline.defenses.early_stopping:train",
    "relaxloss": "pipeline.defenses.relaxloss:train",
    "selena": "pipeline.defenses.selena:train",
    "adversarial_regularization": "pipeline.defenses.adversarial:train",
    "memguard": "pipeline.defenses.output:memguard",
    "top_k": "pipeline.defenses.output:top_k",
    "rounding": "pipeline.defenses.output:rounding",
    "label_only": "pipeline.defenses.output:label_only",
    "ensemble": "pipeline.defenses.ensembling:train",
}


def train_models(job: TrainingJob, defense: Any | None) -> DefendedModels:
    """Train the job's K models, defended by `defense` (a params model with a `type`) if given."""
    if defense is None:
        return train_undefended(job)
    if defense.type not in REGISTRY:
        raise KeyError(f"unknown defense type {defense.type!r}; known: {', '.join(REGISTRY)}")
    module, func = REGISTRY[defense.type].split(":")
    return getattr(importlib.import_module(module), func)(job, defense)


def trainer_for(defense: Any | None) -> Callable[[TrainingJob], DefendedModels]:
    """`train_models` with the defense bound: what `models.train_target` and `attacker.ModelSet` take."""
    return lambda job: train_models(job, defense)
