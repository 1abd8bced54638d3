"""Output defenses (pipeline/defenses/output.py): released vectors keep the label, stay finite."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.defenses import output as O
from pipeline.defenses.base import TrainingJob
from pipeline.defenses.output import (
    LabelOnlyDefense,
    MemGuardDefense,
    RoundingDefense,
    TopKDefense,
)
from pipeline.stack import Architecture, Recipe, keras_logits


def _random_logits(seed: int, n: int = 4000, n_classes: int = 10) -> np.ndarray:
    """Logits of many shapes: moderate, huge margins, near and exact ties, float32."""
    rng = np.random.default_rng(seed)
    scale = rng.choice([0.01, 1.0, 5.0, 30.0, 300.0], size=(n, 1))
    z = rng.normal(size=(n, n_classes)) * scale
    ties = rng.random(n) < 0.15  # copy the top logit onto another class, or nudge it by 1 ulp
    top = np.argmax(z, axis=-1)
    other = (top + 1 + rng.integers(0, n_classes - 1, n)) % n_classes
    nudge = np.where(rng.random(n) < 0.5, 0.0, 1e-6)
    z[ties, other[ties]] = z[ties, top[ties]] - nudge[ties]
    z[:5] = 0.0  # all classes tied
    return z.astype(np.float32)


LOGITS = {c: _random_logits(c, n_classes=c) for c in (2, 3, 10, 100)}
TRANSFORMS = {
    "memguard_0.05": lambda z: O.memguard_release(z, 0.05),
    "memguard_0.5": lambda z: O.memguard_release(z, 0.5),
    "memguard_2": lambda z: O.memguard_release(z, 2.0),
    "top_1": lambda z: O.top_k_release(z, 1),
    "top_3": lambda z: O.top_k_release(z, 3),
    "round_0": lambda z: O.rounding_release(z, 0),
    "round_1": lambda z: O.rounding_release(z, 1),
    "round_3": lambda z: O.rounding_release(z, 3),
    "label_only": O.label_only_release,
}


# ---------------------------------------------------------------------------
# Every transform: the released label is the model's, every value is finite


@pytest.mark.parametrize("name", TRANSFORMS)
@pytest.mark.parametrize("n_classes", LOGITS)
def test_released_argmax_is_the_models_and_values_are_finite(name, n_classes):
    z = LOGITS[n_classes]
    released = TRANSFORMS[name](z)
    assert released.shape == z.shape and released.dtype == np.float32
    assert np.all(np.isfinite(released))
    assert np.all(released >= O.LOG_FLOOR - 1e-5) and np.all(released <= 1e-5)
    np.testing.assert_array_equal(np.argmax(released, axis=-1), np.argmax(z, axis=-1))
    # and the attacks' softmax of the released vector is finite and sums to 1
    p = O.softmax64(released)
    assert np.all(np.isfinite(p)) and np.allclose(p.sum(-1), 1.0)


def test_extreme_logits_stay_finite():
    z = np.array([[1e4, -1e4, 0.0], [-3e38, 3e38, 0.0], [0.0, 0.0, 0.0]], np.float32)
    for name, transform in TRANSFORMS.items():
        out = transform(z)
        assert np.all(np.isfinite(out)), name
        np.testing.assert_array_equal(np.argmax(out, -1), [0, 1, 0], err_msg=name)


# ---------------------------------------------------------------------------
# MemGuard


@pytest.mark.parametrize("budget", [0.01, 0.1, 0.5, 1.0, 1.9, 2.0])
@pytest.mark.parametrize("n_classes", [2, 3, 10, 100])
def test_memguard_is_a_probability_vector_within_budget_with_the_same_top_class(budget, n_classes):
    z = LOGITS[n_classes]
    p, labels = O.softmax64(z), O.predicted_label(z)
    q = O.memguard_probabilities(p, budget, labels)
    assert np.all(q >= 0)
    np.testing.assert_allclose(q.sum(-1), 1.0, atol=1e-12)
    l1 = np.abs(q - p).sum(-1)
    assert np.all(l1 <= budget + 1e-12)
    # the label's entry is never below another, and strictly above where p's top is unique
    q_label = np.take_along_axis(q, labels[:, None], -1)[:, 0]
    others = np.where(np.arange(n_classes) == labels[:, None], -np.inf, q).max(-1)
    assert np.all(q_label >= others)
    p_gap = np.take_along_axis(p, labels[:, None], -1)[:, 0] - np.where(
        np.arange(n_classes) == labels[:, None], -np.inf, p
    ).max(-1)
    assert np.all(q_label[p_gap > 1e-9] > others[p_gap > 1e-9])
    # it spends the whole budget unless it reaches its target
    target = O.memguard_target(labels, n_classes, budget)
    dist = np.abs(target - p).sum(-1)
    np.testing.assert_allclose(l1, np.minimum(budget, dist), atol=1e-12)
    # and the released log-probs encode q (up to the label margin)
    np.testing.assert_allclose(O.softmax64(O.memguard_release(z, budget)), q, atol=2e-4)


def test_memguard_collapses_confident_outputs_to_one_vector():
    """Outputs within the budget of the label's target are released identically."""
    z = np.array([[12.0, 0.0, 0.0, 0.0], [30.0, 1.0, -2.0, 0.0], [9.0, 3.0, 0.0, 0.0]], np.float32)
    out = O.memguard_release(z, 0.5)
    np.testing.assert_array_equal(out[0], out[1])
    np.testing.assert_array_equal(out[0], out[2])
    np.testing.assert_allclose(np.exp(out[0]), [0.75, 0.25 / 3, 0.25 / 3, 0.25 / 3], rtol=1e-6)
    far = O.memguard_probabilities(O.softmax64(np.array([[1.0, 0.9, 0.8, 0.0]])), 0.5)
    assert not np.allclose(far, O.memguard_target(np.array([0]), 4, 0.5))  # too far: moved, not snapped


