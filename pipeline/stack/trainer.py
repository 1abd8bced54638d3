"""Training K same-shaped models as one batched TensorFlow computation.

Shadow and reference models dominate the pipeline's cost, and on a CPU a
sequential ``model.fit`` per model is mostly per-step overhead. Here every
weight carries a leading K axis, each step gathers one batch per model
(each model its own data subset, initialisation, shuffling and dropout
masks) and one Adam step updates all K. Adam is elementwise and the loss
is a sum of per-model losses, so model k's update is exactly the update of
an independently trained Keras model with the same recipe. The single
target model is the K=1 case of the same code.

`Trainer` holds the variables, the optimizer and the compiled epoch; `fit`
is the one epoch loop (logs, evaluation, callbacks, progress bar) for it
and its subclasses (DP-SGD, adversarial regularization), which change
what an epoch does through the Trainer's hooks; `train_stack` is plain
training with its optional hooks (soft targets, a custom loss, per-model
held-out points, callbacks).

Each epoch is one traced graph (a while-loop over its steps) without XLA:
measured on 2 CPU cores, ``jit_compile=True`` on a static-shape epoch of
64 digit MLPs took 26.5 ms against 24.3 ms without it, after 0.8 s of
compilation per trainer; it ran the CNN ~30x slower and refuses
MaxPoolGrad under op determinism. What bounds an epoch of 64 MLPs is in
`benchmarks/bench_training.py`'s profile: the small batched matmuls, the
Adam updates (memory-bound) and the step's other ops about equally.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from pipeline.core.errors import PipelineError
from pipeline.core.tf_runtime import tf
from pipeline.stack.callbacks import StackCallback
from pipeline.stack.clones import train_clones
from pipeline.stack.forward import forward, l2_term, per_example_loss
from pipeline.stack.inference import evaluate
from pipeline.stack.optimizer import FusedAdam
from pipeline.stack.progress import progress_bar
from pipeline.stack.spec import (
    Architecture,
    Recipe,
    TrainedStack,
    init_weights,
    require_batched,
    validate,
)

__all__ = [
    "Batch",
    "LossFn",
    "Trainer",
    "checked_training_data",
    "checked_eval_data",
    "fit",
    "train_stack",
]


@dataclass(frozen=True)
class Batch:
    """One training step as a custom loss (`train_stack(loss_fn=...)`) sees it.

    All fields are tensors of the traced epoch graph: `logits` (K, B, C) in
    training mode (dropout on), `labels` (K, B) int32, `targets` (K, B, C)
    when soft targets were given (else None), `loss` (K,) the recipe's
    cross-entropy of each model's batch (against `targets` if given, label
    smoothing applied, no L2), `epoch` () int32 counting from 0 and `step`
    () int32, the step within the epoch.
    """

    logits: tf.Tensor
    labels: tf.Tensor
    targets: tf.Tensor | None
    loss: tf.Tensor
    epoch: tf.Tensor
    step: tf.Tensor


LossFn = Callable[[Batch], "tf.Tensor"]
"""A per-model training objective: Batch -> (K,), minimised (the trainer adds L2).

