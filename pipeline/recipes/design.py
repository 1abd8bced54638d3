"""The paired experiment design that every recipe of a recipe audit shares.

K models (even, at least 4) train on halves of one audit pool plus
mislabeled canaries. Models come in complementary pairs: model 2j trains
on a random half of the pool and a random half of the canaries, model
2j + 1 on the other halves. Hence every pool point and every canary is
IN for exactly K/2 models, and every model holds N/2 pool points and m/2
canaries, so each model has as many OUT points as IN ones in both groups
(Carlini et al. 2022's evaluation; Aerni, Zhang and Tramer 2024).

Sizes must be even so the halves are exact: an odd pool leaves one point,
drawn at random, out of the design; an odd number of canaries is a params
error. Columns of `keep` are the pool points first, then the canaries.
The same design (seed) serves every recipe, so recipe comparisons are
paired: the same model index sees the same points in every recipe.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.canaries.records import make_canaries
from pipeline.core.errors import PipelineError
from pipeline.core.types import Dataset, Splits

__all__ = ["RecipeDesign", "audit_design", "make_design", "paired_keep"]


@dataclass(frozen=True)
class RecipeDesign:
    """Which records every recipe's K models train on.

    `pool` holds dataset row indices of the pool points; `canary_x` and
    `canary_y` the canaries (mislabeled copies of rows outside the pool);
    `keep[k, j]` is True iff model k trains on column j, the pool points
    first, then the canaries.
    """

    pool: np.ndarray  # (N,) int64 dataset rows
    canary_x: np.ndarray  # (m, ...) float32
    canary_y: np.ndarray  # (m,) int64, a wrong label for each
    keep: np.ndarray  # (K, N + m) bool

    @property
    def n_models(self) -> int:
        return int(self.keep.shape[0])

    @property
    def is_canary(self) -> np.ndarray:
        """(N + m,) bool: which columns of `keep` are canaries."""
        return np.arange(self.keep.shape[1]) >= self.pool.size


def _check_sizes(n_pool: int, n_canaries: int, n_models: int) -> None:
    if n_models < 4 or n_models % 2:
        raise PipelineError(
            f"recipe_audit.n_models must be even and at least 4 (complementary pairs, "
            f"each model's references are the others), got {n_models}"
        )
    if n_canaries < 2 or n_canaries % 2:
        raise PipelineError(
            f"recipe_audit.n_canaries must be even and at least 2 (each model trains on exactly half), got {n_canaries}"
        )
    if n_pool < 2 or n_pool % 2:
        raise ValueError(f"the audit pool must hold an even number (>= 2) of points, got {n_pool}")


def _complementary_halves(n: int, n_pairs: int, rng: np.random.Generator) -> np.ndarray:
    """(2 * n_pairs, n) bool: per pair, a random half of n items and its complement."""
    half = np.arange(n) < n // 2
    first = rng.permuted(np.broadcast_to(half, (n_pairs, n)), axis=1)
    return np.stack([first, ~first], axis=1).reshape(2 * n_pairs, n)


def paired_keep(n_pool: int, n_canaries: int, n_models: int, rng: np.random.Generator) -> np.ndarray:
    """(K, N + m) keep matrix of complementary pairs, halves drawn separately for pool and canaries.

    Every column is IN for exactly K/2 models and every row for N/2 pool
    points and m/2 canaries.
    """
    _check_sizes(n_pool, n_canaries, n_models)
    pairs = n_models // 2
    return np.concatenate(
        [_complementary_halves(n_pool, pairs, rng), _complementary_halves(n_canaries, pairs, rng)], axis=1
    )


def make_design(
    dataset: Dataset,
    pool: np.ndarray,
    canary_sources: np.ndarray,
    n_canaries: int,
    n_models: int,
    rng: np.random.Generator,
) -> RecipeDesign:
    """The design on dataset rows `pool`, with canaries mislabeled from `canary_sources` (pool rows excluded).

    A canary copies a record the pool does not hold, so no model sees the
    same input under two labels. `rng` fixes everything: the same seed
    gives the same design, for every recipe.
    """
    pool = np.asarray(pool, dtype=np.int64)
    if pool.size % 2:
        pool = np.delete(pool, rng.integers(pool.size))
    sources = np.setdiff1d(canary_sources, pool)
    if n_canaries > sources.size:
        raise PipelineError(
            f"recipe_audit.n_canaries: {n_canaries} mislabeled canaries need as many records outside "
            f"the audit pool, and {dataset.name} has {sources.size}"
        )
    _check_sizes(pool.size, n_canaries, n_models)
    canary_x, canary_y = make_canaries("mislabeled", n_canaries, dataset, sources, rng)
    keep = paired_keep(pool.size, n_canaries, n_models, rng)
    return RecipeDesign(pool=pool, canary_x=canary_x, canary_y=canary_y.astype(np.int64), keep=keep)


def audit_design(dataset: Dataset, splits: Splits, n_models: int, n_canaries: int, seed: int) -> RecipeDesign:
    """The recipe audit's design on this data: the candidates as the pool, canaries from the attacker's pool.

    The candidates (the target's members and non-members) are the records
    whose privacy the report is about. Canaries copy records no recipe
    trains on and no model is tested on (the shadow pool), each with a
    wrong label. Every recipe gets the same design from `seed`.
    """
    rng = np.random.default_rng(seed)
    return make_design(dataset, splits.candidates, splits.shadow_pool, n_canaries, n_models, rng)
