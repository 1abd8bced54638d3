"""The empirical epsilon lower bound holds at its stated confidence (known-answer coverage tests).

Scores come from a mechanism with a known epsilon: the two-sided geometric
(discrete Laplace) mechanism, member score 1 + G and non-member score G
with P(G = k) proportional to exp(-eps |k|). It is exactly eps-DP, and its
TPR / FPR ratio reaches e^eps at every threshold above 0, so a bound that
is chosen on the answer key overshoots often. Calibration (shadow) scores
are independent draws of the same mechanism, as shadow models are
independent trainings.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binom

from pipeline.attacks.audit import choose_headline, evaluate_all, headline_epsilon_bound
from pipeline.core.types import AttackResult, AttackScores
from pipeline.measures.bounds import choose_rule, epsilon_lower_bound
from pipeline.measures.roc import roc

EPSILON = 1.0
N = 1000  # members and as many non-members, in the target and in the calibration


def _geometric_scores(rng: np.random.Generator, eps: float, n: int) -> AttackScores:
    p = 1.0 - np.exp(-eps)
    noise = lambda: (rng.geometric(p, n) - rng.geometric(p, n)).astype(np.float64)  # noqa: E731
    is_member = np.r_[np.ones(n, bool), np.zeros(n, bool)]
    return AttackScores(np.r_[1.0 + noise(), noise()], is_member, np.zeros(2 * n, np.int64))


def _most_allowed(trials: int) -> int:
    """Overshoots a valid 95% bound may show in `trials` trials: the binomial's 99.9% quantile."""
    return int(binom.ppf(0.999, trials, 0.05))


def test_one_attack_bound_overshoots_the_true_epsilon_at_most_5_percent_of_trials() -> None:
    rng = np.random.default_rng(0)
    trials, overshoots, bounds = 400, 0, []
    for _ in range(trials):
        calibration, target = _geometric_scores(rng, EPSILON, N), _geometric_scores(rng, EPSILON, N)
        rule = choose_rule(roc(calibration.scores, calibration.is_member), N, N)
        bound = epsilon_lower_bound(rule, target.scores, target.is_member)
        overshoots += bound > EPSILON
        bounds.append(bound)
    assert overshoots <= _most_allowed(trials)
    assert 0.6 < np.mean(bounds) < EPSILON  # informative: most of the way to the truth (0.83 measured)


def test_reported_bounds_of_twelve_attacks_overshoot_at_most_5_percent_of_trials() -> None:
    """The report's procedure: 12 attacks, the headline chosen on calibration, per-attack bounds corrected.

    Choosing each bound's threshold on the target and taking the best of
    the 12 (the earlier procedure) overshoots in about 25% of trials.
    """
    rng = np.random.default_rng(1)
    trials, headline_over, any_over = 200, 0, 0
    for _ in range(trials):
        results = {
            f"attack{a}": AttackResult(f"attack{a}", _geometric_scores(rng, eps, N), _geometric_scores(rng, eps, N))
            for a, eps in enumerate([EPSILON] * 8 + [EPSILON / 2] * 4)
        }
        metrics = evaluate_all(results, seed=0, n_resamples=10)
        name, _ = choose_headline(results, "auc")
        headline_over += headline_epsilon_bound(results[name]) > EPSILON
        any_over += max(m.epsilon_lb for m in metrics.values()) > EPSILON
    assert headline_over <= _most_allowed(trials)
    assert any_over <= _most_allowed(trials)


def test_per_attack_bounds_are_bonferroni_corrected_for_the_attacks_shown() -> None:
    rng = np.random.default_rng(2)
    results = {
        f"attack{a}": AttackResult(f"attack{a}", _geometric_scores(rng, 2.0, 300), _geometric_scores(rng, 2.0, 300))
        for a in range(5)
    }
    metrics = evaluate_all(results, seed=0, n_resamples=10)
    for name, result in results.items():
        confidence = 1 - 0.05 / 5
        rule = choose_rule(roc(result.calibration.scores, result.calibration.is_member), 300, 300, confidence)
        assert metrics[name].epsilon_lb_confidence == confidence
        assert metrics[name].epsilon_lb == epsilon_lower_bound(rule, result.target.scores, result.target.is_member, confidence)
        assert 0 < metrics[name].epsilon_lb < headline_epsilon_bound(result)  # the 95% bound is less conservative


def test_headline_is_chosen_on_calibration_scores_not_on_the_target() -> None:
    """A strong attack on shadow data but useless on the target still wins: the target's labels are never read."""
    rng = np.random.default_rng(3)
    strong, weak = _geometric_scores(rng, 3.0, 300), _geometric_scores(rng, 0.2, 300)
    results = {
        "good_on_target": AttackResult("good_on_target", strong, weak),
        "good_on_shadows": AttackResult("good_on_shadows", weak, strong),
    }
    for tune_for in ("auc", "tpr_at_1pct_fpr"):
        assert choose_headline(results, tune_for)[0] == "good_on_shadows"


def test_bound_allows_for_the_accounted_delta() -> None:
    """(eps, delta)-DP: TPR <= e^eps FPR + delta, so the bound is log((TPR_lo - delta) / FPR_hi)."""
    from scipy.stats import beta

    scores = np.r_[np.ones(900), np.zeros(100), np.ones(100), np.zeros(900)]
    is_member = np.r_[np.ones(1000, bool), np.zeros(1000, bool)]
    rule = choose_rule(roc(scores, is_member), 1000, 1000)
    tpr_lo, fpr_hi = beta.ppf(0.025, 900, 101), beta.ppf(0.975, 101, 900)
    assert epsilon_lower_bound(rule, scores, is_member) == pytest.approx(np.log(tpr_lo / fpr_hi), rel=1e-9)
    with_delta = epsilon_lower_bound(rule, scores, is_member, delta=0.2)
    assert with_delta == pytest.approx(np.log((tpr_lo - 0.2) / fpr_hi), rel=1e-9)
    assert epsilon_lower_bound(rule, scores, is_member, delta=0.95) == 0.0  # delta swallows the evidence
