"""Stage `train_target`: train the undefended target on the members."""

from __future__ import annotations

from pipeline.config import Params
from pipeline.models import architecture_for, recipe_for, train_target
from pipeline.seeding import derive_seed
from pipeline.stages.common import METRICS, PLOTS, ROOT, load_prepared, log_model, main, save_target, tracked


def run(params: Params) -> None:
    with tracked("train_target", params, ("seed", "target")) as run_log:
        dataset, splits = load_prepared()
        target = train_target(
            dataset,
            splits,
            architecture_for(dataset, params.target),
            recipe_for(params.target),
            defense=None,
            seed=derive_seed(params.seed, "target"),
            label="target",
        )
        save_target(ROOT / "data" / "target", target, run_log, METRICS / "target.json", PLOTS / "training" / "target.json")
        log_model(run_log, target, dataset, splits)
        u = target.utility
        print(f"target: train accuracy {u['train_accuracy']:.3f}, test accuracy {u['test_accuracy']:.3f}, gap {u['generalization_gap']:.3f}")


if __name__ == "__main__":
    main(run)