Model k's entry may depend on model k's slice of the batch only (the
objective is summed over models before differentiation).
"""


class Trainer:
    """Variables, fused Adam and the compiled epoch of one stack, with hooks for subclasses.

    `epoch(inputs, seed)` is `epoch_steps` traced once: inputs (K, n) int32
    from `epoch_inputs`, seed () int32. Plain training consumes a fresh
    shuffle of each model's n members per epoch and returns per-model sums
    (loss * batch size, correct predictions); `epoch_means` turns them into
    the logged epoch means. Subclasses may override `train_step` (one step
    of all models), `epoch_steps` with `epoch_inputs` and `epoch_means`,
    `epoch_logs` to add per-model (K,) numbers to each epoch's logs, and
    `progress_postfix` to add to the progress bar.

    Optional: `targets` soft targets, (N, C) shared or (K, N, C) per model,
    trained on instead of the one-hot labels; `loss_fn` a custom objective
    (see `Batch`).
    """

    def __init__(
        self,
        arch: Architecture,
        recipe: Recipe,
        init: list[np.ndarray],
        x: np.ndarray,
        y: np.ndarray,
        n_per_model: int,
        *,
        targets: np.ndarray | None = None,
        loss_fn: LossFn | None = None,
    ) -> None:
        require_batched(arch, "this defense")
        self.arch, self.recipe = arch, recipe
        self.vars = [tf.Variable(w) for w in init]
        self.optimizer = FusedAdam(self.vars, recipe.learning_rate)
        self.x = tf.constant(x)
        self.y = tf.constant(y.astype(np.int32))
        self.targets = None if targets is None else tf.constant(np.asarray(targets, np.float32))
        self.loss_fn = loss_fn
        self.current_epoch = tf.Variable(0, dtype=tf.int32, trainable=False)
        self.n = n_per_model
        self.n_steps = -(-n_per_model // recipe.batch_size)
        k = len(init[0])
        self.epoch = tf.function(
            self.epoch_steps,
            input_signature=[
                tf.TensorSpec([k, n_per_model], tf.int32),
                tf.TensorSpec([], tf.int32),
            ],
            autograph=False,
        )

    def _gather_targets(self, idx: tf.Tensor) -> tf.Tensor | None:
        if self.targets is None:
            return None
        if len(self.targets.shape) == 3:  # (K, N, C): each model its own targets
            return tf.gather(self.targets, idx, batch_dims=1)
        return tf.gather(self.targets, idx)

    def train_step(self, idx: tf.Tensor, seed: tf.Tensor, step: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """One Adam step of every model on idx (K, B); per-model (loss, n correct).

        The loss returned (for history) is the recipe's loss incl. L2, also
        when a custom `loss_fn` is what is minimised.
        """
        arch, r = self.arch, self.recipe
        xb = tf.gather(self.x, idx)  # (K, B, ...)
        yb = tf.gather(self.y, idx)
        tb = self._gather_targets(idx)
        with tf.GradientTape() as tape:
            logits = forward(arch, self.vars, xb, dropout=r.dropout, dropout_seed=seed)
            loss_k = tf.reduce_mean(per_example_loss(logits, yb, arch.n_classes, r.label_smoothing, tb), axis=1)
            objective = loss_k
            if self.loss_fn is not None:
                objective = self.loss_fn(Batch(logits, yb, tb, loss_k, self.current_epoch.value(), step))
            if r.l2 > 0:
                penalty = l2_term(self.vars, r.l2)
                loss_k = loss_k + penalty
                objective = loss_k if self.loss_fn is None else objective + penalty
            total = tf.reduce_sum(objective)
        self.optimizer.apply(tape.gradient(total, self.vars))
        pred = tf.argmax(logits, axis=-1, output_type=tf.int32)
        correct = tf.reduce_sum(tf.cast(tf.equal(pred, yb), tf.float32), axis=1)
        return loss_k, correct

    def epoch_inputs(self, members: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """What the next epoch consumes: each model's members (K, n), freshly shuffled from rng."""
        k, n = members.shape
        return np.take_along_axis(members, rng.permuted(np.tile(np.arange(n), (k, 1)), axis=1), 1)

    def epoch_steps(self, order: tf.Tensor, seed: tf.Tensor) -> tuple[tf.Tensor, ...]:
        """All steps of one epoch; order (K, n) holds this epoch's shuffled indices.

        Batches are consecutive slices of `batch_size` (the last one
        shorter), as in Keras `fit`. Returns per-model sums over the epoch
        of (batch loss * batch size) and of correct predictions, for
        Keras-style epoch means.
        """
        bs = self.recipe.batch_size
        k = order.shape[0]

        def body(s, loss_sum, correct):
            idx = order[:, s * bs : (s + 1) * bs]  # the last slice is clipped at n
            l, c = self.train_step(idx, tf.stack([seed, s]), s)
            return s + 1, loss_sum + l * tf.cast(tf.shape(idx)[1], tf.float32), correct + c

        _, loss_sum, correct = tf.while_loop(
            lambda s, *_: s < self.n_steps,
            body,
            (tf.constant(0), tf.zeros([k]), tf.zeros([k])),
        )
        return loss_sum, correct

    def epoch_means(self, sums: Sequence[tf.Tensor]) -> tuple[np.ndarray, np.ndarray]:
        """Per-model (loss, accuracy) of the epoch from `epoch_steps`'s sums: means over n points."""
        loss_sum, correct = sums
        return loss_sum.numpy() / self.n, correct.numpy() / self.n

    def epoch_logs(self) -> dict[str, np.ndarray]:
        """Extra per-model (K,) numbers for the epoch just run (none here)."""
        return {}

    def progress_postfix(self) -> dict[str, str]:
        """Extra entries for the progress bar (none here)."""
        return {}


