"""Stage `build_attack_dataset`: the attack's training and evaluation signals, from saved outputs.

Training side: the shadows' logits on the attacker's pool with their keep
matrix (posterior features, member labels, true classes), the shadows'
logits on the candidates (offline attacks) and the reference models'
signals on the candidates (online attacks). Evaluation side: the target's
saved outputs on its members and non-members. The attack is never scored
on data it was fit on. No model is loaded here.
"""

from __future__ import annotations

from pipeline.core.io import write_json, write_npz
from pipeline.core.signals import attack_input_to_arrays
from pipeline.core.types import AttackInput
from pipeline.stages.common import (
    ATTACK_DATASET_FILE,
    METRICS,
    REFERENCE,
    ROOT,
    TARGET,
    ScopedParams,
    load_prepared,
    load_shadows,
    load_signals,
    load_target_outputs,
    log_split_inputs,
    main,
    tracked,
)

PARAMS = ("mlflow.experiment",)


def run(params: ScopedParams) -> None:
    with tracked("build_attack_dataset", params) as run_log:
        dataset, splits = load_prepared()
        shadow, shadow_on_candidates, shadow_robust = load_shadows()
        reference, _ = load_signals(REFERENCE)
        target, target_robust = load_target_outputs(TARGET, dataset, splits)
        data = AttackInput(shadow, target, shadow_on_candidates, reference, shadow_robust, target_robust)
        write_npz(ROOT / "data" / ATTACK_DATASET_FILE, **attack_input_to_arrays(data))
        log_split_inputs(run_log, dataset, splits, ("shadow_pool", "candidates"))
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
    main(run, PARAMS)
