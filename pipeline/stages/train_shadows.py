"""Stage `train_shadows`: K shadow models on complementary halves of the pool."""

from __future__ import annotations

from pipeline.config import Params
from pipeline.io import write_json
from pipeline.models import architecture_for, recipe_for
from pipeline.signals import ModelSet, robustness_signal, shadow_accuracy, train_shadows
from pipeline.stages.common import METRICS, SHADOWS, load_prepared, main, save_signals, tracked


def run(params: Params) -> None:
    with tracked("train_shadows", params, ("seed", "target", "shadows", "attack.label_only")) as run_log:
        dataset, splits = load_prepared()
        models = ModelSet(
            architecture_for(dataset, params.target), recipe_for(params.target), None, params.shadows.n_models, params.seed, "shadows"
        )
        signals, candidate_logits, trained = train_shadows(dataset, splits, models)
        robust = robustness_signal(trained.observe, dataset, splits.shadow_pool, params.attack.label_only, params.seed)
        save_signals(SHADOWS, signals, candidate_logits=candidate_logits, robustness=robust)
        metrics = {"n_models": signals.n_models, **shadow_accuracy(signals)}
        write_json(METRICS / "shadows.json", metrics)
        run_log.log_metrics(metrics)
        run_log.log_history({f"mean_{k}": v.mean(axis=0) for k, v in trained.history.items()})
        print(
            f"shadows: {signals.n_models} models, accuracy on their own training data "
            f"{metrics['in_accuracy']:.3f}, on pool points they did not see {metrics['out_accuracy']:.3f}"
        )


if __name__ == "__main__":
    main(run)
