"""Known-answer tests of pipeline.measures.roc on hand-made scores."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy.stats import beta

from pipeline.core.types import AttackResult, AttackScores
from pipeline.measures.bounds import choose_rule, clopper_pearson, epsilon_lower_bound, side_bounds
from pipeline.measures.roc import (
    FPR_LEVELS,
    best_threshold,
    evaluate,
    metrics_to_dict,
    most_exposed,
    roc,
    roc_auc,
    shadow_objective,
    tpr_at_fpr,
)


def scores(members, nonmembers, labels=None) -> AttackScores:
    s = np.r_[np.asarray(members, float), np.asarray(nonmembers, float)]
    y = np.r_[np.ones(len(members), bool), np.zeros(len(nonmembers), bool)]
    labels = np.zeros(s.size, np.int64) if labels is None else np.asarray(labels)
    return AttackScores(scores=s, is_member=y, labels=labels)


def result(target: AttackScores, calibration: AttackScores | None = None) -> AttackResult:
    return AttackResult(name="test", target=target, calibration=calibration or target)


def test_separable_scores_give_auc_and_advantage_one():
    rng = np.random.default_rng(0)
    m = evaluate(result(scores(rng.uniform(2, 3, 500), rng.uniform(0, 1, 500))))
    assert m.auc == 1.0
    assert m.advantage == 1.0
    assert m.balanced_accuracy == 1.0
    assert m.ppv == 1.0
    assert 1.0 < m.threshold < 2.0
    assert m.n_members == m.n_nonmembers == 500
    assert m.tpr_at_fpr[0.01] == 1.0


def test_identical_distributions_give_chance():
    rng = np.random.default_rng(1)
    m = evaluate(result(scores(rng.normal(size=5000), rng.normal(size=5000))))
    assert abs(m.auc - 0.5) < 0.02
    assert m.advantage < 0.05
    assert abs(m.balanced_accuracy - 0.5) < 0.03
    assert m.epsilon_lb < 0.3


def test_tpr_at_fpr_on_hand_made_roc_with_ties():
    # 100 non-members at 0..99; FPR <= 1% allows only the non-member at 99 above the threshold.
    nonmembers = np.arange(100.0)
    members = [99.5] * 30 + [98.5] * 20 + [98.0] * 10 + [0.5] * 40
    curve = roc(*_arrays(scores(members, nonmembers)))
    # At threshold 98.5: TPR 0.5, FPR 0.01. The members tied with the non-member at 98
    # only come with it (FPR 0.02), so a naive sort would wrongly report 0.6.
    assert tpr_at_fpr(curve, 0.01) == pytest.approx(0.5)
    assert tpr_at_fpr(curve, 0.02) == pytest.approx(0.6)
    assert tpr_at_fpr(curve, 0.001) is None


def _arrays(s: AttackScores):
    return s.scores, s.is_member


def test_tpr_at_fpr_not_measurable_with_too_few_nonmembers():
    rng = np.random.default_rng(2)
    m = evaluate(result(scores(rng.normal(1, 1, 999), rng.normal(0, 1, 999))))
    assert m.tpr_at_fpr[0.01] is not None
    assert m.tpr_at_fpr[0.001] is None
    assert m.tpr_at_fpr[0.0001] is None
    m = evaluate(result(scores(rng.normal(1, 1, 1000), rng.normal(0, 1, 1000))))
    assert m.tpr_at_fpr[0.001] is not None
    assert m.tpr_at_fpr[0.0001] is None
    assert set(m.tpr_at_fpr) == set(FPR_LEVELS)


def test_low_fpr_tpr_is_zero_only_when_measured_zero():
    # The two highest scores are non-members: FPR <= 1% detects nothing; a real, measured 0.
    nonmembers = np.r_[10.0, 10.0, np.zeros(98)]
    m = evaluate(result(scores(np.ones(100), nonmembers)))
    assert m.tpr_at_fpr[0.01] == 0.0


def test_threshold_is_chosen_on_calibration_not_target():
    calibration = scores([1.0, 1.0, 2.0], [-1.0, -1.0, -2.0])
    target = scores([6.0, 7.0], [2.0, 3.0])  # the target alone would put it near 4.5
    m = evaluate(result(target, calibration))
    assert m.threshold == pytest.approx(0.0)
    assert m.auc == 1.0  # threshold-free metrics still see the separation
    assert m.balanced_accuracy == 0.5  # but at threshold 0 everybody is called a member
    assert m.ppv == 0.5


def test_best_threshold_on_binary_scores_is_half():
    s = np.array([1, 1, 1, 0, 1, 0, 0, 0], float)
    y = np.array([1, 1, 1, 1, 0, 0, 0, 0], bool)
    assert best_threshold(s, y) == 0.5


def test_ppv_counts_member_calls():
    calibration = scores([1.0], [0.0])  # threshold 0.5
    target = scores([1, 1, 0, 0], [1, 0, 0, 0])  # calls: 2 members + 1 non-member
    m = evaluate(result(target, calibration))
    assert m.ppv == pytest.approx(2 / 3)
    assert m.balanced_accuracy == pytest.approx((0.5 + 0.75) / 2)


def test_ppv_none_when_nothing_is_called_a_member():
    m = evaluate(result(scores([0.0, 0.1], [0.0, 0.05]), scores([100.0], [99.0])))
    assert m.ppv is None


def test_clopper_pearson_matches_beta_quantiles():
    lo, hi = clopper_pearson(np.array([0, 3, 10]), 10)
    assert lo[0] == 0.0 and hi[2] == 1.0
    assert lo[1] == pytest.approx(beta.ppf(0.025, 3, 8))
    assert hi[1] == pytest.approx(beta.ppf(0.975, 4, 7))
    assert hi[0] == pytest.approx(1 - 0.025 ** (1 / 10))


def test_clopper_pearson_one_away_from_either_end_has_its_closed_form():
    """k = 1: P(X >= 1) = 1 - (1 - p)^n = alpha / 2 at the lower limit; k = n - 1 mirrors it at the upper."""
    n = 10
    lo, hi = clopper_pearson(np.array([1, n - 1, n]), n)
    assert lo[0] == pytest.approx(1 - 0.975 ** (1 / n)) and lo[0] > 0
    assert hi[1] == pytest.approx(0.975 ** (1 / n)) and hi[1] < 1
    assert lo[2] == pytest.approx(0.025 ** (1 / n))


def test_tpr_at_the_lowest_fpr_lets_exactly_one_non_member_through():
    """Members 5, 4, 3, 1 and non-members 4.5, 2, 0: at most one false positive calls 5, 4, 3 (TPR 3/4); two would call all."""
    m = evaluate(result(scores([5.0, 4.0, 3.0, 1.0], [4.5, 2.0, 0.0])))
    assert m.tpr_at_lowest_fpr == 0.75


def test_roc_errors_name_what_was_scored_by_default():
    with pytest.raises(ValueError, match="^scores: scores must be finite"):
        roc(np.array([np.nan, 1.0]), np.array([True, False]))
    with pytest.raises(ValueError, match="^calibration: needs both members and non-members"):
        best_threshold(np.array([1.0, 2.0]), np.array([True, True]))


def test_epsilon_bound_for_perfect_separation():
    n = 1000
    m = evaluate(result(scores(np.ones(n), np.zeros(n))))
    expected = math.log((0.025 ** (1 / n)) / (1 - 0.025 ** (1 / n)))
    assert 0 < m.epsilon_lb < math.log(n)
    assert m.epsilon_lb == pytest.approx(expected, rel=1e-6)


def test_epsilon_bound_grows_with_sample_size():
    small = evaluate(result(scores(np.ones(100), np.zeros(100)))).epsilon_lb
    large = evaluate(result(scores(np.ones(1000), np.zeros(1000)))).epsilon_lb
    assert 0 < small < large


def test_auc_per_class_slices():
    target = scores([3.0, 1.0, 5.0], [2.0, 0.0], labels=[0, 1, 2, 0, 1])
    m = evaluate(result(target))
    assert m.auc_per_class == {0: 1.0, 1: 1.0, 2: None}


def test_metrics_to_dict_is_flat_json_with_nones():
    m = evaluate(result(scores([3.0, 1.0, 5.0], [2.0, 0.0], labels=[0, 1, 2, 0, 1])))
    d = metrics_to_dict(m)
    assert (
        d["tpr_at_1pct_fpr"] is None
        and d["tpr_at_0.1pct_fpr"] is None
        and d["tpr_at_0.01pct_fpr"] is None
    )
    assert d["auc_class_2"] is None and d["auc_class_0"] == 1.0
    for key in (
        "auc",
        "advantage",
        "balanced_accuracy",
        "threshold",
        "ppv",
        "epsilon_lb",
        "n_members",
        "n_nonmembers",
    ):
        assert key in d
    assert json.loads(json.dumps(d, allow_nan=False)) == d


def test_most_exposed_lists_top_members():
    s = scores([0.9, 0.2, 0.7], [0.8, 0.1], labels=[4, 5, 6, 7, 8])
    rows = most_exposed(s, index=np.array([10, 11, 12, 13, 14]), top=2)
    assert [r["index"] for r in rows] == [10, 12]
    assert rows[0] == {"index": 10, "label": 4, "score": 0.9, "fpr_at_score": 0.0}
    assert rows[1]["fpr_at_score"] == 0.5


def test_rejects_one_class_or_non_finite_scores():
    with pytest.raises(ValueError, match="both members and non-members"):
        evaluate(result(scores([1.0, 2.0], [])))
    with pytest.raises(ValueError, match="finite"):
        evaluate(result(scores([np.nan], [0.0])))


def test_epsilon_bound_also_counts_an_attack_that_spots_non_members() -> None:
    """An asymmetric known answer: the bound comes from TNR / FNR, not TPR / FPR.

    1,000 members and 1,000 non-members; at the threshold between the two
    score values the attack calls 999 members and 100 non-members "member":
    TPR 0.999, FPR 0.1 (a weak TPR / FPR ratio) but TNR 0.9, FNR 0.001.
    """
    scores = np.r_[np.ones(999), 0.0, np.ones(100), np.zeros(900)]
    is_member = np.r_[np.ones(1000, bool), np.zeros(1000, bool)]
    alpha = 1 - 0.95
    tnr_low = beta.ppf(alpha / 2, 900, 1000 - 900 + 1)
    fnr_high = beta.ppf(1 - alpha / 2, 1 + 1, 1000 - 1)
    tpr_low = beta.ppf(alpha / 2, 999, 1000 - 999 + 1)
    fpr_high = beta.ppf(1 - alpha / 2, 100 + 1, 1000 - 100)
    expected = max(math.log(tnr_low / fnr_high), math.log(tpr_low / fpr_high))
    assert expected == pytest.approx(math.log(tnr_low / fnr_high))  # the TNR / FNR side decides
    rule = choose_rule(roc(scores, is_member), 1000, 1000)  # calibration: the same rates
    assert rule.side == "non-members" and rule.threshold == 1.0
    assert epsilon_lower_bound(rule, scores, is_member) == pytest.approx(expected, rel=1e-9)
    assert expected > 5.0


def test_ppv_at_a_prior_is_not_measurable_without_a_false_positive():
    from pipeline.measures.roc import ppv_at_prior

    assert ppv_at_prior(0.1, 0.01, 0.01) == pytest.approx(0.001 / (0.001 + 0.0099))
    assert ppv_at_prior(0.1, 0.01, 0.1) == pytest.approx(0.01 / (0.01 + 0.009))
    assert ppv_at_prior(0.003, 0.0, 0.01) is None


def test_roc_auc_reads_0_1_labels_as_membership() -> None:
    """Labels as 0/1 integers (as read from a CSV or NPZ) give the AUC of the same booleans, not an index."""
    rng = np.random.default_rng(5)
    s, y = rng.normal(size=40), np.arange(40) % 3 == 0
    assert roc_auc(y.astype(np.int64), s) == roc_auc(y, s) == pytest.approx(np.mean(s[y][:, None] > s[~y][None]), abs=1e-12)


def test_best_threshold_separates_scores_one_float_apart() -> None:
    """Halfway between adjacent doubles rounds to one of them: it must never round down onto a non-member's score."""
    upper = np.nextafter(1.0, 2.0)  # odd last bit: the halfway point rounds (to even) down to 1.0
    t = best_threshold(np.r_[np.full(5, upper), np.full(5, 1.0)], np.r_[np.ones(5, bool), np.zeros(5, bool)])
    assert t == upper  # members (>= t) in, the non-members at 1.0 out


def test_shadow_objective_counts_an_unmeasurable_tpr_as_minus_one() -> None:
    """Under 100 shadow non-members TPR at 1% FPR is not measurable: the worst value, so the AUC decides."""
    few = scores([3.0, 2.0, 1.0], [0.0, -1.0])
    assert shadow_objective(few, "tpr_at_1pct_fpr") == (-1.0, 1.0)
    assert shadow_objective(few, "auc") == (1.0, 1.0)


def test_the_members_side_wins_a_tie_with_the_non_members_side() -> None:
    """A calibration ROC symmetric under swapping the classes (non-member scores mirror the members'): equal best bounds."""
    members = np.random.default_rng(9).normal(1.0, 1.0, 60)
    curve = roc(np.r_[members, -members], np.r_[np.ones(60, bool), np.zeros(60, bool)])
    sides = side_bounds(np.round(curve.tpr * 60), np.round(curve.fpr * 60), 60, 60, 0.95, 0.0)
    assert sides.members.max() == sides.nonmembers.max() > 0  # the tie the rule must break
    assert choose_rule(curve, 60, 60).side == "members"
