"""Leave-one-model-out attacks: each target scored from the other models only, never from itself."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from pipeline.attacks.lira import gaussian_fit, likelihood_ratio, offline_scores
from pipeline.attacks.rmia import log_likelihood_ratio, rmia_scores
from pipeline.attacks.statistics import log_true_prob, phi
from pipeline.recipes import leave_one_out
from pipeline.recipes.design import paired_keep

K, P, C = 8, 40, 3
A, GAMMA = 0.3, 1.0


@pytest.fixture(scope="module")
def signals() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Logits (K, P, C) where training on a point raises its true-class logit, with per-model and per-point effects."""
    rng = np.random.default_rng(0)
    keep = paired_keep(P - 4, 4, K, rng)
    labels = rng.integers(0, C, P)
    logits = rng.normal(size=(K, P, C))
    boost = 1.0 + rng.normal(0, 0.5, (K, 1)) + rng.normal(0, 1.0, P) + 2.0 * keep
    logits[np.arange(K)[:, None], np.arange(P), labels] += boost
    return logits, labels, keep


def attack(name: str, logits: np.ndarray, labels: np.ndarray, keep: np.ndarray, fixed: bool = True) -> np.ndarray:
    if name == "rmia_offline":
        return leave_one_out.rmia_offline(logits, labels, keep, a=A, gamma=GAMMA)
    return getattr(leave_one_out, name)(logits, labels, keep, fixed_variance=fixed)


ATTACKS = ("lira_online", "lira_offline", "rmia_offline")


def without_model(name: str, logits: np.ndarray, labels: np.ndarray, keep: np.ndarray, k: int, fixed: bool) -> np.ndarray:
    """Target k's scores computed from inputs where model k is not even present as a reference."""
    others, keep_others = np.delete(logits, k, axis=0), np.delete(keep, k, axis=0)
    if name == "rmia_offline":
        lr = log_likelihood_ratio(log_true_prob(logits[k], labels), log_true_prob(others, labels), ~keep_others, A)
        return rmia_scores(lr, lr, GAMMA)
    phi_k, phi_others = phi(logits[k], labels), phi(others, labels)
    if name == "lira_online":
        return likelihood_ratio(phi_k, phi_others, keep_others, ~keep_others, fixed)
    return offline_scores(phi_k, *gaussian_fit(phi_others, ~keep_others, fixed))


@pytest.mark.parametrize("fixed", [True, False], ids=["pooled_variance", "per_point_variance"])
@pytest.mark.parametrize("name", ATTACKS)
def test_each_target_is_scored_as_if_its_own_model_did_not_exist(signals, name, fixed):
    """Row k equals the attack run on the K - 1 other models alone: model k is never its own reference.

    Checked by hand: making model k count as OUT for itself (the row of
    `out` that is all False set to True) fails this test for all three
    attacks; handing the callback the full keep matrix fails it too.
    """
    logits, labels, keep = signals
    scores = attack(name, logits, labels, keep, fixed)
    assert scores.shape == (K, P) and np.isfinite(scores).all()
    for k in range(K):
        expected = without_model(name, logits, labels, keep, k, fixed)
        np.testing.assert_allclose(scores[k], expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", ATTACKS)
def test_a_targets_own_keep_row_never_enters_its_scores(signals, name):
    """Flipping target k's keep row leaves row k unchanged, while the other targets (k is their reference) move.

    Checked by hand: handing the callback the full keep matrix (so target
    k's own keep bits pick its IN and OUT references) fails this test.
    """
    logits, labels, keep = signals
    before = attack(name, logits, labels, keep)
    for k in (0, 5):
        flipped = keep.copy()
        flipped[k] = ~flipped[k]
        after = attack(name, logits, labels, flipped)
        np.testing.assert_array_equal(after[k], before[k])
        assert not np.allclose(np.delete(after, k, axis=0), np.delete(before, k, axis=0))


@pytest.mark.parametrize("name", [*ATTACKS, "loss"])
def test_members_score_higher(signals, name):
    logits, labels, keep = signals
    scores = leave_one_out.loss(logits, labels) if name == "loss" else attack(name, logits, labels, keep)
    assert roc_auc_score(keep.ravel(), scores.ravel()) > 0.75


def test_loss_is_the_models_own_log_true_probability(signals):
    logits, labels, _ = signals
    np.testing.assert_array_equal(leave_one_out.loss(logits, labels), log_true_prob(logits, labels))


def test_rmia_population_is_a_choice_of_points(signals):
    """Scores are shares of the chosen population points, and the ranking within a target does not depend on it."""
    logits, labels, keep = signals
    population = np.arange(P) < P - 4
    scores = leave_one_out.rmia_offline(logits, labels, keep, a=A, gamma=GAMMA, population=population)
    np.testing.assert_allclose(scores * population.sum(), np.round(scores * population.sum()))
    full = attack("rmia_offline", logits, labels, keep)
    for k in range(K):
        order = np.argsort(full[k], kind="stable")
        assert (np.diff(scores[k][order]) >= 0).all()


def test_each_point_needs_two_in_and_two_out_models(signals):
    logits, labels, keep = signals
    with pytest.raises(ValueError, match="at least 2"):
        leave_one_out.lira_offline(logits[:3], labels, keep[:3], fixed_variance=True)
