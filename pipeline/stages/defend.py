"""Stage `defend@<name>`: train a defended target and the attacker's models, and save their outputs.

With `defense.adaptive: true` (the default) the attacker knows the defense
and trains its shadow and reference models with it too; otherwise the
undefended ones are reused. Every model is queried here once, for
everything an attack may need; stage `attack_defense@<name>` then attacks
the saved outputs without touching a model.
"""

from __future__ import annotations

import sys

from pipeline.core.errors import PipelineError
from pipeline.core.io import write_npz
from pipeline.core.seeding import derive_seed
from pipeline.core.signals import attack_input_to_arrays, target_signals
from pipeline.core.types import AttackInput
from pipeline.stages.common import (
    ATTACK_DATASET_FILE,
    DEFENSES,
    METRICS,
    PLOTS,
    REFERENCE,
    RUNS,
    ScopedParams,
    load_prepared,
    load_shadows,
    load_signals,
    log_split_inputs,
    main,
    tracked,
)
from pipeline.stages.trained_models import (
    load_defense,
    log_model,
    query_target,
    save_target,
    target_design,
)
from pipeline.training.attacker import ModelSet, train_reference, train_shadows
from pipeline.training.target import train_target


def params_for(name: str) -> tuple[str, ...]:
    """The params stage defend@<name> reads."""
    return (
        "seed", "target", "shadows", "reference", "compute", "defense.adaptive", "mlflow.experiment",
    )  # fmt: skip


def run(params: ScopedParams, name: str) -> None:
    train = load_defense(name).train  # its settings: data/validated/defenses/<name>.json
    with tracked(f"defend@{name}", params, run_file=RUNS / f"defend-{name}.json") as run_log:
        dataset, splits = load_prepared()
        architecture, recipe = target_design(dataset, params.target)
        out = DEFENSES / name
        try:
            target = train_target(
                dataset, splits, architecture, recipe, train, derive_seed(params.seed, "target"), label=f"{name} target"
            )
        except PipelineError as error:  # a defense's own message cannot know its name
            raise PipelineError(str(error).replace("defenses.<name>", f"defenses.{name}")) from None
        save_target(out, target, run_log, METRICS / "defenses" / name / "utility.json", PLOTS / "training" / f"{name}.json")
        log_model(run_log, target, dataset, splits)
        compute = params.compute  # where the adaptive attacker's models train
        if params.defense.adaptive:
            log_split_inputs(run_log, dataset, splits, ("shadow_pool", "candidates"))
            shadows = ModelSet(architecture, recipe, train, params.shadows.n_models, params.seed, f"shadows-{name}", compute)
            shadow, shadow_on_candidates, trained = train_shadows(dataset, splits, shadows)
            shadow_robust = trained.robustness
            references = ModelSet(
                architecture, recipe, train, params.reference.n_models, params.seed, f"reference-{name}", compute
            )
            reference = train_reference(dataset, splits, references)
        else:
            shadow, shadow_on_candidates, shadow_robust = load_shadows()
            reference, _ = load_signals(REFERENCE)
            if (shadow.n_models, reference.n_models) != (params.shadows.n_models, params.reference.n_models):
                raise PipelineError(
                    "defense.adaptive: false reuses the undefended shadow and reference models, but their saved "
                    f"counts ({shadow.n_models}, {reference.n_models}) differ from shadows.n_models and "
                    f"reference.n_models ({params.shadows.n_models}, {params.reference.n_models}); run dvc repro"
                )
        candidate_logits, target_robust = query_target(target, dataset, splits, params.seed)
        candidates = target_signals(candidate_logits, dataset, splits)
        data = AttackInput(shadow, candidates, shadow_on_candidates, reference, shadow_robust, target_robust)
        write_npz(out / ATTACK_DATASET_FILE, **attack_input_to_arrays(data))
        u = target.utility
        print(f"defense {name}: train accuracy {u['train_accuracy']:.3f}, test accuracy {u['test_accuracy']:.3f}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m pipeline.stages.defend <defense name>")
    main(lambda params: run(params, sys.argv[1]), params_for(sys.argv[1]))
