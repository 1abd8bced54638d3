"""Stage `defend@<name>`: train a defended target and attack it the same way.

With `defense.adaptive: true` (the default) the attacker knows the defense
and trains its shadow and reference models with it too; otherwise the
undefended ones are reused.
"""

from __future__ import annotations

import sys

from pipeline.audit import run_attacks
from pipeline.config import Params
from pipeline.errors import PipelineError
from pipeline.models import architecture_for, recipe_for, train_target
from pipeline.seeding import derive_seed
from pipeline.signals import ModelSet, robustness_signal, target_signals, train_reference, train_shadows
from pipeline.stages.attack_outputs import record_audit
from pipeline.stages.common import (
    METRICS,
    PLOTS,
    REFERENCE,
    ROOT,
    RUNS,
    load_prepared,
    load_shadows,
    load_signals,
    log_model,
    main,
    save_target,
    tracked,
)
from pipeline.types import AttackInput


def run(params: Params, name: str) -> None:
    if name not in params.defense.run:
        raise PipelineError(f"defense.run: {name!r} is not listed (listed: {', '.join(params.defense.run) or 'none'})")
    defense = params.defenses[name]
    scopes = ("seed", "target", "shadows", "reference", "attack", "defense.adaptive", f"defenses.{name}")
    with tracked(f"defend@{name}", params, scopes, run_file=RUNS / f"defend-{name}.json") as run_log:
        dataset, splits = load_prepared()
        architecture = architecture_for(dataset, params.target)
        recipe = recipe_for(params.target)
        out = ROOT / "data" / "defenses" / name
        try:
            target = train_target(
                dataset, splits, architecture, recipe, defense, derive_seed(params.seed, "target"), label=f"{name} target"
            )
        except PipelineError as error:  # a defense's own message cannot know its name
            raise PipelineError(str(error).replace("defenses.<name>", f"defenses.{name}")) from None
        save_target(out, target, run_log, METRICS / "defenses" / name / "utility.json", PLOTS / "training" / f"{name}.json")
        log_model(run_log, target, dataset, splits)
        if params.defense.adaptive:
            shadows = ModelSet(architecture, recipe, defense, params.shadows.n_models, params.seed, f"shadows-{name}")
            shadow, shadow_on_candidates, trained = train_shadows(dataset, splits, shadows)
            shadow_robust = robustness_signal(trained.observe, dataset, splits.shadow_pool, params.attack.label_only, params.seed)
            references = ModelSet(architecture, recipe, defense, params.reference.n_models, params.seed, f"reference-{name}")
            reference = train_reference(dataset, splits, references)
        else:
            shadow, shadow_on_candidates, shadow_robust = load_shadows()
            reference, _ = load_signals(REFERENCE)
        candidates = target_signals(target.observe(dataset.x[splits.candidates]), dataset, splits)
        target_robust = robustness_signal(
            target.defended.observe, dataset, splits.candidates, params.attack.label_only, params.seed
        )
        data = AttackInput(shadow, candidates, shadow_on_candidates, reference, shadow_robust, target_robust)
        u = target.utility
        print(f"defense {name}: train accuracy {u['train_accuracy']:.3f}, test accuracy {u['test_accuracy']:.3f}")
        audit = run_attacks(data, params.attack, params.seed)
        dp = (u["dp_epsilon"], u["dp_delta"]) if "dp_epsilon" in u else None
        record_audit(
            name, audit, data, run_log, METRICS / "defenses" / name / "attacks.json", out / "attack_scores.npz", dp
        )


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m pipeline.stages.defend <defense name>")
    main(lambda params: run(params, sys.argv[1]))
