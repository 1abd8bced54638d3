"""K models' 3x3 convolutions as one layer, on whichever CPU kernels TensorFlow runs.

The stack keeps K models side by side in the channel axis, (B, H, W, K*C),
so a layer of K convolutions is one grouped convolution (group k = model
k). oneDNN's CPU kernels and the GPU's differentiate a grouped convolution;
TensorFlow's default (Eigen) CPU kernels compute it forward but have no
gradient for it, and TensorFlow turns oneDNN on by default only on some
CPUs (`TF_ENABLE_ONEDNN_OPTS`). So the kernels are probed once, at first
use: where they differentiate a grouped convolution it is one op, else the
channels are split per model and convolved one model at a time with plain
convolutions, which every kernel set differentiates.

Measured side by side (`benchmarks/bench_kernels.py`, digits CNN, 2 CPU
cores, 2026-12-06): under oneDNN the grouped op trains 16 models 1.5 to
2.6x faster than the per-model split (two runs on a shared machine), so it
is kept wherever it works; under Eigen the split is the fastest portable
form measured (an unfolded-input matmul was 2.3x slower, a custom gradient
around the grouped forward 1.7x slower).
"""

from __future__ import annotations

import functools

from pipeline.core.tf_runtime import tf

__all__ = ["grouped_gradients_supported", "grouped_conv", "grouped_filter_gradient"]


@functools.cache
def grouped_gradients_supported() -> bool:
    """Whether this process's kernels differentiate a grouped convolution (probed once, eagerly).

    Runs both backward ops of a tiny two-group convolution; it may be
    called while a graph is traced (`init_scope` runs it eagerly).
    """
    with tf.init_scope():
        x, kernel, grads = tf.ones([1, 3, 3, 2]), tf.ones([3, 3, 1, 2]), tf.ones([1, 3, 3, 2])
        try:
            tf.raw_ops.Conv2DBackpropInput(
                input_sizes=[1, 3, 3, 2], filter=kernel, out_backprop=grads, strides=[1, 1, 1, 1], padding="SAME"
            )
            tf.raw_ops.Conv2DBackpropFilter(
                input=x, filter_sizes=[3, 3, 1, 2], out_backprop=grads, strides=[1, 1, 1, 1], padding="SAME"
            )
        except (tf.errors.InvalidArgumentError, tf.errors.UnimplementedError):
            return False
    return True


def grouped_conv(inputs: tf.Tensor, kernels: tf.Tensor) -> tf.Tensor:
    """K models' 3x3 "same" convolutions: (B, H, W, K*Cin) with kernels (K, 3, 3, Cin, Cout) -> (B, H, W, K*Cout).

    Model k reads input channels [k Cin, (k+1) Cin) and writes output
    channels [k Cout, (k+1) Cout). Inputs shared by all models pass with
    Cin channels (no K): then it is one plain convolution with K*Cout filters.
    """
    n_models, _, _, cin, cout = kernels.shape
    shared = inputs.shape[-1] == cin
    if shared or n_models == 1 or grouped_gradients_supported():
        kmat = tf.reshape(tf.transpose(kernels, [1, 2, 3, 0, 4]), [3, 3, cin, n_models * cout])
        return tf.nn.conv2d(inputs, kmat, strides=1, padding="SAME")
    parts = tf.split(inputs, n_models, axis=-1)
    return tf.concat([tf.nn.conv2d(part, kernels[k], 1, "SAME") for k, part in enumerate(parts)], axis=-1)


def grouped_filter_gradient(inputs: tf.Tensor, out_grads: tf.Tensor, n_models: int) -> tf.Tensor:
    """Each model's kernel gradient (K, 3, 3, Cin, Cout) of `grouped_conv` given its output grads.

    inputs (B, H, W, K*Cin) as the layer read them, out_grads (B, H, W, K*Cout).
    """
    cin, cout = inputs.shape[-1] // n_models, out_grads.shape[-1] // n_models
    if n_models == 1 or grouped_gradients_supported():
        kernel = tf.raw_ops.Conv2DBackpropFilter(
            input=inputs, filter_sizes=[3, 3, cin, n_models * cout], out_backprop=out_grads,
            strides=[1, 1, 1, 1], padding="SAME",
        )  # fmt: skip
        return tf.transpose(tf.reshape(kernel, [3, 3, cin, n_models, cout]), [3, 0, 1, 2, 4])
    return tf.stack(
        [
            tf.raw_ops.Conv2DBackpropFilter(
                input=a, filter_sizes=[3, 3, cin, cout], out_backprop=g, strides=[1, 1, 1, 1], padding="SAME"
            )
            for a, g in zip(tf.split(inputs, n_models, axis=-1), tf.split(out_grads, n_models, axis=-1))
        ]
    )
