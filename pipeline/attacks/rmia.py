"""Offline RMIA (Zarifzadeh et al. 2024) on saved logits.

Signal: p_y, the model's probability of the true class (kept in log space).
For a point x, LR(x) = p_y(x | target) / Pr(x), where offline
Pr(x) = (1 + a)/2 * mean_OUT p_y(x | reference) + (1 - a)/2 approximates
the average over IN and OUT models from OUT models only. The score is
the fraction of population points z that x dominates:
score(x) = mean_z [ LR(x) / LR(z) > gamma ].

Population z. The target's outputs exist only on the candidates
(`AttackInput` holds no target outputs on the shadow pool), so the target
is compared with the candidates themselves (their outputs only, never
their membership); each pseudo-target shadow is likewise compared with
the pool points it is scored on. Both sets are half members, so target
and calibration scores are on the same footing. For a fixed population
the score is a monotone function of LR(x), so AUC and TPR at FPR depend
on the population only through ties (gamma > 1 saturates the top scores).

Offline `a`: ``attack.rmia.offline_a``, or when null, tuned on the shadow
models only: on the grid 0, 0.1, ..., 1 pick the `a` whose leave-one-out
scores (each shadow as pseudo-target, the other shadows' OUT outputs as
references, like LiRA's calibration) are best for ``attack.tune_for``:
TPR at 1% FPR (the operating point the report headlines; ties, and shadow
sets too small to measure 1% FPR, fall back to AUC) or AUC. Those same
leave-one-out scores are the calibration. Needs K >= 4 shadows.
"""

from __future__ import annotations

import logging

import numpy as np
from pydantic import Field, StrictFloat

from pipeline.attacks.params import AttackParams
from pipeline.attacks.statistics import log_true_prob, make_result, pseudo_target_scores
from pipeline.config import StrictModel
from pipeline.core.types import AttackInput, AttackResult, AttackScores
from pipeline.measures.roc import shadow_objective

log = logging.getLogger(__name__)

A_GRID: tuple[float, ...] = tuple(i / 10 for i in range(11))


class Settings(StrictModel):
    """`attack.rmia`: `gamma` is the likelihood-ratio margin; `offline_a` null means tuned on shadows, for `attack.tune_for`."""

    gamma: StrictFloat = Field(1.0, ge=1)
    offline_a: StrictFloat | None = Field(None, ge=0, le=1)


def log_likelihood_ratio(
    logp_target: np.ndarray, logp_refs: np.ndarray, out: np.ndarray, a: float
) -> np.ndarray:
    """log LR(x) = log p(x | target) - log Pr(x), NaN where no reference is OUT."""
    from scipy.special import logsumexp  # on use: stage validate imports the attacks for their settings only

    out = np.asarray(out, dtype=bool)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_mean_out = logsumexp(np.where(out, logp_refs, -np.inf), axis=0) - np.log(
            out.sum(axis=0)
        )
        log_pr = np.logaddexp(np.log((1 + a) / 2) + log_mean_out, np.log((1 - a) / 2))
    return np.asarray(logp_target, dtype=np.float64) - log_pr


def rmia_scores(log_lr_x: np.ndarray, log_lr_z: np.ndarray, gamma: float) -> np.ndarray:
    """Fraction of population points z with LR(x) / LR(z) > gamma (NaN in, NaN out)."""
    z = np.sort(log_lr_z[np.isfinite(log_lr_z)])
    count = np.searchsorted(z, np.asarray(log_lr_x) - np.log(gamma), side="left")
    return np.where(np.isfinite(log_lr_x), count / z.size, np.nan)


def _pseudo_targets(
    logp_pool: np.ndarray, keep: np.ndarray, labels: np.ndarray, a: float, gamma: float
) -> AttackScores:
    def score(logp_k: np.ndarray, logp_refs: np.ndarray, out: np.ndarray, inside: np.ndarray) -> np.ndarray:
        lr = log_likelihood_ratio(logp_k, logp_refs, out, a)
        return rmia_scores(lr, lr, gamma)

    return pseudo_target_scores(logp_pool, keep, labels, score)


def tune_offline_a(
    logp_pool: np.ndarray,
    keep: np.ndarray,
    labels: np.ndarray,
    gamma: float,
    tune_for: str = "tpr_at_1pct_fpr",
    grid: tuple[float, ...] = A_GRID,
) -> tuple[float, AttackScores]:
    """The grid value of `a` with the best leave-one-out `shadow_objective` on the shadows, and those scores."""
    best: tuple[tuple[float, float], float, AttackScores] | None = None
    for a in grid:
        scores = _pseudo_targets(logp_pool, keep, labels, a, gamma)
        objective = shadow_objective(scores, tune_for)
        if best is None or objective > best[0]:
            best = (objective, a, scores)
    assert best is not None
    return best[1], best[2]


def run(data: AttackInput, params: AttackParams, seed: int) -> AttackResult:
    gamma, a = params.rmia.gamma, params.rmia.offline_a
    logp_pool = log_true_prob(data.shadow.logits, data.shadow.labels)
    if a is None:
        a, calibration = tune_offline_a(logp_pool, data.shadow.keep, data.shadow.labels, gamma, params.tune_for)
        log.info("rmia_offline: tuned offline_a=%.1f on the shadow models", a)
    else:
        calibration = _pseudo_targets(logp_pool, data.shadow.keep, data.shadow.labels, a, gamma)
    labels = data.target.labels
    logp_refs = log_true_prob(data.shadow_on_candidates, labels)
    lr = log_likelihood_ratio(
        log_true_prob(data.target.logits[0], labels),
        logp_refs,
        np.ones(logp_refs.shape, dtype=bool),
        a,
    )
    return make_result("rmia_offline", data, rmia_scores(lr, lr, gamma), calibration)
