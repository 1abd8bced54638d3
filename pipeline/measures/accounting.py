"""Privacy accounting for DP-SGD, and a check of attack ROCs against a DP guarantee.

A thin, typed wrapper over Google's ``dp-accounting`` package. DP-SGD with
Poisson sampling is ``steps`` self-compositions of the Poisson-subsampled
Gaussian mechanism (rate ``q``, noise multiplier ``sigma``)::

    SelfComposedDpEvent(PoissonSampledDpEvent(q, GaussianDpEvent(sigma)), steps)

under the add-or-remove-one neighbouring relation. Two accountants bound
its epsilon at a given delta: "rdp" (Renyi DP, Mironov et al. 2019; fast,
slightly loose) and "pld" (privacy loss distributions, Koskela et al. /
Doroshenko et al. 2022; tighter, slower at small sigma). Both are upper
bounds, so PLD's epsilon is the smaller one; they typically differ by
5-15%.

The RDP accountant logs "failed to converge ... Excluding this order" for
orders whose series does not converge. Those orders are just left out of
the minimum over orders, which keeps the bound valid, so those messages
(and only those) are filtered while this module calls the accountant.

``dp_violations`` checks an attack's ROC against what an (epsilon, delta)
guarantee allows, beyond sampling error.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
from collections.abc import Iterator
from typing import TYPE_CHECKING, Literal

import numpy as np

from pipeline.core.errors import PipelineError

if TYPE_CHECKING:
    import dp_accounting

Accountant = Literal["rdp", "pld"]
ACCOUNTANTS: tuple[str, ...] = ("rdp", "pld")

SIGMA_MIN = 0.3  # calibration never picks less noise than this
SIGMA_MAX = 1000.0  # nor more: beyond it training is noise, and the target is "unreachable"
_CALIBRATION_RTOL = 1e-3  # sigma is found to within this fraction of itself


# --------------------------------------------------------------------------
# Quiet accountant calls


class _ExpectedNonConvergence(logging.Filter):
    """Drops RDP's "failed to converge ... Excluding this order" warnings only."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not ("failed to converge" in message and "Excluding this order" in message)


_FILTER = _ExpectedNonConvergence()


@contextlib.contextmanager
def _quiet_absl() -> Iterator[None]:
    logger = logging.getLogger("absl")
    logger.addFilter(_FILTER)
    try:
        yield
    finally:
        logger.removeFilter(_FILTER)


# --------------------------------------------------------------------------
# Epsilon and noise calibration


def _check(sampling_rate: float, steps: int, delta: float, accountant: str) -> None:
    if accountant not in ACCOUNTANTS:
        raise PipelineError(f"accountant must be one of {', '.join(ACCOUNTANTS)}, got {accountant!r}")
    if not 0.0 < sampling_rate <= 1.0:
        raise PipelineError(f"the sampling rate must be in (0, 1], got {sampling_rate}")
    if steps < 1 or int(steps) != steps:
        raise PipelineError(f"steps must be a positive integer, got {steps}")
    if not 0.0 < delta < 1.0:
        raise PipelineError(f"delta must be in (0, 1), got {delta}")


def _event(noise_multiplier: float, sampling_rate: float, steps: int) -> dp_accounting.DpEvent:
    import dp_accounting  # 0.5 to 1 s to import: only where epsilon is accounted (stage validate imports this module)

    return dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(sampling_rate, dp_accounting.GaussianDpEvent(noise_multiplier)), int(steps)
    )


def _new_accountant(accountant: str) -> dp_accounting.PrivacyAccountant:
    from dp_accounting.pld import pld_privacy_accountant
    from dp_accounting.rdp import rdp_privacy_accountant

    if accountant == "rdp":
        return rdp_privacy_accountant.RdpAccountant()
    return pld_privacy_accountant.PLDAccountant()


def _epsilon(
    noise_multiplier: float, sampling_rate: float, steps: int, delta: float, accountant: str
) -> float:
    with _quiet_absl():
        acc = _new_accountant(accountant).compose(_event(noise_multiplier, sampling_rate, steps))
        return float(acc.get_epsilon(delta))


@functools.lru_cache(maxsize=256)
def epsilon(
    noise_multiplier: float,
    sampling_rate: float,
    steps: int,
    delta: float,
    accountant: Accountant = "rdp",
) -> float:
    """Epsilon at `delta` of `steps` Poisson-subsampled Gaussian steps (DP-SGD).

    `noise_multiplier` is sigma (noise std / clip norm), `sampling_rate`
    the Poisson rate q = expected batch / n. Cached: the target and its
    shadows usually ask for the same numbers.
    """
    _check(sampling_rate, steps, delta, accountant)
    if not noise_multiplier > 0:
        raise PipelineError(f"noise_multiplier must be > 0, got {noise_multiplier}")
    return _epsilon(float(noise_multiplier), float(sampling_rate), int(steps), float(delta), accountant)


