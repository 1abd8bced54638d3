"""Registry of attacks by the name used in `params.yaml`.

Each entry names the module and function that runs the attack: adding an
attack is one module, one line here and, if it has settings, a `Settings`
model in its module and a block `attack.<module name>` in params.yaml.
Only the attack stages, the params check and the report import this
module, so no training stage depends on any attack's code.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError, create_model

from pipeline.attacks.params import AttackParams
from pipeline.config import AttackSettings, describe_errors
from pipeline.core.errors import PipelineError

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

MIN_SHADOW_MODELS = {"lira_offline": 4, "rmia_offline": 4}  # leave-one-out calibration over the shadows


def get_attack(name: str) -> Callable:
    """The attack function registered under `name`."""
    if name not in REGISTRY:
        raise KeyError(f"unknown attack {name!r}; known attacks: {', '.join(REGISTRY)}")
    module, func = REGISTRY[name].split(":")
    return getattr(importlib.import_module(module), func)


def settings_blocks() -> dict[str, type]:
    """Each attack module's `Settings` model, keyed by the module's short name (its block under `attack`)."""
    blocks = {}
    for entry in REGISTRY.values():
        module = importlib.import_module(entry.split(":")[0])
        if hasattr(module, "Settings"):
            blocks[module.__name__.rsplit(".", 1)[1]] = module.Settings
    return blocks


def attack_params(settings: AttackSettings | dict[str, Any]) -> AttackParams:
    """The `attack` block validated whole: known names in `enabled`, every family's block typed.

    Raises a PipelineError with one line per problem, naming the key.
    """
    raw = settings.model_dump() if isinstance(settings, AttackSettings) else dict(settings)
    unknown = [name for name in raw.get("enabled", ()) if name not in REGISTRY]
    if unknown:
        raise PipelineError(
            f"params.yaml: attack.enabled: unknown attack {unknown[0]!r}; known attacks: {', '.join(REGISTRY)}"
        )
    fields: dict[str, Any] = {key: (model, model()) for key, model in settings_blocks().items()}
    model = create_model("AttackParams", __base__=AttackParams, **fields)
    try:
        return model.model_validate(raw)
    except ValidationError as error:
        raise PipelineError(describe_errors(error, "params.yaml", "attack")) from None
