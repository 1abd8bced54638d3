"""DP-SGD (Abadi et al. 2016) for K models at once, native to TensorFlow 2 / Keras 3.

Each of the job's K models trains on its own points ``x[keep[k]]`` (n each)
for ``epochs * round(n / batch_size)`` steps. A step of model k:

1. Poisson sampling: every one of its n points joins the batch on its own
   with probability q = batch_size / n, so the batch size varies.
2. Per-example gradients of the cross-entropy, each clipped to L2 norm
   <= C over all layers together, then summed.
3. Gaussian noise N(0, (sigma C)^2) on every coordinate of the sum, and
   division by the expected batch size q n.
4. An Adam step (the recipe's optimizer, the stack's fused kernel); any
   update computed from the noisy gradient is post-processing.

Epsilon is accounted for the Poisson-subsampled Gaussian mechanism by
`pipeline.dp_accounting` (RDP or PLD); sigma is calibrated from
`target_epsilon` when no `noise_multiplier` is given.

How it runs. `DpTrainer` is the stack's `Trainer` with DP-SGD epochs, run
by the stack's epoch loop `fit`. One epoch is one traced graph (a
while-loop over its steps), all K models in it:

- Variable batches in a graph: each step draws a (K, n) uniform mask in the
  graph (stateless, seeded; in secure mode it reads the epoch's draws),
  sorts every row's selected positions first, and gathers the first
  M = max_k |batch_k| of them: a dynamic shape, so no retracing and no
  fixed buffer; model k's positions beyond its own count are padding with
  clip factor 0. For K = 1 there is no padding at all, and for K models M
  is only a few standard deviations above q n.
  The alternative, per-example gradients of all n points under the mask,
  was measured (digits, n = 350, q n = 32, 2 CPU cores, ms per epoch):
  MLP K=1 9 vs 8, MLP K=16 22 vs 43, CNN K=16 135 vs 884; gathering it is.
- Per-example gradients without a loop over examples: one backward pass
  gives every example's gradient with respect to each layer's
  pre-activation output, g_i (examples do not interact), which the
  stack's `forward_layers` exposes with each layer's input. A Dense layer's
  per-example kernel gradient is the outer product a_i g_i^T of its input
  and g_i, whose squared norm is |a_i|^2 |g_i|^2, so the norms need no
  per-example gradient at all ("ghost" norms, Goodfellow 2015); the
  clipped sum is the single matmul A^T (c * G) with the clip factors c.
  A Conv2D layer's per-example kernel gradient is sum over positions of
  patch ⊗ g, materialised with one einsum over `extract_patches` (small
  for 3x3 kernels) and weighted by c. All of it is batched over K.

Cost, measured side by side by `benchmarks/bench_dp.py` (digits, 2 CPU
cores): ~1.4x non-private training for one model, ~3x for 16-64 stacked
models, MLP or CNN. At 64 digit MLPs about half a step is drawing the
Gaussian noise (~600k normals).

Randomness (`randomness` in params.yaml). "seeded", the default: the
Poisson sampling and the noise of step s derive stateless seeds from
(epoch seed, s), the epoch seeds from the job's public seed. Same seed,
same weights, byte for byte; but whoever knows params.yaml can recompute
every draw and replay the training, so the guarantee only holds against
someone who does not: right for experiments, not for a model to deploy.
"secure": before each epoch the host draws the epoch's sampling uniforms
(steps, K, n) and a standard normal for every noise coordinate of every
step from the operating system's CSPRNG (os.urandom; uniforms from 53-bit
integers, normals by Box-Muller in float64) into fixed-shape variables,
which the traced steps read at their step index; runs do not reproduce.
The noise buffer holds steps_per_epoch times the K models' parameters in
float32; 16 digit MLPs (128 hidden units) trained in about 1.5x the
seeded time (2 CPU cores). Initial weights and dropout masks stay seeded
in both modes: neither is part of the privacy mechanism. The sampler is
the textbook one; floating-point attacks on Gaussian samplers (Jin et al.
2022) are not addressed.

The recipe's dropout, L2 and label smoothing are honoured: dropout masks
are per example, so per-example gradients stay exact; the L2 penalty's
gradient depends on the weights only and is added after the noise. The
training "loss"/"accuracy" curves are non-private diagnostics for the
logs; only the weights carry the (epsilon, delta) guarantee.
"""

from __future__ import annotations

import dataclasses
import math
import os

import numpy as np

