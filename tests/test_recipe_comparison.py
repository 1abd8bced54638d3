"""The recipe audit's comparison and its report section, on synthetic recipes with a known answer."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.recipes.comparison import RecipeData, compare_recipes, leakage_level
from pipeline.recipes.design import paired_keep
from pipeline.reporting import recipes as report

K, POOL, CANARIES, C = 16, 200, 64, 3


def _recipe(keep: np.ndarray, is_canary: np.ndarray, labels: np.ndarray, leak: float, accuracy: float,
            rng: np.random.Generator, info: dict | None = None) -> RecipeData:  # fmt: skip
    """Logits whose true-class margin is N(0, 1), plus `leak` on the points a model trained on (more on canaries)."""
    logits = rng.normal(size=(K, keep.shape[1], C))
    boost = leak * keep * np.where(is_canary, 3.0, 1.0)
    logits[np.arange(K)[:, None], np.arange(keep.shape[1])[None], labels[None]] += 2.0 + boost
    acc = np.full(K, accuracy) + rng.normal(0, 0.002, K)
    return RecipeData(logits.astype(np.float32), labels, keep, is_canary, acc, info or {})


@pytest.fixture(scope="module")
def recipes() -> dict[str, RecipeData]:
    rng = np.random.default_rng(0)
    keep = paired_keep(POOL, CANARIES, K, rng)
    is_canary = np.arange(POOL + CANARIES) >= POOL
    labels = rng.integers(0, C, POOL + CANARIES)
    return {
        "undefended": _recipe(keep, is_canary, labels, 1.5, 0.90, rng),
        "dropout": _recipe(keep, is_canary, labels, 1.5, 0.90, rng),  # the same law: no change
        "strong": _recipe(keep, is_canary, labels, 0.0, 0.85, rng),  # no leakage at all
        "sharp": _recipe(keep, is_canary, labels, 1.5, 0.93, rng),  # more accurate than any DP recipe
        "dp_a": _recipe(keep, is_canary, labels, 0.0, 0.895, rng, {"dp_epsilon": 8.0}),
    }


@pytest.fixture(scope="module")
def comparison(recipes) -> dict:
    return compare_recipes(recipes, fixed_variance=True, rmia_a=0.3, rmia_gamma=1.0, seed=1, accuracy_tolerance=0.01)


def test_the_leakage_level_is_the_lowest_fpr_the_canary_decisions_measure():
    keep = paired_keep(10, 64, 32, np.random.default_rng(0))
    is_canary = np.arange(74) >= 10
    assert leakage_level(is_canary, keep) == 0.001  # 32 x 32 = 1,024 OUT decisions
    assert leakage_level(is_canary, keep[:4]) == 0.01  # 128
    assert leakage_level(is_canary[:20], keep[:4, :20]) is None  # 4 x 5 = 20 < 100


def test_a_recipe_without_leakage_is_detected_paired_with_the_right_sign(comparison):
    strong = comparison["recipes"]["strong"]["difference_from_undefended"]
    for subset in ("population", "canaries"):
        assert strong[subset]["auc"]["value"] < 0 and strong[subset]["auc"]["excludes_zero"]
    assert comparison["recipes"]["undefended"]["attacks"]["lira_online"]["canaries"]["auc"]["value"] > 0.8
    assert comparison["recipes"]["strong"]["attacks"]["lira_online"]["population"]["auc"]["low"] < 0.5


def test_the_same_law_gives_a_difference_whose_interval_covers_zero(comparison):
    same = comparison["recipes"]["dropout"]["difference_from_undefended"]
    for subset in ("population", "canaries"):
        gap = same[subset]["auc"]
        assert gap["low"] <= 0 <= gap["high"] and not gap["excludes_zero"]


def test_heuristics_are_judged_against_the_dp_recipes_only(comparison):
    rows = comparison["recipes"]
    assert rows["dropout"]["against_dp_frontier"] == {"verdict": "dp_leaks_less", "dp_settings": ["dp_a"]}
    assert rows["strong"]["against_dp_frontier"]["verdict"] == "undecided"  # neither leaks: the intervals overlap
    assert rows["sharp"]["against_dp_frontier"]["verdict"] == "no_dp_as_accurate"  # 0.895 < 0.93 - 0.01
    assert "against_dp_frontier" not in rows["dp_a"] and rows["dp_a"]["dp"]


def test_recipes_on_other_designs_are_refused(recipes):
    moved = dict(recipes)
    other = recipes["dropout"]
    moved["dropout"] = RecipeData(other.logits, other.labels, other.keep[::-1], other.is_canary, other.test_accuracy, {})
    with pytest.raises(ValueError, match="'dropout' was trained on another design"):
        compare_recipes(moved, True, 0.3, 1.0, seed=1)


def test_the_answer_says_yes_no_or_not_measurably(comparison):
    assert report.answer(comparison).startswith("**Does dropout reduce leakage?** Not measurably")
    assert "Yes: strong reduces" in report.answer(comparison, "strong")
    flipped = {**comparison, "recipes": {**comparison["recipes"]}}
    worse = dict(comparison["recipes"]["strong"])
    gap = worse["difference_from_undefended"]["canaries"][comparison["leakage_metric"]]
    worse["difference_from_undefended"] = {"canaries": {comparison["leakage_metric"]: {**gap, "value": 0.2, "low": 0.1, "high": 0.3}}}
    flipped["recipes"]["strong"] = worse
    assert "No: strong increases" in report.answer(flipped, "strong")
    assert "not among this run's recipes" in report.answer(comparison, "selena")


def test_the_section_table_figure_and_summary_metrics(comparison):
    lines = report.section(comparison)
    assert lines[0] == "## Which recipe leaks less" and lines[2].startswith("**Does dropout")
    table = [line for line in lines if line.startswith("| ")]
    assert len(table) == 1 + len(comparison["recipes"])  # header + one row per recipe
    assert any("dp_a (DP-SGD, eps 8)" in line for line in table)
    metrics = report.summary_metrics(comparison)
    assert len(metrics) <= 3 * len(comparison["recipes"])
    assert metrics["recipe.strong.test_accuracy"] == pytest.approx(0.85, abs=0.01)
    figure = report.figure(comparison)
    assert len(figure.axes[0].lines) >= 1  # the DP-SGD frontier
