"""ROC curves on a grid of exact operating points (counts of false positives)."""

from __future__ import annotations

import numpy as np

from pipeline.attacks.audit import Audit
from pipeline.core.types import AttackResult, AttackScores
from pipeline.measures.roc import roc
from pipeline.measures.roc_grid import false_positive_grid, roc_on_grid


def _audit(scores: np.ndarray, is_member: np.ndarray) -> Audit:
    target = AttackScores(scores, is_member, np.zeros(len(scores), np.int64))
    return Audit(results={"a": AttackResult("a", target, target)}, metrics={})


def test_the_grid_runs_over_distinct_counts_from_one_to_all() -> None:
    counts = false_positive_grid(350)
    assert counts[0] == 1 and counts[-1] == 350 and np.all(np.diff(counts) > 0)


def test_each_point_is_the_best_tpr_with_at_most_that_many_false_positives() -> None:
    """With 350 non-members the leftmost point is the TPR at one false positive, not at zero."""
    rng = np.random.default_rng(0)
    is_member = np.r_[np.ones(350, bool), np.zeros(350, bool)]
    scores = rng.normal(is_member * 0.8, 1.0)
    table = roc_on_grid(_audit(scores, is_member).results)
    curve = roc(scores, is_member)
    assert table["fpr"][0] == 1 / 350
    for fpr, tpr in zip(table["fpr"], table["a"]):
        allowed = int(round(fpr * 350))
        assert tpr == curve.tp[curve.fp <= allowed].max() / 350
    top = np.argsort(-scores)
    first_false_positives = np.flatnonzero(~is_member[top])
    assert table["a"][0] == (first_false_positives[1] - 1) / 350  # members ranked above the second non-member
