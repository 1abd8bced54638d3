"""A user's trained Keras model as the audit's target: loaded safely, checked against the data, copied by the attacker.

The attacker's shadow and reference models (and defended retrainings)
reuse the model's own architecture and compile configuration. When the
model is one the batched trainer covers exactly (the MLP or CNN of
`stack.Architecture`: Glorot-uniform kernels, zero biases, Adam with
Keras's default betas and epsilon, sparse or plain categorical
cross-entropy), its copies train batched; any other model trains one
clone at a time with Keras `fit` (`stack.clones`). Epochs and batch size
are not stored in a model file: `target.epochs` and `target.batch_size`
say how the model was trained.
"""

from __future__ import annotations

import importlib.util
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.config import ModelParams
from pipeline.core.errors import PipelineError
from pipeline.core.tf_runtime import keras
from pipeline.core.types import Dataset
from pipeline.stack import (
    Architecture,
    Recipe,
    keras_spec,
    output_activation,
    weight_shapes,
)

_ADAM_DEFAULTS = {
    "beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-7, "amsgrad": False, "weight_decay": None, "clipnorm": None,
    "global_clipnorm": None, "clipvalue": None, "use_ema": False, "loss_scale_factor": None,
    "gradient_accumulation_steps": None,
}  # fmt: skip


