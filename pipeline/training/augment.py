"""Perturbed copies of inputs, for the augmentation-robustness label-only attack.

A model tends to keep predicting the right label on small perturbations of
its training points more often than on unseen points (Choquette-Choo et al.
2021). Images get one-pixel shifts in four directions (zero fill): one
setting. Tabular rows (standardised features) get seeded Gaussian noise at
each scale of `NOISE_SCALES`, `N_NOISE` copies per scale: one setting per
scale, and the attack picks the scale on shadow models only. The perturbations
are fixed, not parameters, so the stages that hold the models query them once
and no attack parameter ever forces a model to be queried or trained again.
The same variants are used for every model, so target and shadows are
queried alike.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

NOISE_SCALES = (0.05, 0.1, 0.2, 0.4)  # standard deviations, in units of a standardised feature
N_NOISE = 8  # noisy copies per row and scale


def variant_settings(x: np.ndarray, rng: np.random.Generator) -> list[list[np.ndarray]]:
    """Perturbed copies of `x`, grouped by setting: [four shifts] for images, one list per noise scale otherwise."""
    if x.ndim == 4:  # (N, height, width, channels)
        return [[_shift(x, dy, dx) for dy, dx in ((1, 0), (-1, 0), (0, 1), (0, -1))]]
    return [
        [(x + rng.normal(0.0, scale, x.shape)).astype(np.float32) for _ in range(N_NOISE)] for scale in NOISE_SCALES
    ]


def _shift(x: np.ndarray, dy: int, dx: int) -> np.ndarray:
    out = np.zeros_like(x)
    h, w = x.shape[1:3]
    out[:, max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = x[
        :, max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)
    ]
    return out


def robustness(
    observe: Callable[[np.ndarray], np.ndarray], copies: list[np.ndarray], labels: np.ndarray
) -> np.ndarray:
    """(K, N) fraction of perturbed copies each model still labels correctly."""
    hits = [np.argmax(observe(copy), axis=-1) == labels[None] for copy in copies]
    return np.mean(hits, axis=0).astype(np.float32)


def robustness_by_setting(
    observe: Callable[[np.ndarray], np.ndarray], x: np.ndarray, labels: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """(S, K, N) robustness of each model under each perturbation setting (see `variant_settings`)."""
    return np.stack([robustness(observe, copies, labels) for copies in variant_settings(x, rng)])
