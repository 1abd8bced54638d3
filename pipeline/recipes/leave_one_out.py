"""Leave-one-model-out attacks over one recipe's K models.

Each model k in turn plays the target; its scores on all P points (pool
and canaries) come from its own outputs and the OTHER K - 1 models'
outputs and keep rows only. The masking is `pseudo_target_scores`'s
(`pipeline.attacks.statistics`): row k is neither IN nor OUT for its own
calibration, so a model is never its own reference and its own membership
never enters its score. The per-point statistics are the attacks' own:

- online LiRA: per-point IN and OUT Gaussians of phi from the others
  (K/2 - 1 or K/2 of each in the paired design), two-sided likelihood ratio;
- offline LiRA: the OUT Gaussian only, one-sided test;
- RMIA offline: likelihood ratio against the others' OUT outputs, `a` and
  `gamma` given (never tuned here: tuning on the K models would see the
  target's keep row), compared with a population of the target's own
  outputs on other points (outputs only, never membership);
- loss: log p_y of the target itself (no references).

Every function takes logits (K, P, C), labels (P,) and keep (K, P) and
returns scores (K, P), higher means member: row k is model k as target.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from pipeline.attacks.lira import gaussian_fit, likelihood_ratio, offline_scores
from pipeline.attacks.rmia import log_likelihood_ratio, rmia_scores
from pipeline.attacks.statistics import log_true_prob, phi, pseudo_target_scores

__all__ = ["lira_offline", "lira_online", "loss", "rmia_offline"]

Score = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def _per_target(values: np.ndarray, keep: np.ndarray, labels: np.ndarray, score: Score) -> np.ndarray:
    """`pseudo_target_scores` kept as a (K, P) matrix: each target's scores on every point.

    Every point needs two IN and two OUT models in all, so that one of
    each is left once any model is the target; the paired design gives
    K/2 >= 2 of each.
    """
    keep = np.asarray(keep, dtype=bool)
    if values.shape != keep.shape:
        raise ValueError(f"signals of shape {values.shape} but a keep matrix of shape {keep.shape}")
    if (keep.sum(axis=0) < 2).any() or ((~keep).sum(axis=0) < 2).any():
        raise ValueError("leave-one-out scoring needs every point IN for at least 2 models and OUT for at least 2")
    pooled = pseudo_target_scores(values, keep, labels, score)
    if pooled.scores.size != values.size:
        raise ValueError(f"{values.size - pooled.scores.size} leave-one-out scores could not be computed")
    return pooled.scores.reshape(values.shape)


def lira_online(logits: np.ndarray, labels: np.ndarray, keep: np.ndarray, fixed_variance: bool) -> np.ndarray:
    """Online LiRA, log N(phi; IN) - log N(phi; OUT), both Gaussians fit on the other models."""

    def score(phi_k: np.ndarray, phi_all: np.ndarray, out: np.ndarray, inside: np.ndarray) -> np.ndarray:
        return likelihood_ratio(phi_k, phi_all, inside, out, fixed_variance)

    return _per_target(phi(logits, labels), keep, labels, score)


def lira_offline(logits: np.ndarray, labels: np.ndarray, keep: np.ndarray, fixed_variance: bool) -> np.ndarray:
    """Offline LiRA, -log P[Z >= phi] under the OUT Gaussian of the other models."""

    def score(phi_k: np.ndarray, phi_all: np.ndarray, out: np.ndarray, inside: np.ndarray) -> np.ndarray:
        return offline_scores(phi_k, *gaussian_fit(phi_all, out, fixed_variance))

    return _per_target(phi(logits, labels), keep, labels, score)


def rmia_offline(
    logits: np.ndarray,
    labels: np.ndarray,
    keep: np.ndarray,
    a: float,
    gamma: float,
    population: np.ndarray | None = None,
) -> np.ndarray:
    """Offline RMIA: the share of population points z with LR(x) / LR(z) > gamma, for the target's LR.

    `population` (P,) bool picks the points z (default: all P); z is
    compared through the target's own LR, so no membership is used. For a
    fixed population the score is monotone in LR(x); x itself counts in
    the denominator only (LR(x) / LR(x) = 1 is never > gamma >= 1).
    """
    z = np.ones(np.shape(labels), dtype=bool) if population is None else np.asarray(population, dtype=bool)

    def score(logp_k: np.ndarray, logp_all: np.ndarray, out: np.ndarray, inside: np.ndarray) -> np.ndarray:
        lr = log_likelihood_ratio(logp_k, logp_all, out, a)
        return rmia_scores(lr, lr[z], gamma)

    return _per_target(log_true_prob(logits, labels), keep, labels, score)


def loss(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The negated cross-entropy loss log p_y of each model on each point: a reference-free baseline."""
    return log_true_prob(logits, labels)
