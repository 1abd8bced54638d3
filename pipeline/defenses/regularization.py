"""Regularization defenses: they shrink the train-test gap an attacker exploits."""

from __future__ import annotations

import dataclasses
from typing import Literal

from pydantic import Field, StrictFloat

from pipeline.defenses.base import (
    DefendedModels,
    Defense,
    TrainingJob,
    from_stack,
    train_plain,
)


def _with_recipe(job: TrainingJob, **changes: float) -> DefendedModels:
    return from_stack(train_plain(dataclasses.replace(job, recipe=dataclasses.replace(job.recipe, **changes))))


class DropoutDefense(Defense):
    """Dropout after the hidden layer (the report's Dropout(0.5))."""

    type: Literal["dropout"]
    rate: StrictFloat = Field(0.5, gt=0, lt=1)

    def train(self, job: TrainingJob) -> DefendedModels:
        """Dropout after the hidden layer, as in the original report (rate 0.5)."""
        return _with_recipe(job, dropout=self.rate)


class L2Defense(Defense):
    """L2 weight penalty on every kernel."""

    type: Literal["l2"]
    weight: StrictFloat = Field(1e-3, gt=0)

    def train(self, job: TrainingJob) -> DefendedModels:
        """An L2 penalty on every kernel."""
        return _with_recipe(job, l2=self.weight)


class LabelSmoothingDefense(Defense):
    """Train on smoothed one-hot labels, which caps the confidence on members."""

    type: Literal["label_smoothing"]
    smoothing: StrictFloat = Field(0.1, gt=0, lt=1)

    def train(self, job: TrainingJob) -> DefendedModels:
        """Smoothed one-hot targets: members cannot be fit to full confidence."""
        return _with_recipe(job, label_smoothing=self.smoothing)
