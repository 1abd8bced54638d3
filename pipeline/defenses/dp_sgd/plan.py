"""The privacy plan of a DP-SGD job: the recipe trained, sampling rate, steps, noise, and the epsilon they give."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from pipeline.core.errors import PipelineError
from pipeline.measures.accounting import calibrate_noise, epsilon
from pipeline.stack import Recipe

if TYPE_CHECKING:
    from pipeline.defenses.dp_sgd.defense import DpSgdDefense

__all__ = ["DpPlan", "plan"]


@dataclasses.dataclass(frozen=True)
class DpPlan:
    """Sampling, noise and the resulting guarantee for n points per model."""

    recipe: Recipe  # the recipe actually trained (DP overrides applied)
    n: int
    sampling_rate: float
    steps_per_epoch: int
    noise_multiplier: float
    clip_norm: float
    delta: float
    epsilon: float
    accountant: str
    randomness: str = "seeded"  # "seeded" or "secure", see the module docstring

    @property
    def steps(self) -> int:
        return self.recipe.epochs * self.steps_per_epoch

    def info(self) -> dict[str, float]:
        return {
            "dp_epsilon": float(self.epsilon),
            "dp_delta": float(self.delta),
            "dp_noise_multiplier": float(self.noise_multiplier),
            "dp_clip_norm": float(self.clip_norm),
            "dp_sampling_rate": float(self.sampling_rate),
            "dp_steps": float(self.steps),
        }


def plan(recipe: Recipe, n: int, defense: DpSgdDefense) -> DpPlan:
    """Apply the defense's overrides to `recipe` and account for n points per model.

    q = batch_size / n (capped at 1: a batch_size above n means full-batch
    steps), steps per epoch round(1 / q).
    """
    recipe = dataclasses.replace(
        recipe,
        epochs=defense.epochs or recipe.epochs,
        batch_size=defense.batch_size or recipe.batch_size,
        learning_rate=defense.learning_rate or recipe.learning_rate,
    )
    if n < 1:
        raise PipelineError("dp_sgd: the job has no training points")
    q = min(1.0, recipe.batch_size / n)
    steps_per_epoch = max(1, round(1.0 / q))
    steps = recipe.epochs * steps_per_epoch
    if defense.noise_multiplier is None:
        sigma = calibrate_noise(
            float(defense.target_epsilon), q, steps, defense.delta, defense.accountant
        )
    else:
        sigma = float(defense.noise_multiplier)
    eps = epsilon(sigma, q, steps, defense.delta, defense.accountant)
    return DpPlan(
        recipe, n, q, steps_per_epoch, sigma, defense.clip_norm, defense.delta, eps, defense.accountant,
        defense.randomness,
    )  # fmt: skip
