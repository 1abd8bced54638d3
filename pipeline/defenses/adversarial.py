"""Adversarial regularization (Nasr, Shokri & Houmansadr, CCS 2018): min-max training.

Each of the job's K classifiers f_k gets its own inference model h_k, a
small MLP that reads the classifier's softmax output f_k(x) and the
one-hot label y and outputs the probability that (x, y) was a member:
[f(x), onehot(y)] (2C) -> Dense(64, relu) -> Dense(32, relu) -> Dense(1)
-> sigmoid. Members of model k are its training points (``keep[k]``);
its non-members are its reference points (``job.defender[k]``: the
defender's reference split for the target, as many of the attacker's own
points for a shadow or reference model). All K pairs train at once with
stacked weights.

Every classifier step (the job's recipe: its batches, epochs, shuffling,
Adam, dropout, L2) is preceded by `inference_steps` steps of h, as in the
paper's Algorithm 1:

(a) h step: a fresh random batch of b members and b reference points per
    model (b = min(batch_size, n, number of reference points), drawn
    without replacement within the batch), classifier outputs in
    inference mode and not differentiated; Adam (lr = the recipe's) on the
    binary cross-entropy, i.e. ascent on the attack gain
    mean log h(member) + mean log(1 - h(reference)).
(b) classifier step on its member batch: minimise
    cross-entropy + alpha * mean log h(f(x), y),
    the paper's privacy term, h fixed: members are pushed to where h
    believes "non-member". Gradients flow through f(x) into h's input.

The classifier is the stack's `Trainer` with this objective as its custom
loss and `train_step` extended by the h steps; the stack's `fit` runs the
epochs, so seeding, history and progress are the trainer's. history:
"loss" / "accuracy" (the classifier's recipe loss, without the privacy
term), "inference_accuracy" (h's accuracy on its own training batches
during the epoch) and "val_*" on `job.eval_data`. info: the last epoch's
mean inference accuracy.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np
from pydantic import Field, StrictFloat, StrictInt

from pipeline.core.errors import PipelineError
from pipeline.core.tf_runtime import tf
from pipeline.defenses.base import DefendedModels, Defense, TrainingJob, from_stack
from pipeline.stack import (
    Architecture,
    Batch,
    FusedAdam,
    Recipe,
    Trainer,
    checked_eval_data,
    checked_training_data,
    fit,
    forward,
    glorot_limit,
    init_weights,
    validate,
)

__all__ = ["INFERENCE_HIDDEN", "inference_logits", "AdversarialRegularizationDefense"]

INFERENCE_HIDDEN = (64, 32)


def _inference_init(n_models: int, n_classes: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Glorot-uniform kernels, zero biases: [W1, b1, W2, b2, W3, b3], stacked over K."""
    sizes = (2 * n_classes, *INFERENCE_HIDDEN, 1)
    out = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        lim = glorot_limit((fan_in, fan_out))
        out.append(rng.uniform(-lim, lim, size=(n_models, fan_in, fan_out)).astype(np.float32))
        out.append(np.zeros((n_models, fan_out), np.float32))
    return out