def register_custom_objects(path: Path) -> None:
    """Run the user's Python file `path` (target.custom_objects), which registers the model's custom objects.

    It runs that user's code, as importing any module would; it is meant
    to hold `@keras.saving.register_keras_serializable()` classes and
    functions, so that safe mode can rebuild the model from its config.
    """
    spec = importlib.util.spec_from_file_location("target_custom_objects", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as error:  # the user's code may raise anything
        raise PipelineError(f"target.custom_objects: running {path.name} failed: {type(error).__name__}: {error}") from None


def load_model_file(path: Path, shown: str, custom_objects: Path | None = None) -> keras.Model:
    """The Keras model saved at `path`, loaded with safe mode on (no code from the file runs), compiled as saved.

    `custom_objects`: a Python file that registers the model's custom
    layers or losses, run first (`register_custom_objects`).
    """
    if custom_objects is not None:
        register_custom_objects(custom_objects)
    if not path.is_file():
        raise PipelineError(f"target.model: file not found: {shown}")
    if not zipfile.is_zipfile(path):
        raise PipelineError(f"target.model: {shown} is not a Keras model file (save it with model.save('model.keras'))")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # notes about optimizer state the audit does not use
            model = keras.saving.load_model(path, compile=True, safe_mode=True)
    except Exception as error:  # Keras raises many kinds for a bad archive or unsafe content
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise PipelineError(
            f"target.model: {shown} could not be loaded as a Keras model with safe mode on ({reason}); save it with "
            "model.save('model.keras') without Lambda layers; for custom layers or losses, register them with "
            "@keras.saving.register_keras_serializable() in a .py file under data/raw/ and set target.custom_objects "
            "to it (that file's code runs), or compile the model with a built-in loss "
            "(loss='sparse_categorical_crossentropy') before saving"
        ) from None
    if not isinstance(model, keras.Model):
        raise PipelineError(f"target.model: {shown} holds a {type(model).__name__}, not a Keras model")
    return model


def output_classes(model: keras.Model, shown: str) -> int:
    """How many classes the model tells apart: its output units, or 2 for one sigmoid or logit unit."""
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise PipelineError(
            f"target.model: {shown} has {len(model.inputs)} inputs and {len(model.outputs)} outputs; "
            "the audit needs a classifier with one input and one output"
        )
    shape = tuple(model.outputs[0].shape[1:])
    if len(shape) != 1 or not shape[0]:
        raise PipelineError(f"target.model: {shown} outputs shape {shape}; the audit needs one score per class (C,)")
    activation = output_activation(model)
    if activation not in ("softmax", "sigmoid", "linear"):
        raise PipelineError(
            f"target.model: {shown} ends in a {activation!r} activation; the audit reads class probabilities "
            "(softmax, or sigmoid for one unit) or logits (linear)"
        )
    if shape[0] == 1 and activation == "softmax":
        raise PipelineError(f"target.model: {shown} has one softmax unit; a binary classifier's must be sigmoid or linear")
    if shape[0] > 1 and activation == "sigmoid":
        raise PipelineError(
            f"target.model: {shown} has {shape[0]} sigmoid units (multi-label); the audit needs one class per "
            "record: softmax over the classes, or one sigmoid unit for two"
        )
    return max(int(shape[0]), 2)


def shape_hint(expects: tuple, samples: tuple, dataset: Dataset, feature_names: tuple[str, ...]) -> str:
    """What most likely makes the data's samples the wrong shape for the model, as the fix to make."""
    if len(expects) >= 2 and len(samples) == 1:
        return "the model reads images: give them as an NPZ file, x shaped (N, H, W) or (N, H, W, C) (a CSV holds flat rows)"
    if len(expects) == 1 and len(samples) == 1 and expects[0] is not None and samples[0] > expects[0] and feature_names:
        binary = [
            name for name, column in zip(feature_names, dataset.x.T) if np.isin(column, (0.0, 1.0)).all()
        ]
        if binary:
            names = ", ".join(repr(name) for name in binary[:3])
            return (
                f"column {names} holds only 0 and 1: if it marks the rows that trained the model, set "
                f"data.member_column to it (it is then no feature); else drop the {samples[0] - expects[0]} extra column(s)"
            )
    return "give the data as the model was fed (images (H, W, C) in [0, 1], tabular rows of its feature count)"


def check_fits(model: keras.Model, dataset: Dataset, shown: str, feature_names: tuple[str, ...] = ()) -> int:
    """Refuse a model whose input shape, output range or missing compile configuration does not fit the data.

    `feature_names`: a CSV's feature columns, to name a likely leftover
    member marker. Returns the model's class count, which the audit uses
    as the dataset's.
    """
    n_outputs = output_classes(model, shown)
    expects, samples = tuple(model.inputs[0].shape[1:]), tuple(dataset.x.shape[1:])
    if len(expects) != len(samples) or any(e is not None and e != s for e, s in zip(expects, samples)):
        raise PipelineError(
            f"target.model: {shown} takes inputs shaped {expects} but the data's samples are shaped {samples}; "
            + shape_hint(expects, samples, dataset, feature_names)
        )
    if dataset.n_classes > n_outputs:
        raise PipelineError(
            f"data: the labels hold {dataset.n_classes} classes (indices 0 to {dataset.n_classes - 1}) but "
            f"target.model {shown} outputs {n_outputs}; labels must be the model's class indices 0 to {n_outputs - 1}"
        )
    if not model.get_compile_config():
        raise PipelineError(
            f"target.model: {shown} was saved without its compile configuration; call model.compile(optimizer, "
            "loss) before model.save, so the attacker's copies train the same way"
        )
    return n_outputs


def design(model: keras.Model, dataset: Dataset, params: ModelParams) -> tuple[Architecture, Recipe]:
    """How copies of the model train: batched when the stack covers it exactly, else one clone at a time."""
    batched = batched_design(model, dataset.n_classes)
    if batched is not None:
        architecture, recipe_fields = batched
        return architecture, Recipe(epochs=params.epochs, batch_size=params.batch_size, **recipe_fields)
    rate = model.get_compile_config()["optimizer"]
    rate = rate.get("config", {}).get("learning_rate") if isinstance(rate, dict) else None
    architecture = Architecture(
        kind="keras", input_shape=tuple(int(d) for d in dataset.x.shape[1:]), n_classes=dataset.n_classes,
        keras_spec=keras_spec(model),
    )  # fmt: skip
    learning_rate = float(rate) if isinstance(rate, (int, float)) and rate > 0 else params.learning_rate
    return architecture, Recipe(epochs=params.epochs, batch_size=params.batch_size, learning_rate=learning_rate)


def describe(model: keras.Model, n_classes: int) -> str:
    """How the audit trains copies of the model, for the prepare summary."""
    batched = batched_design(model, n_classes)
    if batched is None:
        return "one by one with Keras fit (an architecture the batched trainer does not cover)"
    return f"batched ({batched[0].kind}, {batched[0].hidden_units} hidden units)"


def _config(layer: Any) -> dict:
    return layer.get_config()


def _plain_weights(config: dict, l2: list[float]) -> bool:
    """Glorot-uniform kernel, zero bias, no constraints; records the kernel's L2 factor (0 for none)."""
    if not config.get("use_bias", False):
        return False
    if (config.get("kernel_initializer") or {}).get("class_name") != "GlorotUniform":
        return False
    if (config.get("bias_initializer") or {}).get("class_name") != "Zeros":
        return False
    extras = ("bias_regularizer", "activity_regularizer", "kernel_constraint", "bias_constraint")
    if any(config.get(key) is not None for key in extras):
        return False
    regularizer = config.get("kernel_regularizer")
    if regularizer is None:
        l2.append(0.0)
        return True
    if regularizer.get("class_name") != "L2":
        return False
    l2.append(float(regularizer["config"]["l2"]))
    return True


def _batched_layers(model: keras.Model, n_classes: int) -> tuple[str, tuple[int, ...], int, float, float, str] | None:
    """(kind, conv filters, hidden units, dropout, l2, output activation) if the layers are the stack's, else None."""
    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    l2: list[float] = []
    filters: list[int] = []
    i = 0
    while i < len(layers) and isinstance(layers[i], keras.layers.Conv2D):
        conv, pool = _config(layers[i]), layers[i + 1] if i + 1 < len(layers) else None
        if not (
            tuple(conv["kernel_size"]) == (3, 3) and tuple(conv["strides"]) == (1, 1) and conv["padding"] == "same"
            and tuple(conv["dilation_rate"]) == (1, 1) and conv.get("groups", 1) == 1 and conv["activation"] == "relu"
            and conv.get("data_format", "channels_last") == "channels_last" and _plain_weights(conv, l2)
            and isinstance(pool, keras.layers.MaxPooling2D)
        ):  # fmt: skip
            return None
        pooling = _config(pool)
        if tuple(pooling["pool_size"]) != (2, 2) or tuple(pooling["strides"]) != (2, 2) or pooling["padding"] != "valid":
            return None
        filters.append(int(conv["filters"]))
        i += 2
    if i < len(layers) and isinstance(layers[i], keras.layers.Flatten):
        i += 1
    elif filters or len(model.inputs[0].shape) != 2:
        return None  # the stack flattens images before its Dense layer
    rest = layers[i:]
    if len(rest) < 2 or not all(isinstance(layer, keras.layers.Layer) for layer in rest):
        return None
    hidden = rest.pop(0)
    dropout = 0.0
    if rest and isinstance(rest[0], keras.layers.Dropout):
        config = _config(rest.pop(0))
        if config.get("noise_shape") is not None:
            return None
        dropout = float(config["rate"])
    if not rest or not isinstance(hidden, keras.layers.Dense) or not isinstance(rest[0], keras.layers.Dense):
        return None
    hidden_config, out_config = _config(hidden), _config(rest.pop(0))
    if hidden_config["activation"] != "relu" or int(out_config["units"]) != n_classes:
        return None
    if not (_plain_weights(hidden_config, l2) and _plain_weights(out_config, l2)) or len(set(l2)) != 1:
        return None
    activation = out_config["activation"]
    if rest:
        last = rest.pop(0)
        is_softmax = isinstance(last, keras.layers.Softmax) or (
            isinstance(last, keras.layers.Activation) and _config(last)["activation"] == "softmax"
        )
        if rest or activation != "linear" or not is_softmax:
            return None
        activation = "softmax"
    if activation not in ("linear", "softmax"):
        return None
    return ("cnn" if filters else "mlp"), tuple(filters), int(hidden_config["units"]), dropout, l2[0], activation


def _adam_rate(compile_config: dict) -> float | None:
    """Adam's learning rate when the optimizer is Adam with Keras's defaults otherwise (the stack's fused Adam)."""
    optimizer = compile_config.get("optimizer")
    if not isinstance(optimizer, dict) or optimizer.get("class_name") != "Adam":
        return None
    config = optimizer.get("config", {})
    if any(config.get(key, value) != value for key, value in _ADAM_DEFAULTS.items()):
        return None
    rate = config.get("learning_rate")
    return float(rate) if isinstance(rate, (int, float)) and rate > 0 else None


def _cross_entropy(compile_config: dict) -> tuple[bool, float] | None:
    """(from_logits, label_smoothing) of a sparse or plain categorical cross-entropy loss, else None."""
    loss = compile_config.get("loss")
    if isinstance(loss, str):
        return (False, 0.0) if loss in ("sparse_categorical_crossentropy", "categorical_crossentropy") else None
    if not isinstance(loss, dict) or loss.get("class_name") not in ("SparseCategoricalCrossentropy", "CategoricalCrossentropy"):
        return None
    config = loss.get("config", {})
    if config.get("ignore_class") is not None or config.get("axis", -1) != -1:
        return None
    if config.get("reduction", "sum_over_batch_size") != "sum_over_batch_size":
        return None  # the stack averages each batch's loss, as Keras's default reduction
    return bool(config.get("from_logits", False)), float(config.get("label_smoothing", 0.0))


def batched_design(model: keras.Model, n_classes: int) -> tuple[Architecture, dict[str, float]] | None:
    """The stack architecture and recipe fields that train exactly like the model, or None if there are none."""
    compile_config = model.get_compile_config() or {}
    layers, rate, loss = _batched_layers(model, n_classes), _adam_rate(compile_config), _cross_entropy(compile_config)
    if layers is None or rate is None or loss is None or compile_config.get("loss_weights") not in (None, [1.0], 1.0):
        return None
    kind, filters, hidden, dropout, l2, activation = layers
    from_logits, smoothing = loss
    if from_logits != (activation == "linear"):
        return None  # the loss would read probabilities as logits, or the reverse
    input_shape = tuple(int(d) for d in model.inputs[0].shape[1:])
    architecture = Architecture(
        kind=kind, input_shape=input_shape, n_classes=n_classes, hidden_units=hidden,
        conv_filters=filters or Architecture.conv_filters,
    )  # fmt: skip
    if weight_shapes(architecture) != [tuple(w.shape) for w in model.get_weights()]:
        return None
    return architecture, {"learning_rate": rate, "dropout": dropout, "l2": l2, "label_smoothing": smoothing}