def checked_training_data(
    architecture: Architecture, x: np.ndarray, y: np.ndarray, keep: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Validated (x float32, y, keep bool, members (K, n) int32) of a stack's training data."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    y = np.asarray(y)
    keep = np.asarray(keep, dtype=bool)
    if x.shape[1:] != tuple(architecture.input_shape):
        raise PipelineError(
            f"x has per-example shape {x.shape[1:]}, "
            f"architecture expects {architecture.input_shape}"
        )
    if keep.ndim != 2 or keep.shape[1] != x.shape[0] or y.shape != (x.shape[0],):
        raise PipelineError(
            f"keep must be (K, N) with N = len(x) = len(y); got keep {keep.shape}, "
            f"x {x.shape}, y {y.shape}"
        )
    if keep.shape[0] < 1:
        raise PipelineError("keep has no rows: nothing to train")
    counts = keep.sum(axis=1)
    if np.any(counts != counts[0]):
        raise PipelineError(
            "every row of keep must select the same number of training points; got counts "
            f"{sorted(set(counts.tolist()))} (first rows: {counts[:8].tolist()})"
        )
    if counts[0] == 0:
        raise PipelineError("keep selects no training points")
    if y.min() < 0 or y.max() >= architecture.n_classes:
        raise PipelineError(
            f"labels must lie in [0, {architecture.n_classes}), got range [{y.min()}, {y.max()}]"
        )
    members = np.stack([np.flatnonzero(row) for row in keep]).astype(np.int32)  # (K, n)
    return x, y, keep, members


def checked_eval_data(
    eval_data: tuple[np.ndarray, np.ndarray] | None, x: np.ndarray
) -> tuple[np.ndarray, np.ndarray] | None:
    """Eval data (x, y) checked against the training x's per-example shape, or None."""
    if eval_data is None:
        return None
    x_eval, y_eval = (np.asarray(a) for a in eval_data)
    if x_eval.shape[1:] != x.shape[1:] or y_eval.shape != (len(x_eval),):
        raise PipelineError(
            f"eval_data must be (x, y) shaped like the training data; got x "
            f"{x_eval.shape}, y {y_eval.shape} for training x {x.shape}"
        )
    return x_eval, y_eval


def _checked_holdout(holdout: np.ndarray | None, keep: np.ndarray) -> np.ndarray | None:
    """(K, V) int32 indices of each model's held-out points, or None."""
    if holdout is None:
        return None
    holdout = np.asarray(holdout, dtype=bool)
    if holdout.shape != keep.shape:
        raise PipelineError(f"holdout must be shaped like keep {keep.shape}, got {holdout.shape}")
    if np.any(holdout & keep):
        raise PipelineError("holdout points must not be training points of the same model")
    counts = holdout.sum(axis=1)
    if np.any(counts != counts[0]) or counts[0] == 0:
        raise PipelineError(
            "every row of holdout must select the same, non-zero number of points; got counts "
            f"{sorted(set(counts.tolist()))[:8]}"
        )
    return np.stack([np.flatnonzero(row) for row in holdout]).astype(np.int32)


def _checked_targets(
    soft_targets: np.ndarray | None, keep: np.ndarray, n_classes: int
) -> np.ndarray | None:
    """Soft targets (N, C) or (K, N, C) float32, probabilities on every training point, or None."""
    if soft_targets is None:
        return None
    t = np.asarray(soft_targets, dtype=np.float32)
    k, n = keep.shape
    if t.shape not in ((n, n_classes), (k, n, n_classes)):
        raise PipelineError(
            f"soft_targets must be (N, C) = {(n, n_classes)} or (K, N, C) = {(k, n, n_classes)}, "
            f"got {t.shape}"
        )
    used = t[keep] if t.ndim == 3 else t[keep.any(axis=0)]
    if not np.all(np.isfinite(used)) or used.min() < 0 or np.abs(used.sum(-1) - 1).max() > 1e-3:
        raise PipelineError("soft_targets of training points must be probabilities (>= 0, rows summing to 1)")
    return t


def train_stack(
    architecture: Architecture,
    recipe: Recipe,
    x: np.ndarray,
    y: np.ndarray,
    keep: np.ndarray,
    seed: int,
    eval_data: tuple[np.ndarray, np.ndarray] | None = None,
    progress: str | None = None,
    *,
    soft_targets: np.ndarray | None = None,
    loss_fn: LossFn | None = None,
    holdout: np.ndarray | None = None,
    callbacks: Sequence[StackCallback] = (),
) -> TrainedStack:
    """Train K models at once; model k trains on ``x[keep[k]]``.

    x: (N, *input_shape) float32; y: (N,) int labels; keep: (K, N) bool,
    all rows with the same count (so every step has the same batch size for
    all models, as K separate `fit` calls would). `seed` drives every
    model's initialisation, shuffling and dropout: models differ from each
    other, and the same seed gives the same weights. `eval_data` is scored
    by every model after each epoch; `progress` labels a tqdm bar on
    stderr (shown only when stderr is a terminal).

    Hooks (all optional):

    - `soft_targets`: (N, C), or (K, N, C) per model, probabilities trained
      on instead of one-hot labels (accuracy still counts against y).
    - `loss_fn`: a custom per-model objective, see `Batch`; history "loss"
      stays the recipe's loss.
    - `holdout`: (K, N) bool, each model's own held-out points (disjoint
      from its keep row, same count per row), scored after each epoch as
      "holdout_loss" / "holdout_accuracy".
    - `callbacks`: `StackCallback`s run after each epoch's logs; one of them
      may stop training, and they may replace the returned weights
      (`PerModelEarlyStopping`). History then covers the epochs run.
    """
    validate(architecture, recipe)
    x, y, keep, members = checked_training_data(architecture, x, y, keep)
    eval_data = checked_eval_data(eval_data, x)
    holdout_idx = _checked_holdout(holdout, keep)
    targets = _checked_targets(soft_targets, keep, architecture.n_classes)

    if architecture.kind == "keras":
        if soft_targets is not None or loss_fn is not None or holdout is not None or callbacks:
            require_batched(architecture, "a defense that changes the training loop")
        return train_clones(architecture, recipe, x, y, members, seed, eval_data, progress)
    k, n = members.shape
    rng = np.random.default_rng(seed)
    init = init_weights(architecture, k, rng)
    trainer = Trainer(architecture, recipe, init, x, y, n, targets=targets, loss_fn=loss_fn)
    return fit(
        trainer, members, rng, eval_data=eval_data, holdout=holdout_idx,
        callbacks=callbacks, progress=progress,
    )  # fmt: skip


def fit(
    trainer: Trainer,
    members: np.ndarray,
    rng: np.random.Generator,
    *,
    eval_data: tuple[np.ndarray, np.ndarray] | None = None,
    holdout: np.ndarray | None = None,
    callbacks: Sequence[StackCallback] = (),
    progress: str | None = None,
) -> TrainedStack:
    """The epoch loop for any `Trainer`: the recipe's epochs, or fewer if a callback stops.

    members (K, n) int32 are each model's rows of the trainer's x. Each
    epoch takes its inputs from `trainer.epoch_inputs(members, rng)`, then
    draws from `rng` the epoch's seed (dropout, or whatever the trainer's
    epoch randomises), runs the compiled epoch and collects per-model logs:
    "loss"/"accuracy" (`trainer.epoch_means`), the trainer's
    `epoch_logs()`, "val_*" on `eval_data`, "holdout_*" on each model's
    `holdout` (K, V) indices; then the callbacks.
    """
    arch, recipe = trainer.arch, trainer.recipe
    hist: dict[str, list[np.ndarray]] = {}
    y_host = trainer.y.numpy() if holdout is not None else None
    bar = progress_bar(progress, recipe.epochs)
    for epoch in range(recipe.epochs):
        inputs = trainer.epoch_inputs(members, rng)
        seed = np.int32(rng.integers(0, 2**31 - 1))
        trainer.current_epoch.assign(epoch)
        loss, accuracy = trainer.epoch_means(trainer.epoch(tf.constant(inputs), tf.constant(seed)))
        logs = {"loss": loss, "accuracy": accuracy}
        logs.update(trainer.epoch_logs())
        post = {"loss": float(logs["loss"].mean()), "acc": float(logs["accuracy"].mean())}
        if eval_data is not None:
            logs["val_loss"], logs["val_accuracy"] = evaluate(arch, recipe, trainer.vars, *eval_data)
            post["val_acc"] = float(logs["val_accuracy"].mean())
        if holdout is not None:
            logs["holdout_loss"], logs["holdout_accuracy"] = evaluate(
                arch, recipe, trainer.vars, trainer.x, y_host, own=holdout
            )
            post["holdout_loss"] = float(logs["holdout_loss"].mean())
        for key, value in logs.items():
            hist.setdefault(key, []).append(np.asarray(value))
        for callback in callbacks:
            callback.on_epoch_end(epoch, logs, trainer.vars)
        if bar is not None:
            bar.set_postfix({key: f"{val:.3f}" for key, val in post.items()} | trainer.progress_postfix())
            bar.update(1)
        if any(callback.stop_training for callback in callbacks):
            break
    if bar is not None:
        bar.close()
    weights = [v.numpy() for v in trainer.vars]
    for callback in callbacks:
        weights = callback.on_train_end(weights)
    return TrainedStack(
        architecture=arch,
        recipe=recipe,
        weights=tuple(weights),
        history={key: np.stack(val, axis=1).astype(np.float32) for key, val in hist.items()},
    )
