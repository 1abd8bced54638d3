"""Model outputs on the points an attack needs, computed once and saved.

Training models is the expensive part of an audit; every attack then reads
these saved logits and keep matrices, so changing an attack parameter never
retrains a model.
"""

from __future__ import annotations

import numpy as np

from pipeline.data import complementary_keep
from pipeline.ensemble import Architecture, Recipe, TrainedStack, stack_logits, train_stack
from pipeline.seeding import derive_seed, rng_for
from pipeline.types import AttackInput, Dataset, Signals, Splits


def candidate_membership(splits: Splits) -> np.ndarray:
    """Ground truth for the candidates: members first, then non-members."""
    return np.concatenate([np.ones(len(splits.members), bool), np.zeros(len(splits.nonmembers), bool)])


def target_signals(candidate_logits: np.ndarray, dataset: Dataset, splits: Splits) -> Signals:
    """The target's (K=1) signals on the candidates, keep = true membership."""
    index = splits.candidates
    return Signals(
        logits=candidate_logits[None].astype(np.float32),
        keep=candidate_membership(splits)[None],
        labels=dataset.y[index],
        index=index,
    )


def train_shadows(
    dataset: Dataset,
    splits: Splits,
    architecture: Architecture,
    recipe: Recipe,
    n_models: int,
    seed: int,
    tag: str,
) -> tuple[Signals, np.ndarray, TrainedStack]:
    """Train K shadow models on complementary halves of the attacker's pool.

    Returns their signals on the pool, their logits on the candidates (none
    of which any shadow saw) and the trained stack. `tag` separates the
    random streams of differently trained shadow sets.
    """
    pool = splits.shadow_pool
    keep = complementary_keep(len(pool), n_models, rng_for(seed, tag, "keep"))
    stack = train_stack(
        architecture,
        recipe,
        dataset.x[pool],
        dataset.y[pool],
        keep,
        seed=derive_seed(seed, tag, "train"),
        progress=f"{tag}: {n_models} models",
    )
    signals = Signals(
        logits=stack_logits(stack, dataset.x[pool]),
        keep=keep,
        labels=dataset.y[pool],
        index=pool,
    )
    return signals, stack_logits(stack, dataset.x[splits.candidates]), stack


def attack_input_to_arrays(data: AttackInput) -> dict[str, np.ndarray]:
    """Flat arrays for an .npz file (no pickles)."""
    arrays = {"shadow_on_candidates": data.shadow_on_candidates}
    for role in ("shadow", "target"):
        signals = getattr(data, role)
        for field in ("logits", "keep", "labels", "index"):
            arrays[f"{role}_{field}"] = getattr(signals, field)
    return arrays


ATTACK_INPUT_KEYS = tuple(
    ["shadow_on_candidates"]
    + [f"{role}_{field}" for role in ("shadow", "target") for field in ("logits", "keep", "labels", "index")]
)


def attack_input_from_arrays(arrays: dict[str, np.ndarray]) -> AttackInput:
    """Inverse of `attack_input_to_arrays`."""

    def signals(role: str) -> Signals:
        return Signals(**{field: arrays[f"{role}_{field}"] for field in ("logits", "keep", "labels", "index")})

    return AttackInput(
        shadow=signals("shadow"),
        target=signals("target"),
        shadow_on_candidates=arrays["shadow_on_candidates"],
    )


def shadow_accuracy(signals: Signals) -> dict[str, float]:
    """Mean accuracy of the models on points they trained on (IN) and did not (OUT)."""
    correct = np.argmax(signals.logits, axis=-1) == signals.labels[None]
    return {
        "in_accuracy": float(correct[signals.keep].mean()),
        "out_accuracy": float(correct[~signals.keep].mean()),
    }
