"""The epsilon lower bound of a privacy audit with one training run.

Steinke, Nasr and Jagielski, "Privacy Auditing with One (1) Training Run",
NeurIPS 2023, Theorem 3.1 with its delta > 0 extension (Proposition 5.2,
the p-value of their Appendix D):

m canaries are each included in training independently with probability
1/2. After one training run the auditor guesses inclusion for r of them
(abstaining on the rest) and gets v right. If training is (eps, delta)-DP,

    P[V >= v] <= P[Bin(r, p) >= v] + 2 m delta max_{i=1..v} P[v - i <= Bin(r, p) < v] / i,

with p = e^eps / (1 + e^eps), the accuracy of eps-randomized response.
The largest eps whose p-value stays below 1 - confidence is rejected, so
every smaller eps is too: that eps is a lower bound on the true epsilon
holding with the stated confidence, over the canaries' inclusion coins.

The guesses must be fixed by rules chosen before the coins are looked at:
here the k/2 highest scores are guessed "in" and the k/2 lowest "out", for
each k of a grid given in advance. The bound reported for a grid is the
largest over it, each computed at 1 - (1 - confidence) / |grid|
(Bonferroni), so the largest too holds at the stated confidence.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import binom

__all__ = ["CONFIDENCE", "p_value", "epsilon_lower_bound", "guess", "GuessResult", "OneRunAudit", "audit"]

CONFIDENCE = 0.95
EPS_MAX = 50.0  # bisection range: no audit of m <= 10^7 canaries certifies more


def p_value(m: int, r: int, v: int, eps: float, delta: float) -> float:
    """P[>= v correct of r guesses] bound for an (eps, delta)-DP algorithm on m canaries."""
    if not 0 <= v <= r <= m:
        raise ValueError(f"need 0 <= v <= r <= m, got v={v}, r={r}, m={m}")
    if v == 0:
        return 1.0
    p = 1.0 / (1.0 + math.exp(-eps))
    tail = float(binom.sf(v - 1, r, p))  # P[Bin(r, p) >= v]
    if delta == 0:
        return min(1.0, tail)
    below = binom.pmf(np.arange(v - 1, -1, -1), r, p)  # P[Bin = v - i] for i = 1..v
    alpha = float(np.max(np.cumsum(below) / np.arange(1, v + 1)))
    return min(1.0, tail + 2.0 * m * delta * alpha)


def epsilon_lower_bound(m: int, r: int, v: int, delta: float, confidence: float = CONFIDENCE) -> float:
    """The largest eps that v correct of r guesses reject at `confidence` (0 if none is)."""
    level = 1.0 - confidence
    if p_value(m, r, v, 0.0, delta) >= level:
        return 0.0
    low, high = 0.0, EPS_MAX
    if p_value(m, r, v, high, delta) < level:
        return high
    for _ in range(60):  # p_value grows with eps: bisect for the crossing
        mid = 0.5 * (low + high)
        low, high = (mid, high) if p_value(m, r, v, mid, delta) < level else (low, mid)
    return low


def guess(scores: np.ndarray, k: int) -> np.ndarray:
    """Guesses per canary: +1 for the ceil(k/2) highest scores, -1 for the floor(k/2) lowest, 0 abstains.

    Ties are broken by position (a stable sort), never by the coins.
    """
    m = len(scores)
    if not 0 < k <= m:
        raise ValueError(f"k must be in [1, {m}], got {k}")
    order = np.argsort(-np.asarray(scores, np.float64), kind="stable")
    out = np.zeros(m, np.int8)
    n_in = -(-k // 2)
    out[order[:n_in]] = 1
    out[order[m - (k - n_in) :]] = -1
    return out


@dataclass(frozen=True)
class GuessResult:
    """One abstention level: r guesses, v correct, and the bound they give."""

    k: int
    correct: int
    epsilon_lb: float


@dataclass(frozen=True)
class OneRunAudit:
    """A score's audit over a grid of guess counts; `epsilon_lb` the largest, valid at `confidence`."""

    m: int
    delta: float
    confidence: float
    levels: tuple[GuessResult, ...]

    @property
    def best(self) -> GuessResult:
        return max(self.levels, key=lambda level: (level.epsilon_lb, -level.k))

    @property
    def epsilon_lb(self) -> float:
        return self.best.epsilon_lb


def audit(
    scores: np.ndarray,
    included: np.ndarray,
    ks: Sequence[int],
    delta: float,
    confidence: float = CONFIDENCE,
    tests: int = 1,
) -> OneRunAudit:
    """Audit one score (higher means included) of m canaries at every k of the grid.

    Each k's bound is computed at 1 - (1 - confidence) / (len(ks) * tests),
    so that the largest over the grid, and over `tests` audits reported
    together, holds at `confidence`.
    """
    scores = np.asarray(scores, np.float64)
    included = np.asarray(included, bool)
    if scores.shape != included.shape or scores.ndim != 1:
        raise ValueError(f"scores {scores.shape} and included {included.shape} must be the same 1-d shape")
    m = len(scores)
    each = 1.0 - (1.0 - confidence) / (len(ks) * tests)
    truth = np.where(included, 1, -1)
    levels = []
    for k in ks:
        g = guess(scores, int(k))
        v = int(np.sum(g == truth))
        levels.append(GuessResult(int(k), v, epsilon_lower_bound(m, int(k), v, delta, each)))
    return OneRunAudit(m, float(delta), float(confidence), tuple(levels))