def inference_logits(weights: list[tf.Tensor], probs: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
    """h's pre-sigmoid membership score (K, B) for softmax outputs (K, B, C) and labels (K, B)."""
    a = tf.concat([probs, tf.one_hot(labels, probs.shape[-1])], axis=-1)
    n_layers = len(weights) // 2
    for i in range(n_layers):
        a = tf.einsum("kbd,kdh->kbh", a, weights[2 * i]) + weights[2 * i + 1][:, None, :]
        if i < n_layers - 1:
            a = tf.nn.relu(a)
    return a[..., 0]


def _sample(pool: tf.Tensor, size: int, seed: tf.Tensor) -> tf.Tensor:
    """`size` distinct entries of each row of pool (K, P), uniformly at random: (K, size)."""
    keys = tf.random.stateless_uniform(tf.shape(pool), seed)
    return tf.gather(pool, tf.math.top_k(keys, size).indices, batch_dims=1)


class _AdversarialTrainer(Trainer):
    """The classifier trainer with an inference model per classifier."""

    def __init__(
        self,
        arch: Architecture,
        recipe: Recipe,
        init: list[np.ndarray],
        inference_init: list[np.ndarray],
        x: np.ndarray,
        y: np.ndarray,
        members: np.ndarray,
        reference: np.ndarray,
        alpha: float,
        inference_steps: int,
    ) -> None:
        super().__init__(arch, recipe, init, x, y, members.shape[1], loss_fn=self._objective)
        self.alpha, self.inference_steps = alpha, inference_steps
        self.h_vars = [tf.Variable(w) for w in inference_init]
        self.h_optimizer = FusedAdam(self.h_vars, recipe.learning_rate)
        self.members = tf.constant(members)
        self.reference = tf.constant(reference)
        self.h_batch = min(recipe.batch_size, members.shape[1], reference.shape[1])
        k = members.shape[0]
        self.h_correct = tf.Variable(tf.zeros([k]), trainable=False)
        self.h_seen = tf.Variable(0.0, trainable=False)

    def _objective(self, batch: Batch) -> tf.Tensor:
        """cross-entropy + alpha * mean log h(f(x), y) on the member batch, h fixed."""
        z = inference_logits(self.h_vars, tf.nn.softmax(batch.logits), batch.labels)
        return batch.loss + self.alpha * tf.reduce_mean(tf.math.log_sigmoid(z), axis=1)

    def _inference_step(self, seed: tf.Tensor) -> None:
        b = self.h_batch
        members = _sample(self.members, b, tf.random.experimental.stateless_fold_in(seed, 0))
        reference = _sample(self.reference, b, tf.random.experimental.stateless_fold_in(seed, 1))
        idx = tf.concat([members, reference], axis=1)  # (K, 2b)
        labels = tf.gather(self.y, idx)
        probs = tf.stop_gradient(tf.nn.softmax(forward(self.arch, self.vars, tf.gather(self.x, idx))))
        is_member = tf.concat([tf.ones([1, b]), tf.zeros([1, b])], axis=1)
        with tf.GradientTape() as tape:
            z = inference_logits(self.h_vars, probs, labels)
            bce = tf.nn.sigmoid_cross_entropy_with_logits(tf.broadcast_to(is_member, tf.shape(z)), z)
            total = tf.reduce_sum(tf.reduce_mean(bce, axis=1))
        self.h_optimizer.apply(tape.gradient(total, self.h_vars))
        right = tf.cast(tf.equal(tf.cast(z > 0, tf.float32), is_member), tf.float32)
        self.h_correct.assign_add(tf.reduce_sum(right, axis=1))
        self.h_seen.assign_add(2.0 * b)

    def train_step(self, idx: tf.Tensor, seed: tf.Tensor, step: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """`inference_steps` steps of h, then the classifier's step."""
        for i in range(self.inference_steps):
            self._inference_step(tf.random.experimental.stateless_fold_in(seed, 1000 + i))
        return super().train_step(idx, seed, step)

    def epoch_logs(self) -> dict[str, np.ndarray]:
        acc = self.h_correct.numpy() / max(float(self.h_seen.numpy()), 1.0)
        self.h_correct.assign(tf.zeros_like(self.h_correct))
        self.h_seen.assign(0.0)
        return {"inference_accuracy": acc}


def _reference_points(defender: np.ndarray | None, keep: np.ndarray) -> np.ndarray:
    """(K, D) int32 indices of each model's reference points, checked: some, as many for each, none trained on."""
    mask = np.zeros_like(keep) if defender is None else np.asarray(defender, dtype=bool)
    if mask.shape != keep.shape or np.any(mask & keep):
        raise PipelineError("adversarial_regularization: the defender mask must be (K, N) and disjoint from keep")
    counts = mask.sum(axis=1)
    if counts.min() < 1 or np.any(counts != counts[0]):
        raise PipelineError(
            "adversarial_regularization needs non-member reference points for every model "
            f"(the job's defender mask), the same number for each; got {sorted(set(counts.tolist()))[:8]}"
        )
    return np.stack([np.flatnonzero(row) for row in mask]).astype(np.int32)


class AdversarialRegularizationDefense(Defense):
    """Nasr et al. 2018: min-max training against an inference model on reference data."""

    uses_defender_data: ClassVar[bool] = True

    type: Literal["adversarial_regularization"]
    alpha: StrictFloat = Field(1.0, gt=0)
    inference_steps: StrictInt = Field(1, ge=1)

    def train(self, job: TrainingJob) -> DefendedModels:
        """Train the job's K classifiers against their inference models."""
        arch, recipe = job.architecture, job.recipe
        validate(arch, recipe)
        x, y, keep, members = checked_training_data(arch, job.x, job.y, job.keep)
        eval_data = checked_eval_data(job.eval_data, x)
        reference = _reference_points(job.defender, keep)
        rng = np.random.default_rng(job.seed)
        init = init_weights(arch, len(keep), rng)
        h_init = _inference_init(len(keep), arch.n_classes, rng)
        trainer = _AdversarialTrainer(
            arch, recipe, init, h_init, x, y, members, reference, self.alpha, self.inference_steps
        )
        stack = fit(trainer, members, rng, eval_data=eval_data, progress=job.label)
        return from_stack(
            stack, {"adv_inference_accuracy": float(stack.history["inference_accuracy"][:, -1].mean())}
        )
