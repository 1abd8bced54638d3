"""Stages `train_attack` and `attack_defense@<name>`: fit every enabled attack on shadow data, score one target.

Without an argument the target is the undefended one (the attack dataset
`build_attack_dataset` wrote); with a defense name it is that defense's
target (the attack dataset `defend@<name>` wrote). Only saved outputs are
read: no model, no TensorFlow.
"""

from __future__ import annotations

import sys

from pipeline.audit import run_attacks
from pipeline.io import load_npz, read_json
from pipeline.signals import ATTACK_INPUT_KEYS, attack_input_from_arrays
from pipeline.stages.attack_outputs import record_audit
from pipeline.stages.common import ATTACK_DATASET_FILE, DEFENSES, METRICS, ROOT, RUNS, ScopedParams, main, tracked

PARAMS = ("seed", "attack", "mlflow")


def run(params: ScopedParams, defense: str | None) -> None:
    if defense is None:
        stage, name, folder, metrics = "train_attack", "undefended", ROOT / "data", METRICS / "attacks.json"
        run_file, scores, dp = RUNS / "train_attack.json", ROOT / "data" / "attack_scores.npz", None
    else:
        stage, name, folder, metrics = f"attack_defense@{defense}", defense, DEFENSES / defense, METRICS / "defenses" / defense / "attacks.json"
        utility = read_json(METRICS / "defenses" / defense / "utility.json")
        run_file, scores = RUNS / f"attack_defense-{defense}.json", None
        dp = (utility["dp_epsilon"], utility["dp_delta"]) if "dp_epsilon" in utility else None
    with tracked(stage, params, run_file=run_file) as run_log:
        data = attack_input_from_arrays(load_npz(folder / ATTACK_DATASET_FILE, ATTACK_INPUT_KEYS))
        audit = run_attacks(data, params.attack, params.seed)
        print(f"attacks on the {name} target:")
        record_audit(name, audit, data, run_log, metrics, scores, dp)


if __name__ == "__main__":
    if len(sys.argv) > 2:
        sys.exit("usage: python -m pipeline.stages.train_attack [defense name]")
    main(lambda params: run(params, sys.argv[1] if len(sys.argv) == 2 else None), PARAMS)
