"""Every setting checked before any training: the schema, each attack's and defense's own block, the rules across.

`config.Params` is the schema every stage reads; it names no attack and
no defense, so adding either never reruns a training stage. This module
adds what needs the registries: the attack names and blocks, every
configured defense's block against its class, and the rules that join
sections (attacks that need four shadow models, defenses that need the
defender's reference data). Stage `validate` runs it first in every
`dvc repro`, and `make run` before DVC resolves `dvc.yaml`.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.attacks.params import AttackParams
from pipeline.attacks.registry import MIN_SHADOW_MODELS, attack_params
from pipeline.config import Params
from pipeline.core.errors import PipelineError
from pipeline.defenses.base import Defense
from pipeline.defenses.registry import parse_defense


@dataclass(frozen=True)
class CheckedParams:
    """The params with every block typed: the attack settings and each configured defense (entry, settings)."""

    params: Params
    attack: AttackParams
    defenses: dict[str, tuple[str, Defense]]

    def audited_defenses(self) -> list[str]:
        """Defenses some stage trains: `defense.run` (the canary audits' are among them) and the DP baseline."""
        return [*self.params.defense.run, *self.params.recipe_audit.dp_baseline]

    def needing_batched_trainer(self) -> dict[str, list[str]]:
        """Trained defenses that must retrain the target's architecture with the project's batched trainer, by key."""
        lists = {"defense.run": self.params.defense.run, "recipe_audit.dp_baseline": self.params.recipe_audit.dp_baseline}
        return {
            key: [name for name in names if type(self.defenses[name][1]).needs_batched_trainer]
            for key, names in lists.items()
        }


def check(params: Params) -> CheckedParams:
    """Validate what `Params` cannot: raises one PipelineError listing every problem, one line each."""
    problems: list[str] = []
    attack = None
    try:
        attack = attack_params(params.attack)
    except PipelineError as error:
        problems.append(str(error))
    defenses: dict[str, tuple[str, Defense]] = {}
    for name, block in params.defenses.items():
        try:
            defenses[name] = parse_defense(name, block.settings())
        except PipelineError as error:
            problems.append(str(error))
    for name, needed in MIN_SHADOW_MODELS.items():
        if name in params.attack.enabled and params.shadows.n_models < needed:
            problems.append(
                f"params.yaml: shadows.n_models: {name} needs at least {needed} shadow models "
                f"(got {params.shadows.n_models}); raise it or drop {name} from attack.enabled"
            )
    for name in params.defense.run:
        if name in defenses and type(defenses[name][1]).uses_defender_data and params.data.n_defender_reference < 1:
            problems.append(
                f"params.yaml: data.n_defender_reference: defense {name!r} ({defenses[name][1].type}) trains on "
                f"defender reference data (got {params.data.n_defender_reference})"
            )
    for name in params.recipe_audit.dp_baseline:
        if name in defenses and defenses[name][1].type != "dp_sgd":
            problems.append(
                f"params.yaml: recipe_audit.dp_baseline: {name!r} is a {defenses[name][1].type} defense; "
                "the baseline lists dp_sgd defenses only"
            )
    if problems:
        raise PipelineError("\n".join(problems))
    assert attack is not None
    return CheckedParams(params, attack, defenses)
