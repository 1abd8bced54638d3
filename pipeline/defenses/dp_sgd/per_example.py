"""Per-example gradient norms and the clipped sum of K models, without a loop over examples.

Per-example gradients without a loop over examples: one backward pass
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
"""

from __future__ import annotations

import dataclasses

from pipeline.core.tf_runtime import tf
from pipeline.defenses.dp_sgd.mechanism import clip_factors
from pipeline.stack import (
    Architecture,
    Layer,
    Recipe,
    forward_layers,
    grouped_filter_gradient,
    per_example_loss,
)

__all__ = ["per_example_gradients", "per_example_sq_norms", "ghost_is_cheaper", "clipped_sum"]


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
