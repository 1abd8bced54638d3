"""The batched forward pass of K models, and their loss.

One function computes every stack's logits: training steps, inference,
evaluation and DP-SGD, which also reads each parametric layer's input and
pre-activation output (`forward_layers`) for its per-example gradients.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pipeline.core.tf_runtime import tf
from pipeline.stack.conv import grouped_conv
from pipeline.stack.spec import Architecture, is_kernel

__all__ = ["Layer", "forward", "forward_layers", "per_example_loss", "l2_term"]


@dataclass(frozen=True)
class Layer:
    """One parametric layer of K models: its input and pre-activation output (bias added).

    dense: inputs (K, B, d), outputs (K, B, h). conv: the K models side by
    side in the channel axis, inputs (B, H, W, K*Cin), outputs
    (B, H, W, K*Cout). On input shared by all models the first layer's
    inputs have no K: (B, d) or (B, H, W, Cin).
    """

    kind: Literal["dense", "conv"]
    inputs: tf.Tensor
    outputs: tf.Tensor


def _conv_stack(
    arch: Architecture, weights: list[tf.Tensor], x: tf.Tensor, shared: bool
) -> tuple[tf.Tensor, list[Layer]]:
    """K independent stacks of Conv2D(3x3, same, relu) + MaxPool(2), one op per layer.

    x: (K, B, H, W, Cin), each model its own batch, or (B, H, W, Cin) when
    `shared` by all models; returns (K, B, H', W', C') and the conv layers.
    The K models live side by side in the channel axis, (B, H, W, K*C), so
    each layer is one grouped convolution (`conv.grouped_conv`; on shared
    input the first layer is a plain convolution with K*Cout filters) and
    one MaxPool2D, which pools each channel on its own. Measured on 2 CPU
    cores this is ~3x faster than im2col + einsum, and each model keeps
    Keras's own Conv2D kernel layout (3, 3, Cin, Cout), so the weights
    export unchanged.
    """
    n_models = weights[0].shape[0]
    if shared:
        y = x
    else:
        _, _, h, w, c = x.shape
        y = tf.reshape(tf.transpose(x, [1, 2, 3, 0, 4]), [-1, h, w, n_models * c])
    layers = []
    for i in range(len(arch.conv_filters)):
        kernel, bias = weights[2 * i], weights[2 * i + 1]
        z = grouped_conv(y, kernel) + tf.reshape(bias, [n_models * kernel.shape[4]])
        layers.append(Layer("conv", y, z))  # groups = channels(y) / cin
        y = tf.nn.max_pool2d(tf.nn.relu(z), 2, 2, "VALID")
    _, h, w, _ = y.shape
    y = tf.reshape(y, [-1, h, w, n_models, arch.conv_filters[-1]])
    return tf.transpose(y, [3, 0, 1, 2, 4]), layers


def forward_layers(
    arch: Architecture,
    weights: list[tf.Tensor],
    x: tf.Tensor,
    *,
    shared: bool = False,
    dropout: float = 0.0,
    dropout_seed: tf.Tensor | None = None,
) -> tuple[tf.Tensor, list[Layer]]:
    """Logits (K, B, C) of K models, and every parametric layer in weight order.

    x is (K, B, *input_shape), each model its own batch (training), or
    (B, *input_shape) when `shared` by all models (inference). Dropout
    runs only when a seed is given: one mask entry per model, example and
    unit, inverted scaling as in keras.layers.Dropout.
    """
    n_models = weights[0].shape[0]
    layers: list[Layer] = []
    if arch.kind == "cnn":
        x, layers = _conv_stack(arch, weights, x, shared)
        shared = False
    kernel, bias, out_kernel, out_bias = weights[2 * len(layers) :]
    if shared:
        a = tf.reshape(x, [-1, kernel.shape[1]])
        z = tf.einsum("bd,kdh->kbh", a, kernel) + bias[:, None, :]
    else:
        a = tf.reshape(x, [n_models, -1, kernel.shape[1]])
        z = tf.einsum("kbd,kdh->kbh", a, kernel) + bias[:, None, :]
    layers.append(Layer("dense", a, z))
    hidden = tf.nn.relu(z)
    if dropout > 0.0 and dropout_seed is not None:
        keep_mask = tf.random.stateless_uniform(tf.shape(hidden), seed=dropout_seed) >= dropout
        hidden = tf.where(keep_mask, hidden / (1.0 - dropout), tf.zeros_like(hidden))
    logits = tf.einsum("kbh,khc->kbc", hidden, out_kernel) + out_bias[:, None, :]
    layers.append(Layer("dense", hidden, logits))
    return logits, layers


def forward(arch: Architecture, weights: list[tf.Tensor], x: tf.Tensor, **options: Any) -> tf.Tensor:
    """Logits (K, B, C) of K models: `forward_layers` (same keyword options) without the layers."""
    return forward_layers(arch, weights, x, **options)[0]


def per_example_loss(
    logits: tf.Tensor,
    labels: tf.Tensor,
    n_classes: int,
    smoothing: float,
    targets: tf.Tensor | None = None,
) -> tf.Tensor:
    """Cross-entropy of every example, (K, B, C), (K, B) -> (K, B), as Keras's.

    With `targets` (K, B, C) probabilities, the cross-entropy is against
    them instead of the one-hot labels (smoothed the same way, as Keras's
    CategoricalCrossentropy smooths whatever targets it is given).
    """
    if targets is not None:
        target = targets * (1.0 - smoothing) + smoothing / n_classes if smoothing > 0.0 else targets
        return tf.nn.softmax_cross_entropy_with_logits(target, logits)
    if smoothing > 0.0:
        target = tf.one_hot(labels, n_classes) * (1.0 - smoothing) + smoothing / n_classes
        return tf.nn.softmax_cross_entropy_with_logits(target, logits)
    return tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits)


def l2_term(weights: list[tf.Tensor], l2: float) -> tf.Tensor:
    """Per-model L2 penalty (K,), keras.regularizers.L2 on every kernel."""
    terms = [
        tf.reduce_sum(tf.square(w), axis=list(range(1, len(w.shape))))
        for w in weights
        if is_kernel(w)
    ]
    return l2 * tf.add_n(terms)
