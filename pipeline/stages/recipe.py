"""Stages `recipe_undefended`, `recipe@<name>` and `recipe_dp@<name>`: one recipe of the recipe audit.

A recipe is the undefended training (no argument) or a configured defense
(`defense.run`, or a DP-SGD setting of `recipe_audit.dp_baseline`). Its
`recipe_audit.n_models` models train as one batched job on the audit's
shared design (`recipes.design.audit_design`: the candidates and
mislabeled canaries, in complementary halves), all from the same
training seed, so model k of every recipe starts and trains alike except
for the recipe. Every model's released outputs on every design column
and its test accuracy go to data/recipes/<name>/; stage `recipe_attack`
attacks them without touching a model.
"""

from __future__ import annotations

import sys

from pipeline.core.errors import PipelineError
from pipeline.core.io import write_json, write_npz
from pipeline.core.seeding import derive_seed
from pipeline.defenses.base import train_undefended
from pipeline.recipes.design import audit_design
from pipeline.recipes.training import audit_job, train_recipe
from pipeline.stages.common import RECIPES, RUNS, ScopedParams, load_prepared, main, tracked
from pipeline.stages.trained_models import load_defense, target_design

PARAMS = ("seed", "target", "recipe_audit.n_models", "recipe_audit.n_canaries", "mlflow.experiment")


def run(params: ScopedParams, name: str | None, dp_baseline: bool = False) -> None:
    """Train one recipe's models: the undefended training (`name` None), a defense of defense.run, or a DP-SGD
    setting of recipe_audit.dp_baseline (`dp_baseline`, which only names the stage: recipe_dp@<name>)."""
    recipe_name = name or "undefended"
    train = train_undefended if name is None else load_defense(name).train  # settings: data/validated/defenses
    stage = "recipe_undefended" if name is None else f"recipe_dp@{name}" if dp_baseline else f"recipe@{name}"
    with tracked(stage, params, run_file=RUNS / f"recipe-{recipe_name}.json") as run_log:
        dataset, splits = load_prepared()
        architecture, recipe = target_design(dataset, params.target)
        audit = params.recipe_audit
        design = audit_design(dataset, splits, audit.n_models, audit.n_canaries, derive_seed(params.seed, "recipe audit"))
        job = audit_job(dataset, splits, design, architecture, recipe, derive_seed(params.seed, "recipe audit", "training"),
                        f"recipe {recipe_name}")  # fmt: skip
        try:
            outputs = train_recipe(job, design, train)
        except PipelineError as error:  # a defense's own message cannot know its name
            raise PipelineError(str(error).replace("defenses.<name>", f"defenses.{recipe_name}")) from None
        folder = RECIPES / recipe_name
        write_npz(
            folder / "outputs.npz", logits=outputs.logits, keep=design.keep, is_canary=design.is_canary,
            labels=job.y[: design.keep.shape[1]], test_accuracy=outputs.test_accuracy, pool=design.pool,
        )  # fmt: skip
        write_json(folder / "info.json", outputs.info)
        summary = {"test_accuracy_mean": float(outputs.test_accuracy.mean()), **outputs.info}
        run_log.log_metrics(summary)
        print(
            f"recipe {recipe_name}: {design.n_models} models, test accuracy {outputs.test_accuracy.mean():.3f} "
            f"[{outputs.test_accuracy.min():.3f}, {outputs.test_accuracy.max():.3f}]"
        )


if __name__ == "__main__":
    arguments = sys.argv[1:]
    baseline = arguments[:1] == ["--dp-baseline"]
    names = arguments[1:] if baseline else arguments
    if len(names) > 1 or (baseline and not names):
        sys.exit("usage: python -m pipeline.stages.recipe [--dp-baseline] [defense name]")
    main(lambda params: run(params, names[0] if names else None, baseline), PARAMS)
