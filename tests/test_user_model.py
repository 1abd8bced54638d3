"""A user's own Keras model: safe loading, checks against the data, how its copies train, what it releases."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest

from pipeline.config import ModelParams
from pipeline.core.errors import PipelineError
from pipeline.core.tf_runtime import keras
from pipeline.core.types import Dataset
from pipeline.defenses.base import TrainingJob
from pipeline.defenses.ensembling import EnsembleDefense
from pipeline.defenses.output import MemGuardDefense
from pipeline.defenses.regularization import DropoutDefense
from pipeline.stack import Recipe, released_logits, stack_logits, to_keras, train_stack
from pipeline.training.user_model import (
    batched_design,
    check_fits,
    design,
    load_model_file,
)

D, C = 6, 3


def _data(n: int = 120, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, C, n)
    x = (rng.normal(size=(n, D)) + 2.0 * np.eye(C, D)[y]).astype(np.float32)
    return x, y


def _mlp(*layers: object, optimizer: object = None, loss: object = "sparse_categorical_crossentropy") -> keras.Model:
    model = keras.Sequential([keras.Input((D,)), *layers])
    if optimizer is not False:
        model.compile(optimizer=optimizer or keras.optimizers.Adam(0.005), loss=loss)
    return model


def _dataset(x: np.ndarray, y: np.ndarray, n_classes: int = C) -> Dataset:
    return Dataset(x=x, y=y, n_classes=n_classes, name="synthetic")


def test_the_stacks_own_mlp_is_recognised_with_its_recipe() -> None:
    model = _mlp(
        keras.layers.Dense(16, activation="relu", kernel_regularizer=keras.regularizers.L2(0.01)),
        keras.layers.Dropout(0.25),
        keras.layers.Dense(C, kernel_regularizer=keras.regularizers.L2(0.01)),
        keras.layers.Activation("softmax"),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=0.1),
    )
    architecture, recipe = design(model, _dataset(*_data()), ModelParams(epochs=7, batch_size=16))
    assert (architecture.kind, architecture.hidden_units, architecture.input_shape) == ("mlp", 16, (D,))
    assert recipe == Recipe(epochs=7, batch_size=16, learning_rate=pytest.approx(0.005), dropout=0.25, l2=0.01, label_smoothing=0.1)


def test_a_cnn_of_the_stacks_shape_is_recognised_and_its_copies_train_batched() -> None:
    """The attacker's copies of a user's CNN train as one stack (the path that needs grouped-conv gradients)."""
    model = keras.Sequential([
        keras.Input((8, 8, 1)),
        keras.layers.Conv2D(4, 3, padding="same", activation="relu"), keras.layers.MaxPooling2D(2),
        keras.layers.Conv2D(8, 3, padding="same", activation="relu"), keras.layers.MaxPooling2D(2),
        keras.layers.Flatten(), keras.layers.Dense(12, activation="relu"), keras.layers.Dense(C, activation="softmax"),
    ])  # fmt: skip
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    architecture, fields = batched_design(model, C)
    assert (architecture.kind, architecture.conv_filters, architecture.hidden_units) == ("cnn", (4, 8), 12)
    assert fields["learning_rate"] == pytest.approx(1e-3)
    rng = np.random.default_rng(0)
    x, y = rng.random((40, 8, 8, 1)).astype(np.float32), rng.integers(0, C, 40)
    keep = np.zeros((2, 40), bool)
    keep[0, :20] = keep[1, 20:] = True
    copies = train_stack(architecture, Recipe(epochs=2, batch_size=8, learning_rate=1e-3), x, y, keep, seed=1)
    assert copies.n_models == 2 and np.all(np.isfinite(copies.history["loss"]))


@pytest.mark.parametrize(
    "case",
    ["two hidden layers", "sgd", "tanh", "logits read as probabilities", "he init", "adam with clipnorm", "mse",
     "summed loss", "weighted loss"],
)
def test_other_models_train_one_by_one(case: str) -> None:
    hidden = keras.layers.Dense(16, activation="relu")
    out = keras.layers.Dense(C, activation="softmax")
    layers, optimizer, loss = [hidden, out], None, "sparse_categorical_crossentropy"
    if case == "two hidden layers":
        layers = [hidden, keras.layers.Dense(8, activation="relu"), out]
    elif case == "sgd":
        optimizer = keras.optimizers.SGD(0.1)
    elif case == "tanh":
        layers = [keras.layers.Dense(16, activation="tanh"), out]
    elif case == "logits read as probabilities":
        layers, loss = [hidden, keras.layers.Dense(C)], "sparse_categorical_crossentropy"
    elif case == "he init":
        layers = [keras.layers.Dense(16, activation="relu", kernel_initializer="he_normal"), out]
    elif case == "adam with clipnorm":
        optimizer = keras.optimizers.Adam(0.001, clipnorm=1.0)
    elif case == "mse":
        loss = "mse"
    elif case == "summed loss":
        loss = keras.losses.SparseCategoricalCrossentropy(reduction="sum")
    model = _mlp(*layers, optimizer=optimizer, loss=loss)
    if case == "weighted loss":
        model.compile(optimizer=keras.optimizers.Adam(0.005), loss=loss, loss_weights=[2.0])
    assert batched_design(model, C) is None
    architecture, _ = design(model, _dataset(*_data()), ModelParams())
    assert architecture.kind == "keras"


def test_released_logits_turn_back_into_the_models_probabilities() -> None:
    x, _ = _data(40)
    inside = _mlp(keras.layers.Dense(8, activation="relu"), keras.layers.Dense(C, activation="softmax"))
    logits = released_logits(inside, x)
    probs = np.asarray(inside(x, training=False))
    softmax = np.exp(logits - logits.max(1, keepdims=True))
    np.testing.assert_allclose(softmax / softmax.sum(1, keepdims=True), probs, rtol=1e-5, atol=1e-7)
    hidden = np.asarray(keras.Model(inside.inputs[0], inside.layers[-1].input)(x))
    kernel, bias = inside.layers[-1].get_weights()
    np.testing.assert_allclose(logits, hidden @ kernel + bias, rtol=1e-5, atol=1e-5)  # the Dense's pre-activation
    peeled = _mlp(keras.layers.Dense(8, activation="relu"), keras.layers.Dense(C, name="z"), keras.layers.Softmax())
    pre = np.asarray(keras.Model(peeled.inputs[0], peeled.get_layer("z").output)(x))
    np.testing.assert_array_equal(released_logits(peeled, x), pre)  # a separate softmax is peeled off exactly


@pytest.mark.parametrize("activation", ["sigmoid", None])
def test_one_unit_binary_models_release_two_classes(activation: str | None) -> None:
    x, _ = _data(30)
    model = _mlp(keras.layers.Dense(4, activation="relu"), keras.layers.Dense(1, activation=activation), loss="binary_crossentropy")
    logits = released_logits(model, x)
    out = np.asarray(model(x))[:, 0]
    p1 = out if activation == "sigmoid" else 1.0 / (1.0 + np.exp(-out))
    np.testing.assert_allclose(np.exp(logits[:, 1]) / np.exp(logits).sum(1), p1, rtol=1e-5)
    assert check_fits(model, _dataset(x, np.zeros(len(x), np.int64), 2), "m.keras") == 2


@pytest.mark.parametrize("units, activation", [(C, "softmax"), (1, "sigmoid")])
def test_an_activation_inside_another_last_layer_releases_log_probabilities(units: int, activation: str) -> None:
    """A last layer that is not Dense cannot be peeled: the released logits are the log of what it outputs.

    Known answer: log p (softmax), or log(1 - p), log p for one sigmoid unit, whose softmax gives back p.
    """
    x, _ = _data(30)
    last = keras.layers.EinsumDense("ab,bc->ac", output_shape=units, bias_axes="c", activation=activation)
    loss = "binary_crossentropy" if units == 1 else "sparse_categorical_crossentropy"
    model = _mlp(keras.layers.Dense(6, activation="relu"), last, loss=loss)
    model.layers[-1].set_weights([w + np.random.default_rng(1).normal(0, 0.5, w.shape) for w in model.layers[-1].get_weights()])
    out = np.asarray(model(x, training=False), np.float64)
    logits = released_logits(model, x)
    assert logits.shape == (len(x), max(units, 2)) and logits.dtype == np.float32
    expected = np.log(out) if units > 1 else np.log(np.concatenate([1.0 - out, out], axis=1))
    np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-6)
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    np.testing.assert_allclose(probs[:, -1], out[:, -1], rtol=1e-5)


def test_clones_train_exactly_like_a_fresh_keras_model_each() -> None:
    """One full batch per epoch removes shuffling, so each clone must equal a new model fit from the same init.

    The second clone reuses the compiled model: it matches only if the
    weights and the optimizer state were reset as for a new model.
    """
    x, y = _data(60)
    model = _mlp(keras.layers.Dense(8, activation="tanh"), keras.layers.Dense(C, activation="softmax"))
    architecture, _ = design(model, _dataset(x, y), ModelParams())
    recipe = Recipe(epochs=3, batch_size=30, learning_rate=0.005)
    keep = np.zeros((2, 60), bool)
    keep[0, :30], keep[1, 30:] = True, True
    stack = train_stack(architecture, recipe, x, y, keep, seed=5)
    for k in range(2):
        weights = [w[k] for w in stack.weights]
        keras.utils.set_random_seed(int(np.random.SeedSequence([5, k]).generate_state(1)[0] & 0x7FFFFFFF))
        fresh = keras.models.model_from_json(model.to_json())  # built from the same config after the same seed
        fresh.compile(optimizer=keras.optimizers.Adam(0.005), loss="sparse_categorical_crossentropy")
        rows = np.flatnonzero(keep[k])
        fresh.fit(x[rows], y[rows], epochs=3, batch_size=30, shuffle=False, verbose=0)
        for ours, theirs in zip(weights, fresh.get_weights()):
            np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)
    again = train_stack(architecture, recipe, x, y, keep, seed=5)
    assert all(np.array_equal(a, b) for a, b in zip(stack.weights, again.weights))  # same seed, same weights
    np.testing.assert_allclose(stack_logits(stack, x)[1], released_logits(to_keras(stack, 1), x), rtol=1e-6)


def test_clones_with_dropout_reproduce_from_the_seed() -> None:
    """Dropout's random stream restarts from each clone's seed, so the same seed gives the same weights."""
    x, y = _data(60)
    model = _mlp(keras.layers.Dense(8, activation="tanh"), keras.layers.Dropout(0.5), keras.layers.Dense(C, activation="softmax"))
    architecture, _ = design(model, _dataset(x, y), ModelParams())
    keep = np.zeros((2, 60), bool)
    keep[0, :30], keep[1, 30:] = True, True
    recipe = Recipe(epochs=2, batch_size=10, learning_rate=0.005)
    first, second = (train_stack(architecture, recipe, x, y, keep, seed=9) for _ in range(2))
    assert all(np.array_equal(a, b) for a, b in zip(first.weights, second.weights))


def test_multi_label_and_other_output_activations_are_refused() -> None:
    x, y = _data(20)
    for last, message in [(keras.layers.Dense(C, activation="sigmoid"), "3 sigmoid units"),
                          (keras.layers.Dense(C, activation="relu"), "ends in a 'relu' activation")]:  # fmt: skip
        with pytest.raises(PipelineError, match=message):
            check_fits(_mlp(keras.layers.Dense(4, activation="relu"), last), _dataset(x, y), "m.keras")


def _keras_job(k: int = 2) -> TrainingJob:
    x, y = _data(80)
    model = _mlp(keras.layers.Dense(8, activation="tanh"), keras.layers.Dense(C, activation="softmax"))
    architecture, _ = design(model, _dataset(x, y), ModelParams())
    keep = np.zeros((k, 80), bool)
    for i in range(k):
        keep[i, i * 40 : (i + 1) * 40] = True
    return TrainingJob(architecture, Recipe(epochs=2, batch_size=20, learning_rate=0.005), x, y, keep, seed=1)


def test_output_defenses_and_ensembling_wrap_a_users_architecture() -> None:
    job = _keras_job()
    guarded = MemGuardDefense(type="memguard", budget=2.0).train(job)
    released = np.exp(guarded.observe(job.x[:10]))
    assert released.shape == (2, 10, C)
    assert np.allclose(released.max(-1), released.max(-1)[..., :1].max())  # budget 2: every output is t(label)
    ensemble = EnsembleDefense(type="ensemble", n_models=2).train(job)
    assert ensemble.observe(job.x[:5]).shape == (2, 5, C)


def test_training_defenses_are_refused_for_a_users_architecture_in_one_line() -> None:
    with pytest.raises(PipelineError, match="cannot rebuild target.model's architecture") as error:
        DropoutDefense(type="dropout", rate=0.5).train(_keras_job())
    assert "\n" not in str(error.value) and "output defenses" in str(error.value)


def _save(model: keras.Model, path: Path) -> Path:
    model.save(path)
    return path


def test_bad_model_files_get_one_line(tmp_path: Path) -> None:
    (tmp_path / "notes.keras").write_text("not a model")
    with pytest.raises(PipelineError, match="is not a Keras model file"):
        load_model_file(tmp_path / "notes.keras", "notes.keras")
    with zipfile.ZipFile(tmp_path / "empty.keras", "w") as archive:
        archive.writestr("readme.txt", "hello")
    with pytest.raises(PipelineError, match="could not be loaded as a Keras model with safe mode on"):
        load_model_file(tmp_path / "empty.keras", "empty.keras")
    lam = _mlp(keras.layers.Lambda(lambda t: t * 2.0), keras.layers.Dense(C, activation="softmax"))
    with pytest.raises(PipelineError, match="safe mode on") as error:
        load_model_file(_save(lam, tmp_path / "lambda.keras"), "lambda.keras")  # code in a file never runs
    assert "\n" not in str(error.value)


def test_models_that_do_not_fit_the_data_get_one_line(tmp_path: Path) -> None:
    x, y = _data(40)
    model = _mlp(keras.layers.Dense(8, activation="relu"), keras.layers.Dense(C, activation="softmax"))
    loaded = load_model_file(_save(model, tmp_path / "m.keras"), "m.keras")
    assert check_fits(loaded, _dataset(x, y), "m.keras") == C
    with pytest.raises(PipelineError, match=r"takes inputs shaped \(6,\) but the data's samples are shaped \(5,\)"):
        check_fits(loaded, _dataset(x[:, :5], y), "m.keras")
    with pytest.raises(PipelineError, match="labels hold 4 classes .* outputs 3"):
        check_fits(loaded, _dataset(x, y, n_classes=4), "m.keras")
    uncompiled = _mlp(keras.layers.Dense(C, activation="softmax"), optimizer=False)
    with pytest.raises(PipelineError, match="without its compile configuration"):
        check_fits(uncompiled, _dataset(x, y), "u.keras")


def test_a_shape_mismatch_names_a_leftover_member_column_or_the_npz_images_need(tmp_path: Path) -> None:
    x, y = _data(40)
    model = load_model_file(_save(_mlp(keras.layers.Dense(C, activation="softmax")), tmp_path / "m.keras"), "m.keras")
    marker = (np.arange(40) % 2).astype(np.float32)[:, None]
    names = tuple(f"f{i}" for i in range(D)) + ("member",)
    with pytest.raises(PipelineError, match="column 'member' holds only 0 and 1: .* set data.member_column to it"):
        check_fits(model, _dataset(np.hstack([x, marker]), y), "m.keras", names)
    images = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Flatten(), keras.layers.Dense(C, activation="softmax")])
    images.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    with pytest.raises(PipelineError, match=r"the model reads images: give them as an NPZ file, x shaped \(N, H, W\)"):
        check_fits(images, _dataset(np.zeros((40, 16), np.float32), y), "i.keras", tuple(f"p{i}" for i in range(16)))


CUSTOM_LOSS = '''
import keras


@keras.saving.register_keras_serializable(package="user_losses_{tag}")
def halved_cross_entropy(y_true, y_pred):
    return 0.5 * keras.losses.sparse_categorical_crossentropy(y_true, y_pred)
'''


def test_a_model_with_a_registered_custom_loss_loads_once_its_file_is_named(tmp_path: Path) -> None:
    """Without target.custom_objects the one line says how to register it or recompile; with it, the model loads."""
    import subprocess
    import sys

    objects = tmp_path / "losses.py"
    objects.write_text(CUSTOM_LOSS.format(tag=tmp_path.name.replace("-", "_")))
    saved = tmp_path / "model.keras"
    script = (
        "import importlib.util, sys, keras\n"
        "spec = importlib.util.spec_from_file_location('losses', sys.argv[1]); module = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(module)\n"
        "model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation='softmax')])\n"
        "model.compile(optimizer='adam', loss=module.halved_cross_entropy); model.save(sys.argv[2])\n"
    )
    subprocess.run([sys.executable, "-c", script, str(objects), str(saved)], check=True, capture_output=True)
    with pytest.raises(PipelineError) as error:
        load_model_file(saved, "data/raw/model.keras")
    message = str(error.value)
    assert "target.custom_objects" in message and "register_keras_serializable" in message and "built-in loss" in message
    model = load_model_file(saved, "data/raw/model.keras", custom_objects=objects)
    assert model.get_compile_config()["loss"]["config"].endswith("halved_cross_entropy")


# --------------------------------------------------------------------------
# A user's own trained model with non-zero biases: the released logits are its last layer's pre-activation


@pytest.mark.parametrize("separate", [False, True])
def test_released_logits_of_a_trained_model_with_biases_are_its_pre_activations(separate: bool) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 5)).astype(np.float32)
    y = rng.integers(0, 3, 40)
    last = [keras.layers.Dense(3), keras.layers.Activation("softmax")] if separate else [keras.layers.Dense(3, activation="softmax")]
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(8, activation="relu"), *last])
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="sparse_categorical_crossentropy")
    for start in range(0, 40, 8):  # one epoch of Keras's own training step
        model.train_on_batch(x[start : start + 8], y[start : start + 8])
    w1, b1, w2, b2 = (np.asarray(w, np.float64) for w in model.get_weights())
    assert np.abs(b1).min() > 0 and np.abs(b2).min() > 0  # training moved every bias off zero
    expected = np.maximum(x @ w1 + b1, 0.0) @ w2 + b2
    logits = released_logits(model, x)
    np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-5)
    probs = np.exp(logits - logits.max(1, keepdims=True))
    np.testing.assert_allclose(probs / probs.sum(1, keepdims=True), model(x, training=False), atol=1e-6)


def test_released_logits_of_one_sigmoid_unit_with_a_bias_are_zero_and_its_pre_activation() -> None:
    x = np.array([[1.0, 2.0], [-1.0, 0.5]], np.float32)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1, activation="sigmoid")])
    model.set_weights([np.array([[0.5], [-1.0]], np.float32), np.array([0.75], np.float32)])
    np.testing.assert_allclose(released_logits(model, x), [[0.0, 0.5 - 2.0 + 0.75], [0.0, -0.5 - 0.5 + 0.75]], atol=1e-6)
