"""Regularization defenses: they shrink the train-test gap an attacker exploits."""

from __future__ import annotations

import dataclasses

from pipeline.config import DropoutDefense, L2Defense, LabelSmoothingDefense
from pipeline.defenses.base import DefendedModels, TrainingJob, from_stack, train_plain


def _with_recipe(job: TrainingJob, **changes: float) -> DefendedModels:
    return from_stack(train_plain(dataclasses.replace(job, recipe=dataclasses.replace(job.recipe, **changes))))


def dropout(job: TrainingJob, defense: DropoutDefense) -> DefendedModels:
    """Dropout after the hidden layer, as in the original report (rate 0.5)."""
    return _with_recipe(job, dropout=defense.rate)


def l2(job: TrainingJob, defense: L2Defense) -> DefendedModels:
    """An L2 penalty on every kernel."""
    return _with_recipe(job, l2=defense.weight)


def label_smoothing(job: TrainingJob, defense: LabelSmoothingDefense) -> DefendedModels:
    """Smoothed one-hot targets: members cannot be fit to full confidence."""
    return _with_recipe(job, label_smoothing=defense.smoothing)
