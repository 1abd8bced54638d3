"""Empirical epsilon lower bounds that hold at their stated confidence.

Any (eps, delta)-DP training algorithm gives, at every fixed threshold,
TPR <= e^eps FPR + delta and TNR <= e^eps FNR + delta (Jagielski et al.
2020, Nasr et al. 2021); delta is the target's accounted delta for a DP
target, 0 otherwise. A bound built on this is only valid if the threshold and the side
(members or non-members) are fixed before the target's membership is
looked at. So:

1. `choose_rule` picks the threshold and side on calibration scores
   (shadow or reference models, known membership), maximising the bound
   the calibration rates would give at the target's sample sizes;
2. `epsilon_lower_bound` applies that one rule once to the target:

       side "members":     log((TPR_lo - delta) / FPR_hi)
       side "non-members": log((TNR_lo - delta) / FNR_hi),   floored at 0,

   with two-sided Clopper-Pearson intervals at `confidence` on each rate,
   so each one-sided limit holds with (1 + confidence) / 2 and both
   together, by the union bound, with at least `confidence`.

The assumption behind the confidence: Clopper-Pearson treats each
candidate's outcome as an independent trial, the standard approximation
when auditing from one trained model. The outcomes of one model's members
are not strictly independent; the bound is exact for the known-answer
mechanisms of the tests, which draw every record independently. A bound
proven for one training run needs records included at random (Steinke,
Nasr and Jagielski 2023).

Several attacks shown side by side: give each `confidence` 1 - (1 - c) / A
(Bonferroni over the A attacks), so that even the largest of them holds
at c.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, NamedTuple

import numpy as np

if TYPE_CHECKING:
    from pipeline.measures.roc import Roc

CONFIDENCE = 0.95
Side = Literal["members", "non-members"]


class BoundRule(NamedTuple):
    """A threshold (member iff score >= threshold) and the side whose rates bound epsilon."""

    threshold: float
    side: Side


class SideBounds(NamedTuple):
    """Per operating point, the bound from each side (may be -inf)."""

    members: np.ndarray
    nonmembers: np.ndarray


def clopper_pearson(k: np.ndarray, n: int, confidence: float = CONFIDENCE) -> tuple[np.ndarray, np.ndarray]:
    """Two-sided Clopper-Pearson interval for k successes out of n."""
    from scipy.stats import beta  # 1 to 2 s to import: only where a bound is computed

    k = np.asarray(k, dtype=np.float64)
    alpha = 1.0 - confidence
    lower = np.where(k > 0, beta.ppf(alpha / 2, np.maximum(k, 1), n - k + 1), 0.0)
    upper = np.where(k < n, beta.ppf(1 - alpha / 2, k + 1, np.maximum(n - k, 1)), 1.0)
    return lower, upper


def side_bounds(
    tp: np.ndarray, fp: np.ndarray, n_members: int, n_nonmembers: int, confidence: float, delta: float
) -> SideBounds:
    """log((TPR_lo - delta) / FPR_hi) and log((TNR_lo - delta) / FNR_hi) at each (tp, fp) count pair."""
    tp, fp = np.asarray(tp, dtype=np.float64), np.asarray(fp, dtype=np.float64)
    tpr_lo, _ = clopper_pearson(tp, n_members, confidence)
    _, fpr_hi = clopper_pearson(fp, n_nonmembers, confidence)
    tnr_lo, _ = clopper_pearson(n_nonmembers - fp, n_nonmembers, confidence)
    _, fnr_hi = clopper_pearson(n_members - tp, n_members, confidence)
    with np.errstate(divide="ignore", invalid="ignore"):
        members = np.log(np.maximum(tpr_lo - delta, 0.0)) - np.log(fpr_hi)
        nonmembers = np.log(np.maximum(tnr_lo - delta, 0.0)) - np.log(fnr_hi)
    return SideBounds(members, nonmembers)


def choose_rule(
    calibration: Roc, n_members: int, n_nonmembers: int, confidence: float = CONFIDENCE, delta: float = 0.0
) -> BoundRule:
    """On the calibration ROC: the threshold and side with the highest bound at the target's counts.

    Ties: among thresholds with the same bound the highest is taken (the
    first ROC point, `argmax`), and the members' side wins a tie with the
    non-members'. Any fixed rule is valid, since it never looks at the
    target; on the default data other rules move the bound by 0.03 to 0.2.
    """
    curve = calibration
    bounds = side_bounds(
        np.round(curve.tpr * n_members), np.round(curve.fpr * n_nonmembers), n_members, n_nonmembers, confidence, delta
    )
    best_members, best_nonmembers = int(np.argmax(bounds.members)), int(np.argmax(bounds.nonmembers))
    if bounds.members[best_members] >= bounds.nonmembers[best_nonmembers]:
        return BoundRule(float(curve.thresholds[best_members]), "members")
    return BoundRule(float(curve.thresholds[best_nonmembers]), "non-members")


def calibrated_bound(
    calibration: Roc, scores: np.ndarray, is_member: np.ndarray, confidence: float = CONFIDENCE, delta: float = 0.0
) -> float:
    """The whole procedure: the rule chosen on `calibration` at the target's counts, then applied once to the target."""
    y = np.asarray(is_member, dtype=bool)
    rule = choose_rule(calibration, int(y.sum()), int((~y).sum()), confidence, delta)
    return epsilon_lower_bound(rule, scores, y, confidence, delta)


def epsilon_lower_bound(
    rule: BoundRule, scores: np.ndarray, is_member: np.ndarray, confidence: float = CONFIDENCE, delta: float = 0.0
) -> float:
    """The rule's bound on the target, computed once (module docstring); 0 when it shows nothing."""
    s, y = np.asarray(scores, dtype=np.float64), np.asarray(is_member, dtype=bool)
    called = s >= rule.threshold
    bounds = side_bounds(np.sum(called & y), np.sum(called & ~y), int(y.sum()), int((~y).sum()), confidence, delta)
    value = bounds.members if rule.side == "members" else bounds.nonmembers
    return float(max(0.0, value))
