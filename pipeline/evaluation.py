"""How well an attack's scores separate members from non-members.

Pure numpy/scipy/sklearn, no I/O. Conventions:

- A point is predicted "member" iff ``score >= threshold``.
- The ROC is taken at every distinct score, so tied scores move together
  (a member tied with a non-member can never be counted before it).
- TPR at a fixed FPR is the largest TPR over ROC points whose FPR is at
  most that level, without interpolation; it is None ("not measurable")
  unless there are at least 1/level non-members.
- The decision threshold is the one maximising balanced accuracy on the
  attack's `calibration` scores (shadow data), placed halfway between the
  two calibration scores it separates; it is then applied to the target.
- Empirical epsilon lower bound (the auditing bound of Jagielski et al.
  2020 and Nasr et al. 2021, with delta = 0): at each threshold, with
  two-sided 95% Clopper-Pearson intervals on each rate,

      eps_lb = max over thresholds of max( log(TPR_lo / FPR_hi),
                                           log(TNR_lo / FNR_hi) ),  floored at 0,

  where TNR = 1 - FPR and FNR = 1 - TPR. Any (eps, 0)-DP training
  algorithm has TPR <= e^eps FPR and TNR <= e^eps FNR at every threshold,
  so each term bounds eps from below at that threshold's confidence. The
  maximum over thresholds is the usual practice; it picks the threshold on
  the same data, so read it as a (slightly optimistic) empirical bound.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from scipy.stats import beta
from sklearn.metrics import roc_auc_score

from pipeline.types import AttackMetrics, AttackResult, AttackScores

FPR_LEVELS: tuple[float, ...] = (0.01, 0.001, 0.0001)
CONFIDENCE = 0.95


class Roc(NamedTuple):
    """Counts at every distinct score, from "nobody is a member" down to "everybody is".

    `thresholds[i]` predicts member iff score >= thresholds[i]; the first
    threshold lies just above the highest score.
    """

    thresholds: np.ndarray
    tp: np.ndarray
    fp: np.ndarray
    n_members: int
    n_nonmembers: int

    @property
    def tpr(self) -> np.ndarray:
        return self.tp / self.n_members

    @property
    def fpr(self) -> np.ndarray:
        return self.fp / self.n_nonmembers


def _checked(scores: np.ndarray, is_member: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(is_member, dtype=bool).ravel()
    if s.shape != y.shape:
        raise ValueError(f"{what}: {s.size} scores but {y.size} membership labels")
    if not np.all(np.isfinite(s)):
        raise ValueError(f"{what}: scores must be finite ({int(np.sum(~np.isfinite(s)))} are not)")
    if y.all() or not y.any():
        raise ValueError(
            f"{what}: needs both members and non-members (got {int(y.sum())} of {y.size})"
        )
    return s, y


def roc(scores: np.ndarray, is_member: np.ndarray, what: str = "scores") -> Roc:
    """Integer TP/FP counts at every distinct score (ties kept together)."""
    s, y = _checked(scores, is_member, what)
    order = np.argsort(-s, kind="mergesort")
    s_sorted, y_sorted = s[order], y[order]
    ends = np.r_[np.flatnonzero(np.diff(s_sorted)), s.size - 1]  # last index of each tie group
    tp = np.cumsum(y_sorted)[ends]
    fp = ends + 1 - tp
    above = np.nextafter(s_sorted[0], np.inf)
    return Roc(
        thresholds=np.r_[above, s_sorted[ends]],
        tp=np.r_[0, tp],
        fp=np.r_[0, fp],
        n_members=int(y.sum()),
        n_nonmembers=int((~y).sum()),
    )


def best_threshold(scores: np.ndarray, is_member: np.ndarray, what: str = "calibration") -> float:
    """The threshold maximising balanced accuracy, halfway to the next lower score."""
    curve = roc(scores, is_member, what)
    balanced = (curve.tpr + 1.0 - curve.fpr) / 2.0
    i = int(np.argmax(balanced))
    upper = float(curve.thresholds[i])
    if i == 0 or i + 1 >= curve.thresholds.size:
        return upper
    lower = float(curve.thresholds[i + 1])
    middle = lower + (upper - lower) / 2.0
    return middle if lower < middle <= upper else upper


def tpr_at_fpr(curve: Roc, level: float) -> float | None:
    """Largest TPR with FPR <= level; None when fewer than 1/level non-members."""
    if curve.n_nonmembers * level < 1.0 - 1e-9:
        return None
    return float(np.max(curve.tpr[curve.fp <= level * curve.n_nonmembers + 1e-9]))


def clopper_pearson(
    k: np.ndarray, n: int, confidence: float = CONFIDENCE
) -> tuple[np.ndarray, np.ndarray]:
    """Two-sided Clopper-Pearson interval for k successes out of n."""
    k = np.asarray(k, dtype=np.float64)
    alpha = 1.0 - confidence
    lower = np.where(k > 0, beta.ppf(alpha / 2, np.maximum(k, 1), n - k + 1), 0.0)
    upper = np.where(k < n, beta.ppf(1 - alpha / 2, k + 1, np.maximum(n - k, 1)), 1.0)
    return lower, upper


def epsilon_lower_bound(curve: Roc, confidence: float = CONFIDENCE) -> float:
    """Empirical epsilon lower bound (see the module docstring for the formula)."""
    n_m, n_n = curve.n_members, curve.n_nonmembers
    tpr_lo, _ = clopper_pearson(curve.tp, n_m, confidence)
    _, fpr_hi = clopper_pearson(curve.fp, n_n, confidence)
    tnr_lo, _ = clopper_pearson(n_n - curve.fp, n_n, confidence)
    _, fnr_hi = clopper_pearson(n_m - curve.tp, n_m, confidence)
    with np.errstate(divide="ignore"):
        eps = np.maximum(np.log(tpr_lo) - np.log(fpr_hi), np.log(tnr_lo) - np.log(fnr_hi))
    return float(max(0.0, np.max(eps)))


def _auc_per_class(scores: AttackScores) -> dict[int, float | None]:
    out: dict[int, float | None] = {}
    labels = np.asarray(scores.labels)
    member = np.asarray(scores.is_member, dtype=bool)
    for c in np.unique(labels):
        m = labels == c
        both = member[m].any() and not member[m].all()
        out[int(c)] = float(roc_auc_score(member[m], scores.scores[m])) if both else None
    return out


def evaluate(result: AttackResult) -> AttackMetrics:
    """Metrics of one attack on the target; its threshold comes from `calibration`."""
    what = f"attack {result.name!r}"
    s, y = _checked(result.target.scores, result.target.is_member, f"{what} target")
    curve = roc(s, y, f"{what} target")
    calibration = result.calibration
    threshold = best_threshold(calibration.scores, calibration.is_member, f"{what} calibration")
    predicted = s >= threshold
    tp, fp = int(np.sum(predicted & y)), int(np.sum(predicted & ~y))
    tpr, fpr = tp / curve.n_members, fp / curve.n_nonmembers
    return AttackMetrics(
        auc=float(roc_auc_score(y, s)),
        advantage=float(np.max(curve.tpr - curve.fpr)),
        balanced_accuracy=(tpr + 1.0 - fpr) / 2.0,
        threshold=threshold,
        tpr_at_fpr={level: tpr_at_fpr(curve, level) for level in FPR_LEVELS},
        n_members=curve.n_members,
        n_nonmembers=curve.n_nonmembers,
        ppv=tp / (tp + fp) if tp + fp else None,
        epsilon_lb=epsilon_lower_bound(curve),
        auc_per_class=_auc_per_class(result.target),
    )


def most_exposed(scores: AttackScores, index: np.ndarray, top: int = 10) -> list[dict]:
    """The members with the highest scores: the training points the attack exposes most.

    Each row: dataset `index`, true `label`, `score`, and `fpr_at_score`,
    the fraction of non-members scoring at least as high (how many false
    alarms flagging this point would cost).
    """
    s = np.asarray(scores.scores, dtype=np.float64)
    member = np.asarray(scores.is_member, dtype=bool)
    nonmember_sorted = np.sort(s[~member])
    rows = []
    positions = np.flatnonzero(member)
    for j in positions[np.argsort(-s[positions], kind="mergesort")][:top]:
        at_least = nonmember_sorted.size - np.searchsorted(nonmember_sorted, s[j], side="left")
        rows.append(
            {
                "index": int(index[j]),
                "label": int(scores.labels[j]),
                "score": float(s[j]),
                "fpr_at_score": float(at_least / nonmember_sorted.size)
                if nonmember_sorted.size
                else None,
            }
        )
    return rows


def _level_key(level: float) -> str:
    return f"tpr_at_{level * 100:g}pct_fpr"


def metrics_to_dict(metrics: AttackMetrics) -> dict[str, float | int | None]:
    """Flat JSON-able view; "not measurable" stays None."""

    def num(value: float | None) -> float | None:
        return (
            None
            if value is None or (isinstance(value, float) and math.isnan(value))
            else float(value)
        )

    out: dict[str, float | int | None] = {
        "auc": num(metrics.auc),
        "advantage": num(metrics.advantage),
        "balanced_accuracy": num(metrics.balanced_accuracy),
        "threshold": num(metrics.threshold),
        "ppv": num(metrics.ppv),
        "epsilon_lb": num(metrics.epsilon_lb),
    }
    for level, value in sorted(metrics.tpr_at_fpr.items(), reverse=True):
        out[_level_key(level)] = num(value)
    out["n_members"] = int(metrics.n_members)
    out["n_nonmembers"] = int(metrics.n_nonmembers)
    for c, value in sorted(metrics.auc_per_class.items()):
        out[f"auc_class_{c}"] = num(value)
    return out
