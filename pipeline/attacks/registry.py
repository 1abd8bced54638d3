"""Registry of attacks by the name used in `params.yaml`.

Each entry names the module and function that runs the attack. Only the
attack stages import this module; params validation reads the names from
`pipeline.attacks.ATTACK_NAMES` and so depends on no attack's code.
"""

from __future__ import annotations

import importlib
from typing import Callable

REGISTRY: dict[str, str] = {
    "shadow_classifier": "pipeline.attacks.shadow_classifier:run",
    "ml_leaks": "pipeline.attacks.shadow_classifier:run_ml_leaks",
    "loss_threshold": "pipeline.attacks.threshold:run_loss",
    "metric_confidence": "pipeline.attacks.metric:run_confidence",
    "metric_entropy": "pipeline.attacks.metric:run_entropy",
    "metric_modified_entropy": "pipeline.attacks.metric:run_modified_entropy",
    "metric_loss": "pipeline.attacks.metric:run_loss",
    "lira_offline": "pipeline.attacks.lira:run",
    "lira_online": "pipeline.attacks.lira:run_online",
    "rmia_offline": "pipeline.attacks.rmia:run",
    "label_only_gap": "pipeline.attacks.label_only:run_gap",
    "label_only_augmentation": "pipeline.attacks.label_only:run_augmentation",
}


def get_attack(name: str) -> Callable:
    """The attack function registered under `name`."""
    if name not in REGISTRY:
        raise KeyError(f"unknown attack {name!r}; known attacks: {', '.join(REGISTRY)}")
    module, func = REGISTRY[name].split(":")
    return getattr(importlib.import_module(module), func)
