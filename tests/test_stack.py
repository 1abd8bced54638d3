"""Batched training of K models (pipeline/stack/) against plain Keras."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_digits

from pipeline import stack as S
from pipeline.core.errors import PipelineError
from pipeline.core.tf_runtime import keras


@pytest.fixture(scope="module")
def digits() -> dict[str, np.ndarray]:
    """sklearn digits scaled to [0, 1]: 700 training-pool rows, the rest test."""
    d = load_digits()
    x = (d.data / 16.0).astype(np.float32)
    perm = np.random.default_rng(0).permutation(len(x))
    return {"x": x, "y": d.target.astype(np.int64), "pool": perm[:700], "test": perm[700:]}


def _random_keep(pool: np.ndarray, n_total: int, k: int, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    keep = np.zeros((k, n_total), bool)
    for row in keep:
        row[rng.choice(pool, n, replace=False)] = True
    return keep


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


MLP = S.Architecture("mlp", (64,), 10, hidden_units=32)
CNN = S.Architecture("cnn", (8, 8, 1), 10, hidden_units=32, conv_filters=(4, 8))


# ---------------------------------------------------------------------------
# Equivalence with Keras


@pytest.mark.parametrize("arch", [MLP, CNN], ids=["mlp", "cnn"])
def test_one_model_reproduces_keras_fit_step_for_step(digits, arch):
    """K=1 with Keras's init and batch order gives Keras's weights and history.

    The stack's own initial weights and per-epoch shuffles are replayed
    into a plain Keras model (same draws from the seed's generator, in the
    order train_stack makes them), which is then fit one epoch at a time
    without shuffling. 150 points in batches of 64 exercise the short last
    batch; L2 and label smoothing are on. Only float rounding may differ.
    """
    recipe = S.Recipe(epochs=2, batch_size=64, learning_rate=1e-2, l2=1e-3, label_smoothing=0.1)
    x = digits["x"][:300].reshape(-1, *arch.input_shape)
    y = digits["y"][:300]
    keep = np.zeros((1, 300), bool)
    keep[0, ::2] = True  # 150 points
    stack = S.train_stack(arch, recipe, x, y, keep, seed=11)

    rng = np.random.default_rng(11)  # replay train_stack's draws
    init = S.init_weights(arch, 1, rng)
    members = np.flatnonzero(keep[0])
    model = S.keras_model(arch, recipe)
    model.set_weights([w[0] for w in init])
    model.compile(
        keras.optimizers.Adam(recipe.learning_rate),
        keras.losses.CategoricalCrossentropy(label_smoothing=recipe.label_smoothing),
        metrics=["accuracy"],
    )
    losses, accs = [], []
    for _ in range(recipe.epochs):
        order = members[rng.permuted(np.arange(len(members))[None], axis=1)[0]]
        rng.integers(0, 2**31 - 1)  # the epoch's dropout seed
        h = model.fit(
            x[order], keras.utils.to_categorical(y[order], 10),
            batch_size=recipe.batch_size, epochs=1, shuffle=False, verbose=0,
        )  # fmt: skip
        losses += h.history["loss"]
        accs += h.history["accuracy"]

    for ours, theirs in zip(stack.weights, model.get_weights(), strict=True):
        np.testing.assert_allclose(ours[0], theirs, atol=2e-5)
    np.testing.assert_allclose(stack.history["loss"][0], losses, rtol=1e-5)
    np.testing.assert_allclose(stack.history["accuracy"][0], accs, atol=1e-6)


def test_batched_accuracy_matches_sequential_keras(digits):
    """8 batched models vs 8 independent `model.fit` runs: same test accuracy.

    Both sides use Keras-default init and their own shuffling, so the
    models differ; only the mean test accuracy should agree. Measured over
    64 such models (10 epochs), one model's test accuracy has std ~0.009,
    so a difference of two means of 8 has std ~0.0045: the 0.02 tolerance
    is ~4.4 sigma. A halved learning rate or half the steps per epoch
    fails it (checked by mutating the trainer).
    """
    x, y, test = digits["x"], digits["y"], digits["test"]
    k, n = 8, 350
    arch = S.Architecture("mlp", (64,), 10, hidden_units=128)
    recipe = S.Recipe(epochs=10, batch_size=32, learning_rate=1e-3)
    keep = _random_keep(digits["pool"], len(x), k, n, seed=1)

    stack = S.train_stack(arch, recipe, x, y, keep, seed=5)
    batched = (S.stack_logits(stack, x[test]).argmax(-1) == y[test]).mean(axis=1)

    sequential = []
    for i in range(k):
        keras.utils.set_random_seed(100 + i)
        model = S.keras_model(arch, recipe)
        model.compile(
            keras.optimizers.Adam(recipe.learning_rate), "sparse_categorical_crossentropy"
        )
        model.fit(x[keep[i]], y[keep[i]], epochs=recipe.epochs, batch_size=32, verbose=0)
        pred = model.predict(x[test], verbose=0).argmax(-1)
        sequential.append((pred == y[test]).mean())

    assert batched.min() > 0.8  # chance is 0.1
    assert abs(batched.mean() - np.mean(sequential)) < 0.02, (batched, sequential)


# ---------------------------------------------------------------------------
# Independence, seeds, data subsets


def test_models_differ_and_seed_determines_weights(digits):
    x, y = digits["x"], digits["y"]
    keep = np.zeros((3, len(x)), bool)
    keep[:, digits["pool"][:100]] = True  # identical data: only init/shuffle differ
    recipe = S.Recipe(epochs=2, batch_size=16, learning_rate=1e-3)
    a = S.train_stack(MLP, recipe, x, y, keep, seed=0)
    b = S.train_stack(MLP, recipe, x, y, keep, seed=0)
    c = S.train_stack(MLP, recipe, x, y, keep, seed=1)

    for wa, wb in zip(a.weights, b.weights, strict=True):
        np.testing.assert_array_equal(wa, wb)  # bitwise
    assert not np.allclose(a.weights[0], c.weights[0])
    w = a.weights[0]
    assert not np.allclose(w[0], w[1]) and not np.allclose(w[1], w[2])
    assert a.n_models == 3


def test_each_model_trains_on_its_own_rows(digits):
    """Model 0 only sees classes 0-4, model 1 only 5-9: predictions follow."""
    x, y = digits["x"], digits["y"]
    pool = digits["pool"]
    low, high = pool[y[pool] < 5][:150], pool[y[pool] >= 5][:150]
    keep = np.zeros((2, len(x)), bool)
    keep[0, low] = True
    keep[1, high] = True
    stack = S.train_stack(MLP, S.Recipe(5, 16, 3e-3), x, y, keep, seed=0)
    pred = S.stack_logits(stack, x[digits["test"]]).argmax(-1)
    assert (pred[0] < 5).mean() > 0.95
    assert (pred[1] >= 5).mean() > 0.95


def test_unequal_keep_rows_raise(digits):
    x, y = digits["x"], digits["y"]
    keep = np.zeros((2, len(x)), bool)
    keep[0, :10] = True
    keep[1, :12] = True
    with pytest.raises(PipelineError, match=r"same number.*\[10, 12\]"):
        S.train_stack(MLP, S.Recipe(1, 4, 1e-3), x, y, keep, seed=0)


def test_history_shapes_and_eval_curves(digits, capsys, monkeypatch):
    """History per model and epoch; the progress bar shows on a terminal only."""
    import sys

    x, y, test = digits["x"], digits["y"], digits["test"]
    keep = _random_keep(digits["pool"], len(x), 3, 120, seed=2)
    S.train_stack(MLP, S.Recipe(1, 32, 1e-3), x, y, keep, seed=0, progress="not a tty")
    assert "not a tty" not in capsys.readouterr().err
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    stack = S.train_stack(
        MLP, S.Recipe(3, 32, 1e-3), x, y, keep, seed=0,
        eval_data=(x[test], y[test]), progress="shadows",
    )  # fmt: skip
    assert set(stack.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert all(v.shape == (3, 3) for v in stack.history.values())
    final = (S.stack_logits(stack, x[test]).argmax(-1) == y[test]).mean(axis=1)
    np.testing.assert_allclose(stack.history["val_accuracy"][:, -1], final, atol=1e-6)
    assert "shadows" in capsys.readouterr().err


def test_a_long_loop_writes_plain_progress_lines_to_a_log(capsys, monkeypatch):
    """Not a terminal (a log file): one line per EVERY_S seconds and a last one, never a redrawn bar."""
    from pipeline.stack.progress import LineProgress, progress_bar

    monkeypatch.setattr(LineProgress, "EVERY_S", 0.0)
    bar = progress_bar("copies (one by one)", 3, unit="model")
    assert isinstance(bar, LineProgress)
    for _ in range(3):
        bar.set_postfix({"loss": "0.250"})
        bar.update(1)
    bar.close()
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("copies (one by one): 1/3 models (") and lines[0].endswith(", loss 0.250)")
    assert lines[-1].startswith("copies (one by one): 3/3 models") and "\r" not in "".join(lines)


# ---------------------------------------------------------------------------
# Export to Keras


@pytest.mark.parametrize(
    "arch",
    [
        S.Architecture("mlp", (4, 5), 3, hidden_units=16),
        S.Architecture("cnn", (6, 10, 2), 3, hidden_units=16, conv_filters=(4, 8)),
    ],
    ids=["mlp", "cnn"],
)
def test_to_keras_matches_stack_logits_also_after_save(arch, tmp_path):
    """Non-square, multi-channel, odd-after-pooling inputs catch layout slips."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, *arch.input_shape)).astype(np.float32)
    y = rng.integers(0, 3, 60)
    keep = np.stack([rng.permutation(60) < 40 for _ in range(3)])
    stack = S.train_stack(arch, S.Recipe(2, 8, 1e-2, dropout=0.3), x, y, keep, seed=0)
    logits = S.stack_logits(stack, x)
    assert logits.shape == (3, 60, 3) and logits.dtype == np.float32

    model = S.to_keras(stack, 2)
    probs = model.predict(x, verbose=0)
    np.testing.assert_allclose(probs, _softmax(logits[2]), atol=1e-5)
    np.testing.assert_allclose(S.keras_logits(model, x), logits[2], atol=1e-5)
    assert not np.allclose(logits[1], logits[2])

    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), _softmax(logits[2]), atol=1e-5)
    np.testing.assert_allclose(S.keras_logits(loaded, x), logits[2], atol=1e-5)


