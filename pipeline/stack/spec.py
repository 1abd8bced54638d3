"""What a stack is: its architecture, training recipe, trained result and weight layout.

Weights carry a leading K axis (one slice per model) and are listed in the
order ``keras.Model.get_weights()`` lists them for the model
`export.keras_model` builds, so exporting model k is a slice per array.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from pipeline.core.errors import PipelineError
from pipeline.core.tf_runtime import tf

__all__ = [
    "Architecture",
    "Recipe",
    "TrainedStack",
    "validate",
    "require_batched",
    "weight_shapes",
    "glorot_limit",
    "init_weights",
    "is_kernel",
]


@dataclass(frozen=True)
class Architecture:
    """The shape of every model in a stack.

    mlp: Flatten -> Dense(hidden, relu) -> [Dropout] -> Dense(C).
    cnn: per filter count, Conv2D(f, 3x3, same, relu) + MaxPool 2x2, then
    Flatten -> Dense(hidden, relu) -> [Dropout] -> Dense(C).
    keras: a user's own model (`keras_spec`, see `clones`), trained one by
    one with Keras `fit`, since the batched forward pass does not cover it.
    """

    kind: Literal["mlp", "cnn", "keras"]
    input_shape: tuple[int, ...]
    n_classes: int
    hidden_units: int = 128
    conv_filters: tuple[int, ...] = (16, 32)
    keras_spec: str = ""  # kind "keras": the model's config and compile config as JSON


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


def validate(architecture: Architecture, recipe: Recipe) -> None:
    """Raise a PipelineError naming the first field no stack can train with."""
    if architecture.kind not in ("mlp", "cnn", "keras"):
        raise PipelineError(f"architecture.kind must be 'mlp', 'cnn' or 'keras', got {architecture.kind!r}")
    if architecture.kind == "keras" and (recipe.dropout or recipe.l2 or recipe.label_smoothing):
        require_batched(architecture, "a defense that changes the training recipe (dropout, l2, label_smoothing)")
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


def require_batched(architecture: Architecture, what: str) -> None:
    """Refuse `what`, which needs the batched forward pass, for a user's own architecture (kind "keras")."""
    if architecture.kind == "keras":
        raise PipelineError(
            f"defenses.<name>: {what} needs the project's batched trainer, which cannot rebuild "
            "target.model's architecture (it covers the MLP and CNN of docs/your-data-and-model.md); with this model, "
            "list only output defenses (memguard, top_k, rounding, label_only) and ensemble in defense.run"
        )


def weight_shapes(architecture: Architecture) -> list[tuple[int, ...]]:
    """Per-model weight shapes, in keras.Model.get_weights() order."""
    arch = architecture
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


def glorot_limit(shape: tuple[int, ...]) -> float:
    """keras.initializers.GlorotUniform's bound for a Dense or Conv2D kernel."""
    receptive = int(np.prod(shape[:-2])) if len(shape) > 2 else 1
    fan_in, fan_out = shape[-2] * receptive, shape[-1] * receptive
    return math.sqrt(6.0 / (fan_in + fan_out))


def init_weights(architecture: Architecture, k: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Glorot-uniform kernels and zero biases of K models, an independent draw per model."""
    out = []
    for shape in weight_shapes(architecture):
        if len(shape) == 1:
            out.append(np.zeros((k, *shape), np.float32))
        else:
            lim = glorot_limit(shape)
            out.append(rng.uniform(-lim, lim, size=(k, *shape)).astype(np.float32))
    return out


def is_kernel(weight: tf.Tensor | np.ndarray) -> bool:
    """Whether a stacked weight (K, ...) is a kernel (two or more own axes), not a bias."""
    return len(weight.shape) > 2
