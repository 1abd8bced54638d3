"""What every attack function receives: the attack settings, each family's own block typed.

`AttackParams` has `enabled` and `tune_for` (`config.AttackSettings`) and,
for each attack module that defines a `Settings` model, that module's
block under its own name (`attack.lira` for `pipeline.attacks.lira`).
`registry.attack_params` builds and validates it.
"""

from __future__ import annotations

from typing import Literal

from pipeline.config import StrictModel


class AttackParams(StrictModel):
    """The attack settings; the registry adds one typed field per settings block."""

    enabled: tuple[str, ...] = ()
    tune_for: Literal["tpr_at_1pct_fpr", "auc"] = "tpr_at_1pct_fpr"
