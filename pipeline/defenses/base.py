"""What every defense is, receives and returns.

A defense is a `Defense`: its fields are its params block in params.yaml
(`defenses.<name>`, validated strictly), and its `train` method trains K
models at once, so the same code protects the target (K = 1) and, under
adaptive evaluation, the attacker's shadow and reference models. It
returns `DefendedModels`: the outputs an attacker observes, the deployable
Keras network of each model, learning curves and any numbers worth logging
(a DP epsilon, say).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from pipeline.config import StrictModel
from pipeline.stack import (
    Architecture,
    Recipe,
    TrainedStack,
    stack_logits,
    to_keras,
    train_stack,
)


@dataclass(frozen=True)
class TrainingJob:
    """K models to train: model k trains on `x[keep[k]]`.

    `defender[k]` marks points model k does not train on but that its
    defense may use as non-member reference data (adversarial
    regularization): the defender's reference split for the target, an
    equal number of the attacker's own points for a shadow or reference
    model. None: no defender data.
    """

    architecture: Architecture
    recipe: Recipe
    x: np.ndarray
    y: np.ndarray
    keep: np.ndarray  # (K, N) bool
    seed: int
    label: str | None = None
    eval_data: tuple[np.ndarray, np.ndarray] | None = None
    defender: np.ndarray | None = None  # (K, N) bool, disjoint from keep


@dataclass(frozen=True)
class DefendedModels:
    """K trained models as an attacker sees them.

    `observe(x)` gives the (K, N, C) outputs released to a querying party,
    as logits or log-probabilities (attacks only use them through softmax).
    `network(k)` is model k's deployable Keras network; for output defenses
    it is the network before its outputs are post-processed.
    """

    observe: Callable[[np.ndarray], np.ndarray]
    network: Callable[[int], Any]
    history: dict[str, np.ndarray]
    info: dict[str, float] = field(default_factory=dict)


def from_stack(stack: TrainedStack, info: dict[str, float] | None = None) -> DefendedModels:
    """A plain trained stack: outputs are its logits, networks its Keras exports."""
    return DefendedModels(
        observe=lambda x: stack_logits(stack, x),
        network=lambda k: to_keras(stack, k),
        history=stack.history,
        info=info or {},
    )


def train_plain(job: TrainingJob) -> TrainedStack:
    """The job's models trained with its recipe as is."""
    return train_stack(
        job.architecture, job.recipe, job.x, job.y, job.keep, seed=job.seed, eval_data=job.eval_data, progress=job.label
    )


def train_undefended(job: TrainingJob) -> DefendedModels:
    """The job's models trained plainly: the undefended baseline of every row."""
    return from_stack(train_plain(job))


@dataclass(frozen=True)
class CanaryTraining:
    """A canary run's trained models, and what a white-box audit adds.

    `gradient_scores` (K, m): each gradient canary's score, for defenses
    whose training can carry gradient canaries (DP-SGD); None otherwise.
    `accounted_epsilon`: the guarantee the audit must not refute, at the
    audit's delta (None without one).
    """

    models: DefendedModels
    gradient_scores: np.ndarray | None = None
    accounted_epsilon: float | None = None


class Defense(StrictModel):
    """A defense's settings (the fields, its block in params.yaml) and how it trains (`train`).

    Each subclass sets `type` to the name its registry line uses, as a
    Literal, and declares what it needs, which the params check reads
    before any training: `needs_batched_trainer` (it changes the training
    loop or recipe, so it cannot retrain a user's architecture the stack
    does not cover), `uses_defender_data` (it trains on the defender's
    non-member reference split, `data.n_defender_reference`).
    """

    type: str
    needs_batched_trainer: ClassVar[bool] = True
    uses_defender_data: ClassVar[bool] = False

    def train(self, job: TrainingJob) -> DefendedModels:
        """The job's K models, defended."""
        raise NotImplementedError

    def canary_run(
        self, job: TrainingJob, n_planned: int, n_input_canaries: int, gradient_canaries: tuple[np.ndarray, np.ndarray],
        delta: float,
    ) -> CanaryTraining:  # fmt: skip
        """Train a one-run canary audit's job (the planned members plus the included input canaries).

        `gradient_canaries` (coordinates, included) are for defenses whose
        training can carry them; the others train the job as it is.
        """
        return CanaryTraining(self.train(job))


def load_class(entry: str) -> type[Defense]:
    """The `Defense` class an entry ("module:Class", as the registry writes it) names."""
    module, name = entry.split(":")
    return getattr(importlib.import_module(module), name)