def test_cnn_stack_logits_are_the_same_for_any_k():
    """Model k's logits do not depend on K or on what was traced before."""
    x = np.random.default_rng(0).normal(size=(20, 8, 8, 1)).astype(np.float32)
    weights = S.init_weights(CNN, 3, np.random.default_rng(1))
    recipe = S.Recipe(1, 4, 1e-3)
    for w in weights:
        w += 0.01  # non-zero biases
    big = S.TrainedStack(CNN, recipe, tuple(weights), {})
    logits_big = S.stack_logits(big, x)
    for k in (2, 0):
        small = S.TrainedStack(CNN, recipe, tuple(w[k : k + 1] for w in weights), {})
        np.testing.assert_allclose(S.stack_logits(small, x)[0], logits_big[k], atol=1e-5)


def test_cnn_stack_logits_chunks_agree():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 8, 8, 1)).astype(np.float32)
    stack = S.train_stack(CNN, S.Recipe(1, 10, 1e-3), x, rng.integers(0, 10, 50),
                          np.ones((2, 50), bool), seed=0)  # fmt: skip
    np.testing.assert_allclose(
        S.stack_logits(stack, x, batch_size=7), S.stack_logits(stack, x), atol=1e-6
    )


# ---------------------------------------------------------------------------
# Dropout, L2, label smoothing


