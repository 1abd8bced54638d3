"""Stack members of any Keras architecture: copies of a user's model, trained one by one.

The batched forward pass covers the MLP and CNN of `spec.Architecture`.
A user's model of another architecture is a stack of kind "keras": its
`keras_spec` holds the model's config and compile config as JSON, and
each member is a fresh clone (its own initialisation from the seed)
compiled the same way and trained on its own rows by Keras's own
training step, epoch by epoch as `fit` does. The
weights are stacked like any stack's, so inference, export and the
attacks read it through the same `TrainedStack`.

Released outputs become logits the same way for the user's model and its
clones (`released_logits`): a final softmax or sigmoid is peeled off,
whether a layer of its own or the last Dense layer's activation (its
pre-activation is computed from its weights), so the logits are exact;
an activation inside another kind of last layer gives log-probabilities
(zeros floored at 1e-12, which softmax turns back into the
probabilities); one sigmoid or linear unit is the second of two classes.
"""

from __future__ import annotations

import json
import warnings

import numpy as np

from pipeline.core.errors import PipelineError
from pipeline.core.tf_runtime import keras
from pipeline.stack.progress import progress_bar
from pipeline.stack.spec import Architecture, Recipe, TrainedStack

__all__ = ["keras_spec", "output_activation", "released_logits", "clone_network", "clone_logits", "train_clones"]

PROB_FLOOR = 1e-12
_PREDICT_BATCH = 1024


def keras_spec(model: keras.Model) -> str:
    """The JSON a "keras" stack keeps to rebuild and compile copies of `model`."""
    return json.dumps({"model": json.loads(model.to_json()), "compile": model.get_compile_config()}, sort_keys=True)


def _rebuilt(architecture: Architecture, compiled: bool) -> keras.Model:
    spec = json.loads(architecture.keras_spec)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Keras notes about unbuilt optimizer state
        model = keras.models.model_from_json(json.dumps(spec["model"]))
        if compiled:
            model.compile_from_config(spec["compile"])
    return model


def output_activation(model: keras.Model) -> str:
    """The activation of the model's last layer by name ("linear" when it has none)."""
    last = model.layers[-1]
    if isinstance(last, keras.layers.Softmax):
        return "softmax"
    activation = getattr(last, "activation", None)
    return "linear" if activation is None else str(keras.activations.serialize(activation))


def _separate_activation(model: keras.Model) -> bool:
    return isinstance(model.layers[-1], (keras.layers.Softmax, keras.layers.Activation))


def released_logits(model: keras.Model, x: np.ndarray) -> np.ndarray:
    """(N, C) logits of what `model` releases on x (softmax of them is its class probabilities)."""
    activation = output_activation(model)
    if activation not in ("softmax", "sigmoid", "linear"):
        raise PipelineError(
            f"target.model: its output activation is {activation!r}; the audit reads class probabilities "
            "(softmax, or sigmoid for one unit) or logits (linear)"
        )
    x = np.asarray(x, np.float32)
    last = model.layers[-1]
    dense = activation != "linear" and isinstance(last, keras.layers.Dense)
    peel = activation != "linear" and (_separate_activation(model) or dense)
    source = keras.Model(model.inputs[0], last.input) if peel else model
    # direct calls in inference mode: `predict` costs ~0.1 s of set-up per call, and the attacks query often
    chunks = [np.asarray(source(x[i : i + _PREDICT_BATCH], training=False)) for i in range(0, len(x), _PREDICT_BATCH)]
    out = np.concatenate(chunks).astype(np.float64) if chunks else np.zeros((0, *source.outputs[0].shape[1:]))
    if dense:  # the last Dense's own pre-activation: exact logits, as the batched copies release
        weights = [np.asarray(w, np.float64) for w in last.get_weights()]
        out = out @ weights[0] + (weights[1] if last.use_bias else 0.0)
    if peel or activation == "linear":
        logits = out
    elif activation == "softmax":
        logits = np.log(np.maximum(out, PROB_FLOOR))
    else:  # sigmoid probabilities of the second class
        return np.log(np.maximum(np.concatenate([1.0 - out, out], axis=-1), PROB_FLOOR)).astype(np.float32)
    if logits.shape[-1] == 1:  # one logit: the second class's, against 0 for the first
        logits = np.concatenate([np.zeros_like(logits), logits], axis=-1)
    return logits.astype(np.float32)


def _seed_generators(model: keras.Layer) -> list:
    """The random-stream state holders of every layer (Dropout's masks, say), in layer order, nested models included."""
    found = []
    for layer in getattr(model, "layers", []):
        generator = getattr(layer, "seed_generator", None)
        if generator is not None:
            found.append(generator)
        found += _seed_generators(layer)
    return found


