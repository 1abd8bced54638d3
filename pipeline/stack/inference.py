"""Inference-mode logits of a stack (no dropout), and per-model loss and accuracy.

Points go through in chunks small enough to bound memory, each chunk one
call of a function traced once per (architecture, K, input kind), so
repeated calls (every epoch's evaluation) do not retrace.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from pipeline.core.errors import PipelineError
from pipeline.core.tf_runtime import tf
from pipeline.stack.clones import clone_logits
from pipeline.stack.forward import forward, l2_term, per_example_loss
from pipeline.stack.spec import Architecture, Recipe, TrainedStack, weight_shapes

__all__ = ["stack_logits", "evaluate"]

_ACTIVATION_BUDGET = 2**25  # floats (128 MiB) in the widest activation of one inference chunk

_TRACED: dict[tuple[Architecture, int, bool], Callable] = {}


def _chunk_size(arch: Architecture, k: int, most: int) -> int:
    """Points per chunk: `most`, or fewer when K models' widest activations would pass the budget."""
    if arch.kind == "cnn":
        widest = int(np.prod(arch.input_shape[:2])) * max(arch.conv_filters)
    else:
        widest = max(arch.hidden_units, int(np.prod(arch.input_shape)))
    return max(1, min(most, _ACTIVATION_BUDGET // (k * widest)))


def _traced_forward(arch: Architecture, k: int, shared: bool) -> Callable:
    """`forward` traced for K models on shared points (N, ...) or per-model points (K, V, ...).

    The signature fixes every weight shape (K is static, as the grouped
    convolution needs) and leaves only the number of points free.
    """
    key = (arch, k, shared)
    if key not in _TRACED:
        weight_specs = [tf.TensorSpec([k, *shape], tf.float32) for shape in weight_shapes(arch)]
        points = [None, *arch.input_shape] if shared else [k, None, *arch.input_shape]
        _TRACED[key] = tf.function(
            lambda w, x: forward(arch, w, x, shared=shared),
            input_signature=[weight_specs, tf.TensorSpec(points, tf.float32)],
            autograph=False,
        )
    return _TRACED[key]


def _shared_logits(
    arch: Architecture, weights: list[tf.Tensor], x: np.ndarray, batch_size: int
) -> tf.Tensor:
    """Logits (K, N, C) of every model on shared points x, `batch_size` points a chunk at most."""
    w = [tf.convert_to_tensor(v) for v in weights]
    k = int(w[0].shape[0])
    chunk = _chunk_size(arch, k, batch_size)
    fwd = _traced_forward(arch, k, shared=True)
    parts = [fwd(w, tf.constant(x[start : start + chunk])) for start in range(0, len(x), chunk)]
    if not parts:
        return tf.zeros([k, 0, arch.n_classes])
    return tf.concat(parts, axis=1)


def _own_logits(
    arch: Architecture, weights: list[tf.Tensor], x: tf.Tensor | np.ndarray, own: np.ndarray
) -> tf.Tensor:
    """Logits (K, V, C): model k on its own points x[own[k]], own (K, V) indices."""
    w = [tf.convert_to_tensor(v) for v in weights]
    k, v = own.shape
    chunk = _chunk_size(arch, k, 1024)
    fwd = _traced_forward(arch, k, shared=False)
    x = tf.convert_to_tensor(x, tf.float32)
    parts = [fwd(w, tf.gather(x, own[:, start : start + chunk])) for start in range(0, v, chunk)]
    return tf.concat(parts, axis=1)


def stack_logits(stack: TrainedStack, x: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """Pre-softmax outputs (K, N, C) float32 of every model on shared points x.

    Inference mode (no dropout); computed in batches of `batch_size` points
    (a "keras" stack: each member's released logits, see `clones`).
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.shape[1:] != tuple(stack.architecture.input_shape):
        raise PipelineError(
            f"x has per-example shape {x.shape[1:]}, the stack expects "
            f"{stack.architecture.input_shape}"
        )
    if batch_size < 1:
        raise PipelineError(f"batch_size must be >= 1, got {batch_size}")
    if stack.architecture.kind == "keras":
        return clone_logits(stack, x)
    return _shared_logits(stack.architecture, list(stack.weights), x, batch_size).numpy()


def evaluate(
    arch: Architecture,
    recipe: Recipe,
    weights: list[tf.Tensor],
    x: tf.Tensor | np.ndarray,
    y: np.ndarray,
    own: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-model (loss incl. L2, accuracy), each (K,), in inference mode.

    On shared eval data (x, y): every model scores all of it. With `own`
    (K, V) indices into x: model k scores its own points x[own[k]] (x may
    then be a trainer's constant: no host copy).
    """
    if own is None:
        logits = _shared_logits(arch, weights, np.ascontiguousarray(x, np.float32), 1024)
        yk = tf.broadcast_to(tf.constant(y.astype(np.int32)), logits.shape[:2])
    else:
        logits = _own_logits(arch, weights, x, own)
        yk = tf.constant(np.asarray(y)[own].astype(np.int32))
    loss = tf.reduce_mean(per_example_loss(logits, yk, arch.n_classes, recipe.label_smoothing), axis=1)
    if recipe.l2 > 0:
        loss = loss + l2_term(weights, recipe.l2)
    pred = tf.argmax(logits, axis=-1, output_type=tf.int32)
    acc = tf.reduce_mean(tf.cast(tf.equal(pred, yk), tf.float32), axis=1)
    return loss.numpy(), acc.numpy()
