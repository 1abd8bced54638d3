"""Known-answer tests of the reported numbers: each fails on a one-line bug that would change one (docs/mutation-testing.md).

Every expected value is a closed form worked out here (binomial and beta
quantiles from scipy, hand counts on tiny synthetic data), never a number
copied from the code's own output.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import beta, binom

from pipeline.attacks.audit import Audit, dp_violation_counts, evaluate_all, headline_epsilon_bound, headline_summary
from pipeline.canaries.audit import CanaryRun, CanarySet, audit_run, audit_summary, score_run
from pipeline.core.seeding import derive_seed
from pipeline.core.types import AttackResult, AttackScores
from pipeline.defenses.base import DefendedModels, TrainingJob
from pipeline.measures import one_run
from pipeline.measures.intervals import bootstrap_intervals, tpr_at_false_positives
from pipeline.measures.roc import evaluate, low_fpr_threshold, metrics_to_dict, most_exposed, ppv_at_prior, roc


def _scores(members, nonmembers) -> AttackScores:
    s = np.r_[np.asarray(members, float), np.asarray(nonmembers, float)]
    y = np.r_[np.ones(len(members), bool), np.zeros(len(nonmembers), bool)]
    return AttackScores(s, y, np.zeros(s.size, np.int64))


def _cp_low(k: int, n: int, confidence: float) -> float:
    """Clopper-Pearson lower limit of the two-sided interval, from scipy's beta directly."""
    return 0.0 if k == 0 else float(beta.ppf((1 - confidence) / 2, k, n - k + 1))


def _cp_high(k: int, n: int, confidence: float) -> float:
    return 1.0 if k == n else float(beta.ppf(1 - (1 - confidence) / 2, k + 1, n - k))


# --------------------------------------------------------------------------
# Rates the report shows: PPV at a prior, the 1%-FPR calls, TPR at one false positive


def test_ppv_at_a_prior_is_bayes_rule() -> None:
    """pi TPR / (pi TPR + (1 - pi) FPR): at prior 10%, TPR 0.5 and FPR 1% give 0.05 / 0.059."""
    assert ppv_at_prior(0.5, 0.01, 0.1) == pytest.approx(0.05 / 0.059, rel=1e-12)
    assert ppv_at_prior(0.3, 0.2, 0.5) == pytest.approx(0.6, rel=1e-12)
    assert ppv_at_prior(0.5, 0.0, 0.1) is None


def test_call_rates_use_the_calibration_threshold_for_one_percent_fpr() -> None:
    """Calibration: non-members 0..99, members 50..149. At most one non-member (1%) may be called,
    so the call threshold is 99 (its tie group: one non-member, 51 members). The target's calls are
    its scores >= 99: 3 of 5 members and 2 of 52 non-members; PPV at each prior follows Bayes' rule.
    """
    calibration = _scores(np.arange(50.0, 150.0), np.arange(100.0))
    assert low_fpr_threshold(roc(calibration.scores, calibration.is_member)) == 99.0
    target = _scores([95.0, 98.0, 99.0, 100.0, 120.0], np.r_[np.arange(0.0, 100.0, 2.0), 99.0, 105.0])
    m = evaluate(AttackResult("a", target, calibration), n_resamples=10)
    assert (m.call_tpr, m.call_fpr) == (3 / 5, 2 / 52)
    row = metrics_to_dict(m)
    for prior, key in ((0.01, "ppv_at_1pct_prior"), (0.1, "ppv_at_10pct_prior")):
        assert row[key] == pytest.approx(prior * 0.6 / (prior * 0.6 + (1 - prior) * 2 / 52), rel=1e-12)
    assert (row["call_tpr"], row["call_fpr"]) == (3 / 5, 2 / 52)


def test_tpr_at_one_false_positive_counts_members_above_the_second_highest_non_member() -> None:
    """Non-members 0..9: one false positive (9) allows calling every score above 8; members 8.5 to 11, 4 of 5."""
    m = evaluate(AttackResult("a", _scores([5.5, 8.5, 9.5, 10.0, 11.0], np.arange(10.0)), _scores([1.0], [0.0])))
    assert m.tpr_at_lowest_fpr == 4 / 5
    row = metrics_to_dict(m)
    assert row["tpr_at_lowest_fpr"] == 4 / 5 and row["lowest_fpr"] == 1 / 10
    assert set(m.intervals) == {"auc", "tpr_at_lowest_fpr"}  # 1% of 10 non-members is not one whole false positive


def test_fpr_levels_get_interval_keys_once_they_allow_a_whole_false_positive() -> None:
    """n = 1000 non-members: 1% allows 10, 0.1% allows 1, 0.01% none (no key, no interval)."""
    rng = np.random.default_rng(4)
    m = evaluate(AttackResult("a", _scores(rng.normal(1, 1, 50), rng.normal(0, 1, 1000)), _scores([1.0], [0.0])), n_resamples=20)
    assert set(m.intervals) == {"auc", "tpr_at_1pct_fpr", "tpr_at_0.1pct_fpr", "tpr_at_lowest_fpr"}
    # 0.1% of 1000 is one false positive: the same operating point as the lowest FPR, with the same interval
    assert m.intervals["tpr_at_0.1pct_fpr"] == m.intervals["tpr_at_lowest_fpr"]


def test_tpr_at_false_positives_is_the_share_strictly_above_the_next_non_member() -> None:
    members = np.array([[5.0, 4.0, 3.0, 1.0], [2.0, 2.0, 2.0, 2.0]])
    nonmembers = np.array([[4.0, 3.0, 0.0], [2.0, 1.0, 0.0]])
    # row 0: k=0 -> above 4: {5}; k=1 -> above 3: {5, 4}; k=2 -> above 0: all; k=3 >= n_n: everything
    assert tpr_at_false_positives(members, nonmembers, 0).tolist() == [0.25, 0.0]  # row 1: ties are not above
    assert tpr_at_false_positives(members, nonmembers, 1).tolist() == [0.5, 1.0]
    assert tpr_at_false_positives(members[:, 1:], nonmembers, 1).tolist() == [1 / 3, 1.0]
    assert tpr_at_false_positives(members, nonmembers, 2).tolist() == [1.0, 1.0]
    assert tpr_at_false_positives(members, nonmembers, 3).tolist() == [1.0, 1.0]


# --------------------------------------------------------------------------
# Interval levels: the bootstrap of a statistic whose resampling law is known