@functools.lru_cache(maxsize=64)
def calibrate_noise(
    target_epsilon: float,
    sampling_rate: float,
    steps: int,
    delta: float,
    accountant: Accountant = "rdp",
    key: str = "defenses.<name>.target_epsilon",
) -> float:
    """The smallest noise multiplier (to 0.1%) whose epsilon is <= `target_epsilon`.

    Searches sigma in [SIGMA_MIN, SIGMA_MAX] with the package's
    `calibrate_dp_mechanism` (Brent's method on an explicit bracket, which
    guarantees epsilon(sigma) <= target). A target that even SIGMA_MAX
    cannot reach raises PipelineError naming `key`; a target so loose that
    SIGMA_MIN already meets it returns SIGMA_MIN. For "pld" the search
    starts from the RDP answer, an upper bound on the PLD one.
    """
    _check(sampling_rate, steps, delta, accountant)
    if not target_epsilon > 0:
        raise PipelineError(f"{key} must be > 0, got {target_epsilon}")

    def eps(sigma: float) -> float:
        return _epsilon(sigma, sampling_rate, steps, delta, accountant)

    guess = 1.0
    if accountant == "pld":
        guess = calibrate_noise(target_epsilon, sampling_rate, steps, delta, "rdp", key)
    # An explicit bracket [lo, hi] with eps(lo) > target >= eps(hi).
    hi = min(max(guess, SIGMA_MIN), SIGMA_MAX)
    eps_hi = eps(hi)
    while eps_hi > target_epsilon:
        if hi >= SIGMA_MAX:
            raise PipelineError(
                f"{key} = {target_epsilon} cannot be reached: even noise_multiplier = {SIGMA_MAX:g} "
                f"gives epsilon {eps_hi:.3g} at delta = {delta:g} over {steps} steps with sampling "
                f"rate {sampling_rate:.4g} ({accountant} accountant); raise target_epsilon or delta, "
                "or train fewer epochs or with a smaller batch_size"
            )
        hi = min(2.0 * hi, SIGMA_MAX)
        eps_hi = eps(hi)
    lo = hi
    while True:
        if lo <= SIGMA_MIN:
            return SIGMA_MIN  # eps(SIGMA_MIN) <= target: as little noise as we allow
        lo = max(lo / 2.0, SIGMA_MIN)
        if eps(lo) > target_epsilon:
            break
        hi = lo
    import dp_accounting

    with _quiet_absl():
        sigma = dp_accounting.calibrate_dp_mechanism(
            lambda: _new_accountant(accountant),
            lambda s: _event(s, sampling_rate, steps),
            target_epsilon,
            delta,
            bracket_interval=dp_accounting.ExplicitBracketInterval(lo, hi),
            tol=_CALIBRATION_RTOL * hi,
        )
    return float(sigma)


# --------------------------------------------------------------------------
# Attack ROCs against a DP guarantee


def dp_violations(
    fpr: np.ndarray,
    tpr: np.ndarray,
    epsilon: float,
    delta: float,
    n_members: int,
    n_nonmembers: int,
    confidence: float = 0.95,
) -> list[dict[str, float | str]]:
    """ROC points that an (epsilon, delta)-DP training algorithm cannot produce.

    Any membership test against an (eps, delta)-DP model satisfies, at every
    threshold, TPR <= e^eps FPR + delta and TNR <= e^eps FNR + delta
    (Kairouz et al. 2015), TNR = 1 - FPR, FNR = 1 - TPR. The rates here are
    measured on `n_members` and `n_nonmembers` points, so a point is flagged
    only when the bound fails beyond sampling error: with two-sided
    Clopper-Pearson intervals at `confidence` (the same intervals as
    `pipeline.measures.roc`), when

        TPR_lo > e^eps FPR_hi + delta   or   TNR_lo > e^eps FNR_hi + delta.

    The intervals are per point, not simultaneous over the curve; raise
    `confidence` to flag only stronger evidence. Returns one dict per
    violation with the point's "fpr" and "tpr", which "inequality" fails,
    its left-hand side's lower bound ("lower") and the largest value the
    guarantee allows there ("allowed"). An empty list means consistent.
    """
    from pipeline.measures.bounds import clopper_pearson

    fpr = np.asarray(fpr, dtype=np.float64).ravel()
    tpr = np.asarray(tpr, dtype=np.float64).ravel()
    if fpr.shape != tpr.shape:
        raise ValueError(f"fpr and tpr must have the same length, got {fpr.size} and {tpr.size}")
    if n_members < 1 or n_nonmembers < 1:
        raise ValueError(f"need members and non-members, got {n_members} and {n_nonmembers}")
    if np.any((fpr < 0) | (fpr > 1) | (tpr < 0) | (tpr > 1)):
        raise ValueError("fpr and tpr must be rates in [0, 1]")
    if epsilon < 0 or not 0 <= delta < 1:
        raise ValueError(f"need epsilon >= 0 and delta in [0, 1), got {epsilon} and {delta}")
    tp = np.rint(tpr * n_members)
    fp = np.rint(fpr * n_nonmembers)
    tpr_lo, _ = clopper_pearson(tp, n_members, confidence)
    _, fpr_hi = clopper_pearson(fp, n_nonmembers, confidence)
    tnr_lo, _ = clopper_pearson(n_nonmembers - fp, n_nonmembers, confidence)
    _, fnr_hi = clopper_pearson(n_members - tp, n_members, confidence)
    scale = math.exp(epsilon)
    checks = (
        ("TPR <= e^eps FPR + delta", tpr_lo, scale * fpr_hi + delta),
        ("TNR <= e^eps FNR + delta", tnr_lo, scale * fnr_hi + delta),
    )
    out: list[dict[str, float | str]] = []
    for i in range(fpr.size):
        for name, lower, allowed in checks:
            if lower[i] > allowed[i]:
                out.append(
                    {
                        "fpr": float(fpr[i]),
                        "tpr": float(tpr[i]),
                        "inequality": name,
                        "lower": float(lower[i]),
                        "allowed": float(allowed[i]),
                    }
                )
    return out
