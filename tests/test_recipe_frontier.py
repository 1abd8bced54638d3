"""Utility summary and the verdict on a heuristic defense against the DP-SGD frontier."""

from __future__ import annotations

import pytest

from pipeline.recipes.frontier import RecipePoint, accuracy_summary, compare_to_frontier
from pipeline.recipes.pooled import Estimate

HEURISTIC = RecipePoint("dropout", accuracy=0.90, leakage=Estimate(0.30, 0.25, 0.35))


def dp(name: str, accuracy: float, low: float, high: float) -> RecipePoint:
    return RecipePoint(name, accuracy, Estimate((low + high) / 2, low, high))


def test_accuracy_summary_is_mean_and_range():
    summary = accuracy_summary([0.8, 0.9, 1.0])
    assert (summary.mean, summary.low, summary.high) == pytest.approx((0.9, 0.8, 1.0))
    with pytest.raises(ValueError):
        accuracy_summary([])


def test_an_as_accurate_dp_setting_that_leaks_clearly_less_beats_the_heuristic():
    frontier = [dp("eps8", 0.91, 0.10, 0.20), dp("eps1", 0.80, 0.00, 0.05), dp("eps50", 0.92, 0.20, 0.30)]
    verdict = compare_to_frontier(HEURISTIC, frontier)
    assert verdict.verdict == "dp_leaks_less" and verdict.settings == ("eps8",)


def test_a_less_accurate_dp_setting_does_not_count_however_little_it_leaks():
    verdict = compare_to_frontier(HEURISTIC, [dp("eps1", 0.899, 0.00, 0.05)])
    assert verdict.verdict == "no_dp_as_accurate" and verdict.settings == ()


def test_overlapping_intervals_leave_it_undecided():
    """A DP point estimate below the heuristic's is not enough while the intervals overlap."""
    verdict = compare_to_frontier(HEURISTIC, [dp("eps8", 0.90, 0.20, 0.26), dp("eps50", 0.95, 0.40, 0.50)])
    assert verdict.verdict == "undecided" and verdict.settings == ("eps8",)


def test_every_as_accurate_dp_setting_leaking_more_is_dp_leaks_more():
    verdict = compare_to_frontier(HEURISTIC, [dp("eps50", 0.95, 0.40, 0.50), dp("eps1", 0.70, 0.0, 0.1)])
    assert verdict.verdict == "dp_leaks_more" and verdict.settings == ("eps50",)


def test_unmeasurable_leakage_is_undecided():
    unmeasured = RecipePoint("eps8", 0.95, Estimate(None, None, None))
    assert compare_to_frontier(HEURISTIC, [unmeasured]).verdict == "undecided"
    blind = RecipePoint("dropout", 0.90, Estimate(None, None, None))
    assert compare_to_frontier(blind, [dp("eps8", 0.95, 0.0, 0.01)]).verdict == "undecided"


def test_a_dp_setting_within_the_accuracy_tolerance_counts_as_accurate():
    """0.895 against 0.900: outside a zero tolerance, inside 0.01 (the default of recipe_audit.accuracy_tolerance)."""
    close = [dp("eps1000", 0.895, 0.00, 0.05)]
    assert compare_to_frontier(HEURISTIC, close).verdict == "no_dp_as_accurate"
    assert compare_to_frontier(HEURISTIC, close, tolerance=0.01).verdict == "dp_leaks_less"
    assert compare_to_frontier(HEURISTIC, close, tolerance=0.004).verdict == "no_dp_as_accurate"
