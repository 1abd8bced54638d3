"""Perturbed copies of inputs, for the augmentation-robustness label-only attack.

A model tends to keep predicting the right label on small perturbations of
its training points more often than on unseen points (Choquette-Choo et al.
2021). Images get one-pixel shifts in four directions (zero fill); tabular
data gets seeded Gaussian noise. The same variants are used for every
model, so target and shadows are queried alike.
"""

from __future__ import annotations

from typing import Callable

import numpy as np


def variants(x: np.ndarray, n_noise: int, noise_scale: float, rng: np.random.Generator) -> list[np.ndarray]:
    """Perturbed copies of `x`: shifted images, or noisy tabular rows."""
    if x.ndim == 4:  # (N, height, width, channels)
        return [_shift(x, dy, dx) for dy, dx in ((1, 0), (-1, 0), (0, 1), (0, -1))]
    return [(x + rng.normal(0.0, noise_scale, x.shape)).astype(np.float32) for _ in range(n_noise)]


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
