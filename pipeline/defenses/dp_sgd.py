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
  A Conv2D layer's per-example kernel gradient is sum_t a_t g_t^T over
  its T positions, a_t the 3x3 patch there (the unfolded input). Its
  norm comes from Gram matrices, sum_{t,t'} (a_t . a_t') (g_t . g_t'),
  without the gradient, where that costs fewer multiply-adds (small
  feature maps, many channels), else from the materialised gradient
  (`ghost_is_cheaper`, layer by layer). The clipped sum is then one
  weighted backward pass per layer: its output grads scaled by the clip
  factors through the layer's own filter gradient, or the weighted sum
  of the gradients the norm already materialised. All of it is batched
  over K.

Cost, measured side by side by `benchmarks/bench_dp.py` (digits, 2 CPU
cores, per epoch, 2026-12-01): 1.3x non-private training for one MLP,
1.5x for one CNN; MLP 2.0x (K=16) and 2.2x (K=64); CNN 2.2x (K=16) and
2.7x (K=64), from 2.4x and 3.6x with per-example conv gradients from
`tf.image.extract_patches`. What bounds it is the Gaussian noise, one
normal per weight per model and step: for 64 MLPs (615k per step) the
noise alone costs 1.2x a whole plain epoch on this machine (TensorFlow's
Philox uniforms are 3 of its 4.6 ms per step), so no clipping technique
brings DP-SGD near 1.5x there; in 16 CNNs it is 0.35x, and the conv
layers' norms (unfolding, Gram matrices, two transposes per layer) are
most of the rest.

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
    grouped_filter_gradient,
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
    "stateless_normals",
    "add_noise",
    "add_normals",
    "per_example_gradients",
    "per_example_sq_norms",
    "ghost_is_cheaper",
    "clipped_sum",
    "DpTrainer",
    "train_with_canaries",
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
    n = tf.shape(chosen)[1]
    rank = tf.where(chosen, tf.range(n, 0, -1)[None, :], 0)  # chosen ones, earlier higher; top_k: 1.6x an argsort
    _, first = tf.math.top_k(rank, tf.reduce_max(counts), sorted=True)
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


def stateless_normals(size: int, seed: tf.Tensor) -> tf.Tensor:
    """`size` standard normals (float32) from the stateless (2,) `seed`, by Box-Muller on Philox uniforms.

    The same transform TensorFlow's own normal sampler applies to the same
    23-bit uniforms, written as four vectorised ops on one uniform draw:
    measured 2x faster than `tf.random.stateless_normal` for the 615k
    normals of a step of 64 digit MLPs (2 CPU cores). Like TensorFlow's,
    the draws stop at |z| = 5.65 (the smallest uniform is 2^-23); the
    accountant ignores that cut, a known gap of floating-point samplers
    (its mass, about 1e-8 per coordinate and step, counts against delta).
    """
    half = (size + 1) // 2
    u = tf.random.stateless_uniform([2, half], tf.cast(seed, tf.int32))
    radius = tf.sqrt(-2.0 * tf.math.log1p(-u[0]))  # 1 - u lies in (0, 1]
    angle = (2.0 * math.pi) * u[1]
    return tf.concat([radius * tf.cos(angle), radius * tf.sin(angle)], axis=0)[:size]


def add_noise(
    summed: list[tf.Tensor], noise_multiplier: float, clip_norm: float, seed: tf.Tensor
) -> list[tf.Tensor]:
    """Add N(0, (sigma C)^2) to every coordinate; `seed` is a stateless (2,) int seed.

    One draw of normals for all tensors together (`stateless_normals`).
    """
    sizes = [int(np.prod(g.shape)) for g in summed]
    z = stateless_normals(sum(sizes), seed) * (noise_multiplier * clip_norm)
    return [g + tf.reshape(part, tf.shape(g)) for g, part in zip(summed, tf.split(z, sizes))]


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


def _model_major(t: tf.Tensor, n_models: int) -> tf.Tensor:
    """(B, H, W, K*C), the K models side by side in channels -> (K*B, H, W, C), model k's rows first."""
    h, w, c = t.shape[1], t.shape[2], t.shape[3] // n_models
    return tf.reshape(tf.transpose(tf.reshape(t, [-1, h, w, n_models, c]), [3, 0, 1, 2, 4]), [-1, h, w, c])


def _unfolded(inputs: tf.Tensor) -> tf.Tensor:
    """(R, H, W, C) -> (R, H*W, 9*C): the 3x3 "same" patch at every position, in kernel order (kh, kw, c).

    The nine shifted slices of the zero-padded input, stacked on an outer
    axis and moved in by one transpose: on 2 CPU cores 1.6x faster than a
    concat on the channel axis for one input channel, as fast for 16, and
    faster than `tf.image.extract_patches` with the transposes its channel
    order needs.
    """
    _, h, w, c = inputs.shape
    padded = tf.pad(inputs, [[0, 0], [1, 1], [1, 1], [0, 0]])
    stacked = tf.stack([padded[:, i : i + h, j : j + w, :] for i in range(3) for j in range(3)], axis=1)
    return tf.reshape(tf.transpose(stacked, [0, 2, 3, 1, 4]), [-1, h * w, 9 * c])


def _conv_operands(
    layer: Layer, g: tf.Tensor, n_models: int, x: tf.Tensor | None = None
) -> tuple[tf.Tensor, tf.Tensor]:
    """A conv layer's unfolded inputs (K*B, T, 9 Cin) and output grads (K*B, T, Cout), T = H*W.

    x: the layer's input already model-major, (K, B, H, W, Cin) (the first
    layer's is the batch itself), saving a transpose.
    """
    h, w = g.shape[1], g.shape[2]
    inputs = _model_major(layer.inputs, n_models) if x is None else tf.reshape(x, [-1, *x.shape[2:]])
    return _unfolded(inputs), tf.reshape(_model_major(g, n_models), [-1, h * w, g.shape[3] // n_models])


def ghost_is_cheaper(positions: int, fan_in: int, fan_out: int) -> bool:
    """Whether a layer's per-example kernel-gradient norms cost fewer multiply-adds from Gram matrices.

    Per example, the kernel gradient is sum_t a_t g_t^T over T positions
    (T = 1 for Dense). Materialising it costs T * fan_in * fan_out, the
    "ghost" norm sum_{t,t'} (a_t . a_t') (g_t . g_t') costs
    T^2 (fan_in + fan_out) (Goodfellow 2015; for convolutions, and the
    choice layer by layer, Bu et al. 2022): the cheaper one is used.
    """
    return positions * (fan_in + fan_out) < fan_in * fan_out


def _conv_parts(patches: tf.Tensor, g: tf.Tensor) -> tuple[tf.Tensor, tuple[tf.Tensor, tf.Tensor] | None]:
    """Squared norm (R,) of each row's kernel gradient sum_t a_t g_t^T plus bias gradient sum_t g_t.

    patches (R, T, 9 Cin) are the a_t, g (R, T, Cout). Also the
    materialised (kernel (R, 9 Cin, Cout), bias (R, Cout)) gradients when
    they are what the norm was computed from (else None: the ghost norm).
    """
    positions, fan_in, fan_out = patches.shape[1], patches.shape[2], g.shape[2]
    bias_g = tf.reduce_sum(g, axis=1)
    bias_sq = tf.reduce_sum(tf.square(bias_g), axis=-1)
    if ghost_is_cheaper(positions, fan_in, fan_out):
        grams = tf.matmul(patches, patches, transpose_b=True) * tf.matmul(g, g, transpose_b=True)
        return tf.reduce_sum(grams, axis=[1, 2]) + bias_sq, None
    kernel_g = tf.matmul(patches, g, transpose_a=True)
    return tf.reduce_sum(tf.square(kernel_g), axis=[1, 2]) + bias_sq, (kernel_g, bias_g)


def _conv_weighted_sum(layer: Layer, g: tf.Tensor, c: tf.Tensor, n_models: int) -> list[tf.Tensor]:
    """Sum over examples of c (K, B) times each example's (kernel, bias) gradient of a conv layer.

    One weighted backward pass: the output grads scaled by c through the
    layer's own (grouped) filter gradient, as plain training computes it.
    """
    cout = g.shape[-1] // n_models
    weighted = g * tf.repeat(tf.transpose(c), cout, axis=1)[:, None, None, :]
    kernel = grouped_filter_gradient(layer.inputs, weighted, n_models)
    return [kernel, tf.reshape(tf.reduce_sum(weighted, axis=[0, 1, 2]), [n_models, cout])]


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
    for layer, g, kernel in zip(layers, grads, weights[::2]):
        if layer.kind == "dense":
            out += [tf.einsum("kbd,kbh->kbdh", layer.inputs, g), g]
        else:
            patches, gm = _conv_operands(layer, g, k)
            per = tf.matmul(patches, gm, transpose_a=True)  # (K*B, 9 Cin, Cout)
            out += [tf.reshape(per, [k, -1, *kernel.shape[1:]]), tf.reshape(tf.reduce_sum(gm, axis=1), [k, -1, gm.shape[2]])]
    return out


def _per_example_parts(
    layers: list[Layer], grads: list[tf.Tensor], n_models: int, x: tf.Tensor
) -> tuple[tf.Tensor, list[tuple[tf.Tensor, tf.Tensor] | None]]:
    """Every example's squared gradient norm over all layers (K, B), and what each layer's sum reuses.

    Dense: the kernel gradient a g^T has squared norm |a|^2 |g|^2 ("ghost"
    norm), the bias |g|^2. Conv: from the unfolded input, by Gram matrices
    or the materialised kernel gradient, whichever `ghost_is_cheaper`; a
    materialised one is returned, (kernel grads (K*B, 9 Cin, Cout), bias
    grads (K*B, Cout)), for its sum. x: the batch (K, B, *input_shape).
    """
    sq_norms: list[tf.Tensor] = []
    parts: list[tuple[tf.Tensor, tf.Tensor] | None] = []
    for i, (layer, g) in enumerate(zip(layers, grads)):
        if layer.kind == "dense":
            a_sq = tf.reduce_sum(tf.square(layer.inputs), axis=-1)
            sq_norms.append(tf.reduce_sum(tf.square(g), axis=-1) * (a_sq + 1.0))
            parts.append(None)
            continue
        patches, gm = _conv_operands(layer, g, n_models, x if i == 0 else None)
        sq, materialised = _conv_parts(patches, gm)
        sq_norms.append(tf.reshape(sq, [n_models, -1]))
        parts.append(materialised)
    return tf.add_n(sq_norms), parts


def per_example_sq_norms(
    arch: Architecture, recipe: Recipe, weights: list[tf.Tensor], x: tf.Tensor, y: tf.Tensor
) -> tf.Tensor:
    """Every example's squared gradient norm (K, B) as DP-SGD's clipping computes it (dropout off)."""
    recipe = dataclasses.replace(recipe, dropout=0.0)
    _, layers, grads, _ = _output_grads(arch, recipe, weights, x, y, None, None)
    return _per_example_parts(layers, grads, weights[0].shape[0], x)[0]


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
    The norms come from `_per_example_parts`; a layer's sum is one weighted
    backward pass through it (its output grads scaled by the clip factors),
    or the weighted sum of its kernel gradients where the norms
    materialised them. Returns the K-stacked sums in weight order, the
    per-example losses and the correct-prediction indicators (K, B), both
    zero on padding.
    """
    logits, layers, grads, losses = _output_grads(arch, recipe, weights, x, y, valid, dropout_seed)
    k = weights[0].shape[0]
    sq_norms, parts = _per_example_parts(layers, grads, k, x)
    c = clip_factors(sq_norms, clip_norm) * tf.cast(valid, tf.float32)  # (K, B)
    sums: list[tf.Tensor] = []
    for layer, g, part, kernel in zip(layers, grads, parts, weights[::2]):
        if layer.kind == "dense":
            cg = g * c[:, :, None]
            sums += [tf.einsum("kbd,kbh->kdh", layer.inputs, cg), tf.reduce_sum(cg, axis=1)]
        elif part is None:
            sums += _conv_weighted_sum(layer, g, c, k)
        else:
            kernel_g, bias_g = (tf.reshape(t, [k, -1, *t.shape[1:]]) for t in part)
            sums += [tf.reshape(tf.einsum("kbij,kb->kij", kernel_g, c), kernel.shape), tf.einsum("kbd,kb->kd", bias_g, c)]
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
        added = tf.scatter_nd(coords[:, None], tf.transpose(tf.cast(sampled, tf.float32)) * self.dp.clip_norm, [sum(self.sizes), k])
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
