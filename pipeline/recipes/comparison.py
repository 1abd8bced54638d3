"""Which recipe leaks less: every recipe attacked leave-one-model-out, pooled, and compared paired.

Each recipe's K models play the target in turn, the other K - 1 being its
reference models (`leave_one_out`), for four attacks: online LiRA (IN and
OUT references), offline LiRA and offline RMIA (OUT only), and the loss
(no references). Decisions are pooled over the K targets and summarised
for the population (the audit pool) and for the canaries apart
(`pooled`). The headline attack of the comparison is online LiRA, fixed
in advance (the strongest of the four in Carlini et al. 2022 and here),
so no choice looks at any target's membership.

Each defense is compared with the undefended recipe on the same models'
decisions (`pooled.paired_difference`), and each heuristic defense with
the DP-SGD recipes (`frontier`): leakage there is the canary TPR at the
lowest false-positive rate the canary decisions measure, 0.1% on the
defaults. Everything returned is plain numbers and strings, for JSON.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from pipeline.core.seeding import derive_seed
from pipeline.measures.roc import FPR_LEVELS
from pipeline.recipes import leave_one_out
from pipeline.recipes.frontier import RecipePoint, accuracy_summary, compare_to_frontier
from pipeline.recipes.pooled import Estimate, metric_names, paired_difference, pooled_metrics

__all__ = ["HEADLINE", "RecipeData", "leakage_level", "attack_scores", "compare_recipes"]

HEADLINE = "lira_online"
SUBSETS = ("population", "canaries")


@dataclass(frozen=True)
class RecipeData:
    """One recipe's saved outputs: logits (K, P + m, C), labels (P + m,), keep (K, P + m), is_canary, accuracies, info."""

    logits: np.ndarray
    labels: np.ndarray
    keep: np.ndarray
    is_canary: np.ndarray
    test_accuracy: np.ndarray
    info: dict[str, float]

    @property
    def is_dp(self) -> bool:
        """Whether the recipe trained with DP-SGD (it reports an accounted epsilon)."""
        return "dp_epsilon" in self.info


def attack_scores(data: RecipeData, fixed_variance: bool, rmia_a: float, rmia_gamma: float) -> dict[str, np.ndarray]:
    """Leave-one-model-out scores (K, P + m) of every attack on one recipe."""
    args = (data.logits, data.labels, data.keep)
    attacks: dict[str, Callable[[], np.ndarray]] = {
        "lira_online": lambda: leave_one_out.lira_online(*args, fixed_variance),
        "lira_offline": lambda: leave_one_out.lira_offline(*args, fixed_variance),
        "rmia_offline": lambda: leave_one_out.rmia_offline(*args, rmia_a, rmia_gamma),
        "loss": lambda: leave_one_out.loss(data.logits, data.labels),
    }
    return {name: run() for name, run in attacks.items()}


def leakage_level(is_canary: np.ndarray, keep: np.ndarray) -> float | None:
    """The lowest FPR level the canary decisions measure (at least 1/f OUT decisions), or None."""
    out = int((~keep[:, is_canary]).sum())
    measurable = [level for level in FPR_LEVELS if out >= 1.0 / level]
    return min(measurable) if measurable else None


def _estimates(metrics: dict[str, Estimate]) -> dict[str, dict[str, float | bool | None]]:
    out = {}
    for name, estimate in metrics.items():
        out[name] = asdict(estimate)
        if hasattr(estimate, "excludes_zero"):
            out[name]["excludes_zero"] = estimate.excludes_zero
    return out


def _same_design(recipes: dict[str, RecipeData]) -> None:
    first = next(iter(recipes.values()))
    for name, data in recipes.items():
        same = [np.array_equal(getattr(data, field), getattr(first, field)) for field in ("keep", "labels", "is_canary")]
        if not all(same):
            raise ValueError(f"recipe {name!r} was trained on another design than the others; rerun its recipe stage")


def compare_recipes(
    recipes: dict[str, RecipeData], fixed_variance: bool, rmia_a: float, rmia_gamma: float, seed: int,
    accuracy_tolerance: float = 0.0,
) -> dict[str, object]:  # fmt: skip
    """The whole comparison: per recipe its utility and every attack's pooled metrics, the paired
    differences of each defense from "undefended" (the first recipe), and each heuristic defense's
    verdict against the DP-SGD recipes. Needs the same design for every recipe (checked).
    """
    _same_design(recipes)
    names = list(recipes)
    base = names[0]
    first = recipes[base]
    subsets = {"population": ~first.is_canary, "canaries": first.is_canary}
    level = leakage_level(first.is_canary, first.keep)
    leakage_key = None if level is None else metric_names((level,))[1]
    scores = {name: attack_scores(data, fixed_variance, rmia_a, rmia_gamma) for name, data in recipes.items()}
    rows: dict[str, dict[str, object]] = {}
    for name, data in recipes.items():
        attacks = {
            attack: {
                subset: _estimates(
                    pooled_metrics(values, data.keep, points, derive_seed(seed, "recipes", name, attack, subset)).estimates
                )
                for subset, points in subsets.items()
            }
            for attack, values in scores[name].items()
        }
        rows[name] = {
            "dp": data.is_dp,
            "info": data.info,
            "test_accuracy": asdict(accuracy_summary(data.test_accuracy)),
            "attacks": attacks,
        }
        if name != base:
            rows[name]["difference_from_undefended"] = {
                subset: _estimates(
                    paired_difference(scores[name][HEADLINE], scores[base][HEADLINE], data.keep, points,
                                      derive_seed(seed, "recipes", "paired", name, subset))  # fmt: skip
                )
                for subset, points in subsets.items()
            }
            rows[name]["test_accuracy_difference"] = float(data.test_accuracy.mean() - first.test_accuracy.mean())
    points = {
        name: RecipePoint(name, row["test_accuracy"]["mean"], Estimate(**row["attacks"][HEADLINE]["canaries"][leakage_key]))
        for name, row in rows.items()
        if leakage_key is not None
    }
    dp_points = [points[name] for name in names if recipes[name].is_dp and name in points]
    for name in names[1:]:
        if not recipes[name].is_dp and name in points and dp_points:
            verdict = compare_to_frontier(points[name], dp_points, accuracy_tolerance)
            rows[name]["against_dp_frontier"] = {"verdict": verdict.verdict, "dp_settings": list(verdict.settings)}
    return {
        "headline_attack": HEADLINE,
        "leakage_metric": leakage_key,
        "n_models": int(first.keep.shape[0]),
        "n_pool": int((~first.is_canary).sum()),
        "n_canaries": int(first.is_canary.sum()),
        "accuracy_tolerance": accuracy_tolerance,
        "recipes": rows,
    }
