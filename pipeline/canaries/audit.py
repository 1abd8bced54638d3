"""One canary run of a target's training, and the one-run audit of its canaries' scores.

The canary run trains the target's architecture and recipe, with its
defense, once on the target's members plus the input canaries whose coins
came up (`pipeline.canaries.records`); a DP-SGD run also carries as many gradient
canaries. Every canary is then scored (higher means included):

- "black_box", the input canaries: minus the loss of the run's released
  outputs at the canary's label, all a querying party sees (the loss
  attack of Yeom et al.);
- "white_box", the gradient canaries (DP-SGD only): the log-likelihood
  ratio of the canary's inclusion given the noisy gradient sum at its
  coordinate in every step (`DpTrainer.dirac_evidence`): the auditor who
  sees every iterate (Steinke et al. 2023, Section 7).

`audit_run` turns each score into the one-run epsilon lower bound
(`pipeline.measures.one_run`), Bonferroni-corrected over the grid of guess counts
and the scores together, so the run's largest bound holds at 95%.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.canaries.records import canary_sources, coins, make_canaries
from pipeline.core.errors import PipelineError
from pipeline.core.seeding import rng_for
from pipeline.core.types import Dataset, Splits
from pipeline.defenses.base import DefendedModels, TrainingJob
from pipeline.measures.one_run import CONFIDENCE, OneRunAudit, audit
from pipeline.stack import Architecture, Recipe, weight_shapes

__all__ = [
    "CanarySet",
    "CanaryRun",
    "draw_canaries",
    "gradient_canaries",
    "canary_job",
    "score_run",
    "audit_run",
    "audit_summary",
]


@dataclass(frozen=True)
class CanarySet:
    """Input canaries (x, y) and each one's coin: whether the canary run trains on it."""

    x: np.ndarray  # (m, ...) float32
    y: np.ndarray  # (m,) int
    included: np.ndarray  # (m,) bool


@dataclass(frozen=True)
class CanaryRun:
    """A scored canary run: per score, every canary's score and inclusion, and the run's numbers."""

    scores: dict[str, tuple[np.ndarray, np.ndarray]]  # name -> (scores (m,), included (m,))
    info: dict[str, float]  # the defense's numbers (a DP plan's epsilon), the run's test accuracy


def draw_canaries(dataset: Dataset, splits: Splits, kind: str, m: int, seed: int) -> CanarySet:
    """The m input canaries of `kind` and their coins, from the run's seed: the same for every target."""
    rng = rng_for(seed, "canaries")
    x, y = make_canaries(kind, m, dataset, canary_sources(splits), rng)
    return CanarySet(x, y, coins(m, rng))


def gradient_canaries(architecture: Architecture, m: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """m gradient canaries: distinct coordinates of the flattened weights, and each one's coin."""
    rng = rng_for(seed, "gradient canaries")
    n_weights = sum(int(np.prod(shape)) for shape in weight_shapes(architecture))
    if m > n_weights:
        raise PipelineError(
            f"canaries.n: {m} gradient canaries need as many weights, and the model has {n_weights}; lower canaries.n"
        )
    return np.sort(rng.choice(n_weights, size=m, replace=False)), coins(m, rng)


def canary_job(
    dataset: Dataset,
    splits: Splits,
    architecture: Architecture,
    recipe: Recipe,
    canaries: CanarySet,
    seed: int,
    label: str | None = None,
) -> TrainingJob:
    """One model on the members and the included canaries; the target's test set as eval data.

    Points: the whole dataset, then the m canaries; the defender's
    reference split is the defender data, as for the target.
    """
    x = np.concatenate([dataset.x, canaries.x.astype(dataset.x.dtype)])
    y = np.concatenate([dataset.y, canaries.y.astype(dataset.y.dtype)])
    keep = np.zeros((1, len(x)), bool)
    keep[0, splits.members] = True
    keep[0, len(dataset.x) :] = canaries.included
    defender = np.zeros_like(keep)
    defender[0, splits.defender_reference] = True
    eval_data = (dataset.x[splits.test], dataset.y[splits.test])
    return TrainingJob(architecture, recipe, x, y, keep, seed, label, eval_data, defender)


def _log_softmax(out: np.ndarray) -> np.ndarray:
    shifted = out - out.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def score_run(
    models: DefendedModels,
    job: TrainingJob,
    canaries: CanarySet,
    gradient: tuple[np.ndarray, np.ndarray] | None = None,
) -> CanaryRun:
    """The trained run's scores: "black_box" on the input canaries; "white_box" the gradient canaries' (scores, coins)."""
    log_probs = _log_softmax(np.asarray(models.observe(canaries.x), np.float64)[0])
    scores = {"black_box": (log_probs[np.arange(len(canaries.y)), canaries.y], canaries.included)}
    if gradient is not None:
        scores["white_box"] = (np.asarray(gradient[0], np.float64), np.asarray(gradient[1], bool))
    x_test, y_test = job.eval_data
    accuracy = float(np.mean(np.argmax(models.observe(x_test)[0], axis=1) == y_test))
    return CanaryRun(scores, {**models.info, "test_accuracy": accuracy})


def audit_run(run: CanaryRun, ks: Sequence[int], delta: float, confidence: float = CONFIDENCE) -> dict[str, OneRunAudit]:
    """Each score's one-run audit at `delta`, all of them together holding at `confidence`."""
    return {
        name: audit(scores, included, ks, delta, confidence, tests=len(run.scores))
        for name, (scores, included) in run.scores.items()
    }


def audit_summary(run: CanaryRun, audits: dict[str, OneRunAudit], kind: str, accounted: float | None) -> dict[str, Any]:
    """What the audit stage writes: the bound per score and guess count, the largest, and the accountant's epsilon.

    `accounted`: a DP target's epsilon at the audit's delta. A bound above
    it rejects the DP claim at the audit's confidence: `exceeds_accounted`.
    """
    best = max(audits, key=lambda name: audits[name].epsilon_lb)
    first = audits[best]
    summary: dict[str, Any] = {
        "epsilon_lb": first.epsilon_lb,
        "best_score": best,
        "delta": first.delta,
        "confidence": first.confidence,
        "kind": kind,
        "test_accuracy": run.info["test_accuracy"],
    }
    if accounted is not None:
        summary["dp_epsilon"] = float(accounted)
        summary["exceeds_accounted"] = bool(first.epsilon_lb > accounted)
        for key in ("dp_noise_multiplier", "dp_sampling_rate", "dp_steps", "dp_clip_norm"):
            summary[key] = float(run.info[key])
    for name, result in audits.items():
        summary[name] = {
            "epsilon_lb": result.epsilon_lb,
            "m": result.m,
            "included": int(run.scores[name][1].sum()),
            "k": result.best.k,
            "correct": result.best.correct,
            "levels": [{"k": level.k, "correct": level.correct, "epsilon_lb": level.epsilon_lb} for level in result.levels],
        }
    return summary
