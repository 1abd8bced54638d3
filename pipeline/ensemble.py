"""K same-shaped Keras-style models trained as one batched TF computation.

Shadow and reference models dominate the pipeline's cost, and on a CPU a
sequential ``model.fit`` per model is mostly per-step overhead. Here every
weight carries a leading K axis, each step gathers one batch per model
(each model its own data subset, initialisation, shuffling and dropout
masks) and one Adam step updates all K. Adam is elementwise and the loss
is a sum of per-model losses, so model k's update is exactly the update of
an independently trained Keras model with the same recipe. The single
target model is the K=1 case of the same code.

Weights are stored in the order ``keras.Model.get_weights()`` lists them
for the model ``to_keras`` builds, so exporting is a slice per array.

Training-time defenses hook in without a trainer of their own:
`train_stack` takes soft targets (per model), a custom per-model loss
(`Batch` -> (K,)), per-model held-out points scored after every epoch, and
host-side `StackCallback`s that may stop training and choose the returned
weights (`PerModelEarlyStopping`). `_Trainer` subclasses reuse its
variables and fused Adam (DP-SGD), and through `_fit` its epoch loop too
(adversarial regularization). None of it changes the plain path's graph:
plain training gives bitwise the same weights as before the hooks.

Each epoch is one traced graph (a while-loop over its steps) without XLA:
measured on 2 CPU cores, ``jit_compile=True`` made the digit MLPs' steps
only slightly faster but paid seconds of compile time per call, ran the
CNN ~30x slower, and refuses MaxPoolGrad under op determinism.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from typing import Callable, Literal, Sequence

import numpy as np
from tqdm import tqdm

from pipeline.errors import PipelineError
from pipeline.tf_runtime import keras, tf

__all__ = [
    "Architecture",
    "Recipe",
    "TrainedStack",
    "Batch",
    "LossFn",
    "StackCallback",
    "PerModelEarlyStopping",
    "train_stack",
    "stack_logits",
    "to_keras",
    "keras_logits",
    "keras_model",
]


@dataclass(frozen=True)
class Architecture:
    """The shape of every model in a stack.

    mlp: Flatten -> Dense(hidden, relu) -> [Dropout] -> Dense(C).
    cnn: per filter count, Conv2D(f, 3x3, same, relu) + MaxPool 2x2, then
    Flatten -> Dense(hidden, relu) -> [Dropout] -> Dense(C).
    """

    kind: Literal["mlp", "cnn"]
    input_shape: tuple[int, ...]
    n_classes: int
    hidden_units: int = 128
    conv_filters: tuple[int, ...] = (16, 32)


@dataclass(frozen=True)
class Recipe:
    """Training hyper-parameters, shared by the target and its shadows.

    Adam with Keras defaults otherwise; `l2` is a keras.regularizers.L2
    weight on every kernel; `label_smoothing` is as in Keras's
    CategoricalCrossentropy.
    """

    epochs: int
    batch_size: int
    learning_rate: float
    dropout: float = 0.0
    l2: float = 0.0
    label_smoothing: float = 0.0


@dataclass(frozen=True)
class TrainedStack:
    """K trained models: stacked weights (leading axis K) and their curves.

    `history` holds "loss" and "accuracy" on each model's own training data
    (Keras `fit` semantics: epoch means over the batches, in training
    mode), plus "val_loss" and "val_accuracy" when eval data was given
    ("holdout_*" with per-model held-out points, and any numbers a trainer
    subclass adds); each array is (K, epochs run).
    """

    architecture: Architecture
    recipe: Recipe
    weights: tuple[np.ndarray, ...]
    history: dict[str, np.ndarray]

    @property
    def n_models(self) -> int:
        return int(self.weights[0].shape[0])


# --------------------------------------------------------------------------
# Shapes and initialisation


def _validate(architecture: Architecture, recipe: Recipe) -> None:
    if architecture.kind not in ("mlp", "cnn"):
        raise PipelineError(f"architecture.kind must be 'mlp' or 'cnn', got {architecture.kind!r}")
    if architecture.n_classes < 2:
        raise PipelineError(f"architecture.n_classes must be >= 2, got {architecture.n_classes}")
    if architecture.kind == "cnn" and len(architecture.input_shape) != 3:
        raise PipelineError(
            f"a cnn needs input_shape (H, W, channels), got {architecture.input_shape}"
        )
    if recipe.epochs < 1 or recipe.batch_size < 1 or recipe.learning_rate <= 0:
        raise PipelineError(
            "recipe needs epochs >= 1, batch_size >= 1 and learning_rate > 0, got "
            f"epochs={recipe.epochs}, batch_size={recipe.batch_size}, "
            f"learning_rate={recipe.learning_rate}"
        )
    if not 0.0 <= recipe.dropout < 1.0:
        raise PipelineError(f"recipe.dropout must be in [0, 1), got {recipe.dropout}")
    if recipe.l2 < 0 or not 0.0 <= recipe.label_smoothing <= 1.0:
        raise PipelineError(
            f"recipe.l2 must be >= 0 and label_smoothing in [0, 1], got "
            f"l2={recipe.l2}, label_smoothing={recipe.label_smoothing}"
        )


def _weight_shapes(arch: Architecture) -> list[tuple[int, ...]]:
    """Per-model weight shapes, in keras.Model.get_weights() order."""
    shapes: list[tuple[int, ...]] = []
    if arch.kind == "cnn":
        h, w, c = arch.input_shape
        for f in arch.conv_filters:
            shapes += [(3, 3, c, f), (f,)]
            h, w, c = h // 2, w // 2, f
        flat = h * w * c
    else:
        flat = int(np.prod(arch.input_shape))
    shapes += [(flat, arch.hidden_units), (arch.hidden_units,)]
    shapes += [(arch.hidden_units, arch.n_classes), (arch.n_classes,)]
    return shapes


def _glorot_limit(shape: tuple[int, ...]) -> float:
    """keras.initializers.GlorotUniform's bound for a Dense or Conv2D kernel."""
    receptive = int(np.prod(shape[:-2])) if len(shape) > 2 else 1
    fan_in, fan_out = shape[-2] * receptive, shape[-1] * receptive
    return math.sqrt(6.0 / (fan_in + fan_out))