def test_memguard_full_budget_releases_the_label_only():
    z = LOGITS[10]
    out = O.memguard_release(z, 2.0)
    labels = O.predicted_label(z)
    expected = O.encode(O.memguard_target(labels, 10, 2.0), labels)
    np.testing.assert_array_equal(out, expected)


# ---------------------------------------------------------------------------
# Top-k


@pytest.mark.parametrize("k", [1, 2, 3, 9])
def test_top_k_keeps_exactly_k_largest_and_the_label(k):
    rng = np.random.default_rng(k)
    z = rng.normal(size=(3000, 10)) * 3.0
    z[:50] = np.round(z[:50])  # plenty of ties
    z[50:60] = 0.0
    p, labels = O.softmax64(z), O.predicted_label(z)
    q = O.top_k_probabilities(p, k, labels)
    assert np.all((q > 0).sum(-1) == k)
    kept = q > 0
    np.testing.assert_array_equal(q[kept], p[kept])  # the model's own numbers, not renormalized
    assert np.all(np.take_along_axis(kept, labels[:, None], -1))
    assert np.all(np.where(kept, p, np.inf).min(-1) >= np.where(kept, -np.inf, p).max(-1))
    released = O.top_k_release(z, k)
    np.testing.assert_array_equal(np.argmax(released, -1), labels)
    assert np.all((released > O.LOG_FLOOR + 1e-3).sum(-1) <= k)
    np.testing.assert_allclose(released[kept & (p > 1e-9)], np.log(p[kept & (p > 1e-9)]), atol=2e-4)


def test_top_k_keeps_the_label_when_probabilities_tie_but_logits_do_not():
    z = np.array([[0.0, 1e-45, -1.0]], np.float32)  # equal softmax in float64, label 1
    np.testing.assert_array_equal(O.top_k_probabilities(O.softmax64(z), 1, O.predicted_label(z)) > 0, [[0, 1, 0]])


def test_top_k_with_k_at_least_classes_releases_everything():
    z = np.random.default_rng(0).normal(size=(100, 5)).astype(np.float32)
    for k in (5, 7):
        np.testing.assert_allclose(O.softmax64(O.top_k_release(z, k)), O.softmax64(z), atol=2e-4)


