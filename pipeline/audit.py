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


def fpr_grid(n_nonmembers: int, n_points: int = 60) -> np.ndarray:
    """Log-spaced false-positive rates from the smallest measurable one to 1."""
    return np.logspace(np.log10(1.0 / max(n_nonmembers, 1)), 0.0, n_points)


def roc_on_grid(audit: Audit, grid: np.ndarray) -> dict[str, np.ndarray]:
    """Each attack's TPR at the grid's FPRs (the best TPR with FPR <= f)."""
    table = {"fpr": grid}
    for name, result in audit.results.items():
        curve = roc(result.target.scores, result.target.is_member)
        table[name] = curve.tpr[np.searchsorted(curve.fpr, grid, side="right") - 1]
    return table


def dp_violation_counts(audit: Audit, epsilon: float, delta: float) -> dict[str, int]:
    """Per attack, the ROC points an (epsilon, delta)-DP model could not produce."""
    from pipeline.dp_accounting import dp_violations  # dp-accounting takes 0.6 s to import; DP targets only

    counts = {}
    for name, result in audit.results.items():
        curve = roc(result.target.scores, result.target.is_member)
        counts[name] = len(dp_violations(curve.fpr, curve.tpr, epsilon, delta, curve.n_members, curve.n_nonmembers))
    return counts
