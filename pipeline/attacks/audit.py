"""Run every enabled attack on one target, evaluate them the same way, and pick the headline.

The undefended target and each defended one go through these functions,
so every row of the report is measured identically.

Choices an adversary makes are made on shadow data only: the headline
attack of a target is the one whose calibration (shadow) scores are best
for `attack.tune_for`, chosen before the target's membership is looked at.
Its epsilon lower bound holds at 95%. The per-attack bounds hold at
1 - 0.05 / A each (Bonferroni over the A attacks), so even the largest of
them holds at 95%. The post-hoc best attack on the target is reported
too, labelled optimistic: it is chosen with the answer key.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from pipeline.attacks.params import AttackParams
from pipeline.attacks.registry import get_attack
from pipeline.core.seeding import derive_seed
from pipeline.core.types import AttackInput, AttackMetrics, AttackResult
from pipeline.measures.bounds import CONFIDENCE, calibrated_bound
from pipeline.measures.intervals import N_RESAMPLES
from pipeline.measures.roc import evaluate, metrics_to_dict, roc, shadow_objective


@dataclass(frozen=True)
class Audit:
    """Each attack's result and metrics on one target, keyed by attack name."""

    results: dict[str, AttackResult]
    metrics: dict[str, AttackMetrics]
    delta: float = 0.0  # a DP target's accounted delta, allowed for by the epsilon bounds

    def metrics_dict(self) -> dict[str, dict[str, object]]:
        """JSON-able metrics per attack (None where not measurable)."""
        return {name: metrics_to_dict(m) for name, m in self.metrics.items()}


def attack_seed(seed: int, name: str) -> int:
    """The seed of attack `name` in a run seeded with `seed`."""
    return derive_seed(seed, "attack", name)


def run_attacks(
    data: AttackInput,
    params: AttackParams,
    seed: int,
    delta: float = 0.0,
    overrides: Mapping[str, AttackParams] | None = None,
) -> Audit:
    """Run the attacks listed in `params.enabled`, each with its own seed, and evaluate them together.

    `delta` is a DP target's accounted delta, which the epsilon bounds allow
    for; `overrides` gives some attacks their own params (a family already chosen).
    """
    overrides = overrides or {}
    results = {
        name: get_attack(name)(data, overrides.get(name, params), attack_seed(seed, name)) for name in params.enabled
    }
    return Audit(results=results, metrics=evaluate_all(results, seed, delta=delta), delta=delta)


def evaluate_all(
    results: dict[str, AttackResult], seed: int, n_resamples: int = N_RESAMPLES, delta: float = 0.0
) -> dict[str, AttackMetrics]:
    """Every attack's metrics, its epsilon bound Bonferroni-corrected for the number of attacks shown."""
    confidence = 1.0 - (1.0 - CONFIDENCE) / len(results)
    return {
        name: evaluate(result, derive_seed(seed, "bootstrap", name), confidence, n_resamples, delta)
        for name, result in results.items()
    }


def choose_headline(results: dict[str, AttackResult], tune_for: str) -> tuple[str, tuple[float, float]]:
    """The attack whose calibration scores are best for `tune_for` (first listed wins ties), and its objective."""
    objectives = {name: shadow_objective(result.calibration, tune_for) for name, result in results.items()}
    best = max(objectives, key=lambda name: objectives[name])
    return best, objectives[best]


def headline_epsilon_bound(result: AttackResult, delta: float = 0.0) -> float:
    """The one pre-chosen attack's epsilon lower bound at 95%: rule from its calibration, computed once on the target."""
    calibration = roc(result.calibration.scores, result.calibration.is_member)
    return calibrated_bound(calibration, result.target.scores, result.target.is_member, CONFIDENCE, delta)


def headline_summary(audit: Audit, metrics: dict[str, dict[str, object]], tune_for: str) -> dict[str, object]:
    """The target's headline: the attack chosen on shadows with its `metrics` (as written), and the optimistic maxima."""
    name, objective = choose_headline(audit.results, tune_for)
    return {
        "attack": name,
        "chosen_by": f"{tune_for} on shadow data",
        "shadow_objective": objective[0],
        "metrics": metrics[name],
        "epsilon_lb_95": headline_epsilon_bound(audit.results[name], audit.delta),
        "epsilon_lb_any_attack": _post_hoc_max(metrics, "epsilon_lb"),
        "optimistic": {
            key: _post_hoc_max(metrics, key) for key in ("auc", "tpr_at_1pct_fpr", "tpr_at_lowest_fpr")
        },
    }


def _post_hoc_max(metrics: dict[str, dict[str, object]], key: str) -> dict[str, object]:
    """The attack with the highest positive `key` on the target itself (None if none): chosen with the answer key."""
    known = {name: values[key] for name, values in metrics.items() if values.get(key)}
    if not known:
        return {"attack": None, "value": None}
    best = max(known, key=lambda name: known[name])
    return {"attack": best, "value": known[best]}


def dp_violation_counts(audit: Audit, epsilon: float, delta: float) -> dict[str, int]:
    """Per attack, the ROC points an (epsilon, delta)-DP model could not produce."""
    from pipeline.measures.accounting import (
        dp_violations,  # dp-accounting takes 0.6 s to import; DP targets only
    )

    counts = {}
    for name, result in audit.results.items():
        curve = roc(result.target.scores, result.target.is_member)
        counts[name] = len(dp_violations(curve.fpr, curve.tpr, epsilon, delta, curve.n_members, curve.n_nonmembers))
    return counts
