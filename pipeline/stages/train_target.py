"""Stage `train_target`: train the undefended target on the members (or take `target.model`), save it and its outputs."""

from __future__ import annotations

from pipeline.core.seeding import derive_seed
from pipeline.defenses.base import train_undefended
from pipeline.stages.common import (
    METRICS,
    PLOTS,
    TARGET,
    ScopedParams,
    load_prepared,
    main,
    tracked,
)
from pipeline.stages.trained_models import (
    audited_model,
    log_model,
    save_target,
    save_target_outputs,
    target_design,
)
from pipeline.training.target import audited_target, train_target

PARAMS = ("seed", "target", "mlflow.experiment")


def run(params: ScopedParams) -> None:
    with tracked("train_target", params) as run_log:
        dataset, splits = load_prepared()
        if params.target.model is not None:  # the user's model is the target, exactly as given
            target = audited_target(audited_model(params.target), dataset, splits)
        else:
            target = train_target(
                dataset,
                splits,
                *target_design(dataset, params.target),
                train=train_undefended,
                seed=derive_seed(params.seed, "target"),
                label="target",
            )
        save_target(TARGET, target, run_log, METRICS / "target.json", PLOTS / "training" / "target.json")
        save_target_outputs(TARGET, target, dataset, splits, params.seed)
        log_model(run_log, target, dataset, splits)
        u = target.utility
        print(
            f"target: train accuracy {u['train_accuracy']:.3f}, test accuracy {u['test_accuracy']:.3f}, "
            f"gap {u['generalization_gap']:.3f}"
        )


if __name__ == "__main__":
    main(run, PARAMS)
