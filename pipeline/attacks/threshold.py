"""Loss-threshold attack (Yeom et al. 2018): low loss means member.

Score = -cross-entropy = log p_y, computed from the logits with a stable
log-softmax. Calibration: every shadow model's score on the pool, stacked,
labelled by its `keep` row.
"""

from __future__ import annotations

from pipeline.attacks.params import AttackParams
from pipeline.attacks.statistics import log_true_prob, score_with
from pipeline.core.types import AttackInput, AttackResult


def run_loss(data: AttackInput, params: AttackParams, seed: int) -> AttackResult:
    return score_with("loss_threshold", data, log_true_prob)
