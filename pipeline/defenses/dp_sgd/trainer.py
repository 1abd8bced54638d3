"""DP-SGD training: the stack's `Trainer` with DP-SGD epochs, and a canary run's training.

`DpTrainer` is the stack's `Trainer` with DP-SGD epochs, run
by the stack's epoch loop `fit`. One epoch is one traced graph (a
while-loop over its steps), all K models in it.
"""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING

import numpy as np

from pipeline.core.errors import PipelineError
from pipeline.core.tf_runtime import tf
from pipeline.defenses.base import DefendedModels, TrainingJob, from_stack
from pipeline.defenses.dp_sgd.mechanism import (
    SecureDraws,
    add_noise,
    add_normals,
    poisson_batch,
    select_batch,
)
from pipeline.defenses.dp_sgd.per_example import clipped_sum
from pipeline.defenses.dp_sgd.plan import DpPlan, plan
from pipeline.stack import (
    Architecture,
    Trainer,
    checked_eval_data,
    checked_training_data,
    fit,
    init_weights,
    is_kernel,
    validate,
)

if TYPE_CHECKING:
    from pipeline.defenses.dp_sgd.defense import DpSgdDefense

__all__ = ["DpTrainer", "train", "train_with_canaries"]


class DpTrainer(Trainer):
    """The stack's `Trainer` (variables, Adam, epoch loop) with DP-SGD epochs.

    An epoch consumes each model's member indices (K, n) into x, fixed for
    the run (its Poisson batches are drawn in the graph), and its logged
    loss/accuracy are means over the examples those batches drew. With
    `dp.randomness` "secure", `secure` holds the epoch's draws (else None).

    `n_trained`: each model's count of members when it is not the plan's
    `dp.n` (a canary run: the plan's n, plus the canaries its coins
    included); the noisy sum is still divided by the plan's q n, a
    constant.
    `dirac` (coordinates, included): gradient canaries (Steinke et al.
    2023): canary j's gradient is C at one coordinate of the flattened
    weights and 0 elsewhere (norm C, so clipping keeps it). An included one
    is Poisson-sampled into each step's clipped sum like any record, and
    its score, the log-likelihood ratio of its inclusion given the noisy
    sum at its coordinate, summed over every step (`dirac_evidence`),
    accumulates in `dirac_scores` (K, m).
    """

    def __init__(
        self,
        arch: Architecture,
        dp: DpPlan,
        init: list[np.ndarray],
        x: np.ndarray,
        y: np.ndarray,
        *,
        n_trained: int | None = None,
        dirac: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> None:
        n_trained = dp.n if n_trained is None else n_trained
        super().__init__(arch, dp.recipe, init, x, y, n_trained)
        self.dp = dp
        self.n_steps = dp.steps_per_epoch
        self.secure: SecureDraws | None = None
        if dp.randomness == "secure":
            self.secure = SecureDraws(self.n_steps, (len(init[0]), n_trained), [w.shape for w in init])
        k = len(init[0])
        self.dirac: tuple[tf.Tensor, tf.Tensor] | None = None
        self.dirac_scores = tf.Variable(tf.zeros([k, 0 if dirac is None else len(dirac[0])]), trainable=False)
        if dirac is not None:
            coords, included = (np.asarray(a) for a in dirac)
            self.dirac = (tf.constant(coords.astype(np.int32)), tf.constant(included.astype(bool)))
        self.sizes = [int(np.prod(w.shape[1:])) for w in init]

    def _flat(self, grads: list[tf.Tensor]) -> tf.Tensor:
        """(K, P): every model's weights, flattened in weight order."""
        return tf.concat([tf.reshape(g, [g.shape[0], -1]) for g in grads], axis=1)

    def dirac_evidence(self, observed: tf.Tensor) -> tf.Tensor:
        """One step's log-likelihood ratio, per gradient canary, of "in the sampling" against "never in".

        The noisy sum at the canary's coordinate, y = observed / C, is
        N(b, sigma^2) with b ~ Bernoulli(q) if the canary is included and
        b = 0 if not, plus the other records' gradients there (small
        against the noise, and ignored), so the ratio is
        1 - q + q exp((y - 1/2) / sigma^2): the Neyman-Pearson test of one
        step. Computed as softplus up to a constant; with q = 1 it is
        linear in y. Any score is valid for the audit; this one is the
        strongest for the mechanism as accounted.
        """
        sigma, q = self.dp.noise_multiplier, self.dp.sampling_rate
        a = (observed / self.dp.clip_norm - 0.5) / sigma**2
        return a if q >= 1.0 else tf.nn.softplus(a + math.log(q / (1.0 - q)))

    def with_dirac(self, sums: list[tf.Tensor], seed: tf.Tensor) -> list[tf.Tensor]:
        """The clipped sums plus every Poisson-sampled included gradient canary's C at its coordinate."""
        coords, included = self.dirac
        k, m = sums[0].shape[0], coords.shape[0]
        sampled = tf.logical_and(tf.random.stateless_uniform([k, m], seed) < self.dp.sampling_rate, included)
        added = tf.scatter_nd(
            coords[:, None], tf.transpose(tf.cast(sampled, tf.float32)) * self.dp.clip_norm, [sum(self.sizes), k]
        )
        flat = self._flat(sums) + tf.transpose(added)
        return [tf.reshape(part, g.shape) for part, g in zip(tf.split(flat, self.sizes, axis=1), sums)]

    def batch(self, members: tf.Tensor, seed: tf.Tensor, s: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """Step s's Poisson batch (idx, valid): from the stateless `seed` or the secure draws."""
        if self.secure is None:
            return poisson_batch(members, self.dp.sampling_rate, seed)
        return select_batch(members, self.secure.uniforms_at(s) < self.dp.sampling_rate)

    def noised(self, sums: list[tf.Tensor], seed: tf.Tensor, s: tf.Tensor) -> list[tf.Tensor]:
        """The clipped sums plus step s's noise: from the stateless `seed` or the secure draws."""
        dp = self.dp
        if self.secure is None:
            return add_noise(sums, dp.noise_multiplier, dp.clip_norm, seed)
        return add_normals(sums, self.secure.normals_at(s), dp.noise_multiplier, dp.clip_norm)

    def noisy_gradient(self, members: tf.Tensor, seed: tf.Tensor, s: tf.Tensor) -> tuple[tf.Tensor, ...]:
        """Step s's privatised gradient of every model, and its (loss sum, correct, batch size).

        Poisson batch, clipped per-example sum, noise, / (q n), plus the L2
        penalty's gradient; the stateless seeds derive from (seed, s), and
        in secure mode sampling and noise come from `secure` instead
        (dropout stays seeded: it is not part of the privacy mechanism).
        """
        dp, n = self.dp, self.dp.n
        sample_seed = tf.stack([seed, 3 * s])
        noise_seed = tf.stack([seed, 3 * s + 1])
        dropout_seed = tf.stack([seed, 3 * s + 2])
        idx, valid = self.batch(members, sample_seed, s)
        counts = tf.reduce_sum(tf.cast(valid, tf.float32), axis=1)
        sums, losses, correct = clipped_sum(
            self.arch, self.recipe, self.vars, tf.gather(self.x, idx), tf.gather(self.y, idx),
            valid, dp.clip_norm, dropout_seed if self.recipe.dropout > 0 else None,
        )  # fmt: skip
        if self.dirac is not None:
            sums = self.with_dirac(sums, tf.random.experimental.stateless_fold_in(sample_seed, 1))
        noisy = self.noised(sums, noise_seed, s)
        if self.dirac is not None:
            self.dirac_scores.assign_add(self.dirac_evidence(tf.gather(self._flat(noisy), self.dirac[0], axis=1)))
        grads = [g / (dp.sampling_rate * n) for g in noisy]
        if self.recipe.l2 > 0:  # data-independent: added after the noise
            grads = [g + 2.0 * self.recipe.l2 * w if is_kernel(w) else g for g, w in zip(grads, self.vars)]
        return grads, tf.reduce_sum(losses, 1), tf.reduce_sum(correct, 1), counts

    def epoch_inputs(self, members: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Each model's members as they are: the epoch samples its batches itself.

        `fit` calls this once before every epoch: in secure mode it refills
        the epoch's secure draws.
        """
        if self.secure is not None:
            self.secure.refill()
        return members

    def epoch_steps(self, members: tf.Tensor, seed: tf.Tensor) -> tuple[tf.Tensor, ...]:
        """All steps of one epoch: per-model sums of losses, correct predictions and batch sizes."""
        k = members.shape[0]

        def body(s, loss_sum, correct, seen):
            grads, l, c, b = self.noisy_gradient(members, seed, s)
            self.optimizer.apply(grads)
            return s + 1, loss_sum + l, correct + c, seen + b

        _, loss_sum, correct, seen = tf.while_loop(
            lambda s, *_: s < self.n_steps,
            body,
            (tf.constant(0), tf.zeros([k]), tf.zeros([k]), tf.zeros([k])),
        )
        return loss_sum, correct, seen

    def epoch_means(self, sums: tuple[tf.Tensor, ...]) -> tuple[np.ndarray, np.ndarray]:
        """Loss and accuracy over the examples the epoch's Poisson batches drew."""
        loss_sum, correct, seen = (t.numpy() for t in sums)
        seen = np.maximum(seen, 1.0)
        return loss_sum / seen, correct / seen

    def progress_postfix(self) -> dict[str, str]:
        """The run's epsilon, next to the loss in the progress bar."""
        return {"eps": f"{self.dp.epsilon:.2f}"}


def train(job: TrainingJob, defense: DpSgdDefense) -> DefendedModels:
    """Train the job's K models with DP-SGD; `info` carries the guarantee.

    history: "loss"/"accuracy" per epoch (K, epochs), means over the
    examples the epoch's Poisson batches drew, in training mode; plus
    "val_loss"/"val_accuracy" on `job.eval_data`. Same seed, same weights,
    unless `defense.randomness` is "secure".
    """
    arch = job.architecture
    validate(arch, job.recipe)
    x, y, _, members = checked_training_data(arch, job.x, job.y, job.keep)
    eval_data = checked_eval_data(job.eval_data, x)
    k, n = members.shape
    dp = plan(job.recipe, n, defense)
    rng = np.random.default_rng(job.seed)
    trainer = DpTrainer(arch, dp, init_weights(arch, k, rng), x, y)
    stack = fit(trainer, members, rng, eval_data=eval_data, progress=job.label)
    return from_stack(stack, dp.info())


def train_with_canaries(
    job: TrainingJob, defense: DpSgdDefense, n_planned: int, n_input_canaries: int, dirac: tuple[np.ndarray, np.ndarray]
) -> tuple[DefendedModels, np.ndarray]:
    """DP-SGD of one canary run under the DP plan of `n_planned` points, and its gradient canaries' scores.

    The job's points are the planned members plus the included ones of
    `n_input_canaries` input canaries; `dirac` (coordinates, included) adds gradient canaries (see
    `DpTrainer`). Sampling rate, noise and steps are the plan's for
    `n_planned` (so its epsilon covers every canary); the noisy sum is
    divided by the expected batch of the planned points plus half of all
    canaries, a constant. Returns the models and the gradient canaries'
    scores (K, m) from `DpTrainer.dirac_scores`.
    """
    arch = job.architecture
    validate(arch, job.recipe)
    x, y, _, members = checked_training_data(arch, job.x, job.y, job.keep)
    eval_data = checked_eval_data(job.eval_data, x)
    k, n = members.shape
    if not n_planned <= n <= n_planned + n_input_canaries:
        raise PipelineError(
            f"a canary run trains the {n_planned} planned points plus some of {n_input_canaries} canaries, got {n}"
        )
    m = n_input_canaries + len(dirac[0])
    dp = dataclasses.replace(plan(job.recipe, n_planned, defense), n=n_planned + m // 2)
    rng = np.random.default_rng(job.seed)
    trainer = DpTrainer(arch, dp, init_weights(arch, k, rng), x, y, n_trained=n, dirac=dirac)
    stack = fit(trainer, members, rng, eval_data=eval_data, progress=job.label)
    return from_stack(stack, dp.info()), trainer.dirac_scores.numpy()
