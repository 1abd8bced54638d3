"""Stage `train_shadows`: K shadow models trained like the target on points of the pool, and their outputs."""

from __future__ import annotations

from pipeline.core.io import write_json
from pipeline.core.signals import shadow_accuracy
from pipeline.stages.common import (
    METRICS,
    SHADOWS,
    ScopedParams,
    load_prepared,
    log_split_inputs,
    main,
    save_signals,
    tracked,
)
from pipeline.stages.trained_models import undefended_models
from pipeline.training.attacker import train_shadows

PARAMS = ("seed", "target", "shadows", "compute", "mlflow.experiment")


def run(params: ScopedParams) -> None:
    with tracked("train_shadows", params) as run_log:
        dataset, splits = load_prepared()
        models = undefended_models(dataset, params.target, params.shadows.n_models, params.seed, "shadows", params.compute)
        signals, candidate_logits, trained = train_shadows(dataset, splits, models)
        save_signals(SHADOWS, signals, candidate_logits=candidate_logits, robustness=trained.robustness)
        log_split_inputs(run_log, dataset, splits, ("shadow_pool", "candidates"))  # trained on / queried on
        metrics = {"n_models": signals.n_models, **shadow_accuracy(signals)}
        write_json(METRICS / "shadows.json", metrics)
        run_log.log_metrics(metrics)
        run_log.log_history({f"mean_{k}": v.mean(axis=0) for k, v in trained.history.items()})
        print(
            f"shadows: {signals.n_models} models, accuracy on their own training data "
            f"{metrics['in_accuracy']:.3f}, on pool points they did not see {metrics['out_accuracy']:.3f}"
        )


if __name__ == "__main__":
    main(run, PARAMS)