def test_bootstrap_interval_has_the_binomial_quantiles_of_its_level() -> None:
    """One member at 0.5, n non-members half at 0 and half at 1: a resample's AUC is the share of
    zeros drawn, Binomial(n, 1/2) / n exactly, so the interval's ends are that law's quantiles at
    (1 -/+ confidence) / 2, up to the resampling error of B draws (a fraction of the gap between levels).
    """
    n, n_resamples = 2000, 4000
    scores = np.r_[0.5, np.zeros(n // 2), np.ones(n // 2)]
    is_member = np.r_[True, np.zeros(n, bool)]
    for confidence in (0.95, 0.8):
        low, high = bootstrap_intervals(scores, is_member, {}, seed=0, n_resamples=n_resamples, confidence=confidence)["auc"]
        tail = (1 - confidence) / 2
        exact_low, exact_high = binom.ppf(tail, n, 0.5) / n, binom.ppf(1 - tail, n, 0.5) / n
        assert abs(low - exact_low) < 2.5 / n and abs(high - exact_high) < 2.5 / n, (confidence, low, high)
    low, high = bootstrap_intervals(scores, is_member, {}, seed=0, n_resamples=101, confidence=0.0)["auc"]
    assert low == high  # a 0% interval is the median alone


def test_bootstrap_tpr_interval_covers_the_true_rate_at_its_level() -> None:
    """Members N(2, 1), non-members N(0, 1); at k = 2 false positives of 200, the true TPR is the member
    tail above the non-members' (k+1)/n quantile. Over 200 trials each end misses about 2.5%."""
    from scipy.stats import norm

    rng = np.random.default_rng(11)
    n, k, trials = 200, 2, 200
    true_tpr = norm.sf(norm.isf((k + 1) / (n + 1)) - 2.0)
    below = above = 0
    for _ in range(trials):
        s = np.r_[rng.normal(2, 1, n), rng.normal(0, 1, n)]
        y = np.r_[np.ones(n, bool), np.zeros(n, bool)]
        low, high = bootstrap_intervals(s, y, {"t": k}, seed=int(rng.integers(1 << 30)), n_resamples=200)["t"]
        below += high < true_tpr
        above += low > true_tpr
    most = binom.ppf(0.999, trials, 0.025) + 4  # the percentile bootstrap of a quantile is a little off its level
    assert below <= most and above <= most
    assert below + above >= binom.ppf(0.001, trials, 0.05) - 4  # and it is not wider than 95%


# --------------------------------------------------------------------------
# Epsilon bounds at nonzero delta: per attack, the headline, the DP violation count

# Scores of one attack: 900 of 1000 members and 100 of 1000 non-members at 1, the rest at 0.
_STEP = _scores(np.r_[np.ones(900), np.zeros(100)], np.r_[np.ones(100), np.zeros(900)])


def _step_bound(confidence: float, delta: float) -> float:
    """log((TPR_lo - delta) / FPR_hi) at threshold 1 (both sides are the same by symmetry)."""
    return math.log((_cp_low(900, 1000, confidence) - delta) / _cp_high(100, 1000, confidence))


@pytest.mark.parametrize("delta", [0.0, 0.1, 0.2])
def test_per_attack_and_headline_bounds_at_a_nonzero_delta(delta: float) -> None:
    results = {name: AttackResult(name, _STEP, _STEP) for name in ("a", "b", "c")}
    metrics = evaluate_all(results, seed=0, n_resamples=10, delta=delta)
    each = 1 - 0.05 / 3  # Bonferroni over the three attacks shown
    for m in metrics.values():
        assert m.epsilon_lb_confidence == each
        assert m.epsilon_lb == pytest.approx(_step_bound(each, delta), rel=1e-9)
    assert headline_epsilon_bound(results["a"], delta) == pytest.approx(_step_bound(0.95, delta), rel=1e-9)
    audit = Audit(results, metrics, delta)
    summary = headline_summary(audit, audit.metrics_dict(), "auc")
    assert summary["epsilon_lb_95"] == pytest.approx(_step_bound(0.95, delta), rel=1e-9)
    assert summary["epsilon_lb_any_attack"]["value"] == pytest.approx(_step_bound(each, delta), rel=1e-9)


def test_the_delta_reaches_the_bound_through_evaluate() -> None:
    m = evaluate(AttackResult("a", _STEP, _STEP), n_resamples=10, delta=0.15, confidence=0.9)
    assert m.epsilon_lb == pytest.approx(_step_bound(0.9, 0.15), rel=1e-9)


def _violations(tp: int, fp: int, n: int, eps: float, delta: float) -> int:
    """Inequalities of (eps, delta)-DP that the ROC point (tp, fp) of n members and n non-members breaks."""
    tpr_side = _cp_low(tp, n, 0.95) > math.exp(eps) * _cp_high(fp, n, 0.95) + delta
    tnr_side = _cp_low(n - fp, n, 0.95) > math.exp(eps) * _cp_high(n - tp, n, 0.95) + delta
    return int(tpr_side) + int(tnr_side)


@pytest.mark.parametrize("delta", [0.0, 0.45, 0.6])
def test_dp_violation_count_at_a_nonzero_delta(delta: float) -> None:
    """ROC of 900/1000 members and 50/1000 non-members above the threshold; at eps = 1.5 both sides
    break the guarantee at delta 0, only the TPR side at 0.45, neither at 0.6."""
    target = _scores(np.r_[np.ones(900), np.zeros(100)], np.r_[np.ones(50), np.zeros(950)])
    audit = Audit({"a": AttackResult("a", target, target)}, {}, delta)
    expected = _violations(900, 50, 1000, 1.5, delta)
    assert dp_violation_counts(audit, 1.5, delta) == {"a": expected}
    assert expected == {0.0: 2, 0.45: 1, 0.6: 0}[delta]  # the case is the one described


# --------------------------------------------------------------------------
# The one-run bound: several scores, its search range


def _perfect_bound(k: int, level: float) -> float:
    """delta = 0 and k right of k: the largest eps with p^k < level, p = e^eps / (1 + e^eps)."""
    p = level ** (1 / k)
    return math.log(p / (1 - p))


def test_canary_audit_corrects_across_scores_and_guess_counts() -> None:
    """Two scores, a grid of two guess counts: every bound is at level 0.05 / (2 * 2)."""
    included = np.r_[np.ones(100, bool), np.zeros(100, bool)]
    perfect = included.astype(float)
    plan = {"dp_noise_multiplier": 2.0, "dp_sampling_rate": 0.1, "dp_steps": 50.0, "dp_clip_norm": 1.0}
    run = CanaryRun({"black_box": (perfect, included), "white_box": (perfect[::-1].copy(), included)}, {"test_accuracy": 0.5, **plan})
    audits = audit_run(run, [20, 60], delta=0.0)
    expected = _perfect_bound(60, 0.05 / 4)
    assert audits["black_box"].epsilon_lb == pytest.approx(expected, rel=1e-9)
    assert audits["black_box"].best.k == 60 and audits["black_box"].best.correct == 60
    assert audits["white_box"].epsilon_lb == 0.0  # reversed scores get every guess wrong
    summary = audit_summary(run, audits, "ood", accounted=expected - 1e-6)
    assert summary["best_score"] == "black_box" and summary["exceeds_accounted"] is True
    assert summary["epsilon_lb"] == pytest.approx(expected, rel=1e-9)
    assert summary["black_box"]["included"] == 100 and summary["white_box"]["epsilon_lb"] == 0.0
    assert summary["dp_noise_multiplier"] == 2.0 and summary["dp_steps"] == 50.0
    assert audit_summary(run, audits, "ood", accounted=expected + 1e-6)["exceeds_accounted"] is False
    assert [level["k"] for level in summary["black_box"]["levels"]] == [20, 60]
    alone = audit_run(CanaryRun({"black_box": (perfect, included)}, {}), [20, 60], delta=0.0)
    assert alone["black_box"].epsilon_lb == pytest.approx(_perfect_bound(60, 0.05 / 2), rel=1e-9)
    at_90 = audit_run(run, [20, 60], delta=0.0, confidence=0.9)
    assert at_90["black_box"].epsilon_lb == pytest.approx(_perfect_bound(60, 0.1 / 4), rel=1e-9)
    assert at_90["black_box"].confidence == 0.9


def test_one_run_bound_far_above_the_usual_range_is_found() -> None:
    """10^5 right of 10^5 guesses certify eps = logit(0.05^(1e-5)), about 10.4: inside the search range."""
    m = 100_000
    assert one_run.epsilon_lower_bound(m, m, m, 0.0) == pytest.approx(_perfect_bound(m, 0.05), rel=1e-9)
    assert one_run.epsilon_lower_bound(200, 200, 200, 0.0) == pytest.approx(_perfect_bound(200, 0.05), rel=1e-9)


# --------------------------------------------------------------------------
# The canary score: minus the loss at the canary's own label, per canary


def test_black_box_canary_score_is_the_log_probability_of_each_canarys_label() -> None:
    """Logits chosen so that a wrong axis, a wrong label or a wrong model changes the score."""
    logits = np.array([[[0.0, 1.0, 2.0], [3.0, 0.0, 0.0], [900.0, 901.0, 905.0], [1.0, 2.0, 4.0]]])  # (K=1, 4 canaries, 3 classes)
    other = logits + np.array([1.0, 0.0, -1.0])  # a second model whose scores differ
    table = np.concatenate([logits, other])
    canaries = CanarySet(x=np.arange(4.0)[:, None], y=np.array([2, 0, 1, 1]), included=np.array([True, False, True, False]))

    def observe(x: np.ndarray) -> np.ndarray:
        return table[:, x[:, 0].astype(int)]

    job = TrainingJob(None, None, canaries.x, canaries.y, np.ones((1, 4), bool), 0, eval_data=(np.arange(4.0)[:, None], np.array([2, 0, 2, 0])))
    released = DefendedModels(lambda x: observe(x).astype(np.float32), lambda k: None, {}, {"dp_epsilon": 2.0})
    table = table.astype(np.float32).astype(np.float64)  # what a model releases: float32 logits, scored in float64
    logits = table[:1]
    gradient = (np.array([0.25, -1.5], np.float32), np.array([1, 0]))  # white-box scores and coins as a trainer returns them
    run = score_run(released, job, canaries, gradient)
    white, coins = run.scores["white_box"]
    assert white.dtype == np.float64 and white.tolist() == [0.25, -1.5] and coins.dtype == bool and coins.tolist() == [True, False]
    scores, included = run.scores["black_box"]
    expected = [logits[0, i, c] - logits[0, i].max() - np.log(np.exp(logits[0, i] - logits[0, i].max()).sum()) for i, c in enumerate(canaries.y)]
    np.testing.assert_allclose(scores, expected, rtol=1e-12)
    assert np.array_equal(included, canaries.included)
    assert run.info == {"dp_epsilon": 2.0, "test_accuracy": 0.75}  # argmax over classes: 2, 0, 2, 2


# --------------------------------------------------------------------------
# The attacker's data: disjoint masks and one seed per shard, for any number of models and shards


def _fake_training(jobs: list[TrainingJob], n_classes: int = 3):
    """A trainer that records its jobs and releases constant logits (no training: the masks are under test)."""

    def train(job: TrainingJob) -> DefendedModels:
        jobs.append(job)
        k = len(job.keep)

        def observe(x: np.ndarray) -> np.ndarray:  # the first features as logits: labels move with perturbations
            return np.broadcast_to(x[:, :n_classes], (k, len(x), n_classes)).astype(np.float32)

        return DefendedModels(observe, lambda i: None, {}, {"dp_epsilon": 1.0})

    return train


@pytest.mark.parametrize("n_models, shard_size", [(64, 16), (8, 3), (4, 2), (6, 6)])
def test_attacker_masks_stay_disjoint_and_every_shard_gets_its_own_seed(n_models: int, shard_size: int) -> None:
    from pipeline.config import ComputeParams
    from pipeline.core.types import Dataset, Splits
    from pipeline.training.attacker import ModelSet, train_reference, train_shadows

    rng = np.random.default_rng(0)
    n = 200
    dataset = Dataset(rng.normal(size=(n, 4)).astype(np.float32), rng.integers(0, 3, n), 3, "synthetic")
    idx = rng.permutation(n)
    splits = Splits(idx[:20], idx[20:40], idx[40:60], idx[60:180], idx[180:])  # 20 members, pool of 120, 20 defender rows
    compute = ComputeParams(shard_size=shard_size)
    for tag, train_set in (("reference", train_reference), ("shadows", train_shadows)):
        jobs: list[TrainingJob] = []
        out = train_set(dataset, splits, ModelSet(None, None, _fake_training(jobs), n_models, 7, tag, compute))
        signals = out[0] if tag == "shadows" else out
        scored = splits.shadow_pool if tag == "shadows" else splits.candidates
        assert signals.logits.shape == (n_models, len(scored), 3) and np.array_equal(signals.index, scored)
        assert np.array_equal(signals.labels, dataset.y[scored]) and signals.keep.shape == (n_models, len(scored))
        if len(jobs) == 1:  # one shard trains with the set's own seed, whatever the shard size
            assert jobs[0].seed == derive_seed(7, tag, "train")
        if tag == "shadows":  # label robustness of every shadow on the pool's perturbed copies, reproducibly
            robustness = out[2].robustness
            assert robustness.shape[1:] == (n_models, 120) and 0 < robustness.mean() < 1
            again = train_set(dataset, splits, ModelSet(None, None, _fake_training([]), n_models, 7, tag, compute))
            assert np.array_equal(again[2].robustness, robustness)
        keep = np.concatenate([job.keep for job in jobs])
        defender = np.concatenate([job.defender for job in jobs])
        assert len(jobs) == -(-n_models // shard_size)
        assert len({job.seed for job in jobs}) == len(jobs)  # shards train on distinct seeds
        assert keep.shape[0] == n_models and (keep.sum(axis=1) == 20).all() and (defender.sum(axis=1) == 20).all()
        assert not np.any(keep & defender)
        assert not np.any(keep[0::2] & keep[1::2])  # the two models of a pair train on disjoint sets
        if tag == "reference":
            assert (keep[:, :40].sum(axis=0) == n_models // 2).all()  # every candidate IN for exactly half
            assert not keep[:, 40:].any() and not defender[:, :40].any()  # defender data from the pool only
        else:
            assert (keep.sum(axis=0) <= n_models // 2).all()
    small_pool = Splits(idx[:20], idx[20:40], idx[40:60], idx[60:80], idx[80:100])  # the pool is exactly the defender data
    jobs = []
    train_reference(dataset, small_pool, ModelSet(None, None, _fake_training(jobs), 2, 7, "reference", compute))
    assert np.concatenate([job.defender for job in jobs])[:, 40:].all()  # every pool point is eligible, the first too


def test_attacker_model_sets_of_one_seed_but_different_tags_are_independent() -> None:
    """Shadows of two defenses share the run's seed: their tags must keep their keep draws and training seeds apart."""
    from pipeline.core.types import Dataset, Splits
    from pipeline.training.attacker import ModelSet, train_shadows

    rng = np.random.default_rng(1)
    dataset = Dataset(rng.normal(size=(120, 4)).astype(np.float32), rng.integers(0, 3, 120), 3, "synthetic")
    splits = Splits(np.arange(10), np.arange(10, 20), np.arange(20, 30), np.arange(30, 110), np.arange(110, 120))
    jobs: dict[str, list[TrainingJob]] = {"shadows-a": [], "shadows-b": []}
    for tag, recorded in jobs.items():
        train_shadows(dataset, splits, ModelSet(None, None, _fake_training(recorded), 4, 7, tag))
    a, b = jobs["shadows-a"][0], jobs["shadows-b"][0]
    assert a.seed != b.seed and not np.array_equal(a.keep, b.keep)


def test_the_ray_backend_gets_the_task_the_shared_data_every_shard_and_the_label(monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.config import ComputeParams
    from pipeline.training import compute

    calls = []
    monkeypatch.setattr(compute, "_on_ray", lambda *args: calls.append(args) or ["done"])
    settings = ComputeParams(backend="ray")
    task = object()
    assert compute.run_shards(task, "shared", [1, 2], settings, "reference") == ["done"]
    assert calls == [(task, "shared", [1, 2], settings, "reference")]


# --------------------------------------------------------------------------
# What the report reads: the flat row, the exposed members, the headline's choice


def test_metrics_row_carries_every_number_under_its_own_key() -> None:
    rng = np.random.default_rng(5)
    labels = np.r_[np.zeros(150, np.int64), np.ones(150, np.int64), np.zeros(150, np.int64), np.ones(150, np.int64)]
    target = AttackScores(np.r_[rng.normal(1, 1, 300), rng.normal(0, 1, 300)], np.r_[np.ones(300, bool), np.zeros(300, bool)], labels)
    m = evaluate(AttackResult("a", target, _scores(rng.normal(1, 1, 300), rng.normal(0, 1, 300))), n_resamples=30)
    row = metrics_to_dict(m)
    for key in ("auc", "advantage", "balanced_accuracy", "threshold", "ppv", "epsilon_lb", "epsilon_lb_confidence",
                "tpr_at_lowest_fpr", "shadow_auc", "shadow_tpr_at_1pct_fpr", "call_tpr", "call_fpr"):  # fmt: skip
        assert row[key] == getattr(m, key), key
    assert row["tpr_at_1pct_fpr"] == m.tpr_at_fpr[0.01] and row["tpr_at_0.01pct_fpr"] is None
    assert row["lowest_fpr"] == 1 / 300 and (row["n_members"], row["n_nonmembers"]) == (300, 300)
    assert (row["auc_class_0"], row["auc_class_1"]) == (m.auc_per_class[0], m.auc_per_class[1])
    for key, (low, high) in m.intervals.items():
        assert (row[f"{key}_ci_low"], row[f"{key}_ci_high"]) == (low, high) and low < high
    assert list(row)[7:10] == ["tpr_at_1pct_fpr", "tpr_at_0.1pct_fpr", "tpr_at_0.01pct_fpr"]  # highest FPR first


def test_most_exposed_lists_tied_members_in_dataset_order_with_their_false_alarm_rate() -> None:
    scores = AttackScores(np.array([2, 5, 5, 1, 5, 3, 4]), np.array([1, 1, 1, 0, 1, 0, 0]), np.array([0, 1, 2, 0, 1, 2, 0]))
    rows = most_exposed(scores, np.array([10, 11, 12, 13, 14, 15, 16]), top=4)
    assert [r["index"] for r in rows] == [11, 12, 14, 10]  # ties keep their order
    assert [r["fpr_at_score"] for r in rows] == [0.0, 0.0, 0.0, 2 / 3]  # non-members scoring >= 2: 3 and 4
    assert rows[0]["label"] == 1 and rows[0]["score"] == 5.0
    assert len(most_exposed(scores, np.arange(7))) == 4  # top 10 of 4 members
    many = AttackScores(np.r_[np.random.default_rng(0).integers(0, 3, 20), 9.0], np.r_[np.ones(20, bool), False], np.zeros(21, np.int64))
    rows = most_exposed(many, np.arange(21), top=20)
    keys = [(-r["score"], r["index"]) for r in rows]
    assert keys == sorted(keys)  # highest first, and tied members in dataset order
    assert len(most_exposed(many, np.arange(21))) == 10  # ten by default
    alone = most_exposed(AttackScores(np.array([1.0, 2.0]), np.array([True, True]), np.zeros(2, np.int64)), np.arange(2))
    assert [r["fpr_at_score"] for r in alone] == [None, None]  # no non-member to compare with


def test_the_headline_is_chosen_by_the_objective_asked_for() -> None:
    """On shadows, "auc_best" has the higher AUC and "tpr_best" the higher TPR at 1% FPR."""
    rng = np.random.default_rng(6)
    auc_best = _scores(rng.normal(1.5, 1, 1000), rng.normal(0, 1, 1000))
    tpr_best = _scores(np.r_[rng.normal(8, 1, 300), rng.normal(0, 1, 700)], rng.normal(0, 1, 1000))
    results = {"auc_best": AttackResult("auc_best", auc_best, auc_best), "tpr_best": AttackResult("tpr_best", tpr_best, tpr_best)}
    from pipeline.attacks.audit import choose_headline

    assert choose_headline(results, "auc")[0] == "auc_best"
    assert choose_headline(results, "tpr_at_1pct_fpr")[0] == "tpr_best"


def test_bootstrap_seeds_are_reproducible_and_differ_between_attacks() -> None:
    results = {name: AttackResult(name, _STEP, _STEP) for name in ("a", "b")}
    first, again = evaluate_all(results, seed=3, n_resamples=50), evaluate_all(results, seed=3, n_resamples=50)
    assert first["a"].intervals == again["a"].intervals


def test_top3_features_are_the_three_largest_probabilities_in_order() -> None:
    from pipeline.attacks.shadow_classifier import top3_sorted

    logits = np.log(np.array([[[0.1, 0.4, 0.2, 0.3]]]))
    np.testing.assert_allclose(top3_sorted(logits), [[[0.4, 0.3, 0.2]]], rtol=1e-12)


def test_rmia_keeps_the_first_a_of_the_grid_when_every_a_ties() -> None:
    """Separable shadows: every a scores TPR 1 and AUC 1, so the first grid value stays."""
    from pipeline.attacks.rmia import tune_offline_a

    keep = np.zeros((4, 40), bool)
    keep[0, :20] = keep[1, 20:] = keep[2, :20] = keep[3, 20:] = True
    logp = np.where(keep, -0.01, -5.0) + np.random.default_rng(0).normal(0, 0.001, keep.shape)
    for tune_for in ("auc", "tpr_at_1pct_fpr"):
        a, _ = tune_offline_a(logp, keep, np.zeros(40, np.int64), 1.0, tune_for, grid=(0.3, 0.5, 0.9))
        assert a == 0.3


def test_headline_summary_names_the_shadow_choice_and_the_post_hoc_maxima() -> None:
    rng = np.random.default_rng(7)
    weak, strong = _scores(rng.normal(0.3, 1, 400), rng.normal(0, 1, 400)), _scores(rng.normal(2, 1, 400), rng.normal(0, 1, 400))
    results = {"chosen": AttackResult("chosen", weak, strong), "a_lucky": AttackResult("a_lucky", strong, weak)}  # not first by name
    audit = Audit(results, evaluate_all(results, seed=0, n_resamples=10))
    rows = audit.metrics_dict()
    summary = headline_summary(audit, rows, "auc")
    assert set(summary) == {"attack", "chosen_by", "shadow_objective", "metrics", "epsilon_lb_95", "epsilon_lb_any_attack", "optimistic"}
    assert summary["attack"] == "chosen" and summary["chosen_by"] == "auc on shadow data"
    assert summary["metrics"] == rows["chosen"] and summary["shadow_objective"] == rows["chosen"]["shadow_auc"]
    assert summary["epsilon_lb_any_attack"] == {"attack": "a_lucky", "value": rows["a_lucky"]["epsilon_lb"]}
    for key in ("auc", "tpr_at_1pct_fpr", "tpr_at_lowest_fpr"):
        assert summary["optimistic"][key] == {"attack": "a_lucky", "value": rows["a_lucky"][key]}
    tpr_summary = headline_summary(audit, rows, "tpr_at_1pct_fpr")
    assert tpr_summary["shadow_objective"] == rows["chosen"]["shadow_tpr_at_1pct_fpr"]
    nothing = {name: {**row, "epsilon_lb": 0.0} for name, row in rows.items()}
    assert headline_summary(audit, nothing, "auc")["epsilon_lb_any_attack"] == {"attack": None, "value": None}


def test_run_attacks_evaluates_every_enabled_attack_at_the_targets_delta() -> None:
    """Two deterministic attacks on a two-class toy: a member's true-class logit is 3 higher."""
    from pipeline.attacks.audit import run_attacks
    from pipeline.attacks.registry import attack_params
    from pipeline.core.types import AttackInput, Signals

    rng = np.random.default_rng(8)

    def signals(keep: np.ndarray) -> Signals:
        labels = rng.integers(0, 2, keep.shape[1])
        z = rng.normal(0, 1, (*keep.shape, 2))
        z[:, np.arange(keep.shape[1]), labels] += 3.0 * keep
        return Signals(z.astype(np.float32), keep, labels, np.arange(keep.shape[1]))

    shadow = signals(rng.random((4, 200)) < 0.5)
    target = signals((np.arange(200) < 100)[None])
    data = AttackInput(shadow, target, np.zeros((4, 200, 2), np.float32))
    params = attack_params({"enabled": ["loss_threshold", "metric_confidence"]})
    audit = run_attacks(data, params, seed=1, delta=0.05)
    assert list(audit.results) == ["loss_threshold", "metric_confidence"] and audit.delta == 0.05
    assert run_attacks(data, params, seed=1).delta == 0.0  # an undefended target: no delta
    seeded = attack_params({"enabled": ["ml_leaks"], "shadow_classifier": {"classifier": "logistic_regression"}})
    first, again = run_attacks(data, seeded, seed=1), run_attacks(data, seeded, seed=1)  # a random attack reproduces
    assert np.array_equal(first.results["ml_leaks"].target.scores, again.results["ml_leaks"].target.scores)
    expected = evaluate_all(audit.results, 1, delta=0.05)
    for name in audit.results:
        assert audit.metrics[name] == expected[name]
    assert 0 < audit.metrics["loss_threshold"].epsilon_lb < evaluate_all(audit.results, 1)["loss_threshold"].epsilon_lb


def test_a_bound_equal_to_the_accounted_epsilon_does_not_exceed_it() -> None:
    included = np.r_[np.ones(50, bool), np.zeros(50, bool)]
    run = CanaryRun({"black_box": (included.astype(float), included)}, {"test_accuracy": 1.0, "dp_noise_multiplier": 1.0,
                    "dp_sampling_rate": 0.5, "dp_steps": 4.0, "dp_clip_norm": 1.0})  # fmt: skip
    audits = audit_run(run, [40], delta=0.0)
    summary = audit_summary(run, audits, "mislabeled", accounted=audits["black_box"].epsilon_lb)
    assert summary["exceeds_accounted"] is False and summary["dp_epsilon"] == audits["black_box"].epsilon_lb
    assert summary["kind"] == "mislabeled" and summary["test_accuracy"] == 1.0 and summary["confidence"] == 0.95
    level = summary["black_box"]["levels"][0]
    assert level == {"k": 40, "correct": 40, "epsilon_lb": audits["black_box"].epsilon_lb}
    assert summary["black_box"]["k"] == 40 and summary["black_box"]["m"] == 100 and summary["delta"] == 0.0


@pytest.mark.parametrize("fixed_variance", [True, False])
def test_offline_lira_scores_are_the_out_gaussian_tail_with_the_asked_variance(fixed_variance: bool) -> None:
    """Two classes, label 1, logits (0, z): phi = z exactly. Candidate A's OUT phis are 0, 1, 2, 3 (mean 1.5,
    variance 5/3), B's 0, 0, 0, 4 (mean 1, variance 4); pooled, 17/6. Both candidates score phi = 3."""
    from scipy.stats import norm

    from pipeline.attacks import lira
    from pipeline.attacks.registry import attack_params
    from pipeline.core.types import AttackInput, Signals

    def logits(phis: np.ndarray) -> np.ndarray:
        return np.stack([np.zeros_like(phis), phis], axis=-1).astype(np.float32)

    out_phi = np.array([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0], [3.0, 4.0]])
    rng = np.random.default_rng(9)
    keep = np.array([[1, 0, 1, 0, 1, 0], [0, 1, 0, 1, 0, 1]] * 2, bool)
    shadow = Signals(logits(rng.normal(0, 1, (4, 6)) + keep), keep, np.ones(6, np.int64), np.arange(6))
    target = Signals(logits(np.array([[3.0, 3.0]])), np.array([[True, False]]), np.ones(2, np.int64), np.arange(2))
    data = AttackInput(shadow, target, logits(out_phi))
    result = lira.run(data, attack_params({"enabled": ["lira_offline"], "lira": {"fixed_variance": fixed_variance}}), 0)
    sd = np.sqrt([17 / 6, 17 / 6]) if fixed_variance else np.sqrt([5 / 3, 4.0])
    np.testing.assert_allclose(result.target.scores, -norm.logsf(3.0, [1.5, 1.0], sd), rtol=1e-6)
    other = lira.run(data, attack_params({"enabled": ["lira_offline"], "lira": {"fixed_variance": not fixed_variance}}), 0)
    assert not np.allclose(result.calibration.scores, other.calibration.scores)  # the setting reaches the calibration too


def test_statistics_of_float32_logits_are_computed_in_float64() -> None:
    """Saved logits are float32; every statistic casts them to float64 first, so it equals the float64 input's."""
    from pipeline.attacks import metric, statistics

    z = np.array([[30.123, 1.7, -4.3], [0.1, 0.2, 0.3], [-12.5, 7.75, 7.7501]], np.float32)
    labels = np.array([0, 2, 1])
    for f in (statistics.log_softmax, statistics.log1m_softmax, statistics.softmax):
        assert np.array_equal(f(z), f(z.astype(np.float64))), f.__name__
    for f in (statistics.log_true_prob, statistics.phi, metric.confidence, metric.neg_entropy, metric.neg_modified_entropy):
        assert np.array_equal(f(z, labels), f(z.astype(np.float64), labels)), f.__name__


def test_splits_around_a_model_refuse_a_defender_split_the_pool_cannot_spare() -> None:
    from pipeline.config import DataParams
    from pipeline.core.errors import PipelineError
    from pipeline.datasets.splits import make_splits

    trained = np.zeros(100, bool)
    trained[:10] = True
    params = DataParams(n_members=1, n_test=5, n_shadow_pool=20, n_defender_reference=11)
    with pytest.raises(PipelineError, match=r"^data.n_defender_reference: must be at most n_shadow_pool - 10 marked rows = 10 \(got 11\)$"):
        make_splits(100, params, np.random.default_rng(0), trained)
    params = DataParams(n_members=1, n_test=40, n_shadow_pool=30, n_defender_reference=20)
    with pytest.raises(PipelineError) as info:
        make_splits(100, params, np.random.default_rng(0), trained)
    assert "(10 non-members (= the marked rows) + 40 n_test + 30 n_shadow_pool + 20 n_defender_reference)" in str(info.value)
    with pytest.raises(PipelineError, match=r"\(3 n_members \+ 3 non-members \(= n_members\) \+ 40 n_test \+ 30 n_shadow_pool \+ 20 n_defender_reference\)"):
        make_splits(90, DataParams(n_members=3, n_test=40, n_shadow_pool=30, n_defender_reference=20), np.random.default_rng(0))
    assert str(info.value).endswith("or add rows the model never saw")


def test_class_dependent_scores_fall_back_to_the_global_threshold_for_a_one_label_class() -> None:
    """Class 1's shadow rows are all members: its target rows are scored against the global threshold."""
    from pipeline.attacks.metric import class_thresholds, confidence, run_metric
    from pipeline.core.types import AttackInput, Signals

    def logits(p: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """Two-class log-probabilities with true-class probability p."""
        return np.log(np.where(labels[:, None] == 0, np.stack([p, 1 - p], -1), np.stack([1 - p, p], -1)))[None].astype(np.float32)

    labels = np.array([0, 0, 0, 0, 1, 1])
    keep = np.array([[1, 0, 1, 0, 1, 1]], bool)
    shadow = Signals(logits(np.array([0.9, 0.6, 0.8, 0.5, 0.7, 0.75]), labels), keep, labels, np.arange(6))
    target = Signals(logits(np.array([0.95, 0.72]), np.array([0, 1])), np.array([[True, False]]), np.array([0, 1]), np.arange(2))
    result = run_metric(AttackInput(shadow, target, np.zeros((1, 2, 2), np.float32)), "confidence", True)
    per_class, fallback = class_thresholds(confidence(shadow.logits, labels), keep, labels)
    assert set(per_class) == {0} and per_class[0] == pytest.approx(0.7)
    np.testing.assert_allclose(result.target.scores, [0.95 - per_class[0], 0.72 - fallback], atol=1e-6)
    thresholds = np.where(labels == 0, per_class[0], fallback)
    np.testing.assert_allclose(result.calibration.scores, [0.9, 0.6, 0.8, 0.5, 0.7, 0.75] - thresholds, atol=1e-6)


def test_local_shards_run_in_order_and_report_their_progress(capsys: pytest.CaptureFixture[str]) -> None:
    from pipeline.config import ComputeParams
    from pipeline.training.compute import run_shards

    assert run_shards(lambda shared, shard: shared * shard, 10, [1, 2, 3], ComputeParams(), "shadows") == [10, 20, 30]
    assert capsys.readouterr().err.splitlines() == [f"shadows: {i}/3 shards done" for i in (1, 2, 3)]
    assert run_shards(lambda shared, shard: shard, None, ["only"], ComputeParams(), "one") == ["only"]
    assert capsys.readouterr().err == ""  # one shard: no progress lines


def test_dp_violations_at_epsilon_zero_flag_any_separation_beyond_sampling_error() -> None:
    from pipeline.measures.accounting import dp_violations

    assert dp_violations(np.array([0.0, 0.5, 1.0]), np.array([0.0, 0.5, 1.0]), 0.0, 0.0, 1000, 1000) == []
    flagged = dp_violations(np.array([0.4]), np.array([0.6]), 0.0, 0.0, 1000, 1000)
    assert [v["inequality"] for v in flagged] == ["TPR <= e^eps FPR + delta", "TNR <= e^eps FNR + delta"]
    assert flagged[0]["lower"] == pytest.approx(_cp_low(600, 1000, 0.95)) and flagged[0]["allowed"] == pytest.approx(_cp_high(400, 1000, 0.95))
    assert (flagged[0]["fpr"], flagged[0]["tpr"]) == (0.4, 0.6)


def test_as_many_gradient_canaries_as_weights_is_allowed_and_one_more_is_not() -> None:
    from pipeline.canaries.audit import gradient_canaries
    from pipeline.core.errors import PipelineError
    from pipeline.stack import Architecture

    arch = Architecture("mlp", (2,), 2, hidden_units=2)  # 2*2 + 2 + 2*2 + 2 = 12 weights
    coordinates, included = gradient_canaries(arch, 12, seed=0)
    assert coordinates.tolist() == list(range(12)) and included.shape == (12,)
    with pytest.raises(PipelineError, match="^canaries.n: 13 gradient canaries need as many weights, and the model has 12; lower canaries.n$"):
        gradient_canaries(arch, 13, seed=0)


def test_one_run_audit_of_one_score_is_corrected_for_its_grid_only() -> None:
    included = np.r_[np.ones(30, bool), np.zeros(30, bool)]
    result = one_run.audit(included.astype(float), included, [10, 40], delta=0.0)
    assert result.epsilon_lb == pytest.approx(_perfect_bound(40, 0.05 / 2), rel=1e-9)
    assert result.levels[0].epsilon_lb == pytest.approx(_perfect_bound(10, 0.05 / 2), rel=1e-9)
    for scores, flags in ((np.zeros(3), np.zeros(4, bool)), (np.zeros((2, 2)), np.zeros((2, 2), bool))):
        with pytest.raises(ValueError, match="must be the same 1-d shape"):
            one_run.audit(scores, flags, [1], delta=0.0)


def test_one_run_guesses_break_ties_by_position_for_any_k_from_one() -> None:
    scores = np.random.default_rng(1).integers(0, 3, 40).astype(float)
    g = one_run.guess(scores, 20)
    in_rows, out_rows = np.flatnonzero(g == 1), np.flatnonzero(g == -1)
    order = sorted(range(40), key=lambda i: (-scores[i], i))  # highest first, ties by position
    assert in_rows.tolist() == sorted(order[:10]) and out_rows.tolist() == sorted(order[-10:])
    assert one_run.guess(scores, 1).tolist().count(1) == 1 and (one_run.guess(scores, 1) >= 0).all()
    with pytest.raises(ValueError, match=r"^k must be in \[1, 40\], got 0$"):
        one_run.guess(scores, 0)


def test_canary_job_trains_members_and_included_canaries_with_the_defenders_split() -> None:
    from pipeline.canaries.audit import canary_job
    from pipeline.core.types import Dataset, Splits

    rng = np.random.default_rng(0)
    dataset = Dataset(rng.normal(size=(30, 3)).astype(np.float32), rng.integers(0, 3, 30), 3, "toy")
    splits = Splits(np.arange(10), np.arange(10, 20), np.arange(20, 24), np.arange(24, 27), np.arange(27, 30))
    canaries = CanarySet(rng.normal(size=(4, 3)), np.array([0, 1, 2, 0], np.int32), np.array([True, False, True, False]))
    job = canary_job(dataset, splits, None, None, canaries, seed=11, label="canary run")
    assert (job.seed, job.label) == (11, "canary run") and job.x.dtype == np.float32 and job.y.dtype == dataset.y.dtype
    assert job.keep.dtype == bool and np.flatnonzero(job.keep[0]).tolist() == [*range(10), 30, 32]
    assert job.defender.dtype == bool and np.flatnonzero(job.defender[0]).tolist() == [27, 28, 29]
    assert job.eval_data[1].tolist() == dataset.y[20:24].tolist()


def test_canaries_span_the_data_range_and_move_labels_independently() -> None:
    from pipeline.canaries.records import make_canaries
    from pipeline.core.types import Dataset

    rng = np.random.default_rng(0)
    dataset = Dataset((rng.normal(size=(300, 2)) * [5.0, 0.1]).astype(np.float32), rng.integers(0, 3, 300), 3, "toy")
    x, y = make_canaries("ood", 400, dataset, np.arange(300), np.random.default_rng(1))
    low, high = dataset.x.min(0), dataset.x.max(0)
    assert x.dtype == np.float32 and (x.min(0) - low < 0.05 * (high - low)).all() and (high - x.max(0) < 0.05 * (high - low)).all()
    assert set(y.tolist()) == {0, 1, 2}
    x, y = make_canaries("mislabeled", 300, dataset, np.arange(300), np.random.default_rng(2))  # every source used
    rows = [int(np.flatnonzero((dataset.x == row).all(axis=1))[0]) for row in x]
    assert sorted(rows) == list(range(300)) and set(((y - dataset.y[rows]) % 3).tolist()) == {1, 2}


# --------------------------------------------------------------------------
# Input checks whose bounds decide what is measured, and the per-point Gaussians of LiRA


def test_dp_violations_accept_exactly_the_rates_and_sizes_it_can_measure() -> None:
    from pipeline.measures.accounting import dp_violations

    assert dp_violations([0.0, 1.0], [0.0, 1.0], 0.5, 0.999, 1, 1) == []  # one of each, rates at both ends, delta < 1
    bad = [
        (([0.0, 1.0], [0.0], 0.5, 0.0, 5, 5), r"^fpr and tpr must have the same length, got 2 and 1$"),
        (([0.5], [0.5], 0.5, 0.0, 0, 5), r"^need members and non-members, got 0 and 5$"),
        (([0.5], [0.5], 0.5, 0.0, 5, 0), r"^need members and non-members, got 5 and 0$"),
        (([-0.1], [0.5], 0.5, 0.0, 5, 5), r"^fpr and tpr must be rates in \[0, 1\]$"),
        (([1.5], [0.5], 0.5, 0.0, 5, 5), "rates in"),
        (([0.5], [-0.1], 0.5, 0.0, 5, 5), "rates in"),
        (([0.5], [1.5], 0.5, 0.0, 5, 5), "rates in"),
        (([0.5], [0.5], -0.1, 0.0, 5, 5), r"^need epsilon >= 0 and delta in \[0, 1\), got -0.1 and 0.0$"),
        (([0.5], [0.5], 0.5, 1.0, 5, 5), "delta in"),
        (([0.5], [0.5], 0.5, -0.1, 5, 5), "delta in"),
    ]
    for args, message in bad:
        with pytest.raises(ValueError, match=message):
            dp_violations(*args)


def test_dp_violations_use_intervals_at_the_confidence_asked_for() -> None:
    from pipeline.measures.accounting import dp_violations

    flagged = dp_violations([0.4], [0.6], 0.0, 0.0, 1000, 1000, confidence=0.8)
    assert flagged[0]["lower"] == pytest.approx(_cp_low(600, 1000, 0.8)) and flagged[0]["allowed"] == pytest.approx(_cp_high(400, 1000, 0.8))
    assert flagged[1]["lower"] == pytest.approx(_cp_low(600, 1000, 0.8)) and flagged[1]["allowed"] == pytest.approx(_cp_high(400, 1000, 0.8))


def test_one_run_p_value_at_the_edges() -> None:
    """No correct guess: p = 1. One right of r: 1 - (1 - p)^r. A delta term too large caps the bound at 1."""
    assert one_run.p_value(10, 5, 0, 1.0, 0.1) == 1.0
    p = 1 / (1 + math.exp(-1.0))
    assert one_run.p_value(10, 5, 1, 1.0, 0.0) == pytest.approx(1 - (1 - p) ** 5, rel=1e-12)
    assert one_run.p_value(10, 5, 3, 1.0, 0.5) == 1.0
    with pytest.raises(ValueError, match=r"^need 0 <= v <= r <= m, got v=6, r=5, m=10$"):
        one_run.p_value(10, 5, 6, 1.0, 0.0)


def test_per_point_variance_is_each_points_own_from_two_observations_on() -> None:
    """Point A: 0 and 2 (variance 2, one degree of freedom); B: 0, 0, 3 (variance 3); C: one value, the pool 8/3."""
    from pipeline.attacks.lira import gaussian_fit

    values = np.array([[0.0, 0.0, 7.0], [2.0, 0.0, 0.0], [9.0, 3.0, 0.0]])
    mask = np.array([[1, 1, 1], [1, 1, 0], [0, 1, 0]])
    mean, std = gaussian_fit(values, mask, fixed_variance=False)
    np.testing.assert_allclose(mean, [1.0, 1.0, 7.0])
    np.testing.assert_allclose(std, np.sqrt([2.0, 3.0, 8 / 3]))
    with pytest.raises(ValueError, match="^estimating a variance needs at least two reference models on some point$"):
        gaussian_fit(values, np.eye(3, dtype=bool), fixed_variance=True)


def test_online_lira_is_the_log_ratio_of_the_in_and_out_gaussians() -> None:
    """One point, four references: IN 1 and 3 (mean 2, variance 2), OUT -1 and 0 (mean -0.5, variance 0.5)."""
    from scipy.stats import norm

    from pipeline.attacks.lira import lira_online_scores

    refs = np.array([[1.0], [3.0], [-1.0], [0.0]])
    keep = np.array([[1], [1], [0], [0]])  # 0/1, as a saved keep matrix may be
    got = lira_online_scores(np.array([0.7]), refs, keep, fixed_variance=False)
    expected = norm.logpdf(0.7, 2.0, np.sqrt(2.0)) - norm.logpdf(0.7, -0.5, np.sqrt(0.5))
    assert got == pytest.approx([expected], rel=1e-12)
    message = "^online LiRA needs at least one IN and one OUT reference model for every point$"
    for no_in_or_out in (np.array([[0, 1], [0, 0]]), np.array([[1, 1], [0, 1]])):  # point 0 never IN; point 1 never OUT
        with pytest.raises(ValueError, match=message):
            lira_online_scores(np.zeros(2), np.zeros((2, 2)), no_in_or_out, True)


def test_leave_one_out_scores_hide_the_pseudo_target_and_drop_unscorable_points() -> None:
    from pipeline.attacks.statistics import pseudo_target_scores

    keep = np.array([[1, 0, 1], [0, 1, 1], [1, 1, 0], [0, 0, 1]])  # 0/1 as saved
    seen = []

    def score(own: np.ndarray, values: np.ndarray, out: np.ndarray, inside: np.ndarray) -> np.ndarray:
        seen.append((out.copy(), inside.copy()))
        return np.where(np.arange(3) == 2, np.nan, own)  # the third point cannot be scored

    values = np.arange(12.0).reshape(4, 3)
    result = pseudo_target_scores(values, keep, np.array([5, 6, 7]), score)
    for k, (out, inside) in enumerate(seen):
        assert not out[k].any() and not inside[k].any()
        others = np.arange(4) != k
        assert (out[others] == (keep[others] == 0)).all() and (inside[others] == (keep[others] == 1)).all()
    assert result.scores.tolist() == [0.0, 1.0, 3.0, 4.0, 6.0, 7.0, 9.0, 10.0]
    assert result.is_member.tolist() == [True, False, False, True, True, True, False, False]
    assert result.labels.tolist() == [5, 6] * 4


def test_unknown_canary_kind_and_mislabeled_canaries_keep_float32() -> None:
    from pipeline.canaries.records import make_canaries
    from pipeline.core.errors import PipelineError
    from pipeline.core.types import Dataset

    dataset = Dataset(np.zeros((5, 2), np.float32), np.arange(5) % 2, 2, "toy")
    x, _ = make_canaries("mislabeled", 3, dataset, np.arange(5), np.random.default_rng(0))
    assert x.dtype == np.float32
    with pytest.raises(PipelineError, match="^canaries.kind must be one of ood, mislabeled, got 'noise'$"):
        make_canaries("noise", 3, dataset, np.arange(5), np.random.default_rng(0))


def test_a_target_score_on_the_threshold_is_called_a_member() -> None:
    """Calibration 2 (member) and 1 (non-member): threshold 1.5. Target members 1.5 and 3, non-members 1.5 and 0."""
    m = evaluate(AttackResult("a", _scores([1.5, 3.0], [1.5, 0.0]), _scores([2.0], [1.0])), n_resamples=10)
    assert m.threshold == 1.5 and m.ppv == 2 / 3 and m.balanced_accuracy == 0.75


def test_intervals_are_asked_at_the_false_positive_counts_of_each_level(monkeypatch: pytest.MonkeyPatch) -> None:
    """n = 1000 non-members: 1% is 10 false positives, 0.1% is 1, 0.01% is none; the lowest FPR is 1."""
    from pipeline.measures import roc as roc_module

    asked = {}
    monkeypatch.setattr(roc_module, "bootstrap_intervals", lambda s, y, counts, seed, n: asked.update(counts) or {})
    rng = np.random.default_rng(3)
    evaluate(AttackResult("a", _scores(rng.normal(1, 1, 50), rng.normal(0, 1, 1000)), _scores([1.0], [0.0])))
    assert asked == {"tpr_at_1pct_fpr": 10, "tpr_at_0.1pct_fpr": 1, "tpr_at_lowest_fpr": 1}


def test_the_bound_rule_is_chosen_at_the_targets_delta() -> None:
    """Threshold 3: TPR 0.5, FPR 0.02; threshold 2: TPR 0.95, FPR 0.4 (TNR 0.6, FNR 0.05). At delta 0 the members'
    side at 3 is best; at delta 0.4 it shows nothing, and the non-members' side at 2 is the bound."""
    from pipeline.measures.bounds import calibrated_bound

    scores = _scores(np.r_[np.full(500, 3.0), np.full(450, 2.0), np.zeros(50)], np.r_[np.full(10, 3.0), np.full(190, 2.0), np.zeros(300)])
    curve = roc(scores.scores, scores.is_member)
    at_zero = math.log(_cp_low(500, 1000, 0.95) / _cp_high(10, 500, 0.95))
    assert calibrated_bound(curve, scores.scores, scores.is_member) == pytest.approx(at_zero, rel=1e-9)
    at_delta = math.log((_cp_low(300, 500, 0.95) - 0.4) / _cp_high(50, 1000, 0.95))
    assert calibrated_bound(curve, scores.scores, scores.is_member, delta=0.4) == pytest.approx(at_delta, rel=1e-9)
