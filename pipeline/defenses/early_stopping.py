"""Early stopping: stop each model when the loss on its own held-out members stops falling.

For each of the job's K models, a seeded validation split is carved from
that model's own training points (``keep[k]`` True) only: never from its
non-member/reference points (``keep[k]`` False), never from anything else.
Model k trains on the rest and, after every epoch, scores its validation
split; Keras's ``EarlyStopping(monitor="val_loss", patience,
restore_best_weights=True)`` rule runs per model
(`stack.PerModelEarlyStopping`): after `patience` epochs in a row
without a lower validation loss model k stops, and it is returned with the
weights of its best epoch; once stopped, the epochs the other models still
run cannot change it. Training ends when every model has stopped or the
recipe's epochs run out.

The validation points stay members of model k in the audit's ground truth
(they are in the training set the defender chose) although the model never
trained on them, which can only make the defense look no better than it is.

history: "loss"/"accuracy" (on the training part), "holdout_loss" /
"holdout_accuracy" (the validation split the rule monitors) and "val_*" on
`job.eval_data`; (K, epochs run). A model that stopped before the last
epoch run has NaN after its stop epoch (those epochs trained weights it
does not return). info: "stopped_epoch_mean", the mean over models of the
number of epochs each returned model trained (its stop epoch, 1-based, or
all epochs when it never stopped), and "best_epoch_mean" (1-based).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field, StrictFloat, StrictInt

from pipeline.core.errors import PipelineError
from pipeline.core.seeding import rng_for
from pipeline.defenses.base import DefendedModels, Defense, TrainingJob, from_stack
from pipeline.stack import PerModelEarlyStopping, TrainedStack, train_stack

__all__ = ["validation_split", "EarlyStoppingDefense"]


def validation_split(keep: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split each model's training points: (train, validation), both (K, N) bool.

    Row k of the validation mask is round(fraction * n) of keep[k]'s n
    points (at least 1, leaving at least 1 to train on), drawn by a
    generator seeded from `seed`; the train mask is the rest of keep[k].
    Every row has the same counts, as `train_stack` needs.
    """
    keep = np.asarray(keep, dtype=bool)
    counts = keep.sum(axis=1)
    if keep.ndim != 2 or np.any(counts != counts[0]):
        raise PipelineError("early_stopping: every model must have the same number of training points")
    n = int(counts[0])
    if n < 2:
        raise PipelineError(f"early_stopping needs at least 2 training points per model to split, got {n}")
    n_val = min(max(1, int(round(fraction * n))), n - 1)
    rng = rng_for(seed, "early_stopping", "validation")
    val = np.zeros_like(keep)
    for k, row in enumerate(keep):
        val[k, rng.permutation(np.flatnonzero(row))[:n_val]] = True
    return keep & ~val, val


class EarlyStoppingDefense(Defense):
    """Stop when the loss on a validation split carved from the members stops falling."""

    type: Literal["early_stopping"]
    validation_fraction: StrictFloat = Field(0.2, gt=0, lt=1)
    patience: StrictInt = Field(3, ge=1)

    def train(self, job: TrainingJob) -> DefendedModels:
        """Train the job's K models with per-model early stopping on their own validation split."""
        train_keep, val_keep = validation_split(job.keep, self.validation_fraction, job.seed)
        stopper = PerModelEarlyStopping(monitor="holdout_loss", patience=self.patience)
        stack = train_stack(
            job.architecture, job.recipe, job.x, job.y, train_keep, seed=job.seed,
            eval_data=job.eval_data, progress=job.label, holdout=val_keep, callbacks=[stopper],
        )  # fmt: skip
        trained = stopper.epochs_trained
        history = {}
        for key, curve in stack.history.items():
            curve = curve.copy()
            curve[np.arange(curve.shape[1])[None, :] >= trained[:, None]] = np.nan
            history[key] = curve
        stack = TrainedStack(stack.architecture, stack.recipe, stack.weights, history)
        return from_stack(
            stack,
            {
                "stopped_epoch_mean": float(trained.mean()),
                "best_epoch_mean": float(stopper.best_epoch.mean() + 1),
            },
        )