# ---------------------------------------------------------------------------
# Rounding


@pytest.mark.parametrize("decimals", [0, 1, 2, 3, 6])
def test_rounding_is_idempotent_and_monotone(decimals):
    z = LOGITS[10]
    p, labels = O.softmax64(z), O.predicted_label(z)
    q = O.round_probabilities(p, decimals)
    np.testing.assert_array_equal(O.round_probabilities(q, decimals), q)
    assert np.all(np.abs(q - p) <= 0.5 * 10.0**-decimals + 1e-15)
    # where the top rounded value is unique, it is the model's label
    top2 = np.sort(q, -1)[:, -2:]
    unique = top2[:, 1] > top2[:, 0]
    np.testing.assert_array_equal(np.argmax(q, -1)[unique], labels[unique])
    # the released values round back to themselves (zeros sit at the floor)
    if decimals <= 3:
        released = O.rounding_release(z, decimals)
        np.testing.assert_array_equal(np.round(np.exp(released.astype(np.float64)), decimals), q)


def test_rounding_ties_and_zeros_keep_the_label():
    # p = (0.1, 0.1, 0.38, 0.42): rounding to 1 place ties classes 2 and 3, and argmax would pick 2
    z = np.log(np.array([[0.1, 0.1, 0.38, 0.42], [0.1, 0.1, 0.4, 0.4]]))
    z[1, 2] -= 1e-6  # the model predicts class 3 by a hair
    out = O.rounding_release(z, 1)
    np.testing.assert_array_equal(np.argmax(out, -1), [3, 3])
    zero = O.rounding_release(z, 0)  # every entry rounds to 0
    assert np.all(np.isfinite(zero))
    np.testing.assert_array_equal(np.argmax(zero, -1), [3, 3])
    np.testing.assert_allclose(zero[:, :3], O.LOG_FLOOR, rtol=1e-6)


# ---------------------------------------------------------------------------
# Label only


def test_label_only_is_one_hot_of_argmax():
    z = LOGITS[10]
    labels = O.predicted_label(z)
    out = O.label_only_release(z)
    onehot = np.arange(10) == labels[:, None]
    np.testing.assert_array_equal(out[onehot], 0.0)
    np.testing.assert_allclose(out[~onehot], O.LOG_FLOOR, rtol=1e-6)
    np.testing.assert_array_equal(O.label_only_probabilities(O.softmax64(z), labels), onehot.astype(float))


# ---------------------------------------------------------------------------
# The train functions: plain training, observe post-processed, network unwrapped


DEFENSES = {
    "memguard": MemGuardDefense(type="memguard", budget=0.5),
    "top_k": TopKDefense(type="top_k", k=2),
    "rounding": RoundingDefense(type="rounding", decimals=1),
    "label_only": LabelOnlyDefense(type="label_only"),
}


@pytest.fixture(scope="module")
def job() -> TrainingJob:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 6)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0.5)
    keep = np.zeros((2, 120), bool)
    keep[0, :60] = keep[1, 60:] = True
    arch = Architecture("mlp", (6,), 3, hidden_units=8)
    return TrainingJob(arch, Recipe(epochs=3, batch_size=16, learning_rate=1e-2), x, y, keep, seed=3)


@pytest.mark.parametrize("name", DEFENSES)
def test_train_wraps_the_plain_network(job, name):
    defense = DEFENSES[name]
    models = defense.train(job)
    observed = models.observe(job.x)
    assert observed.shape == (2, 120, 3) and np.all(np.isfinite(observed))
    assert models.history["loss"].shape == (2, 3)
    wrapper = defense.release
    for k in range(2):
        logits = keras_logits(models.network(k), job.x)
        np.testing.assert_array_equal(np.argmax(observed[k], -1), np.argmax(logits, -1))
        if name != "rounding":  # rounding may flip at a boundary under float noise
            np.testing.assert_allclose(wrapper(logits), observed[k], atol=1e-3)