def test_l2_shrinks_every_kernel(digits):
    x, y = digits["x"], digits["y"]
    keep = _random_keep(digits["pool"], len(x), 3, 200, seed=3)
    plain = S.train_stack(MLP, S.Recipe(5, 32, 3e-3), x, y, keep, seed=0)
    shrunk = S.train_stack(MLP, S.Recipe(5, 32, 3e-3, l2=1e-2), x, y, keep, seed=0)
    for i in (0, 2):  # kernels; biases are not penalised
        norm_plain = np.linalg.norm(plain.weights[i].reshape(3, -1), axis=1)
        norm_shrunk = np.linalg.norm(shrunk.weights[i].reshape(3, -1), axis=1)
        assert np.all(norm_shrunk < 0.9 * norm_plain), (i, norm_plain, norm_shrunk)


def test_label_smoothing_caps_confidence(digits):
    """With smoothing s the loss is minimised at confidence 1 - s + s/C (0.73)."""
    x, y = digits["x"], digits["y"]
    keep = _random_keep(digits["pool"], len(x), 2, 200, seed=4)
    recipe = S.Recipe(30, 32, 3e-3)
    sharp = S.train_stack(MLP, recipe, x, y, keep, seed=0)
    smooth = S.train_stack(
        MLP, S.Recipe(30, 32, 3e-3, label_smoothing=0.3), x, y, keep, seed=0
    )

    def train_confidence(stack: S.TrainedStack) -> np.ndarray:
        probs = _softmax(S.stack_logits(stack, x))
        return np.array([probs[k, keep[k]].max(-1).mean() for k in range(2)])

    conf_sharp, conf_smooth = train_confidence(sharp), train_confidence(smooth)
    assert np.all(conf_smooth < 0.75), conf_smooth  # measured ~0.62
    assert np.all(conf_sharp > conf_smooth + 0.15), (conf_sharp, conf_smooth)  # ~0.85


