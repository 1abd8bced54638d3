"""Label-only gap attack (Yeom et al. 2018; Choquette-Choo et al. 2021).

Score = 1 if the model's top class is the true class, else 0; it reads only
the predicted label. This is also Song & Mittal's "correctness" metric
attack, which is therefore not registered a second time.

`run_augmentation` (``label_only_augmentation``, Choquette-Choo et al.
2021): score = the share of perturbed copies of a point (shifts for
images, noise for tabular rows; `pipeline.augment`) whose predicted label
is still right. It needs those extra label queries, saved by the stages as
robustness arrays; the threshold is fit on the shadows' robustness.
"""

from __future__ import annotations

from pipeline.attacks._signals import correct, make_result, score_with, shadow_scores
from pipeline.config import AttackParams
from pipeline.errors import PipelineError
from pipeline.types import AttackInput, AttackResult


def run_gap(data: AttackInput, params: AttackParams, seed: int) -> AttackResult:
    return score_with("label_only_gap", data, correct)


def run_augmentation(data: AttackInput, params: AttackParams, seed: int) -> AttackResult:
    if data.shadow_robustness is None or data.target_robustness is None:
        raise PipelineError("attack.enabled: label_only_augmentation needs robustness arrays (pipeline.augment)")
    calibration = shadow_scores(data.shadow_robustness, data.shadow)
    return make_result("label_only_augmentation", data, data.target_robustness[0], calibration)
