"""Metric-based attacks of Song & Mittal (2021): threshold a per-point statistic.

Statistics, each signed so that higher means member:

- ``confidence``: p_y, the probability of the true class;
- ``entropy``: minus the entropy of the posterior;
- ``modified_entropy``: minus Mentr(p, y) = (1 - p_y) log(1/p_y)
  + sum_{c != y} p_c log(1/(1 - p_c)), which, unlike entropy, also
  penalises confident wrong predictions;
- ``loss``: log p_y (minus the cross-entropy loss).

(Correctness is the label-only gap attack, see `label_only.py`.)

With ``attack.metric.class_dependent: false`` the statistic is the score
and the evaluator picks one global threshold on the shadow data. With
``true`` (Song & Mittal's variant) a threshold t_c per true class c is fit
on the stacked shadow data only, maximising balanced accuracy on that
class's rows, and the score is ``statistic - t_c``: every class's decision
boundary then sits at 0, so scores are comparable across classes. A class
whose shadow rows are all members, all non-members, or absent uses the
global threshold. The calibration scores use the same thresholds (fit
in-sample on the shadows; the target is never involved).
"""

from __future__ import annotations

import numpy as np
from pydantic import StrictBool

from pipeline.attacks.params import AttackParams
from pipeline.attacks.statistics import (
    Statistic,
    log1m_softmax,
    log_softmax,
    log_true_prob,
    make_result,
    score_with,
    shadow_scores,
)
from pipeline.config import StrictModel
from pipeline.core.types import AttackInput, AttackResult, AttackScores
from pipeline.measures.roc import best_threshold


class Settings(StrictModel):
    """`attack.metric`: one threshold per true class (Song & Mittal), or one global."""

    class_dependent: StrictBool = True


def confidence(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    return np.exp(log_true_prob(logits, labels))


def neg_entropy(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    logp = log_softmax(logits)
    return np.sum(np.exp(logp) * logp, axis=-1)


def neg_modified_entropy(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    logp, log1mp = log_softmax(logits), log1m_softmax(logits)
    is_true = np.arange(logp.shape[-1]) == np.asarray(labels)[:, None]
    # true class: (1 - p_y) log p_y ; other classes: p_c log(1 - p_c); both <= 0
    terms = np.where(is_true, np.exp(log1mp) * logp, np.exp(logp) * log1mp)
    return np.sum(terms, axis=-1)


STATISTICS: dict[str, Statistic] = {
    "confidence": confidence,
    "entropy": neg_entropy,
    "modified_entropy": neg_modified_entropy,
    "loss": log_true_prob,
}


def class_thresholds(
    values: np.ndarray, is_member: np.ndarray, labels: np.ndarray
) -> tuple[dict[int, float], float]:
    """Per-class balanced-accuracy thresholds, and the global one used as fallback."""
    values, is_member, labels = np.ravel(values), np.ravel(is_member).astype(bool), np.ravel(labels)
    fallback = best_threshold(values, is_member)
    per_class = {}
    for c in np.unique(labels):
        rows = labels == c
        if is_member[rows].any() and not is_member[rows].all():
            per_class[int(c)] = best_threshold(values[rows], is_member[rows])
    return per_class, fallback


def _offsets(labels: np.ndarray, per_class: dict[int, float], fallback: float) -> np.ndarray:
    return np.array([per_class.get(int(c), fallback) for c in labels], dtype=np.float64)


def run_metric(data: AttackInput, statistic: str, class_dependent: bool) -> AttackResult:
    name = f"metric_{statistic}"
    stat = STATISTICS[statistic]
    if not class_dependent:
        return score_with(name, data, stat)
    shadow = shadow_scores(stat(data.shadow.logits, data.shadow.labels), data.shadow)
    per_class, fallback = class_thresholds(shadow.scores, shadow.is_member, shadow.labels)
    calibration = AttackScores(
        scores=shadow.scores - _offsets(shadow.labels, per_class, fallback),
        is_member=shadow.is_member,
        labels=shadow.labels,
    )
    values = stat(data.target.logits[0], data.target.labels)
    target_values = values - _offsets(data.target.labels, per_class, fallback)
    return make_result(name, data, target_values, calibration)


def run_confidence(data: AttackInput, params: AttackParams, seed: int) -> AttackResult:
    return run_metric(data, "confidence", params.metric.class_dependent)


def run_entropy(data: AttackInput, params: AttackParams, seed: int) -> AttackResult:
    return run_metric(data, "entropy", params.metric.class_dependent)


def run_modified_entropy(data: AttackInput, params: AttackParams, seed: int) -> AttackResult:
    return run_metric(data, "modified_entropy", params.metric.class_dependent)


def run_loss(data: AttackInput, params: AttackParams, seed: int) -> AttackResult:
    return run_metric(data, "loss", params.metric.class_dependent)
