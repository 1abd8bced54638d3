"""Utility of a recipe's K models, and whether a heuristic defense beats the tuned DP-SGD frontier.

The question (Aerni, Zhang and Tramer 2024): is some DP-SGD setting at
least as accurate as the heuristic defense and leaks less on the
canaries? The rule that answers it is conservative about every claim:

- "at least as accurate": the DP setting's mean test accuracy over its K
  models is at least the heuristic's minus a stated `tolerance`
  (`recipe_audit.accuracy_tolerance`, 0.01 by default: DP-SGD's clipping
  costs a little accuracy at any epsilon, so with no slack no DP setting
  would ever match a defense that changes accuracy by a fraction of a
  point, as Aerni et al. compare at similar, not identical, utility);
- "leaks less" or "leaks more": the two recipes' 95% intervals of canary
  TPR at the chosen low FPR do not overlap. Two disjoint 95% intervals
  are a stricter test than either one alone (for equal widths, about a
  0.6% two-sided level), which leaves room for having looked at a few DP
  settings; a paired difference would be more powerful, but the rule
  stays simple and errs toward "undecided".

Verdicts: "dp_leaks_less" (some DP setting as accurate leaks less: the
heuristic is beaten), "dp_leaks_more" (every DP setting as accurate leaks
more), "undecided" (otherwise, including unmeasurable leakage), and
"no_dp_as_accurate" (the frontier does not reach the heuristic's accuracy).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from pipeline.recipes.pooled import Estimate

__all__ = ["AccuracySummary", "FrontierVerdict", "RecipePoint", "accuracy_summary", "compare_to_frontier"]


@dataclass(frozen=True)
class AccuracySummary:
    """Test accuracy over a recipe's K models: mean and range."""

    mean: float
    low: float
    high: float


@dataclass(frozen=True)
class RecipePoint:
    """One recipe on the privacy-utility plane: mean test accuracy and canary leakage with its interval."""

    name: str
    accuracy: float
    leakage: Estimate


@dataclass(frozen=True)
class FrontierVerdict:
    """One of `VERDICTS`, and the DP settings that decide it (those as accurate as the heuristic)."""

    verdict: str
    settings: tuple[str, ...]


def accuracy_summary(accuracies: np.ndarray) -> AccuracySummary:
    """Mean, lowest and highest of the per-model test accuracies."""
    a = np.asarray(accuracies, dtype=np.float64)
    if a.ndim != 1 or a.size == 0:
        raise ValueError(f"expected one accuracy per model, got shape {a.shape}")
    return AccuracySummary(mean=float(a.mean()), low=float(a.min()), high=float(a.max()))


def _side(dp: Estimate, heuristic: Estimate) -> int | None:
    """-1 / +1 where DP's interval lies wholly below / above the heuristic's, 0 where they overlap, None if unmeasurable."""
    if None in (dp.low, dp.high, heuristic.low, heuristic.high):
        return None
    if dp.high < heuristic.low:
        return -1
    return 1 if dp.low > heuristic.high else 0


def compare_to_frontier(heuristic: RecipePoint, dp: Sequence[RecipePoint], tolerance: float = 0.0) -> FrontierVerdict:
    """The verdict on `heuristic` against the DP-SGD settings `dp`, by the module's rule (accuracy within `tolerance`)."""
    rivals = [point for point in dp if point.accuracy >= heuristic.accuracy - tolerance]
    if not rivals:
        return FrontierVerdict("no_dp_as_accurate", ())
    sides = [_side(point.leakage, heuristic.leakage) for point in rivals]
    less = tuple(point.name for point, side in zip(rivals, sides) if side == -1)
    if less:
        return FrontierVerdict("dp_leaks_less", less)
    if all(side == 1 for side in sides):
        return FrontierVerdict("dp_leaks_more", tuple(point.name for point in rivals))
    return FrontierVerdict("undecided", tuple(point.name for point, side in zip(rivals, sides) if side != 1))
