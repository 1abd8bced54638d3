"""Stages `train_attack` and `attack_defense@<name>`: fit every enabled attack on shadow data, score one target.

Without an argument the target is the undefended one (the attack dataset
`build_attack_dataset` wrote); with a defense name it is that defense's
target (the attack dataset `defend@<name>` wrote). Only saved outputs are
read: no model, no TensorFlow.

The shadow classifier's family choice (``classifier: auto``) is kept in
`data/family_choices/<target>.json`, a `persist: true` output keyed by
what the choice depends on (`pipeline.attacks.family_choice`), so a
rerun with the same shadow signals and classifier settings skips the search.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from pipeline.attacks.audit import attack_seed, headline_summary, run_attacks
from pipeline.attacks.family_choice import SEARCH_MODULE, resolve_families
from pipeline.attacks.params import AttackParams
from pipeline.attacks.registry import attack_params
from pipeline.attacks.shadow_classifier import seed_style_accuracy
from pipeline.core.imports import fingerprint, static_closure
from pipeline.core.io import load_npz, read_json, write_json
from pipeline.core.seeding import derive_seed
from pipeline.core.signals import ATTACK_INPUT_KEYS, attack_input_from_arrays
from pipeline.core.types import AttackInput
from pipeline.stages.attack_outputs import record_audit
from pipeline.stages.common import (
    ATTACK_DATASET_FILE,
    DEFENSES,
    METRICS,
    ROOT,
    RUNS,
    ScopedParams,
    main,
    tracked,
)

PARAMS = ("seed", "attack", "mlflow.experiment")
FAMILY_CHOICES = ROOT / "data" / "family_choices"  # <target>.json: the remembered family choices


@dataclass(frozen=True)
class AttackedTarget:
    """Where one target's attack dataset is and where its results go."""

    stage: str
    name: str
    attack_dataset: Path
    metrics: Path
    headline: Path
    run_file: Path
    scores: Path | None  # per-point scores, kept for the undefended target's "most exposed" table
    seed_comparison: Path | None  # the original report's measurement beside the honest one (undefended only)
    dp_guarantee: tuple[float, float] | None

    @property
    def family_choices(self) -> Path:
        return FAMILY_CHOICES / f"{self.name}.json"


def attacked_target(defense: str | None) -> AttackedTarget:
    """The undefended target (no defense name), or the target of defense `defense`."""
    if defense is None:
        return AttackedTarget(
            "train_attack", "undefended", ROOT / "data" / ATTACK_DATASET_FILE, METRICS / "attacks.json",
            METRICS / "headline.json", RUNS / "train_attack.json", ROOT / "data" / "attack_scores.npz",
            METRICS / "seed_comparison.json", None,
        )  # fmt: skip
    utility = read_json(METRICS / "defenses" / defense / "utility.json")
    dp = (utility["dp_epsilon"], utility["dp_delta"]) if "dp_epsilon" in utility else None
    out = METRICS / "defenses" / defense
    return AttackedTarget(
        f"attack_defense@{defense}", defense, DEFENSES / defense / ATTACK_DATASET_FILE, out / "attacks.json",
        out / "headline.json", RUNS / f"attack_defense-{defense}.json", None, None, dp,
    )  # fmt: skip


def chosen_families(data: AttackInput, attack: AttackParams, seed: int, remembered_in: Path) -> dict[str, AttackParams]:
    """Params with each searching attack's family fixed: remembered where still valid, else searched; saved again."""
    remembered = read_json(remembered_in) if remembered_in.exists() else {}
    seeds = {name: attack_seed(seed, name) for name in attack.enabled}
    code = fingerprint(ROOT.resolve(), static_closure(ROOT.resolve(), SEARCH_MODULE))
    overrides, choices = resolve_families(data.shadow, attack, seeds, code, remembered)
    write_json(remembered_in, choices)
    for name, choice in choices.items():
        how = "remembered" if remembered.get(name) == choice else "searched"
        print(f"  {name}: classifier family {choice['family']} ({how})")
    return overrides


def run(params: ScopedParams, defense: str | None) -> None:
    target = attacked_target(defense)
    with tracked(target.stage, params, run_file=target.run_file) as run_log:
        data = attack_input_from_arrays(load_npz(target.attack_dataset, ATTACK_INPUT_KEYS))
        run_log.log_dataset(  # what the attacks read: the target's outputs on the candidates, with their classes
            data.target.logits[0], data.target.labels, f"{target.name} target outputs", str(target.attack_dataset),
            "attack input",
        )  # fmt: skip
        delta = target.dp_guarantee[1] if target.dp_guarantee else 0.0
        attack = attack_params(params.attack)
        print(f"attacks on the {target.name} target:", flush=True)  # progress, as the fits start
        overrides = chosen_families(data, attack, params.seed, target.family_choices)
        audit = run_attacks(data, attack, params.seed, delta, overrides)
        metrics = record_audit(target.name, audit, data, run_log, target.metrics, target.scores, target.dp_guarantee)
        headline = headline_summary(audit, metrics, attack.tune_for)
        write_json(target.headline, headline)
        print(
            f"  headline (chosen on shadow data by {attack.tune_for}): {headline['attack']}, "
            f"epsilon lower bound {headline['epsilon_lb_95']:.3f} (95%)"
        )
        if target.seed_comparison is not None:
            comparison = seed_style_accuracy(data, attack, derive_seed(params.seed, "seed_comparison"))
            write_json(target.seed_comparison, comparison)
            run_log.log_metrics({f"seed_comparison.{key}": value for key, value in comparison.items()})


if __name__ == "__main__":
    if len(sys.argv) > 2:
        sys.exit("usage: python -m pipeline.stages.train_attack [defense name]")
    main(lambda params: run(params, sys.argv[1] if len(sys.argv) == 2 else None), PARAMS)
