"""Stage `train_reference`: reference models for the online attacks.

Each trains exactly like the target, on one half of the candidates (the
two models of a pair on complementary halves), so every candidate is IN
for exactly half of them: the stronger attacker of online LiRA, who holds
the candidate records (not their membership).
"""

from __future__ import annotations

from pipeline.core.signals import shadow_accuracy
from pipeline.stages.common import (
    REFERENCE,
    ScopedParams,
    load_prepared,
    log_split_inputs,
    main,
    save_signals,
    tracked,
)
from pipeline.stages.trained_models import undefended_models
from pipeline.training.attacker import train_reference

PARAMS = ("seed", "target", "reference", "compute", "mlflow.experiment")


def run(params: ScopedParams) -> None:
    with tracked("train_reference", params) as run_log:
        dataset, splits = load_prepared()
        models = undefended_models(dataset, params.target, params.reference.n_models, params.seed, "reference", params.compute)
        signals = train_reference(dataset, splits, models)
        save_signals(REFERENCE, signals)
        log_split_inputs(run_log, dataset, splits, ("candidates", "shadow_pool"))  # trained on / defender data
        metrics = {"n_models": signals.n_models, **shadow_accuracy(signals)}
        run_log.log_metrics(metrics)
        print(
            f"reference: {signals.n_models} models, accuracy on candidates "
            f"IN {metrics['in_accuracy']:.3f}, OUT {metrics['out_accuracy']:.3f}"
        )


if __name__ == "__main__":
    main(run, PARAMS)