def test_dropout_masks_are_independent_and_inverted():
    """Same weights, same input on every row: only the dropout masks differ.

    Masks differ between models and between examples; their mean over many
    examples is the no-dropout output (inverted scaling by 1/(1-rate)).
    Without a seed (inference) the output is deterministic.
    """
    from pipeline.core.tf_runtime import tf

    arch = S.Architecture("mlp", (5,), 3, hidden_units=64)
    w = [np.repeat(a, 2, axis=0) for a in S.init_weights(arch, 1, np.random.default_rng(0))]
    w[1] += 0.5  # positive biases: every hidden unit active, so every drop shows
    x = np.tile(np.random.default_rng(1).normal(size=(1, 1, 5)).astype(np.float32), (2, 4000, 1))
    clean = S.forward(arch, w, tf.constant(x)).numpy()
    seed = tf.constant([3, 4])
    noisy = S.forward(arch, w, tf.constant(x), dropout=0.5, dropout_seed=seed).numpy()
    np.testing.assert_allclose(clean[0], clean[1])
    assert np.allclose(clean[0, 0], clean[0, 1])
    assert not np.allclose(noisy[0, :10], noisy[1, :10])  # models
    assert not np.allclose(noisy[0, 0], noisy[0, 1])  # examples
    np.testing.assert_allclose(noisy.mean(axis=1), clean[:, 0], atol=0.05)


def test_dropout_is_on_in_training_and_off_in_stack_logits(digits):
    """Training-mode accuracy (history) trails inference accuracy only with dropout."""
    x, y = digits["x"], digits["y"]
    keep = _random_keep(digits["pool"], len(x), 2, 200, seed=5)
    gaps = {}
    for rate in (0.0, 0.8):
        stack = S.train_stack(MLP, S.Recipe(20, 32, 3e-3, dropout=rate), x, y, keep, seed=0)
        logits = S.stack_logits(stack, x)
        np.testing.assert_array_equal(logits, S.stack_logits(stack, x))  # no randomness
        inference = np.array(
            [(logits[k, keep[k]].argmax(-1) == y[keep[k]]).mean() for k in range(2)]
        )
        gaps[rate] = inference - stack.history["accuracy"][:, -1]
    assert np.all(gaps[0.8] > 0.05), gaps
    assert np.all(np.abs(gaps[0.0]) < 0.03), gaps
