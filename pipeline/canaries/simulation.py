"""Where a white-box canary bound sits among the bounds the accounted mechanism itself would give.

One canary run is one draw: its bound varies with the coins and the
noise (at epsilon 4 the default run's bound was 1.79, other seeds gave
0.89 to 1.33). To say whether a draw is typical, the audit is simulated
under exactly the mechanism the accountant analysed, nothing else: m
gradient canaries, each included on a fair coin; at each of the plan's
steps an included canary is Poisson-sampled with probability q, and the
noisy sum at its coordinate, in units of the clip norm, is b + N(0,
sigma^2) (b = 1 if sampled, else 0; other records' gradients there are
left out, as the score itself assumes). Each canary's score is the same
per-step log-likelihood ratio `DpTrainer.dirac_evidence` sums, and each
simulated run is audited with the same guess counts, delta and
correction as the real one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from pipeline.measures.one_run import audit

__all__ = ["SimulatedBounds", "step_evidence", "simulate_white_box_bounds"]


@dataclass(frozen=True)
class SimulatedBounds:
    """The simulated bounds' median and 5th and 95th percentiles, over `repeats` simulated runs."""

    median: float
    p05: float
    p95: float
    repeats: int


def step_evidence(observed: np.ndarray, sampling_rate: float, noise_multiplier: float) -> np.ndarray:
    """One step's log-likelihood ratio of inclusion given the noisy sum `observed` (in clip norms): as the trainer's."""
    a = (np.asarray(observed, np.float64) - 0.5) / noise_multiplier**2
    if sampling_rate >= 1.0:
        return a
    return np.logaddexp(0.0, a + np.log(sampling_rate / (1.0 - sampling_rate)))


def simulate_white_box_bounds(
    m: int, sampling_rate: float, noise_multiplier: float, steps: int, ks: Sequence[int], delta: float,
    tests: int, repeats: int = 100, seed: int = 0,
) -> SimulatedBounds:  # fmt: skip
    """The white-box one-run bound of `repeats` simulated runs of the accounted mechanism (see the module docstring).

    `tests`: the number of scores the real audit corrects for together.
    """
    rng = np.random.default_rng(seed)
    bounds = np.empty(repeats)
    for r in range(repeats):
        included = rng.random(m) < 0.5
        scores = np.zeros(m)
        for _ in range(steps):
            sampled = included & (rng.random(m) < sampling_rate)
            scores += step_evidence(sampled + noise_multiplier * rng.standard_normal(m), sampling_rate, noise_multiplier)
        bounds[r] = audit(scores, included, ks, delta, tests=tests).epsilon_lb
    p05, median, p95 = np.percentile(bounds, [5, 50, 95])
    return SimulatedBounds(float(median), float(p05), float(p95), repeats)
