"""Label-only gap attack (Yeom et al. 2018; Choquette-Choo et al. 2021).

Score = 1 if the model's top class is the true class, else 0; it reads only
the predicted label. This is also Song & Mittal's "correctness" metric
attack, which is therefore not registered a second time.

`run_augmentation` (``label_only_augmentation``, Choquette-Choo et al.
2021): score = the share of perturbed copies of a point (shifts for
images, noise for tabular rows; `pipeline.training.augment`) whose predicted label
is still right. The stages that hold the models saved these label queries
as robustness arrays, one per perturbation setting (one for images, one
per noise scale for tabular rows). The setting is chosen, and the
threshold fit, on the shadows' robustness only: the setting whose scores
separate the shadows' members from their non-members best (AUC).
"""

from __future__ import annotations

import numpy as np

from pipeline.attacks.params import AttackParams
from pipeline.attacks.statistics import correct, make_result, score_with, shadow_scores
from pipeline.core.errors import PipelineError
from pipeline.core.types import AttackInput, AttackResult
from pipeline.measures.roc import roc_auc


def run_gap(data: AttackInput, params: AttackParams, seed: int) -> AttackResult:
    return score_with("label_only_gap", data, correct)


def run_augmentation(data: AttackInput, params: AttackParams, seed: int) -> AttackResult:
    if data.shadow_robustness is None or data.target_robustness is None:
        raise PipelineError("attack.enabled: label_only_augmentation needs robustness arrays (pipeline.training.augment)")
    settings = [shadow_scores(robust, data.shadow) for robust in data.shadow_robustness]
    best = int(np.argmax([roc_auc(s.is_member, s.scores) for s in settings]))
    return make_result("label_only_augmentation", data, data.target_robustness[best][0], settings[best])
