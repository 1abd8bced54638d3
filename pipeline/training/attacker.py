"""The attacker's models: shadow and reference models trained exactly like the target, and their label queries.

Every attacker model reproduces the target's training: as many training
points as the target's members, the target's recipe and, under adaptive
evaluation, its defense, which then sees the same training-set size (so
DP-SGD calibrates the same noise for the same sampling rate and steps)
and as many defender reference points as the target's defender holds.
Models come in pairs trained on disjoint sets, so a point is IN for at
most half of them (exactly half for the candidates of reference models).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from pipeline.config import ComputeParams
from pipeline.core.seeding import derive_seed, rng_for
from pipeline.core.types import Dataset, Signals, Splits
from pipeline.datasets.splits import defender_mask, paired_keep
from pipeline.defenses.base import DefendedModels, TrainingJob
from pipeline.stack import Architecture, Recipe
from pipeline.training.augment import robustness_by_setting
from pipeline.training.compute import run_shards


@dataclass(frozen=True)
class ModelSet:
    """How a set of K attacker-side models is trained: recipe, trainer (defended or not), count, seed, where."""

    architecture: Architecture
    recipe: Recipe
    train: Callable[[TrainingJob], DefendedModels]
    n_models: int
    seed: int
    tag: str  # names the random streams and the progress bar, e.g. "shadows"
    compute: ComputeParams = ComputeParams()


@dataclass(frozen=True)
class TrainedOutputs:
    """What the attacker keeps of K trained models: outputs on the queried points, label robustness, curves.

    `logits[name]` is (K, P, C) on the points queried under that name;
    `robustness` (S, K, R) on the points asked for (or None); `history`
    (K, epochs) per curve; `info` the trainer's numbers (a DP epsilon, say).
    """

    logits: dict[str, np.ndarray]
    robustness: np.ndarray | None
    history: dict[str, np.ndarray]
    info: dict[str, float]


@dataclass(frozen=True)
class ShardData:
    """What every shard of a set shares: training points, queried points, robustness points and their seed."""

    x: np.ndarray
    y: np.ndarray
    queries: dict[str, np.ndarray]
    robust: tuple[np.ndarray, np.ndarray] | None
    augment_seed: int


@dataclass(frozen=True)
class ShardSpec:
    """One shard: its models' rows of the keep and defender matrices, its seed, and how they train."""

    architecture: Architecture
    recipe: Recipe
    train: Callable[[TrainingJob], DefendedModels]
    keep: np.ndarray
    defender: np.ndarray
    seed: int
    label: str


def train_shard(data: ShardData, spec: ShardSpec) -> TrainedOutputs:
    """Train one shard's models (one batched computation) and query them; what a local loop or a Ray task runs."""
    job = TrainingJob(
        spec.architecture, spec.recipe, data.x, data.y, spec.keep, seed=spec.seed, label=spec.label, defender=spec.defender
    )
    trained = spec.train(job)
    robustness = None
    if data.robust is not None:
        robustness = robustness_by_setting(trained.observe, *data.robust, np.random.default_rng(data.augment_seed))
    return TrainedOutputs(
        logits={name: trained.observe(x) for name, x in data.queries.items()},
        robustness=robustness,
        history=trained.history,
        info=trained.info,
    )


def _joined(parts: list[TrainedOutputs]) -> TrainedOutputs:
    """Shards' outputs side by side along the model axis, as one set's.

    Curves of shards that stopped early (per-model early stopping) are
    padded with NaN to the longest; the trainers' numbers are averaged
    over the models.
    """
    epochs = max((v.shape[1] for p in parts for v in p.history.values()), default=0)

    def padded(curve: np.ndarray) -> np.ndarray:
        return np.pad(curve.astype(np.float32), ((0, 0), (0, epochs - curve.shape[1])), constant_values=np.nan)

    sizes = np.array([next(iter(p.logits.values())).shape[0] for p in parts], dtype=float)
    return TrainedOutputs(
        logits={name: np.concatenate([p.logits[name] for p in parts]) for name in parts[0].logits},
        robustness=None if parts[0].robustness is None else np.concatenate([p.robustness for p in parts], axis=1),
        history={key: np.concatenate([padded(p.history[key]) for p in parts]) for key in parts[0].history},
        info={key: float(np.average([p.info[key] for p in parts], weights=sizes)) for key in parts[0].info},
    )


