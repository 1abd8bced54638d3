"""Numerics on saved logits and the assembly of attack scores, shared by the attacks.

Every statistic takes logits of shape ``(..., P, C)`` (one model or a stack
of K models) and true labels of shape ``(P,)``, and is computed in float64
from the logits themselves, never from rounded probabilities, so a very
confident model keeps its resolution: ``log p_y`` of a logit margin of 50
is ``-2e-22``, not ``0``.

`target_scores` is the one place an attack touches ``data.target.keep``:
it copies the ground truth next to scores already computed, for the
evaluator only.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from pipeline.core.errors import PipelineError
from pipeline.core.types import AttackInput, AttackResult, AttackScores, Signals

Statistic = Callable[[np.ndarray, np.ndarray], np.ndarray]


def _pick(values: np.ndarray, index: np.ndarray) -> np.ndarray:
    """`values[..., p, index[p]]` for an index array broadcast over the leading axes."""
    index = np.asarray(index)
    shape = (1,) * (values.ndim - index.ndim - 1) + index.shape + (1,)
    return np.take_along_axis(values, index.reshape(shape), axis=-1)[..., 0]


def logsumexp_excluding(logits: np.ndarray, index: np.ndarray) -> np.ndarray:
    """log sum_{c != index} exp(z_c), over the last axis."""
    from scipy.special import logsumexp  # on use: stage validate imports the attacks for their settings only

    z = np.asarray(logits, dtype=np.float64)
    index = np.asarray(index)
    shape = (1,) * (z.ndim - index.ndim - 1) + index.shape + (1,)
    drop = np.arange(z.shape[-1]) == index.reshape(shape)
    return logsumexp(np.where(drop, -np.inf, z), axis=-1)


def _logsumexp(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """log sum_c exp(z_c) as max + log1p(rest), exact when one class dominates."""
    top = np.argmax(z, axis=-1)
    peak = _pick(z, top)
    rest = logsumexp_excluding(z, top) - peak
    return peak + np.logaddexp(0.0, rest), top


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """log p_c for every class."""
    z = np.asarray(logits, dtype=np.float64)
    lse, _ = _logsumexp(z)
    return z - lse[..., None]


def log1m_softmax(logits: np.ndarray) -> np.ndarray:
    """log(1 - p_c) for every class, accurate even where p_c rounds to 1.

    For the non-top classes p_c <= 1/2 and log1p(-p_c) is exact; for the top
    class, 1 - p_top = sum_{c != top} p_c is summed in log space.
    """
    z = np.asarray(logits, dtype=np.float64)
    lse, top = _logsumexp(z)
    with np.errstate(divide="ignore"):
        out = np.log1p(-np.exp(z - lse[..., None]))
    top_value = logsumexp_excluding(z, top) - lse
    np.put_along_axis(out, top[..., None], top_value[..., None], axis=-1)
    return out


def softmax(logits: np.ndarray) -> np.ndarray:
    """Posterior probabilities."""
    return np.exp(log_softmax(logits))


def log_true_prob(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """log p_y, the negated cross-entropy loss (higher means member)."""
    return _pick(log_softmax(logits), labels)


def phi(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """LiRA's logit-scaled confidence log(p_y / (1 - p_y)) = z_y - logsumexp(z_{c != y})."""
    z = np.asarray(logits, dtype=np.float64)
    return _pick(z, labels) - logsumexp_excluding(z, labels)


def correct(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """1.0 where the model's top class is the true class, else 0.0."""
    return (np.argmax(logits, axis=-1) == np.asarray(labels)).astype(np.float64)


def shadow_scores(values: np.ndarray, shadow: Signals) -> AttackScores:
    """Scores of all K shadow models on the pool, stacked, labelled by `keep`."""
    values = np.asarray(values, dtype=np.float64)
    return AttackScores(
        scores=values.ravel(),
        is_member=np.asarray(shadow.keep, dtype=bool).ravel(),
        labels=np.tile(shadow.labels, values.shape[0]),
    )


def target_scores(values: np.ndarray, data: AttackInput) -> AttackScores:
    """Scores already computed on the candidates, with the ground truth attached."""
    return AttackScores(
        scores=np.asarray(values, dtype=np.float64).ravel(),
        is_member=np.asarray(data.target.keep[0], dtype=bool),
        labels=np.asarray(data.target.labels),
    )


def make_result(
    name: str, data: AttackInput, target_values: np.ndarray, calibration: AttackScores
) -> AttackResult:
    return AttackResult(
        name=name, target=target_scores(target_values, data), calibration=calibration
    )


def score_with(name: str, data: AttackInput, statistic: Statistic) -> AttackResult:
    """A per-point statistic used directly as the score (global threshold).

    Calibration: the statistic of every shadow model on the pool, stacked.
    """
    calibration = shadow_scores(statistic(data.shadow.logits, data.shadow.labels), data.shadow)
    target_values = statistic(data.target.logits[0], data.target.labels)
    return make_result(name, data, target_values, calibration)


def pseudo_target_scores(
    values: np.ndarray,
    keep: np.ndarray,
    labels: np.ndarray,
    score: Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], np.ndarray],
) -> AttackScores:
    """Leave-one-out calibration: each shadow model in turn plays the target.

    `values` is a per-point statistic of the K shadows on the pool (K, P).
    For pseudo-target k, `score(values[k], values, out, inside)` sees the
    other shadows' statistics with `out` / `inside` marking where they are
    OUT / IN (row k is all False in both); it returns one score per pool
    point, NaN where it cannot score (no reference left). Rows are
    labelled by `keep[k]`.
    """
    keep = np.asarray(keep, dtype=bool)
    n_models = keep.shape[0]
    if n_models < 4:
        raise PipelineError(
            f"shadows.n_models: leave-one-out calibration needs at least 4 shadow models (got {n_models})"
        )
    scores, members, point_labels = [], [], []
    for k in range(n_models):
        out, inside = ~keep, keep.copy()
        out[k] = inside[k] = False
        s = np.asarray(score(values[k], values, out, inside), dtype=np.float64)
        ok = np.isfinite(s)
        scores.append(s[ok])
        members.append(keep[k][ok])
        point_labels.append(np.asarray(labels)[ok])
    return AttackScores(
        np.concatenate(scores), np.concatenate(members), np.concatenate(point_labels)
    )