from pipeline.config import DpSgdDefense
from pipeline.defenses.base import DefendedModels, TrainingJob, from_stack
from pipeline.dp_accounting import calibrate_noise, epsilon
from pipeline.errors import PipelineError
from pipeline.stack import (
    Architecture,
    Layer,
    Recipe,
    Trainer,
    checked_eval_data,
    checked_training_data,
    fit,
    forward_layers,
    init_weights,
    is_kernel,
    per_example_loss,
    validate,
)
from pipeline.tf_runtime import tf

__all__ = [
    "train",
    "DpPlan",
    "plan",
    "poisson_batch",
    "select_batch",
    "secure_uniforms",
    "secure_normals",
    "SecureDraws",
    "clip_factors",
    "clip_per_example",
    "add_noise",
    "add_normals",
    "per_example_gradients",
    "clipped_sum",
    "DpTrainer",
]


# --------------------------------------------------------------------------
# The privacy plan of a job


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


# --------------------------------------------------------------------------
# Sampling, clipping and noise (the DP primitives, usable on their own)


def poisson_batch(members: tf.Tensor, sampling_rate: float, seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """One Poisson-sampled batch per model, padded to the largest: (idx, valid), both (K, M).

    members (K, n) are each model's rows of x; every one is drawn on its
    own with probability `sampling_rate` (stateless, from the (2,) `seed`).
    Row k of idx lists model k's drawn rows first, in members order, then
    padding (valid False); M = max_k |batch_k| is a dynamic size.
    """
    return select_batch(members, tf.random.stateless_uniform(tf.shape(members), seed) < sampling_rate)


def select_batch(members: tf.Tensor, chosen: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """The batch (idx, valid), both (K, M), of the members where `chosen` (K, n) is True.

    As `poisson_batch` returns it, for inclusion draws made elsewhere.
    """
    counts = tf.reduce_sum(tf.cast(chosen, tf.int32), axis=1)
    first = tf.argsort(tf.cast(tf.logical_not(chosen), tf.int32), axis=1, stable=True)
    first = first[:, : tf.reduce_max(counts)]
    valid = tf.range(tf.shape(first)[1])[None, :] < counts[:, None]
    return tf.gather(members, first, batch_dims=1), valid


def clip_factors(sq_norms: tf.Tensor, clip_norm: float) -> tf.Tensor:
    """min(1, C / |g|) per example from squared norms; 1 for a zero gradient."""
    norms = tf.sqrt(tf.maximum(sq_norms, 0.0))
    return tf.minimum(1.0, clip_norm / tf.maximum(norms, 1e-12))


def clip_per_example(grads: list[tf.Tensor], clip_norm: float, batch_axes: int = 2) -> list[tf.Tensor]:
    """Clip materialised per-example gradients to joint L2 norm <= C.

    Each tensor is (*batch, ...) with `batch_axes` leading axes (K, B by
    default); an example's norm is over all its tensors together.
    """
    sq = tf.add_n(
        [tf.reduce_sum(tf.square(g), axis=list(range(batch_axes, len(g.shape)))) for g in grads]
    )
    c = clip_factors(sq, clip_norm)
    return [g * tf.reshape(c, c.shape + (1,) * (len(g.shape) - batch_axes)) for g in grads]


def add_noise(
    summed: list[tf.Tensor], noise_multiplier: float, clip_norm: float, seed: tf.Tensor
) -> list[tf.Tensor]:
    """Add N(0, (sigma C)^2) to every coordinate; `seed` is a stateless (2,) int seed."""
    out = []
    for i, g in enumerate(summed):
        s = tf.random.experimental.stateless_fold_in(tf.cast(seed, tf.int32), i)
        out.append(g + tf.random.stateless_normal(tf.shape(g), s, stddev=noise_multiplier * clip_norm))
    return out


def add_normals(
    summed: list[tf.Tensor], normals: list[tf.Tensor], noise_multiplier: float, clip_norm: float
) -> list[tf.Tensor]:
    """Add sigma C z to every coordinate, z the given standard normals (shaped like `summed`)."""
    return [g + (noise_multiplier * clip_norm) * z for g, z in zip(summed, normals)]


def secure_uniforms(shape: tuple[int, ...]) -> np.ndarray:
    """Uniforms on [0, 1) in float64 from the OS's CSPRNG: 53-bit integers / 2^53."""
    size = math.prod(shape)
    bits = np.frombuffer(os.urandom(8 * size), dtype=np.uint64) >> np.uint64(11)
    return (bits * 2.0**-53).reshape(shape)


def secure_normals(shape: tuple[int, ...]) -> np.ndarray:
    """Standard normals in float64 from the OS's CSPRNG (Box-Muller on `secure_uniforms`)."""
    size = math.prod(shape)
    u = secure_uniforms((2, -(-size // 2)))
    radius = np.sqrt(-2.0 * np.log1p(-u[0]))  # 1 - u lies in (0, 1]
    angle = 2.0 * np.pi * u[1]
    return np.concatenate([radius * np.cos(angle), radius * np.sin(angle)])[:size].reshape(shape)


class SecureDraws:
    """One epoch's sampling uniforms and noise normals from the OS's CSPRNG, in variables.

    uniforms (steps, K, n) float64; one normals variable (steps, *shape)
    float32 per weight, shape its K-stacked shape. Empty (zeros) until
    `refill`, which runs before every epoch, so no draw is ever used twice.
    """

    def __init__(
        self, steps: int, members_shape: tuple[int, int], weight_shapes: list[tuple[int, ...]]
    ) -> None:
        self.uniforms = tf.Variable(np.zeros((steps, *members_shape)), trainable=False)
        self.normals = [tf.Variable(np.zeros((steps, *shape), np.float32), trainable=False) for shape in weight_shapes]

    def refill(self) -> None:
        """Fresh draws for every step of the next epoch."""
        self.uniforms.assign(secure_uniforms(tuple(self.uniforms.shape)))
        for v in self.normals:
            v.assign(secure_normals(tuple(v.shape)).astype(np.float32))

    def uniforms_at(self, s: tf.Tensor) -> tf.Tensor:
        """Step s's uniforms (K, n)."""
        return tf.gather(self.uniforms, s)

    def normals_at(self, s: tf.Tensor) -> list[tf.Tensor]:
        """Step s's standard normals, one tensor per weight."""
        return [tf.gather(v, s) for v in self.normals]


# --------------------------------------------------------------------------
# Per-example gradients


def _conv_split(layer: Layer, n_models: int) -> tuple[tf.Tensor, int, int]:
    """Per-model patches (K, B, H, W, 3, 3, Cin) of a conv layer's input, Cin, Cout."""
    cin = layer.inputs.shape[-1] // n_models
    cout = layer.outputs.shape[-1] // n_models
    patches = tf.image.extract_patches(layer.inputs, [1, 3, 3, 1], [1, 1, 1, 1], [1, 1, 1, 1], "SAME")
    b, h, w = tf.shape(patches)[0], patches.shape[1], patches.shape[2]
    patches = tf.reshape(patches, [b, h, w, 3, 3, n_models, cin])  # (kh, kw, channel) order
    return tf.transpose(patches, [5, 0, 1, 2, 3, 4, 6]), cin, cout


def _conv_out_grads(g: tf.Tensor, n_models: int, cout: int) -> tf.Tensor:
    """(B, H, W, K*Cout) -> (K, B, H, W, Cout)."""
    b, h, w = tf.shape(g)[0], g.shape[1], g.shape[2]
    return tf.transpose(tf.reshape(g, [b, h, w, n_models, cout]), [3, 0, 1, 2, 4])


def _output_grads(
    arch: Architecture,
    recipe: Recipe,
    weights: list[tf.Tensor],
    x: tf.Tensor,
    y: tf.Tensor,
    valid: tf.Tensor | None,
    dropout_seed: tf.Tensor | None,
) -> tuple[tf.Tensor, list[Layer], list[tf.Tensor], tf.Tensor]:
    """Forward and one backward pass: logits, layers, dL_i/dz per layer, losses (K, B)."""
    with tf.GradientTape() as tape:
        tape.watch(weights)  # plain tensors too, so every layer's output is on the tape
        logits, layers = forward_layers(arch, weights, x, dropout=recipe.dropout, dropout_seed=dropout_seed)
        losses = per_example_loss(logits, y, arch.n_classes, recipe.label_smoothing)
        total = tf.reduce_sum(losses if valid is None else tf.where(valid, losses, 0.0))
    grads = tape.gradient(total, [layer.outputs for layer in layers])
    return logits, layers, grads, losses


def per_example_gradients(
    arch: Architecture, recipe: Recipe, weights: list[tf.Tensor], x: tf.Tensor, y: tf.Tensor
) -> list[tf.Tensor]:
    """Every example's loss gradient, materialised: one (K, B, *shape) per weight.

    x is (K, B, *input_shape), y (K, B). Dropout runs only in training (no
    seed here). Used by tests and small checks; training never builds these
    for Dense layers (see the module docstring).
    """
    recipe = dataclasses.replace(recipe, dropout=0.0)
    _, layers, grads, _ = _output_grads(arch, recipe, weights, x, y, None, None)
    k = weights[0].shape[0]
    out: list[tf.Tensor] = []
    for layer, g in zip(layers, grads):
        if layer.kind == "dense":
            out += [tf.einsum("kbd,kbh->kbdh", layer.inputs, g), g]
        else:
            patches, _, cout = _conv_split(layer, k)
            gk = _conv_out_grads(g, k, cout)
            out += [tf.einsum("kbhwijc,kbhwd->kbijcd", patches, gk), tf.reduce_sum(gk, axis=[2, 3])]
    return out


def clipped_sum(
    arch: Architecture,
    recipe: Recipe,
    weights: list[tf.Tensor],
    x: tf.Tensor,
    y: tf.Tensor,
    valid: tf.Tensor,
    clip_norm: float,
    dropout_seed: tf.Tensor | None = None,
) -> tuple[list[tf.Tensor], tf.Tensor, tf.Tensor]:
    """Sum over each model's valid examples of its clipped per-example gradient.

    x (K, B, ...), y (K, B), valid (K, B) bool (False: padding, left out).
    Returns the K-stacked sums in weight order, the per-example losses and
    the correct-prediction indicators (K, B), both zero on padding.
    """
    k = weights[0].shape[0]
    logits, layers, grads, losses = _output_grads(arch, recipe, weights, x, y, valid, dropout_seed)
    sq_norms = []
    parts = []  # per layer: ("dense", a, g) or ("conv", per-example kernel grads, g)
    for layer, g in zip(layers, grads):
        if layer.kind == "dense":
            g_sq = tf.reduce_sum(tf.square(g), axis=-1)
            a_sq = tf.reduce_sum(tf.square(layer.inputs), axis=-1)
            sq_norms.append(g_sq * (a_sq + 1.0))  # kernel |a|^2 |g|^2, bias |g|^2
            parts.append(("dense", layer.inputs, g))
        else:
            patches, _, cout = _conv_split(layer, k)
            gk = _conv_out_grads(g, k, cout)
            kernel_g = tf.einsum("kbhwijc,kbhwd->kbijcd", patches, gk)
            bias_g = tf.reduce_sum(gk, axis=[2, 3])
            sq_norms.append(
                tf.reduce_sum(tf.square(kernel_g), axis=[2, 3, 4, 5]) + tf.reduce_sum(tf.square(bias_g), -1)
            )
            parts.append(("conv", kernel_g, bias_g))
    c = clip_factors(tf.add_n(sq_norms), clip_norm) * tf.cast(valid, tf.float32)  # (K, B)
    sums: list[tf.Tensor] = []
    for kind, first, second in parts:
        if kind == "dense":
            cg = second * c[:, :, None]
            sums += [tf.einsum("kbd,kbh->kdh", first, cg), tf.reduce_sum(cg, axis=1)]
        else:
            sums += [tf.einsum("kbijcd,kb->kijcd", first, c), tf.einsum("kbd,kb->kd", second, c)]
    pred = tf.argmax(logits, axis=-1, output_type=tf.int32)
    valid_f = tf.cast(valid, tf.float32)
    correct = tf.cast(tf.equal(pred, y), tf.float32) * valid_f
    return sums, losses * valid_f, correct


# --------------------------------------------------------------------------
# Training


class DpTrainer(Trainer):
    """The stack's `Trainer` (variables, Adam, epoch loop) with DP-SGD epochs.

    An epoch consumes each model's member indices (K, n) into x, fixed for
    the run (its Poisson batches are drawn in the graph), and its logged
    loss/accuracy are means over the examples those batches drew. With
    `dp.randomness` "secure", `secure` holds the epoch's draws (else None).
    """

    def __init__(
        self, arch: Architecture, dp: DpPlan, init: list[np.ndarray], x: np.ndarray, y: np.ndarray
    ) -> None:
        super().__init__(arch, dp.recipe, init, x, y, dp.n)
        self.dp = dp
        self.n_steps = dp.steps_per_epoch
        self.secure: SecureDraws | None = None
        if dp.randomness == "secure":
            self.secure = SecureDraws(self.n_steps, (len(init[0]), dp.n), [w.shape for w in init])

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
        noisy = self.noised(sums, noise_seed, s)
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