def _train_like_target(
    dataset: Dataset,
    splits: Splits,
    points: np.ndarray,
    scored: int,
    models: ModelSet,
    queries: dict[str, np.ndarray],
    robust_on: np.ndarray | None = None,
) -> tuple[np.ndarray, TrainedOutputs]:
    """K models in disjoint pairs, each on len(members) of the first `scored` points, trained the set's way.

    Each model's defender data (as much as the target's defender holds) is
    drawn from `points` it does not train on, among the unscored ones when
    there are any (reference models: the pool, never a candidate); shadows
    have only scored points, so theirs are some of their scored non-members.
    The models train in shards of `compute.shard_size` (see `ComputeParams`
    for their seeds) and are queried on `queries` (name -> dataset
    indices), and on `robust_on` for label robustness.
    """
    rng = rng_for(models.seed, models.tag, "keep")
    keep = np.zeros((models.n_models, len(points)), dtype=bool)
    keep[:, :scored] = paired_keep(scored, len(splits.members), models.n_models, rng)
    eligible = np.arange(len(points)) >= scored if scored < len(points) else np.ones(len(points), dtype=bool)
    defender = defender_mask(keep, eligible, len(splits.defender_reference), rng)
    seed = derive_seed(models.seed, models.tag, "train")
    data = ShardData(
        x=dataset.x[points],
        y=dataset.y[points],
        queries={name: dataset.x[index] for name, index in queries.items()},
        robust=None if robust_on is None else (dataset.x[robust_on], dataset.y[robust_on]),
        augment_seed=derive_seed(models.seed, "augment"),
    )
    size = models.compute.shard_size
    starts = range(0, models.n_models, size)
    shards = [
        ShardSpec(
            models.architecture, models.recipe, models.train, keep[start : start + size], defender[start : start + size],
            seed=seed if len(starts) == 1 else derive_seed(seed, "shard", str(number)),
            label=f"{models.tag}: {models.n_models} models" + (f", shard {number + 1}/{len(starts)}" if len(starts) > 1 else ""),
        )
        for number, start in enumerate(starts)
    ]  # fmt: skip
    return keep, _joined(run_shards(train_shard, data, shards, models.compute, models.tag))


def train_shadows(
    dataset: Dataset, splits: Splits, models: ModelSet
) -> tuple[Signals, np.ndarray, TrainedOutputs]:
    """Train K shadow models on the attacker's pool, each on as many points as the target.

    Returns their signals on the pool, their outputs on the candidates
    (none of which any shadow saw), and what was kept of them: their
    robustness on the pool's perturbed copies and their curves. The pool is
    all the attacker has, so a shadow's defender data are pool points it
    does not train on (scored as its non-members).
    """
    pool = splits.shadow_pool
    keep, trained = _train_like_target(
        dataset, splits, pool, len(pool), models, {"pool": pool, "candidates": splits.candidates}, robust_on=pool
    )
    signals = Signals(logits=trained.logits["pool"], keep=keep, labels=dataset.y[pool], index=pool)
    return signals, trained.logits["candidates"], trained


def train_reference(dataset: Dataset, splits: Splits, models: ModelSet) -> Signals:
    """Reference models for online attacks, and their signals on the candidates.

    Each trains on one half of the candidates (as many points as the
    target's members), the two models of a pair on complementary halves,
    so every candidate is IN for exactly half of them; defender data come
    from the pool.
    """
    candidates = splits.candidates
    points = np.concatenate([candidates, splits.shadow_pool])
    keep, trained = _train_like_target(dataset, splits, points, len(candidates), models, {"candidates": candidates})
    return Signals(
        logits=trained.logits["candidates"],
        keep=keep[:, : len(candidates)],
        labels=dataset.y[candidates],
        index=candidates,
    )


def robustness_signal(
    observe: Callable[[np.ndarray], np.ndarray], dataset: Dataset, index: np.ndarray, seed: int
) -> np.ndarray:
    """(S, K, P) share of perturbed copies of the points each model still labels right, per setting."""
    return robustness_by_setting(observe, dataset.x[index], dataset.y[index], rng_for(seed, "augment"))
