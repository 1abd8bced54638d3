"""Stage `train_attack`: fit every enabled attack on shadow data, score the target."""

from __future__ import annotations

from pipeline.audit import run_attacks
from pipeline.config import Params
from pipeline.io import load_npz
from pipeline.signals import ATTACK_INPUT_KEYS, attack_input_from_arrays
from pipeline.stages.attack_outputs import record_audit
from pipeline.stages.common import METRICS, ROOT, main, tracked


def run(params: Params) -> None:
    with tracked("train_attack", params, ("seed", "attack")) as run_log:
        data = attack_input_from_arrays(load_npz(ROOT / "data" / "attack_dataset.npz", ATTACK_INPUT_KEYS))
        audit = run_attacks(data, params.attack, params.seed)
        print("attacks on the undefended target:")
        record_audit("undefended", audit, data, run_log, METRICS / "attacks.json", ROOT / "data" / "attack_scores.npz")


if __name__ == "__main__":
    main(run)
