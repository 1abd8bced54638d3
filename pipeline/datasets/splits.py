"""The seeded split of a dataset into roles, and which points each model trains on.

Roles (members, as many non-members, test, the attacker's shadow pool, the
defender's reference data) are disjoint; tabular features are standardised
with the shadow pool's statistics only. Keep matrices say which points each
of K models trains on: disjoint pairs, as the target's training-set size.
"""

from __future__ import annotations

import numpy as np

from pipeline.config import DataParams
from pipeline.core.errors import PipelineError
from pipeline.core.types import Dataset, Splits


def standardized(dataset: Dataset, fit_rows: np.ndarray) -> Dataset:
    """Tabular features scaled to zero mean and unit variance with the statistics of `fit_rows` only.

    The prepare stage fits on the attacker's shadow pool, data disjoint
    from the target's members and non-members standing in for public data,
    so no member's value reaches the preprocessing (nor needs DP
    accounting). Images are returned as they are (scaled by constants).
    Constant columns are only centred.
    """
    if dataset.x.ndim != 2:
        return dataset
    fit = dataset.x[fit_rows]
    std = fit.std(axis=0)
    x = ((dataset.x - fit.mean(axis=0)) / np.where(std > 0, std, 1.0)).astype(np.float32)
    return Dataset(x=x, y=dataset.y, n_classes=dataset.n_classes, name=dataset.name)


def make_splits(n_samples: int, params: DataParams, rng: np.random.Generator, trained: np.ndarray | None = None) -> Splits:
    """Disjoint random index sets: members, as many non-members, test, shadow pool, defender reference.

    With `trained` (N,) bool, the rows that trained a given model: they are
    the members, all of them, and every other role is drawn from the rest.
    """
    if trained is not None:
        return _splits_around(trained, params, rng)
    sizes = {
        "n_members": params.n_members,
        "non-members (= n_members)": params.n_members,
        "n_test": params.n_test,
        "n_shadow_pool": params.n_shadow_pool,
        "n_defender_reference": params.n_defender_reference,
    }
    needed = sum(sizes.values())
    if needed > n_samples:
        detail = " + ".join(f"{v} {k}" for k, v in sizes.items())
        raise PipelineError(
            f"data: the requested sizes need {needed} samples ({detail}) but the dataset has "
            f"only {n_samples}; lower data.n_members, data.n_test, data.n_shadow_pool or data.n_defender_reference"
        )
    order = rng.permutation(n_samples)
    bounds = np.cumsum(list(sizes.values()))
    members, nonmembers, test, pool, reference = np.split(order[: bounds[-1]], bounds[:-1])
    return Splits(members=members, nonmembers=nonmembers, test=test, shadow_pool=pool, defender_reference=reference)


def _splits_around(trained: np.ndarray, params: DataParams, rng: np.random.Generator) -> Splits:
    """Splits whose members are exactly the marked rows; the other roles come from unmarked rows only."""
    members = rng.permutation(np.flatnonzero(trained))
    n = len(members)
    if params.n_shadow_pool < 2 * n:
        raise PipelineError(
            f"data.n_shadow_pool: the model trained on {n} marked rows, so each pair of shadow models needs "
            f"2 x {n} = {2 * n} pool rows to train on as many (got {params.n_shadow_pool})"
        )
    if params.n_defender_reference > params.n_shadow_pool - n:
        raise PipelineError(
            f"data.n_defender_reference: must be at most n_shadow_pool - {n} marked rows = "
            f"{params.n_shadow_pool - n} (got {params.n_defender_reference})"
        )
    sizes = {
        "non-members (= the marked rows)": n,
        "n_test": params.n_test,
        "n_shadow_pool": params.n_shadow_pool,
        "n_defender_reference": params.n_defender_reference,
    }
    rest = rng.permutation(np.flatnonzero(~trained))
    needed = sum(sizes.values())
    if needed > len(rest):
        detail = " + ".join(f"{v} {k}" for k, v in sizes.items())
        raise PipelineError(
            f"data: auditing a model trained on {n} rows needs {needed} rows it did not train on ({detail}) "
            f"but the data has {len(rest)}; lower data.n_test, data.n_shadow_pool or data.n_defender_reference, "
            "or add rows the model never saw"
        )
    bounds = np.cumsum(list(sizes.values()))
    nonmembers, test, pool, reference = np.split(rest[: bounds[-1]], bounds[:-1])
    return Splits(members=members, nonmembers=nonmembers, test=test, shadow_pool=pool, defender_reference=reference)


def paired_keep(n_points: int, train_size: int, n_models: int, rng: np.random.Generator) -> np.ndarray:
    """A (n_models, n_points) keep matrix of disjoint pairs: every model trains on `train_size` points.

    Models 2i and 2i+1 train on two disjoint random sets of `train_size`
    points, so each model trains on as many points as the target and a
    point is IN for at most half of the models; when n_points is exactly
    2 * train_size, every point is IN for exactly half of them.
    """
    if n_models % 2:
        raise PipelineError(f"paired training sets need an even number of models (got {n_models})")
    if 2 * train_size > n_points:
        raise PipelineError(
            f"paired training sets of {train_size} points need at least {2 * train_size} points (got {n_points})"
        )
    keep = np.zeros((n_models, n_points), dtype=bool)
    for pair in range(n_models // 2):
        chosen = rng.permutation(n_points)[: 2 * train_size]
        keep[2 * pair, chosen[:train_size]] = True
        keep[2 * pair + 1, chosen[train_size:]] = True
    return keep


def defender_mask(keep: np.ndarray, eligible: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """(K, N) bool: for each model, `size` random eligible points it does not train on.

    They stand in for the defender's reference split (non-member data a
    defense such as adversarial regularization may use), so the attacker's
    models get exactly as much of it as the target.
    """
    mask = np.zeros_like(keep, dtype=bool)
    for k, row in enumerate(keep):
        free = np.flatnonzero(eligible & ~row)
        if free.size < size:
            raise PipelineError(f"defender data: {size} points needed per model, only {free.size} available")
        mask[k, rng.choice(free, size, replace=False)] = True
    return mask
