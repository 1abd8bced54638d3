"""Label-only gap attack (Yeom et al. 2018; Choquette-Choo et al. 2021).

Score = 1 if the model's top class is the true class, else 0; it reads only
the predicted label. This is also Song & Mittal's "correctness" metric
attack, which is therefore not registered a second time.

The augmentation-robustness label-only attack needs queries to the model
itself on perturbed inputs, not saved logits, so it is not implemented.
"""

from __future__ import annotations

from pipeline.attacks._signals import correct, score_with
from pipeline.config import AttackParams
from pipeline.types import AttackInput, AttackResult


def run_gap(data: AttackInput, params: AttackParams, seed: int) -> AttackResult:
    return score_with("label_only_gap", data, correct)
