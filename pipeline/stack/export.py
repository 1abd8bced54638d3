"""A stack's models as plain Keras networks, and their logits read back."""

from __future__ import annotations

import numpy as np

from pipeline.core.errors import PipelineError
from pipeline.core.tf_runtime import keras
from pipeline.stack.clones import clone_network
from pipeline.stack.spec import Architecture, Recipe, TrainedStack

__all__ = ["keras_model", "to_keras", "keras_logits"]


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

    A "keras" stack's member is the user's architecture (`clones`).
    Otherwise predictions equal softmax(stack_logits(stack, x)[k]); the final Dense
    has no activation, so `keras_logits` reads pre-softmax outputs back,
    also from a saved .keras file.
    """
    if stack.architecture.kind == "keras":
        return clone_network(stack, k)
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
