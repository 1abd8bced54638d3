"""Stage `recipe_attack`: every recipe attacked leave-one-model-out, pooled, and compared paired.

Reads the recipes' saved outputs (data/recipes/<name>/), never a model or
TensorFlow, so changing an attack or interval setting retrains nothing.
Writes metrics/recipes.json (every recipe's utility and pooled metrics
with intervals, each defense's paired difference from the undefended
recipe, each heuristic defense's verdict against the DP-SGD frontier) and
plots/recipes.csv (one point per recipe: test accuracy against canary
leakage). See `pipeline.recipes.comparison`.
"""

from __future__ import annotations

from pipeline.attacks import lira, rmia
from pipeline.core.io import load_npz, read_json, write_json, write_text
from pipeline.recipes.comparison import HEADLINE, RecipeData, compare_recipes
from pipeline.stages.common import METRICS, PLOTS, RECIPES, ScopedParams, main, tracked

PARAMS = ("seed", "defense.run", "recipe_audit", "attack.lira", "attack.rmia", "mlflow.experiment")
RMIA_DEFAULT_A = 0.3  # RMIA's a when attack.rmia.offline_a is null: it cannot be tuned without a target's membership here


def recipe_names(params: ScopedParams) -> list[str]:
    """The undefended recipe first, then each defense of defense.run, then the DP-SGD baseline."""
    return ["undefended", *params.defense.run, *params.recipe_audit.dp_baseline]


def load_recipe(name: str) -> RecipeData:
    """One recipe's outputs as stage `recipe...` saved them."""
    arrays = load_npz(RECIPES / name / "outputs.npz", ("logits", "labels", "keep", "is_canary", "test_accuracy"))
    return RecipeData(**arrays, info=read_json(RECIPES / name / "info.json"))


def frontier_csv(comparison: dict) -> str:
    """One row per recipe: mean test accuracy, the headline attack's canary leakage and its interval, DP or not."""
    key = comparison["leakage_metric"]
    lines = ["recipe,dp,test_accuracy,canary_leakage,canary_leakage_low,canary_leakage_high"]
    for name, row in comparison["recipes"].items():
        leak = row["attacks"][HEADLINE]["canaries"].get(key, {}) if key else {}
        cells = [leak.get(part) for part in ("value", "low", "high")]
        text = ",".join("" if value is None else f"{value:.6g}" for value in cells)
        lines.append(f"{name},{int(row['dp'])},{row['test_accuracy']['mean']:.6g},{text}")
    return "\n".join(lines) + "\n"


def run(params: ScopedParams) -> None:
    with tracked("recipe_attack", params) as run_log:
        recipes = {name: load_recipe(name) for name in recipe_names(params)}
        lira_settings = lira.Settings.model_validate(getattr(params.attack, "lira", {}))
        rmia_settings = rmia.Settings.model_validate(getattr(params.attack, "rmia", {}))
        a = RMIA_DEFAULT_A if rmia_settings.offline_a is None else rmia_settings.offline_a
        comparison = compare_recipes(
            recipes, lira_settings.fixed_variance, a, rmia_settings.gamma, params.seed,
            params.recipe_audit.accuracy_tolerance,
        )  # fmt: skip
        comparison["rmia_a"] = a
        write_json(METRICS / "recipes.json", comparison)
        write_text(PLOTS / "recipes.csv", frontier_csv(comparison))
        key = comparison["leakage_metric"]
        for name, row in comparison["recipes"].items():
            leak = row["attacks"][HEADLINE]["canaries"][key]["value"] if key else None
            run_log.log_metrics({f"{name}.test_accuracy": row["test_accuracy"]["mean"], f"{name}.canary_{key}": leak})
            shown = "not measurable" if leak is None else f"{leak:.3f}"
            print(f"recipe {name}: test accuracy {row['test_accuracy']['mean']:.3f}, canary {key} ({HEADLINE}) {shown}")


if __name__ == "__main__":
    main(run, PARAMS)
