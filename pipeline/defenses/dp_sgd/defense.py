"""DP-SGD as a defense: its settings (`defenses.<name>` with `type: dp_sgd`), training and canary run."""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field, StrictFloat, StrictInt, model_validator

from pipeline.defenses.base import CanaryTraining, DefendedModels, Defense, TrainingJob
from pipeline.defenses.dp_sgd import trainer
from pipeline.measures.accounting import epsilon

__all__ = ["DpSgdDefense"]


class DpSgdDefense(Defense):
    """DP-SGD: per-example clipping, Gaussian noise, Poisson sampling; epsilon accounted.

    Give exactly one of `noise_multiplier` and `target_epsilon` (sigma is
    then calibrated). `epochs`, `batch_size` (the expected Poisson batch)
    and `learning_rate` default to the target's. `randomness`: "seeded"
    draws the Poisson sampling and the noise from the run's seed
    (reproducible, but the noise is predictable from params.yaml);
    "secure" draws both from the operating system's secure source
    (os.urandom), so runs do not reproduce.
    """

    type: Literal["dp_sgd"]
    noise_multiplier: StrictFloat | None = Field(1.0, gt=0)
    target_epsilon: StrictFloat | None = Field(None, gt=0)
    delta: StrictFloat = Field(1e-5, gt=0, lt=1)
    clip_norm: StrictFloat = Field(1.0, gt=0)
    accountant: Literal["rdp", "pld"] = "rdp"
    epochs: StrictInt | None = Field(None, gt=0)
    batch_size: StrictInt | None = Field(None, gt=0)
    learning_rate: StrictFloat | None = Field(None, gt=0)
    randomness: Literal["seeded", "secure"] = "seeded"

    @model_validator(mode="after")
    def _one_noise_source(self) -> DpSgdDefense:
        if (self.noise_multiplier is None) == (self.target_epsilon is None):
            raise ValueError(
                "give exactly one of noise_multiplier and target_epsilon (set the other to null) "
                f"(got noise_multiplier={self.noise_multiplier}, target_epsilon={self.target_epsilon})"
            )
        return self

    def train(self, job: TrainingJob) -> DefendedModels:
        """The job's K models trained with DP-SGD; `info` carries the guarantee."""
        return trainer.train(job, self)

    def canary_run(
        self, job: TrainingJob, n_planned: int, n_input_canaries: int, gradient_canaries: tuple[np.ndarray, np.ndarray],
        delta: float,
    ) -> CanaryTraining:  # fmt: skip
        """The canary run under the DP plan of `n_planned` points, with gradient canaries scored white-box.

        The accounted epsilon is recomputed at the audit's `delta`, the
        level at which the canary bound is stated.
        """
        models, scores = trainer.train_with_canaries(job, self, n_planned, n_input_canaries, gradient_canaries)
        info = models.info
        accounted = epsilon(info["dp_noise_multiplier"], info["dp_sampling_rate"], int(info["dp_steps"]), delta, self.accountant)
        return CanaryTraining(models, scores, accounted)
