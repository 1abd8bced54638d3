"""Run every enabled attack on one target and evaluate it the same way.

The undefended target and each defended one go through this one function,
so every row of the report is measured identically.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.attacks.registry import get_attack
from pipeline.config import AttackParams
from pipeline.evaluation import evaluate, metrics_to_dict, roc
from pipeline.seeding import derive_seed
from pipeline.types import AttackInput, AttackMetrics, AttackResult


@dataclass(frozen=True)
class Audit:
    """Each attack's result and metrics on one target, keyed by attack name."""

    results: dict[str, AttackResult]
    metrics: dict[str, AttackMetrics]

    def metrics_dict(self) -> dict[str, dict[str, object]]:
        """JSON-able metrics per attack (None where not measurable)."""
        return {name: metrics_to_dict(m) for name, m in self.metrics.items()}


def run_attacks(data: AttackInput, params: AttackParams, seed: int) -> Audit:
    """Run the attacks listed in `params.enabled`, each with its own seed."""
    results, metrics = {}, {}
    for name in params.enabled:
        result = get_attack(name)(data, params, derive_seed(seed, "attack", name))
        results[name] = result
        metrics[name] = evaluate(result)
    return Audit(results=results, metrics=metrics)


def false_positive_grid(n_nonmembers: int, n_points: int = 60) -> np.ndarray:
    """Log-spaced counts of false positives from 1 to all non-members (distinct integers).

    Operating points are defined by counts, not by rounded rates, so the
    leftmost point is exactly "at most one non-member wrongly flagged".
    """
    return np.unique(np.round(np.geomspace(1, max(n_nonmembers, 1), n_points)).astype(np.int64))


def roc_on_grid(audit: Audit, n_points: int = 60) -> dict[str, np.ndarray]:
    """Each attack's TPR at FPR = k / n_nonmembers for the grid's counts k (the best TPR with at most k false positives)."""
    table: dict[str, np.ndarray] = {}
    for name, result in audit.results.items():
        curve = roc(result.target.scores, result.target.is_member)
        counts = false_positive_grid(curve.n_nonmembers, n_points)
        table.setdefault("fpr", counts / curve.n_nonmembers)
        table[name] = curve.tp[np.searchsorted(curve.fp, counts, side="right") - 1] / curve.n_members
    return table


def dp_violation_counts(audit: Audit, epsilon: float, delta: float) -> dict[str, int]:
    """Per attack, the ROC points an (epsilon, delta)-DP model could not produce."""
    from pipeline.dp_accounting import dp_violations  # dp-accounting takes 0.6 s to import; DP targets only

    counts = {}
    for name, result in audit.results.items():
        curve = roc(result.target.scores, result.target.is_member)
        counts[name] = len(dp_violations(curve.fpr, curve.tpr, epsilon, delta, curve.n_members, curve.n_nonmembers))
    return counts