def _loss_targets(spec: dict, y: np.ndarray, n_classes: int, n_outputs: int) -> np.ndarray:
    """Labels in the form the compiled loss expects: class indices (sparse losses), else one-hot rows or a 0/1 column."""
    loss = spec["compile"].get("loss")
    if isinstance(loss, dict):
        loss = loss.get("config", {}).get("name") if loss.get("class_name") == "function" else loss.get("class_name")
    name = str(loss or "").lower().replace("_", "")
    if "sparse" in name:
        return y.astype(np.int32)
    if n_outputs == 1:
        return y.astype(np.float32)[:, None]
    return np.eye(n_classes, dtype=np.float32)[y]


def train_clones(
    architecture: Architecture,
    recipe: Recipe,
    x: np.ndarray,
    y: np.ndarray,
    members: np.ndarray,
    seed: int,
    eval_data: tuple[np.ndarray, np.ndarray] | None = None,
    progress: str | None = None,
) -> TrainedStack:
    """K clones of the spec's model, clone k trained on x[members[k]] for the recipe's epochs and batch size.

    Every epoch is what Keras `fit` runs: a fresh shuffle of the clone's
    rows, then the compiled model's training step on each batch in turn
    (the last one smaller); the loop is driven here with `train_on_batch`,
    since `fit` pays ~35 ms of data-pipeline set-up per epoch. Each
    clone's initialisation and shuffling come from `seed` and k, so the
    same seed gives the same weights. One compiled model is reused: each
    clone starts from a fresh copy's initial weights and the optimizer's
    initial state, exactly as a new model would, without retracing the
    training step. History: each epoch's mean training loss ("loss") and,
    with `eval_data`, Keras's evaluation of it ("val_" + each metric).
    """
    spec = json.loads(architecture.keras_spec)
    bar = progress_bar(progress and f"{progress} (one by one)", len(members), unit="model")
    model = _rebuilt(architecture, compiled=True)  # compiled once: its traced training step serves every clone
    model.optimizer.build(model.trainable_variables)
    fresh_optimizer = [variable.numpy() for variable in model.optimizer.variables]
    n_outputs = int(model.outputs[0].shape[-1])
    targets = _loss_targets(spec, y, architecture.n_classes, n_outputs)
    validation = None
    if eval_data is not None:
        validation = (eval_data[0], _loss_targets(spec, eval_data[1], architecture.n_classes, n_outputs))
    weights, logs = [], []
    for k, rows in enumerate(members):
        clone_seed = int(np.random.SeedSequence([seed, k]).generate_state(1)[0] & 0x7FFFFFFF)
        keras.utils.set_random_seed(clone_seed)
        fresh = _rebuilt(architecture, compiled=False)  # built after the seed: its weights and random streams
        model.set_weights(fresh.get_weights())
        for mine, theirs in zip(_seed_generators(model), _seed_generators(fresh)):
            mine.state.assign(theirs.state)  # dropout masks and other layer randomness restart from the seed too
        for variable, value in zip(model.optimizer.variables, fresh_optimizer):
            variable.assign(value)  # the optimizer's moments and step count start from zero, as for a new model
        rng = np.random.default_rng(clone_seed)
        log: dict[str, list[float]] = {"loss": []}
        for _ in range(recipe.epochs):
            order = rows[rng.permutation(len(rows))]
            total = 0.0
            for start in range(0, len(order), recipe.batch_size):
                batch = order[start : start + recipe.batch_size]
                result = model.train_on_batch(x[batch], targets[batch], return_dict=True)
                total += float(result["loss"]) * len(batch)
            log["loss"].append(total / len(order))
            if validation is not None:
                scores = model.evaluate(*validation, batch_size=_PREDICT_BATCH, verbose=0, return_dict=True)
                for name, value in scores.items():
                    log.setdefault(f"val_{name}", []).append(float(value))
        weights.append(model.get_weights())
        logs.append(log)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return TrainedStack(
        architecture=architecture,
        recipe=recipe,
        weights=tuple(np.stack(layer) for layer in zip(*weights)),
        history={key: np.asarray([log[key] for log in logs], np.float32) for key in logs[0]},
    )


def clone_network(stack: TrainedStack, k: int) -> keras.Model:
    """Member k of a "keras" stack as a Keras model (uncompiled), the user's architecture with its weights."""
    if not 0 <= k < stack.n_models:
        raise PipelineError(f"model index {k} out of range for a stack of {stack.n_models}")
    model = _rebuilt(stack.architecture, compiled=False)
    model.set_weights([w[k] for w in stack.weights])
    return model


def clone_logits(stack: TrainedStack, x: np.ndarray) -> np.ndarray:
    """(K, N, C) released logits of every member of a "keras" stack on shared points x."""
    model = _rebuilt(stack.architecture, compiled=False)
    out = []
    for k in range(stack.n_models):
        model.set_weights([w[k] for w in stack.weights])
        out.append(released_logits(model, x))
    return np.stack(out)
