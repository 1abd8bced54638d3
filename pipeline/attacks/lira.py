"""Likelihood-ratio attack, LiRA (Carlini et al. 2022), on saved logits.

Statistic: phi = log(p_y / (1 - p_y)) = z_y - logsumexp(z_{c != y}),
computed from the logits (no rounding of p_y to 1). Its distribution over
models that did (IN) or did not (OUT) train on a point is modelled as a
Gaussian per point; with ``fixed_variance`` all points share one pooled
variance (Carlini et al. recommend it when there are few reference models).

Offline (registered as ``lira_offline``): the OUT Gaussian of each
candidate comes from the shadow models' logits on it (they never trained
on candidates); score = -log P[Z >= phi_target], Z ~ N(mu_out, sd_out^2),
the one-sided test, higher means member.
Calibration: leave-one-out among the shadows on the pool. Each shadow in
turn is the pseudo-target and the other shadows that are OUT on a pool
point give that point's OUT Gaussian (K/2 - 1 or K/2 of them); needs
K >= 4.

Online (``lira_online``): `lira_online_scores` compares an IN and an OUT
Gaussian (two-sided likelihood ratio) fit on reference models trained
exactly like the target on random halves of the candidates, each
candidate IN for exactly half of them (`AttackInput.reference`). This assumes a
stronger attacker, one who holds the candidate records themselves.
Calibration: leave-one-out among the reference models on the candidates
(each reference in turn plays the target, the others give the IN and OUT
Gaussians), so no target membership is ever used.
"""

from __future__ import annotations

import numpy as np
from pydantic import StrictBool

from pipeline.attacks.params import AttackParams
from pipeline.attacks.statistics import make_result, phi, pseudo_target_scores
from pipeline.config import StrictModel
from pipeline.core.errors import PipelineError
from pipeline.core.types import AttackInput, AttackResult

_MIN_VARIANCE = 1e-12


class Settings(StrictModel):
    """`attack.lira`: a variance pooled over all points (IN and OUT apart, online) or one per point."""

    fixed_variance: StrictBool = True


def gaussian_fit(
    values: np.ndarray, mask: np.ndarray, fixed_variance: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Per-point mean and standard deviation of `values` (M, P) over the rows where `mask`.

    The variance is per point (unbiased) or, with `fixed_variance`, pooled
    over all points around their own means; a point with fewer than two
    observations uses the pooled variance, one with none gets a NaN mean.
    """
    values = np.asarray(values, dtype=np.float64)
    mask = np.asarray(mask, dtype=bool)
    n = mask.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(n > 0, np.where(mask, values, 0.0).sum(axis=0) / n, np.nan)
    squares = np.where(mask, (values - mean) ** 2, 0.0).sum(axis=0)
    dof = np.maximum(n - 1, 0)
    if dof.sum() == 0:
        raise ValueError("estimating a variance needs at least two reference models on some point")
    pooled = squares.sum() / dof.sum()
    variance = np.full(mean.shape, pooled) if fixed_variance else np.where(dof > 0, squares / np.maximum(dof, 1), pooled)
    return mean, np.sqrt(np.maximum(variance, _MIN_VARIANCE))


def offline_scores(phi_target: np.ndarray, mean_out: np.ndarray, std_out: np.ndarray) -> np.ndarray:
    """-log P[Z >= phi] under the OUT Gaussian: large when phi is unusually high."""
    from scipy.stats import norm  # imported on use: stage validate reads this module's settings only

    return -norm.logsf(phi_target, loc=mean_out, scale=std_out)


def lira_online_scores(
    phi_target: np.ndarray, phi_refs: np.ndarray, keep_refs: np.ndarray, fixed_variance: bool
) -> np.ndarray:
    """Online LiRA: log N(phi; IN) - log N(phi; OUT) per point.

    `phi_target` (P,) is the target's phi on the candidates; `phi_refs`
    (R, P) the reference models' phi on them and `keep_refs` (R, P) which
    reference trained on which candidate. Every candidate needs at least
    one IN and one OUT reference.
    """
    keep_refs = np.asarray(keep_refs, dtype=bool)
    if not (keep_refs.any(axis=0).all() and (~keep_refs).any(axis=0).all()):
        raise ValueError(
            "online LiRA needs at least one IN and one OUT reference model for every point"
        )
    return likelihood_ratio(phi_target, phi_refs, keep_refs, ~keep_refs, fixed_variance)


def likelihood_ratio(
    phi_target: np.ndarray, phi_refs: np.ndarray, inside: np.ndarray, out: np.ndarray, fixed_variance: bool
) -> np.ndarray:
    """log N(phi; IN) - log N(phi; OUT), the Gaussians fit where `inside` / `out`."""
    from scipy.stats import norm

    mean_in, std_in = gaussian_fit(phi_refs, inside, fixed_variance)
    mean_out, std_out = gaussian_fit(phi_refs, out, fixed_variance)
    return norm.logpdf(phi_target, mean_in, std_in) - norm.logpdf(phi_target, mean_out, std_out)


def run(data: AttackInput, params: AttackParams, seed: int) -> AttackResult:
    fixed = params.lira.fixed_variance
    labels = data.target.labels
    phi_out = phi(data.shadow_on_candidates, labels)
    mean, std = gaussian_fit(phi_out, np.ones(phi_out.shape, dtype=bool), fixed)
    target_values = offline_scores(phi(data.target.logits[0], labels), mean, std)

    def pseudo(phi_k: np.ndarray, phi_refs: np.ndarray, out: np.ndarray, inside: np.ndarray) -> np.ndarray:
        return offline_scores(phi_k, *gaussian_fit(phi_refs, out, fixed))

    calibration = pseudo_target_scores(
        phi(data.shadow.logits, data.shadow.labels), data.shadow.keep, data.shadow.labels, pseudo
    )
    return make_result("lira_offline", data, target_values, calibration)


def run_online(data: AttackInput, params: AttackParams, seed: int) -> AttackResult:
    if data.reference is None:
        raise PipelineError("attack.enabled: lira_online needs reference models (reference.n_models)")
    fixed = params.lira.fixed_variance
    labels = data.reference.labels
    phi_refs = phi(data.reference.logits, labels)
    target_values = lira_online_scores(phi(data.target.logits[0], labels), phi_refs, data.reference.keep, fixed)

    def pseudo(phi_k: np.ndarray, phi_others: np.ndarray, out: np.ndarray, inside: np.ndarray) -> np.ndarray:
        return likelihood_ratio(phi_k, phi_others, inside, out, fixed)

    calibration = pseudo_target_scores(phi_refs, data.reference.keep, labels, pseudo)
    return make_result("lira_online", data, target_values, calibration)
