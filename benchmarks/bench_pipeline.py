"""Whole-pipeline timings: cold `dvc repro`, no-op, one attack parameter changed, single stages.

Runs the real pipeline on the default params in a temporary git copy of the
project, so the working tree and its MLflow store are untouched. Prints
wall-clock seconds measured side by side in this one run.

    .venv/bin/python benchmarks/bench_pipeline.py
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from pipeline.tools.sandbox import make_sandbox

COLD_GOAL_S, ATTACK_RERUN_GOAL_S, NOOP_GOAL_S = 90.0, 15.0, 3.0


def _timed(args: list[str], root: Path, env: dict[str, str]) -> float:
    start = time.perf_counter()
    result = subprocess.run(args, cwd=root, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"{' '.join(args)} failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    return elapsed


def _change_attack_param(root: Path) -> None:
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["attack"]["rmia"]["gamma"] = params["attack"]["rmia"]["gamma"] + 1.0
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def _verdict(seconds: float, goal: float) -> str:
    return "met" if seconds <= goal else "MISSED"


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="mia-bench-") as tmp:
        root = Path(tmp)
        env = make_sandbox(root)
        cold = _timed(["dvc", "repro"], root, env)
        noop = _timed(["dvc", "repro"], root, env)
        _change_attack_param(root)
        attack_rerun = _timed(["dvc", "repro"], root, env)
        rows = [
            ("dvc repro, cold (default params, whole pipeline)", cold),
            ("dvc repro, nothing changed (no-op)", noop),
            ("dvc repro after changing attack.rmia.gamma (attack stages + report)", attack_rerun),
            ("train_reference stage (reference models' training)", _timed(["dvc", "repro", "-f", "-s", "train_reference"], root, env)),
            ("train_attack stage (every enabled attack, undefended target)", _timed(["dvc", "repro", "-f", "-s", "train_attack"], root, env)),
            ("report stage", _timed(["dvc", "repro", "-f", "-s", "report"], root, env)),
        ]
    print("\nPipeline timings (wall clock, one run, includes process start-up)")
    for label, seconds in rows:
        print(f"  {label:<70} {seconds:7.1f} s")
    print(
        f"  goals: cold <= {COLD_GOAL_S:.0f} s ({_verdict(cold, COLD_GOAL_S)}), "
        f"attack-parameter rerun <= {ATTACK_RERUN_GOAL_S:.0f} s ({_verdict(attack_rerun, ATTACK_RERUN_GOAL_S)}), "
        f"no-op <= {NOOP_GOAL_S:.0f} s ({_verdict(noop, NOOP_GOAL_S)}); "
        f"attack-parameter rerun / cold = {attack_rerun / cold:.2f}"
    )


if __name__ == "__main__":
    main()
