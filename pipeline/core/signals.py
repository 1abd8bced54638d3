"""Model outputs on the points an attack needs, in the form stages save them.

Training models is the expensive part of an audit; the stages that hold the
models save these logits, keep matrices and label queries once, and every
attack reads them, so changing an attack parameter never trains or queries
a model. Nothing here imports TensorFlow.
"""

from __future__ import annotations

import numpy as np

from pipeline.core.types import AttackInput, Dataset, Signals, Splits


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


SIGNAL_FIELDS = ("logits", "keep", "labels", "index")
ROLES = ("shadow", "target", "reference")
ARRAYS = ("shadow_on_candidates", "shadow_robustness", "target_robustness")
ATTACK_INPUT_KEYS = ARRAYS + tuple(f"{role}_{field}" for role in ROLES for field in SIGNAL_FIELDS)


def attack_input_to_arrays(data: AttackInput) -> dict[str, np.ndarray]:
    """Flat arrays for an .npz file (no pickles)."""
    if data.reference is None or data.shadow_robustness is None or data.target_robustness is None:
        raise ValueError("the saved attack dataset always holds reference signals and robustness arrays")
    arrays = {name: getattr(data, name) for name in ARRAYS}
    for role in ROLES:
        for field in SIGNAL_FIELDS:
            arrays[f"{role}_{field}"] = getattr(getattr(data, role), field)
    return arrays


def attack_input_from_arrays(arrays: dict[str, np.ndarray]) -> AttackInput:
    """Inverse of `attack_input_to_arrays`."""

    def signals(role: str) -> Signals:
        return Signals(**{field: arrays[f"{role}_{field}"] for field in SIGNAL_FIELDS})

    return AttackInput(
        shadow=signals("shadow"),
        target=signals("target"),
        reference=signals("reference"),
        **{name: arrays[name] for name in ARRAYS},
    )


def shadow_accuracy(signals: Signals) -> dict[str, float]:
    """Mean accuracy of the models on points they trained on (IN) and did not (OUT)."""
    correct = np.argmax(signals.logits, axis=-1) == signals.labels[None]
    return {
        "in_accuracy": float(correct[signals.keep].mean()),
        "out_accuracy": float(correct[~signals.keep].mean()),
    }
