"""Stage `train_reference`: reference models for the online attacks.

They train on complementary halves of the candidates plus the shadow pool,
so every candidate is IN for exactly half of them: the stronger attacker of
online LiRA, who holds the candidate records (not their membership).
"""

from __future__ import annotations

from pipeline.config import Params
from pipeline.models import architecture_for, recipe_for
from pipeline.signals import ModelSet, shadow_accuracy, train_reference
from pipeline.stages.common import REFERENCE, load_prepared, main, save_signals, tracked


def run(params: Params) -> None:
    with tracked("train_reference", params, ("seed", "target", "reference")) as run_log:
        dataset, splits = load_prepared()
        models = ModelSet(
            architecture_for(dataset, params.target), recipe_for(params.target), None, params.reference.n_models, params.seed, "reference"
        )
        signals = train_reference(dataset, splits, models)
        save_signals(REFERENCE, signals)
        metrics = {"n_models": signals.n_models, **shadow_accuracy(signals)}
        run_log.log_metrics(metrics)
        print(f"reference: {signals.n_models} models, accuracy on candidates IN {metrics['in_accuracy']:.3f}, OUT {metrics['out_accuracy']:.3f}")


if __name__ == "__main__":
    main(run)