def _init_weights(arch: Architecture, k: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Glorot-uniform kernels and zero biases, an independent draw per model."""
    out = []
    for shape in _weight_shapes(arch):
        if len(shape) == 1:
            out.append(np.zeros((k, *shape), np.float32))
        else:
            lim = _glorot_limit(shape)
            out.append(rng.uniform(-lim, lim, size=(k, *shape)).astype(np.float32))
    return out


def _is_kernel(w: tf.Tensor | np.ndarray) -> bool:
    return len(w.shape) > 2  # stacked: (K, ...) with a kernel having >= 2 own axes


# --------------------------------------------------------------------------
# The batched forward pass


def _conv_stack(
    arch: Architecture, weights: list[tf.Tensor], x: tf.Tensor, shared: bool
) -> tf.Tensor:
    """K independent stacks of Conv2D(3x3, same, relu) + MaxPool(2), one op per layer.

    x: (K, B, H, W, Cin), each model its own batch, or (B, H, W, Cin) when
    `shared` by all models; returns (K, B, H', W', C'). The K models live
    side by side in the channel axis, (B, H, W, K*C), so each layer is one
    grouped convolution (group k = model k; on shared input the first layer
    is a plain convolution with K*Cout filters) and one MaxPool2D, which
    pools each channel on its own. Measured on 2 CPU cores this is ~3x
    faster than im2col + einsum, and each model keeps Keras's own Conv2D
    kernel layout (3, 3, Cin, Cout), so the weights export unchanged.
    """
    n_models = weights[0].shape[0]
    if shared:
        y = x
    else:
        _, _, h, w, c = x.shape
        y = tf.reshape(tf.transpose(x, [1, 2, 3, 0, 4]), [-1, h, w, n_models * c])
    for i in range(len(arch.conv_filters)):
        kernel, bias = weights[2 * i], weights[2 * i + 1]
        cin, cout = kernel.shape[3], kernel.shape[4]
        kmat = tf.reshape(tf.transpose(kernel, [1, 2, 3, 0, 4]), [3, 3, cin, n_models * cout])
        y = tf.nn.conv2d(y, kmat, strides=1, padding="SAME")  # groups = channels(y) / cin
        y = tf.nn.relu(y + tf.reshape(bias, [n_models * cout]))
        y = tf.nn.max_pool2d(y, 2, 2, "VALID")
    _, h, w, _ = y.shape
    y = tf.reshape(y, [-1, h, w, n_models, arch.conv_filters[-1]])
    return tf.transpose(y, [3, 0, 1, 2, 4])


def _forward(
    arch: Architecture,
    weights: list[tf.Tensor],
    x: tf.Tensor,
    shared: bool = False,
    dropout: float = 0.0,
    dropout_seed: tf.Tensor | None = None,
) -> tf.Tensor:
    """Logits (K, B, C) of K models.

    x is (K, B, *input_shape), each model its own batch (training), or
    (B, *input_shape) when `shared` by all models (inference). Dropout
    runs only when a seed is given: one mask entry per model, example and
    unit, inverted scaling as in keras.layers.Dropout.
    """
    i = 0
    if arch.kind == "cnn":
        x = _conv_stack(arch, weights, x, shared)
        i = 2 * len(arch.conv_filters)
        shared = False
    kernel, bias = weights[i], weights[i + 1]
    if shared:
        x = tf.reshape(x, [-1, kernel.shape[1]])
        hdn = tf.einsum("bd,kdh->kbh", x, kernel)
    else:
        x = tf.reshape(x, [weights[0].shape[0], -1, kernel.shape[1]])
        hdn = tf.einsum("kbd,kdh->kbh", x, kernel)
    hdn = tf.nn.relu(hdn + bias[:, None, :])
    if dropout > 0.0 and dropout_seed is not None:
        keep_mask = tf.random.stateless_uniform(tf.shape(hdn), seed=dropout_seed) >= dropout
        hdn = tf.where(keep_mask, hdn / (1.0 - dropout), tf.zeros_like(hdn))
    return tf.einsum("kbh,khc->kbc", hdn, weights[i + 2]) + weights[i + 3][:, None, :]


def _per_model_loss(
    logits: tf.Tensor,
    labels: tf.Tensor,
    n_classes: int,
    smoothing: float,
    targets: tf.Tensor | None = None,
) -> tf.Tensor:
    """Cross-entropy, mean over each model's batch: (K, B, C), (K, B) -> (K,).

    With `targets` (K, B, C) probabilities, the cross-entropy is against
    them instead of the one-hot labels (smoothed the same way, as Keras's
    CategoricalCrossentropy smooths whatever targets it is given).
    """
    if targets is not None:
        target = targets * (1.0 - smoothing) + smoothing / n_classes if smoothing > 0.0 else targets
        ce = tf.nn.softmax_cross_entropy_with_logits(target, logits)
    elif smoothing > 0.0:
        target = tf.one_hot(labels, n_classes) * (1.0 - smoothing) + smoothing / n_classes
        ce = tf.nn.softmax_cross_entropy_with_logits(target, logits)
    else:
        ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits)
    return tf.reduce_mean(ce, axis=1)


def _l2_term(weights: list[tf.Tensor], l2: float) -> tf.Tensor:
    """Per-model L2 penalty (K,), keras.regularizers.L2 on every kernel."""
    terms = [
        tf.reduce_sum(tf.square(w), axis=list(range(1, len(w.shape))))
        for w in weights
        if _is_kernel(w)
    ]
    return l2 * tf.add_n(terms)


# --------------------------------------------------------------------------
# Training hooks


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


LossFn = Callable[[Batch], tf.Tensor]
"""A per-model training objective: Batch -> (K,), minimised (the trainer adds L2).

Model k's entry may depend on model k's slice of the batch only (the
objective is summed over models before differentiation).
"""


class StackCallback:
    """Host-side hooks between epochs of `train_stack` (all models at once).

    `on_epoch_end` sees the epoch's per-model logs ((K,) arrays: "loss",
    "accuracy", "val_*", "holdout_*", ...) and the live stacked weight
    variables; setting `stop_training` ends training after this epoch.
    `on_train_end` gets the final stacked weights (numpy, leading axis K)
    and returns the weights to keep.
    """

    stop_training: bool = False

    def on_epoch_end(self, epoch: int, logs: dict[str, np.ndarray], weights: Sequence[tf.Variable]) -> None:
        pass

    def on_train_end(self, weights: list[np.ndarray]) -> list[np.ndarray]:
        return weights


class PerModelEarlyStopping(StackCallback):
    """keras.callbacks.EarlyStopping(mode="min", restore_best_weights=True), per model.

    Each of the K models runs Keras's rule on its own entry of
    `logs[monitor]`: an epoch improves when value - min_delta < best; after
    `patience` epochs in a row without improvement (and not at epoch 0) the
    model stops. A stopped model's best weights are frozen: later epochs of
    the batched run (the other models still training) can no longer change
    what it returns. Training ends when every model has stopped or the
    epochs run out; every model then gets back the weights of its best
    epoch (as Keras restores them whether or not it stopped early).

    After training: `stopped_epoch` (K,) the 0-based epoch at which each
    model stopped, -1 if it never did; `best_epoch` (K,) 0-based;
    `epochs_trained` (K,) how many epochs each returned model trained.
    """

    def __init__(self, monitor: str = "holdout_loss", patience: int = 3, min_delta: float = 0.0) -> None:
        if patience < 1:
            raise PipelineError(f"early stopping needs patience >= 1, got {patience}")
        self.monitor, self.patience, self.min_delta = monitor, patience, min_delta
        self.best: np.ndarray | None = None
        self.best_weights: list[np.ndarray] | None = None
        self.epochs_run = 0

    def on_epoch_end(self, epoch: int, logs: dict[str, np.ndarray], weights: Sequence[tf.Variable]) -> None:
        if self.monitor not in logs:
            raise PipelineError(
                f"early stopping monitors {self.monitor!r}, which the epoch logs lack "
                f"(they have {', '.join(logs)})"
            )
        current = np.asarray(logs[self.monitor], dtype=np.float64)
        if self.best is None:
            k = len(current)
            self.best = np.full(k, np.inf)
            self.wait = np.zeros(k, np.int64)
            self.stopped = np.zeros(k, bool)
            self.stopped_epoch = np.full(k, -1, np.int64)
            self.best_epoch = np.full(k, epoch, np.int64)
            self.best_weights = [np.array(w.numpy()) for w in weights]
        self.epochs_run = epoch + 1
        active = ~self.stopped
        self.wait[active] += 1
        improved = active & (current - self.min_delta < self.best)
        if improved.any():
            self.best[improved] = current[improved]
            self.best_epoch[improved] = epoch
            self.wait[improved] = 0
            for best, w in zip(self.best_weights, weights):
                best[improved] = w.numpy()[improved]
        stop = active & ~improved & (self.wait >= self.patience) & (epoch > 0)
        self.stopped |= stop
        self.stopped_epoch[stop] = epoch
        self.stop_training = bool(self.stopped.all())

    def on_train_end(self, weights: list[np.ndarray]) -> list[np.ndarray]:
        if self.best_weights is None:
            return weights
        return [np.array(b) for b in self.best_weights]

    @property
    def epochs_trained(self) -> np.ndarray:
        return np.where(self.stopped_epoch >= 0, self.stopped_epoch + 1, self.epochs_run)


# --------------------------------------------------------------------------
# Training


class _FusedAdam:
    """keras.optimizers.Adam (Keras defaults) over stacked variables, as fused kernels.

    TensorFlow's ``ResourceApplyAdam`` computes the update
    keras.optimizers.Adam writes out op by op (alpha = lr * sqrt(1 - b2^t)
    / (1 - b1^t); m += (g - m)(1 - b1); v += (g^2 - v)(1 - b2); w -= alpha
    m / (sqrt(v) + eps)) in one kernel per variable instead of ~15 ops.
    """

    beta_1, beta_2, epsilon = 0.9, 0.999, 1e-7  # keras.optimizers.Adam defaults

    def __init__(self, variables: list[tf.Variable], learning_rate: float) -> None:
        self.vars = variables
        self.learning_rate = learning_rate
        self.m = [tf.Variable(tf.zeros_like(w)) for w in variables]
        self.v = [tf.Variable(tf.zeros_like(w)) for w in variables]
        self.iterations = tf.Variable(0.0)

    def apply(self, grads: list[tf.Tensor]) -> None:
        t = self.iterations.assign_add(1.0)
        b1p, b2p = tf.pow(self.beta_1, t), tf.pow(self.beta_2, t)
        for var, m, v, g in zip(self.vars, self.m, self.v, grads):
            tf.raw_ops.ResourceApplyAdam(
                var=var.handle, m=m.handle, v=v.handle,
                beta1_power=b1p, beta2_power=b2p, lr=self.learning_rate,
                beta1=self.beta_1, beta2=self.beta_2, epsilon=self.epsilon, grad=g,
            )  # fmt: skip


class _Trainer:
    """Variables, Adam state and the compiled epoch of one stack.

    Adam is TensorFlow's fused ``ResourceApplyAdam`` kernel (`_FusedAdam`);
    a test checks weights against keras `fit` step for step. It is one
    kernel instead of ~15 ops per variable: for 64 digit MLPs on 2 CPU
    cores the update takes 0.5 ms instead of keras.optimizers.Adam's
    1.5 ms, of a ~2-3 ms step.

    Optional: `targets` soft targets, (N, C) shared or (K, N, C) per model,
    trained on instead of the one-hot labels; `loss_fn` a custom objective
    (see `Batch`). Subclasses may override `_step` (one step of all models)
    or `_epoch`, and `epoch_logs` to add per-model (K,) numbers to each
    epoch's logs and history.
    """

    beta_1, beta_2, epsilon = _FusedAdam.beta_1, _FusedAdam.beta_2, _FusedAdam.epsilon

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
        self.arch, self.recipe = arch, recipe
        self.vars = [tf.Variable(w) for w in init]
        self.optimizer = _FusedAdam(self.vars, recipe.learning_rate)
        self.m, self.v, self.iterations = self.optimizer.m, self.optimizer.v, self.optimizer.iterations
        self.x = tf.constant(x)
        self.y = tf.constant(y.astype(np.int32))
        self.targets = None if targets is None else tf.constant(np.asarray(targets, np.float32))
        self.loss_fn = loss_fn
        self.current_epoch = tf.Variable(0, dtype=tf.int32, trainable=False)
        self.n = n_per_model
        self.n_steps = -(-n_per_model // recipe.batch_size)
        k = len(init[0])
        self.epoch = tf.function(
            self._epoch,
            input_signature=[
                tf.TensorSpec([k, n_per_model], tf.int32),
                tf.TensorSpec([], tf.int32),
            ],
            autograph=False,
        )

    def _apply_adam(self, grads: list[tf.Tensor]) -> None:
        self.optimizer.apply(grads)

    def _gather_targets(self, idx: tf.Tensor) -> tf.Tensor | None:
        if self.targets is None:
            return None
        if len(self.targets.shape) == 3:  # (K, N, C): each model its own targets
            return tf.gather(self.targets, idx, batch_dims=1)
        return tf.gather(self.targets, idx)

    def _step(
        self, idx: tf.Tensor, seed: tf.Tensor, step: tf.Tensor | None = None
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """One Adam step of every model on idx (K, B); per-model (loss, n correct).

        The loss returned (for history) is the recipe's loss incl. L2, also
        when a custom `loss_fn` is what is minimised.
        """
        arch, r = self.arch, self.recipe
        xb = tf.gather(self.x, idx)  # (K, B, ...)
        yb = tf.gather(self.y, idx)
        tb = self._gather_targets(idx)
        with tf.GradientTape() as tape:
            logits = _forward(arch, self.vars, xb, dropout=r.dropout, dropout_seed=seed)
            loss_k = _per_model_loss(logits, yb, arch.n_classes, r.label_smoothing, targets=tb)
            objective = loss_k
            if self.loss_fn is not None:
                step = tf.constant(0) if step is None else step
                objective = self.loss_fn(Batch(logits, yb, tb, loss_k, self.current_epoch.value(), step))
            if r.l2 > 0:
                penalty = _l2_term(self.vars, r.l2)
                loss_k = loss_k + penalty
                objective = loss_k if self.loss_fn is None else objective + penalty
            total = tf.reduce_sum(objective)
        self._apply_adam(tape.gradient(total, self.vars))
        pred = tf.argmax(logits, axis=-1, output_type=tf.int32)
        correct = tf.reduce_sum(tf.cast(tf.equal(pred, yb), tf.float32), axis=1)
        return loss_k, correct

    def _epoch(self, order: tf.Tensor, seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
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
            l, c = self._step(idx, tf.stack([seed, s]), s)
            return s + 1, loss_sum + l * tf.cast(tf.shape(idx)[1], tf.float32), correct + c

        _, loss_sum, correct = tf.while_loop(
            lambda s, *_: s < self.n_steps,
            body,
            (tf.constant(0), tf.zeros([k]), tf.zeros([k])),
        )
        return loss_sum, correct

    def epoch_logs(self) -> dict[str, np.ndarray]:
        """Extra per-model (K,) numbers for the epoch just run (none here)."""
        return {}


def _evaluate(
    arch: Architecture,
    recipe: Recipe,
    weights: list[tf.Tensor],
    x: np.ndarray,
    y: np.ndarray,
    own: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-model (loss incl. L2, accuracy) in inference mode.

    On shared eval data (x, y): every model scores all of it. With `own`
    (K, V) indices into x: model k scores its own points x[own[k]].
    """
    if own is None:
        logits = _stack_logits_tf(arch, weights, np.ascontiguousarray(x, np.float32), 1024)
        yk = tf.broadcast_to(tf.constant(y.astype(np.int32)), logits.shape[:2])
    else:  # x may be the trainer's constant: no host copy
        logits = _own_logits_tf(arch, weights, x, own)
        yk = tf.constant(np.asarray(y)[own].astype(np.int32))
    loss = _per_model_loss(logits, yk, arch.n_classes, recipe.label_smoothing)
    if recipe.l2 > 0:
        loss = loss + _l2_term(weights, recipe.l2)
    pred = tf.argmax(logits, axis=-1, output_type=tf.int32)
    acc = tf.reduce_mean(tf.cast(tf.equal(pred, yk), tf.float32), axis=1)
    return loss.numpy(), acc.numpy()


def _checked_training_data(
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


def _checked_eval_data(
    eval_data: tuple[np.ndarray, np.ndarray] | None, x: np.ndarray
) -> tuple[np.ndarray, np.ndarray] | None:
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
    _validate(architecture, recipe)
    x, y, keep, members = _checked_training_data(architecture, x, y, keep)
    eval_data = _checked_eval_data(eval_data, x)
    holdout_idx = _checked_holdout(holdout, keep)
    targets = _checked_targets(soft_targets, keep, architecture.n_classes)

    k, n = members.shape
    rng = np.random.default_rng(seed)
    init = _init_weights(architecture, k, rng)
    trainer = _Trainer(architecture, recipe, init, x, y, n, targets=targets, loss_fn=loss_fn)
    return _fit(
        trainer, members, rng, eval_data=eval_data, holdout=holdout_idx,
        callbacks=callbacks, progress=progress,
    )  # fmt: skip


def _fit(
    trainer: _Trainer,
    members: np.ndarray,
    rng: np.random.Generator,
    *,
    eval_data: tuple[np.ndarray, np.ndarray] | None = None,
    holdout: np.ndarray | None = None,
    callbacks: Sequence[StackCallback] = (),
    progress: str | None = None,
) -> TrainedStack:
    """The epoch loop of `train_stack`, for any `_Trainer` (subclasses included).

    Each epoch draws from `rng` a fresh shuffle of every model's members
    (K, n) and a dropout seed, runs the trainer's compiled epoch, and
    collects per-model logs: "loss"/"accuracy" (Keras `fit` epoch means),
    the trainer's `epoch_logs()`, "val_*" on `eval_data`, "holdout_*" on
    each model's `holdout` (K, V) indices; then the callbacks.
    """
    arch, recipe = trainer.arch, trainer.recipe
    k, n = members.shape
    hist: dict[str, list[np.ndarray]] = {}
    y_host = trainer.y.numpy() if holdout is not None else None
    bar = _progress_bar(progress, recipe.epochs)
    for epoch in range(recipe.epochs):
        order = np.take_along_axis(members, rng.permuted(np.tile(np.arange(n), (k, 1)), axis=1), 1)
        dseed = np.int32(rng.integers(0, 2**31 - 1))
        trainer.current_epoch.assign(epoch)
        loss_sum, correct = trainer.epoch(tf.constant(order), tf.constant(dseed))
        logs = {"loss": loss_sum.numpy() / n, "accuracy": correct.numpy() / n}
        logs.update(trainer.epoch_logs())
        post = {"loss": float(logs["loss"].mean()), "acc": float(logs["accuracy"].mean())}
        if eval_data is not None:
            logs["val_loss"], logs["val_accuracy"] = _evaluate(arch, recipe, trainer.vars, *eval_data)
            post["val_acc"] = float(logs["val_accuracy"].mean())
        if holdout is not None:
            logs["holdout_loss"], logs["holdout_accuracy"] = _evaluate(
                arch, recipe, trainer.vars, trainer.x, y_host, own=holdout
            )
            post["holdout_loss"] = float(logs["holdout_loss"].mean())
        for key, value in logs.items():
            hist.setdefault(key, []).append(np.asarray(value))
        for callback in callbacks:
            callback.on_epoch_end(epoch, logs, trainer.vars)
        if bar is not None:
            bar.set_postfix({key: f"{val:.3f}" for key, val in post.items()})
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


def _progress_bar(label: str | None, total: int) -> "tqdm | None":
    """A tqdm bar over epochs on stderr; none without a label or when stderr is not a terminal."""
    if label is None or not sys.stderr.isatty():
        return None
    return tqdm(total=total, desc=label, unit="epoch", file=sys.stderr, dynamic_ncols=True)


# --------------------------------------------------------------------------
# Inference and export


_ACTIVATION_BUDGET = 2**25  # floats (128 MiB) in the widest activation of one inference chunk


def _stack_logits_tf(
    arch: Architecture, weights: list[tf.Tensor], x: np.ndarray, batch_size: int
) -> tf.Tensor:
    """Logits (K, N, C) of every model on shared points, in chunks of points.

    The chunk is `batch_size` points, or fewer when K models' widest
    activations on it would pass `_ACTIVATION_BUDGET` floats.
    """
    w = [tf.convert_to_tensor(v) for v in weights]
    k = int(w[0].shape[0])
    if arch.kind == "cnn":
        widest = int(np.prod(arch.input_shape[:2])) * max(arch.conv_filters)
    else:
        widest = max(arch.hidden_units, int(np.prod(arch.input_shape)))
    chunk = max(1, min(batch_size, _ACTIVATION_BUDGET // (k * widest)))
    fwd = _inference_fn(arch, k)
    parts = [
        fwd(w, tf.constant(x[start : start + chunk])) for start in range(0, len(x), chunk)
    ]
    if not parts:
        return tf.zeros([k, 0, arch.n_classes])
    return tf.concat(parts, axis=1)


def _own_logits_tf(
    arch: Architecture, weights: list[tf.Tensor], x: tf.Tensor | np.ndarray, own: np.ndarray
) -> tf.Tensor:
    """Logits (K, V, C): model k on its own points x[own[k]], own (K, V) indices.

    Chunked over V under the same activation budget as `_stack_logits_tf`.
    """
    w = [tf.convert_to_tensor(v) for v in weights]
    k, v = own.shape
    if arch.kind == "cnn":
        widest = int(np.prod(arch.input_shape[:2])) * max(arch.conv_filters)
    else:
        widest = max(arch.hidden_units, int(np.prod(arch.input_shape)))
    chunk = max(1, min(1024, _ACTIVATION_BUDGET // (k * widest)))
    fwd = _own_inference_fn(arch, k)
    x = tf.convert_to_tensor(x, tf.float32)
    parts = [fwd(w, tf.gather(x, own[:, s : s + chunk])) for s in range(0, v, chunk)]
    return tf.concat(parts, axis=1)


_INFERENCE_CACHE: dict[tuple[Architecture, int], Callable] = {}


def _inference_fn(arch: Architecture, k: int) -> Callable:
    """One traced inference function per (architecture, K), reused across calls.

    The signature fixes every weight shape (K is static, as the grouped
    convolution needs) and leaves only the number of points free.
    """
    if (arch, k) not in _INFERENCE_CACHE:
        weight_specs = [tf.TensorSpec([k, *shape], tf.float32) for shape in _weight_shapes(arch)]
        point_spec = tf.TensorSpec([None, *arch.input_shape], tf.float32)
        _INFERENCE_CACHE[(arch, k)] = tf.function(
            lambda w, x: _forward(arch, w, x, shared=True),
            input_signature=[weight_specs, point_spec],
            autograph=False,
        )
    return _INFERENCE_CACHE[(arch, k)]


_OWN_INFERENCE_CACHE: dict[tuple[Architecture, int], Callable] = {}


def _own_inference_fn(arch: Architecture, k: int) -> Callable:
    """`_inference_fn` for per-model points (K, V, *input_shape), V free."""
    if (arch, k) not in _OWN_INFERENCE_CACHE:
        weight_specs = [tf.TensorSpec([k, *shape], tf.float32) for shape in _weight_shapes(arch)]
        point_spec = tf.TensorSpec([k, None, *arch.input_shape], tf.float32)
        _OWN_INFERENCE_CACHE[(arch, k)] = tf.function(
            lambda w, x: _forward(arch, w, x),
            input_signature=[weight_specs, point_spec],
            autograph=False,
        )
    return _OWN_INFERENCE_CACHE[(arch, k)]


def stack_logits(stack: TrainedStack, x: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """Pre-softmax outputs (K, N, C) float32 of every model on shared points x.

    Inference mode (no dropout); computed in batches of `batch_size` points.
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.shape[1:] != tuple(stack.architecture.input_shape):
        raise PipelineError(
            f"x has per-example shape {x.shape[1:]}, the stack expects "
            f"{stack.architecture.input_shape}"
        )
    if batch_size < 1:
        raise PipelineError(f"batch_size must be >= 1, got {batch_size}")
    return _stack_logits_tf(stack.architecture, list(stack.weights), x, batch_size).numpy()


def keras_model(architecture: Architecture, recipe: Recipe) -> keras.Sequential:
    """The plain Keras model one stack member is: uncompiled, Keras's own init.

    Input -> [Conv2D(f, 3, same, relu) -> MaxPooling2D(2)]* -> Flatten ->
    Dense(hidden, relu) -> [Dropout] -> Dense(C) named "logits" ->
    Activation("softmax"), with keras.regularizers.L2(recipe.l2) on every
    kernel when l2 > 0. Its get_weights() order is the stack's weight order.
    """
    arch = architecture
    reg = keras.regularizers.L2(recipe.l2) if recipe.l2 > 0 else None
    layers: list = [keras.Input(shape=tuple(arch.input_shape))]
    if arch.kind == "cnn":
        for f in arch.conv_filters:
            layers.append(
                keras.layers.Conv2D(f, 3, padding="same", activation="relu", kernel_regularizer=reg)
            )
            layers.append(keras.layers.MaxPooling2D(2))
    layers.append(keras.layers.Flatten())
    layers.append(
        keras.layers.Dense(arch.hidden_units, activation="relu", kernel_regularizer=reg)
    )
    if recipe.dropout > 0:
        layers.append(keras.layers.Dropout(recipe.dropout))
    layers.append(keras.layers.Dense(arch.n_classes, kernel_regularizer=reg, name="logits"))
    layers.append(keras.layers.Activation("softmax", name="softmax"))
    return keras.Sequential(layers)


def to_keras(stack: TrainedStack, k: int) -> keras.Model:
    """Model k of the stack as a plain keras.Sequential (see `keras_model`).

    Predictions equal softmax(stack_logits(stack, x)[k]); the final Dense
    has no activation, so `keras_logits` reads pre-softmax outputs back,
    also from a saved .keras file.
    """
    if not 0 <= k < stack.n_models:
        raise PipelineError(f"model index {k} out of range for a stack of {stack.n_models}")
    model = keras_model(stack.architecture, stack.recipe)
    model.set_weights([w[k] for w in stack.weights])
    return model


def keras_logits(model: keras.Model, x: np.ndarray) -> np.ndarray:
    """Pre-softmax outputs of a model built by `to_keras` (or loaded from .keras)."""
    try:
        logits_layer = model.get_layer("logits")
    except ValueError as err:
        raise PipelineError(
            "keras_logits needs a model built by to_keras (with a 'logits' layer)"
        ) from err
    logit_model = keras.Model(model.inputs, logits_layer.output)
    return np.asarray(logit_model.predict(np.asarray(x, np.float32), verbose=0, batch_size=1024))
