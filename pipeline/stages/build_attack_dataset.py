"""Stage `build_attack_dataset`: the attack's training and evaluation signals.

Training side: the shadows' logits on the attacker's pool with their keep
matrix (posterior features, member labels, true classes), the shadows'
logits on the candidates (offline attacks) and the reference models'
signals on the candidates (online attacks). Evaluation side:
the saved target model's logits on its members and non-members. The attack
is never scored on data it was fit on.
"""

from __future__ import annotations

from pipeline.config import Params
from pipeline.ensemble import keras_logits
from pipeline.io import write_json, write_npz
from pipeline.signals import attack_input_to_arrays, robustness_signal, target_signals
from pipeline.stages.common import METRICS, REFERENCE, ROOT, load_prepared, load_shadows, load_signals, main, tracked
from pipeline.types import AttackInput


def run(params: Params) -> None:
    from pipeline.tf_runtime import keras

    with tracked("build_attack_dataset", params, ("seed", "attack.label_only")) as run_log:
        dataset, splits = load_prepared()
        shadow, shadow_on_candidates, shadow_robust = load_shadows()
        reference, _ = load_signals(REFERENCE)
        model = keras.models.load_model(ROOT / "data" / "target" / "model.keras")
        target = target_signals(keras_logits(model, dataset.x[splits.candidates]), dataset, splits)
        target_robust = robustness_signal(
            lambda x: keras_logits(model, x)[None], dataset, splits.candidates, params.attack.label_only, params.seed
        )
        data = AttackInput(shadow, target, shadow_on_candidates, reference, shadow_robust, target_robust)
        write_npz(ROOT / "data" / "attack_dataset.npz", **attack_input_to_arrays(data))
        summary = {
            "train_rows": int(shadow.keep.size),
            "train_members": int(shadow.keep.sum()),
            "eval_rows": int(target.keep.size),
            "eval_members": int(target.keep.sum()),
        }
        write_json(METRICS / "attack_dataset.json", summary)
        run_log.log_metrics(summary)
        print(
            f"attack dataset: {summary['train_rows']} shadow rows ({summary['train_members']} members) to fit on, "
            f"{summary['eval_rows']} target rows ({summary['eval_members']} members) to score"
        )


if __name__ == "__main__":
    main(run)
