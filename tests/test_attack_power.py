"""End-to-end attack power on a deliberately overfitted tiny target.

Real models, trained with the pipeline's own code on digits: the target
overfits its members, the attacker trains shadow and reference models, and
online LiRA, which calibrates each point against models that did and did
not train on it, must find more members at 1% FPR than the loss attack.
"""

from __future__ import annotations

import numpy as np

from pipeline.attacks.registry import attack_params, get_attack
from pipeline.config import DataParams
from pipeline.core.signals import target_signals
from pipeline.core.types import AttackInput
from pipeline.datasets.loaders import load_dataset
from pipeline.datasets.splits import make_splits
from pipeline.defenses.base import train_undefended
from pipeline.measures.roc import evaluate
from pipeline.stack import Architecture, Recipe
from pipeline.training.attacker import ModelSet, train_reference, train_shadows
from pipeline.training.target import train_target


def test_online_lira_beats_loss_attack_at_low_fpr() -> None:
    data_params = DataParams(n_members=250, n_test=100, n_shadow_pool=500, n_defender_reference=0)
    dataset = load_dataset(data_params)
    splits = make_splits(len(dataset.y), data_params, np.random.default_rng(0))
    architecture = Architecture("mlp", dataset.x.shape[1:], dataset.n_classes, hidden_units=256)
    recipe = Recipe(epochs=60, batch_size=32, learning_rate=1e-3)
    target = train_target(dataset, splits, architecture, recipe, train_undefended, seed=1, label=None)
    assert target.utility["generalization_gap"] > 0.02  # it does overfit

    shadow, on_candidates, _ = train_shadows(dataset, splits, ModelSet(architecture, recipe, train_undefended, 8, 2, "shadows"))
    reference = train_reference(dataset, splits, ModelSet(architecture, recipe, train_undefended, 16, 3, "reference"))
    candidates = target_signals(target.observe(dataset.x[splits.candidates]), dataset, splits)
    data = AttackInput(shadow, candidates, on_candidates, reference)

    params = attack_params({"enabled": ["lira_online", "loss_threshold"]})
    online = evaluate(get_attack("lira_online")(data, params, 0))
    loss = evaluate(get_attack("loss_threshold")(data, params, 0))
    assert online.tpr_at_fpr[0.01] is not None  # 250 non-members measure 1% FPR
    assert online.tpr_at_fpr[0.01] > loss.tpr_at_fpr[0.01]
    assert online.auc > 0.55
