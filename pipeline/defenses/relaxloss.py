"""RelaxLoss (Chen, Yu & Fritz, ICLR 2022): aim the training loss at alpha, not at zero.

Members of an ordinarily trained model end with a loss near 0, non-members
with a larger one: that gap is what loss-based membership inference reads.
RelaxLoss keeps each model's training loss hovering around a target level
`alpha`. Per model and per batch (all K models batched in one graph; model
k's rule looks at model k's own batch loss only), with L the batch's mean
cross-entropy:

- L >= alpha: ordinary gradient descent on L.
- L < alpha, in even epochs (0, 2, ...): gradient ascent on L (minimise -L),
  pushing the loss back up towards alpha.
- L < alpha, in odd epochs: posterior flattening. Each example's soft
  target keeps the model's own (current, not differentiated) probability
  of the true class, p_y, and spreads 1 - p_y evenly over the other C - 1
  classes; descent on the cross-entropy to these targets. This applies to
  correctly classified examples; a misclassified example keeps its one-hot
  target (so it is still learned).

The alternation is by epoch parity, as in the paper's Algorithm 1 and the
authors' code (github.com/DingfanChen/RelaxLoss): for L < alpha, ascent
and flattening alternate between consecutive epochs. The even-epoch rule
is the authors' |L - alpha| written out (its gradient is +dL above alpha,
-dL below). The recipe's L2 penalty is added to every objective; its label
smoothing applies to L. Everything else (Adam, batches, shuffling, seeds,
dropout) is `stack.train_stack`'s, through its `loss_fn` hook.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, StrictFloat

from pipeline.core.tf_runtime import tf
from pipeline.defenses.base import DefendedModels, Defense, TrainingJob, from_stack
from pipeline.stack import Batch, LossFn, train_stack

__all__ = ["flattened_targets", "relaxloss_objective", "RelaxLossDefense"]


def flattened_targets(logits: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
    """Posterior-flattening targets (..., C) for logits (..., C) and labels (...).

    Correctly classified: p_y on the true class, (1 - p_y) / (C - 1) on each
    other class, with p the softmax of `logits` (gradient stopped).
    Misclassified: the one-hot label.
    """
    n_classes = logits.shape[-1]
    probs = tf.stop_gradient(tf.nn.softmax(logits))
    onehot = tf.one_hot(labels, n_classes)
    p_true = tf.reduce_sum(probs * onehot, axis=-1, keepdims=True)
    flat = onehot * p_true + (1.0 - onehot) * (1.0 - p_true) / (n_classes - 1)
    correct = tf.equal(tf.argmax(logits, axis=-1, output_type=tf.int32), labels)[..., None]
    return tf.where(correct, flat, onehot)


def relaxloss_objective(alpha: float) -> LossFn:
    """The per-model RelaxLoss objective (K,) for `train_stack(loss_fn=...)`."""

    def objective(batch: Batch) -> tf.Tensor:
        loss = batch.loss  # (K,)
        ascent = -loss
        targets = flattened_targets(batch.logits, batch.labels)
        flattening = tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(targets, batch.logits), axis=1)
        relaxed = tf.where(tf.equal(batch.epoch % 2, 0), ascent, flattening)
        return tf.where(loss >= alpha, loss, relaxed)

    return objective


class RelaxLossDefense(Defense):
    """RelaxLoss (Chen et al. 2022): keep the training loss near `alpha`, not at 0."""

    type: Literal["relaxloss"]
    alpha: StrictFloat = Field(0.5, gt=0)

    def train(self, job: TrainingJob) -> DefendedModels:
        """Train the job's K models with RelaxLoss at target loss `alpha`."""
        stack = train_stack(
            job.architecture, job.recipe, job.x, job.y, job.keep, seed=job.seed,
            eval_data=job.eval_data, progress=job.label, loss_fn=relaxloss_objective(self.alpha),
        )  # fmt: skip
        return from_stack(stack)
