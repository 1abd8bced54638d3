"""Host-side hooks between the epochs of a stack's training, and per-model early stopping."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pipeline.core.errors import PipelineError
from pipeline.core.tf_runtime import tf

__all__ = ["StackCallback", "PerModelEarlyStopping"]


class StackCallback:
    """Host-side hooks between epochs of `train_stack` (all models at once).

    `on_epoch_end` sees the epoch's per-model logs ((K,) arrays: "loss",
    "accuracy", "val_*", "holdout_*", ...) and the live stacked weight
    variables; setting `stop_training` ends training after this epoch.
    `on_train_end` gets the final stacked weights (numpy, leading axis K)
    and returns the weights to keep.
    """

    stop_training: bool = False

    def on_epoch_end(self, epoch: int, logs: dict[str, np.ndarray], weights: Sequence[tf.Variable]) -> None:
        pass

    def on_train_end(self, weights: list[np.ndarray]) -> list[np.ndarray]:
        return weights


class PerModelEarlyStopping(StackCallback):
    """keras.callbacks.EarlyStopping(mode="min", restore_best_weights=True), per model.

    Each of the K models runs Keras's rule on its own entry of
    `logs[monitor]`: an epoch improves when value - min_delta < best; after
    `patience` epochs in a row without improvement (and not at epoch 0) the
    model stops. A stopped model's best weights are frozen: later epochs of
    the batched run (the other models still training) can no longer change
    what it returns. Training ends when every model has stopped or the
    epochs run out; every model then gets back the weights of its best
    epoch (as Keras restores them whether or not it stopped early).

    After training: `stopped_epoch` (K,) the 0-based epoch at which each
    model stopped, -1 if it never did; `best_epoch` (K,) 0-based;
    `epochs_trained` (K,) how many epochs each returned model trained.
    """

    def __init__(self, monitor: str = "holdout_loss", patience: int = 3, min_delta: float = 0.0) -> None:
        if patience < 1:
            raise PipelineError(f"early stopping needs patience >= 1, got {patience}")
        self.monitor, self.patience, self.min_delta = monitor, patience, min_delta
        self.best: np.ndarray | None = None
        self.best_weights: list[np.ndarray] | None = None
        self.epochs_run = 0

    def on_epoch_end(self, epoch: int, logs: dict[str, np.ndarray], weights: Sequence[tf.Variable]) -> None:
        if self.monitor not in logs:
            raise PipelineError(
                f"early stopping monitors {self.monitor!r}, which the epoch logs lack "
                f"(they have {', '.join(logs)})"
            )
        current = np.asarray(logs[self.monitor], dtype=np.float64)
        if self.best is None:
            k = len(current)
            self.best = np.full(k, np.inf)
            self.wait = np.zeros(k, np.int64)
            self.stopped = np.zeros(k, bool)
            self.stopped_epoch = np.full(k, -1, np.int64)
            self.best_epoch = np.full(k, epoch, np.int64)
            self.best_weights = [np.array(w.numpy()) for w in weights]
        self.epochs_run = epoch + 1
        active = ~self.stopped
        self.wait[active] += 1
        improved = active & (current - self.min_delta < self.best)
        if improved.any():
            self.best[improved] = current[improved]
            self.best_epoch[improved] = epoch
            self.wait[improved] = 0
            for best, w in zip(self.best_weights, weights):
                best[improved] = w.numpy()[improved]
        stop = active & ~improved & (self.wait >= self.patience) & (epoch > 0)
        self.stopped |= stop
        self.stopped_epoch[stop] = epoch
        self.stop_training = bool(self.stopped.all())

    def on_train_end(self, weights: list[np.ndarray]) -> list[np.ndarray]:
        if self.best_weights is None:
            return weights
        return [np.array(b) for b in self.best_weights]

    @property
    def epochs_trained(self) -> np.ndarray:
        return np.where(self.stopped_epoch >= 0, self.stopped_epoch + 1, self.epochs_run)
