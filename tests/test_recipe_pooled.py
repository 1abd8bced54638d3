"""Pooled metrics over K leave-one-out targets and their model-cluster bootstrap, on synthetic score laws.

The law: model k's score on point p is u_k + (MU + g_k + v_p) keep[k, p] + e,
with a per-model offset u_k ~ N(0, TAU^2) (one model scores everything
higher), a per-model leakage g_k ~ N(0, SG^2), a per-point vulnerability
v_p (shared by the recipes that are compared) and unit Gaussian noise e.
With v_p = 0, pooled over infinitely many models, the OUT scores are
N(0, 1 + TAU^2) and the IN scores N(MU, 1 + TAU^2 + SG^2), so the true
pooled AUC and TPR at a fixed FPR have closed forms.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm
from sklearn.metrics import roc_auc_score

from pipeline.measures.roc import roc, tpr_at_fpr
from pipeline.recipes.design import paired_keep
from pipeline.recipes.pooled import (
    Estimate,
    metric_names,
    paired_difference,
    pooled_metrics,
    small_sample_factor,
)

MU, TAU, SG = 2.0, 0.3, 0.3
K, N = 16, 200  # 1,600 OUT decisions pooled: TPR at 1% FPR is measurable, at 0.1% too
DRAWS, RESAMPLES = 300, 500
# 3 binomial standard deviations of a 95% coverage rate over DRAWS draws
TOLERANCE = 3 * np.sqrt(0.95 * 0.05 / DRAWS)


def design(rng: np.random.Generator, n_models: int = K, n_pool: int = N) -> np.ndarray:
    return paired_keep(n_pool, 2, n_models, rng)[:, :n_pool]


def scores(rng: np.random.Generator, keep: np.ndarray, mu: float = MU, v: float | np.ndarray = 0.0) -> np.ndarray:
    n_models = keep.shape[0]
    u, g = rng.normal(0, TAU, (n_models, 1)), rng.normal(0, SG, (n_models, 1))
    return u + (mu + g + v) * keep + rng.normal(size=keep.shape)


def everything(keep: np.ndarray) -> np.ndarray:
    return np.ones(keep.shape[1], dtype=bool)


def test_point_estimates_are_the_pooled_roc_read_as_the_project_reads_it():
    rng = np.random.default_rng(0)
    keep = design(rng)
    s = scores(rng, keep)
    m = pooled_metrics(s, keep, everything(keep), seed=0, n_resamples=50)
    curve = roc(s.ravel(), keep.ravel())
    assert m.estimates["auc"].value == pytest.approx(roc_auc_score(keep.ravel(), s.ravel()))
    assert m.estimates["tpr_at_1pct_fpr"].value == tpr_at_fpr(curve, 0.01)
    assert m.estimates["tpr_at_0.1pct_fpr"].value == tpr_at_fpr(curve, 0.001)
    assert m.n_members == m.n_nonmembers == K * N // 2
    assert tuple(m.estimates) == metric_names()


def test_bootstrap_replicates_are_pooled_rocs_of_models_drawn_with_replacement():
    """Against a direct computation: repeat each drawn model, pool, read the ROC with `pipeline.measures.roc`.

    Scores are rounded so that ties across models occur.
    """
    rng = np.random.default_rng(1)
    keep = design(rng, 6, 40)
    s = np.round(scores(rng, keep), 1)
    seed, resamples, levels = 3, 40, (0.01, 0.05)
    m = pooled_metrics(s, keep, everything(keep), seed=seed, n_resamples=resamples, levels=levels)
    counts = np.random.default_rng(seed).multinomial(6, np.full(6, 1 / 6), size=resamples)
    replicates = {name: [] for name in metric_names(levels)}
    for c in counts:
        drawn = np.repeat(np.arange(6), c)
        pooled_s, pooled_y = s[drawn].ravel(), keep[drawn].ravel()
        curve = roc(pooled_s, pooled_y)
        values = [roc_auc_score(pooled_y, pooled_s), *(tpr_at_fpr(curve, level) for level in levels)]
        for name, value in zip(replicates, values):
            replicates[name].append(value)
    stretch = small_sample_factor(6)
    for name, values in replicates.items():
        middle = np.median(values)
        low, high = np.clip(middle + stretch * (np.percentile(values, [2.5, 97.5]) - middle), 0, 1)
        assert (m.estimates[name].low, m.estimates[name].high) == pytest.approx((low, high), abs=1e-12)


def test_small_sample_factor_shrinks_towards_one_with_more_models():
    factors = [small_sample_factor(k) for k in (4, 16, 64, 10_000)]
    assert factors == sorted(factors, reverse=True)
    assert factors[1] == pytest.approx(1.12, abs=0.005) and factors[-1] == pytest.approx(1.0, abs=1e-3)


def test_tpr_is_not_measurable_with_too_few_out_decisions():
    """4 models x 20 OUT points = 80 OUT decisions < 100: TPR at 1% FPR is None with no interval, never 0."""
    rng = np.random.default_rng(2)
    keep = design(rng, 4, 40)
    s_a, s_b = scores(rng, keep), scores(rng, keep)
    m = pooled_metrics(s_a, keep, everything(keep), seed=0, n_resamples=50)
    assert m.n_nonmembers == 80
    assert m.estimates["tpr_at_1pct_fpr"] == m.estimates["tpr_at_0.1pct_fpr"] == Estimate(None, None, None)
    assert m.estimates["auc"].value is not None
    diff = paired_difference(s_a, s_b, keep, everything(keep), seed=0, n_resamples=50)
    assert diff["tpr_at_1pct_fpr"].value is None and diff["tpr_at_1pct_fpr"].excludes_zero is None
    keep = design(rng, 4, 50)  # exactly 100 OUT decisions: measurable
    assert pooled_metrics(scores(rng, keep), keep, everything(keep), 0, 50).estimates["tpr_at_1pct_fpr"].value is not None


def test_points_select_the_decisions():
    """Canaries apart from the population: only the chosen columns are pooled."""
    rng = np.random.default_rng(3)
    keep = paired_keep(40, 8, 6, rng)
    s = scores(rng, keep)
    canaries = np.arange(48) >= 40
    m = pooled_metrics(s, keep, canaries, seed=0, n_resamples=20)
    assert m.n_members == m.n_nonmembers == 6 * 4
    assert m.estimates["auc"].value == pytest.approx(roc_auc_score(keep[:, 40:].ravel(), s[:, 40:].ravel()))


def test_a_model_without_out_decisions_is_refused():
    keep = np.zeros((4, 6), dtype=bool)
    keep[:, :3] = True
    keep[0] = True
    with pytest.raises(ValueError, match="IN and OUT"):
        pooled_metrics(np.zeros((4, 6)), keep, np.ones(6, dtype=bool), seed=0)


def test_a_recipe_compared_with_itself_differs_by_exactly_zero():
    rng = np.random.default_rng(4)
    keep = design(rng)
    s = scores(rng, keep)
    diffs = paired_difference(s, s, keep, everything(keep), seed=0, n_resamples=100, levels=(0.01, 0.001))
    for diff in diffs.values():
        assert (diff.value, diff.low, diff.high, diff.excludes_zero) == (0.0, 0.0, 0.0, False)


def test_cluster_bootstrap_covers_the_true_tpr_at_1pct_fpr():
    """Coverage of the true pooled TPR at 1% FPR (and AUC) by the 95% intervals, over 300 draws of the law.

    K = 16 models, 200 pool points, 500 resamples. Measured with this
    seed: TPR 0.930, AUC 0.923; over 2,000 draws: TPR 0.957, AUC 0.939
    (the plain percentile interval, without the few-clusters stretch:
    TPR 0.928, AUC 0.909). Tolerance: 95% +- 3 binomial standard
    deviations over 300 draws (+- 0.038).
    """
    rng = np.random.default_rng(5)
    s0, s1 = np.hypot(1, TAU), np.sqrt(1 + TAU**2 + SG**2)
    truth = {"auc": norm.cdf(MU / np.hypot(s0, s1)), "tpr_at_1pct_fpr": norm.sf((s0 * norm.ppf(0.99) - MU) / s1)}
    hits = dict.fromkeys(truth, 0)
    for draw in range(DRAWS):
        keep = design(rng)
        m = pooled_metrics(scores(rng, keep), keep, everything(keep), draw, RESAMPLES, levels=(0.01,))
        for name, value in truth.items():
            hits[name] += m.estimates[name].low <= value <= m.estimates[name].high
    coverage = {name: hit / DRAWS for name, hit in hits.items()}
    print("coverage", coverage)
    for name, rate in coverage.items():
        assert abs(rate - 0.95) <= TOLERANCE, (name, rate)


def test_paired_interval_covers_zero_when_two_recipes_share_one_law():
    """Two recipes drawn from the same law on the same design and the same vulnerable points.

    The paired 95% interval of their difference should cover 0 in 95% of
    300 draws; measured with this seed: AUC 0.957, TPR at 1% FPR 0.970;
    over 2,000 draws: AUC 0.942, TPR 0.968 (plain percentile: 0.918,
    0.941). Tolerance: +- 3 binomial standard deviations (+- 0.038).
    """
    rng = np.random.default_rng(6)
    hits = np.zeros(2)
    for draw in range(DRAWS):
        keep = design(rng)
        v = rng.normal(0, 1.0, N)  # the same vulnerable points for both recipes
        diff = paired_difference(
            scores(rng, keep, v=v), scores(rng, keep, v=v), keep, everything(keep), draw, RESAMPLES, levels=(0.01,)
        )
        hits += [diff["auc"].excludes_zero is False, diff["tpr_at_1pct_fpr"].excludes_zero is False]
    coverage = hits / DRAWS
    print("coverage of zero", coverage)
    assert (np.abs(coverage - 0.95) <= TOLERANCE).all(), coverage


def test_a_known_gap_is_detected_with_its_sign():
    """Recipe a's members score 1.2 higher than recipe b's: the paired difference is positive and excludes 0.

    Swapping the recipes flips the sign. Over 20 draws each, every one detects it.
    """
    rng = np.random.default_rng(7)
    for draw in range(20):
        keep = design(rng)
        v = rng.normal(0, 1.0, N)
        a, b = scores(rng, keep, mu=MU + 1.2, v=v), scores(rng, keep, v=v)
        forward = paired_difference(a, b, keep, everything(keep), draw, RESAMPLES, levels=(0.01,))
        backward = paired_difference(b, a, keep, everything(keep), draw, RESAMPLES, levels=(0.01,))
        for name in ("auc", "tpr_at_1pct_fpr"):
            assert forward[name].value > 0 and forward[name].low > 0 and forward[name].excludes_zero
            assert backward[name].value < 0 and backward[name].high < 0 and backward[name].excludes_zero
