"""Whole-pipeline timings: where each stage's time goes, and the loop's three figures with and without the recipe audit.

Runs the real `dvc repro` on the default params in temporary git copies of
the project (`pipeline/tools/sandbox.py`), so the working tree and its
MLflow store are untouched. Every stage process writes its own timings
(`pipeline/core/timings.py`): start-up (the interpreter and the stage's
imports), MLflow tracking (its import, the store connection and every
call), and the rest, its work. DVC's bookkeeping is what `dvc repro`'s
wall clock adds to the stage processes' own time.

The loop's three figures are measured twice, side by side in this one run:

- with the recipe audit: the default `dvc.yaml`;
- without it: a second copy whose `dvc.yaml` lacks the recipe stages
  (`recipe_undefended`, `recipe@<name>`, `recipe_dp@<name>`, `recipe_attack`).
  The report still reads `metrics/recipes.json` and the recipe stages' run
  files; they are copied from the first copy as plain files that no stage
  writes, so the report does the same work in both.

    .venv/bin/python benchmarks/bench_pipeline.py [--variants with,without]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from pipeline.core.timings import TIMINGS_ENV
from pipeline.tools.sandbox import make_sandbox

COLD_GOAL_S, ATTACK_RERUN_GOAL_S, NOOP_GOAL_S, FIXED_GOAL_S = 120.0, 30.0, 2.0, 3.0
RECIPE_STAGES = ("recipe_undefended", "recipe", "recipe_dp", "recipe_attack")
RECIPE_FILES = ("metrics/recipes.json", "data/runs/recipe-*.json", "data/runs/recipe_attack.json")  # what the report reads of the recipe audit


@dataclass(frozen=True)
class StageTime:
    """One stage process's timings, as it wrote them."""

    stage: str
    startup: float
    tracking: float
    total: float

    @property
    def work(self) -> float:
        return self.total - self.startup - self.tracking


@dataclass(frozen=True)
class Repro:
    """One `dvc repro`: its wall clock, the load around it, and the timings of the stages it ran."""

    wall: float
    load: tuple[float, float]
    stages: list[StageTime]

    @property
    def bookkeeping(self) -> float:
        """DVC's own time: the wall clock less the stage processes'."""
        return self.wall - sum(s.total for s in self.stages)


def _repro(root: Path, env: dict[str, str], label: str) -> Repro:
    timings = Path(tempfile.mkdtemp(prefix=f"timings-{label}-", dir=root.parent))
    load = os.getloadavg()[0]
    start = time.perf_counter()
    result = subprocess.run(["dvc", "repro"], cwd=root, env={**env, TIMINGS_ENV: str(timings)}, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"dvc repro ({label}) failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    ran = re.findall(r"Running stage '([^']+)'", result.stdout)  # DVC's names, in the order the stages ran
    files = [json.loads(path.read_text()) for path in sorted(timings.glob("*.json"), key=lambda p: p.stat().st_mtime)]
    names = ran if len(ran) == len(files) else [t["stage"] for t in files]
    stages = [StageTime(name, t["startup_s"], t.get("tracking_s", 0.0), t["total_s"]) for name, t in zip(names, files)]
    return Repro(wall, (load, os.getloadavg()[0]), stages)


def _change_attack_param(root: Path) -> None:
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["attack"]["rmia"]["gamma"] = params["attack"]["rmia"]["gamma"] + 1.0
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def _without_recipe_audit(root: Path, recipes_from: Path | None) -> None:
    """Drop the recipe stages from the copy's dvc.yaml; give its report the recipe files as plain inputs."""
    pipeline = yaml.safe_load((root / "dvc.yaml").read_text())
    pipeline["stages"] = {name: stage for name, stage in pipeline["stages"].items() if name not in RECIPE_STAGES}
    (root / "dvc.yaml").write_text(yaml.safe_dump(pipeline, sort_keys=False))
    if recipes_from is None:
        sys.exit("the variant without the recipe audit needs the recipe files of a run with it (--variants with,without)")
    for pattern in RECIPE_FILES:
        for source in recipes_from.glob(pattern):
            target = root / source.relative_to(recipes_from)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)


def _loop(root: Path, env: dict[str, str], label: str) -> dict[str, Repro]:
    """Cold, no-op and attack-parameter rerun, in that order, in one copy."""
    runs = {"cold": _repro(root, env, f"{label}-cold"), "no-op": _repro(root, env, f"{label}-noop")}
    _change_attack_param(root)
    runs["attack-parameter rerun"] = _repro(root, env, f"{label}-attack")
    return runs


def _verdict(seconds: float, goal: float) -> str:
    return "met" if seconds <= goal else "MISSED"


def _print_stages(title: str, repro: Repro) -> None:
    n = max(len(repro.stages), 1)
    share = repro.bookkeeping / n
    print(f"\n{title}: {len(repro.stages)} stages, dvc repro {repro.wall:.1f} s, load {repro.load[0]:.1f} -> {repro.load[1]:.1f}")
    print(f"  {'stage':<34} {'start-up':>8} {'tracking':>8} {'DVC':>6} {'fixed':>6} {'work':>7} {'total':>7}")
    for s in repro.stages:
        fixed = s.startup + s.tracking + share
        flag = "" if fixed <= FIXED_GOAL_S else "  fixed > goal"
        print(
            f"  {s.stage:<34} {s.startup:8.2f} {s.tracking:8.2f} {share:6.2f} {fixed:6.2f} {s.work:7.2f} {s.total + share:7.2f}{flag}"
        )
    fixed = [s.startup + s.tracking + share for s in repro.stages]
    print(
        f"  DVC bookkeeping {repro.bookkeeping:.1f} s in all ({share:.2f} s a stage); "
        f"fixed cost a stage: median {sorted(fixed)[len(fixed) // 2] if fixed else 0:.2f} s, max {max(fixed, default=0):.2f} s "
        f"(goal <= {FIXED_GOAL_S:.0f} s: {_verdict(max(fixed, default=0), FIXED_GOAL_S)}); "
        f"fixed cost {sum(fixed):.1f} s of {repro.wall:.1f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default="with,without", help="with, without or both (comma-separated; default both)")
    variants = parser.parse_args().variants.split(",")
    results: dict[str, dict[str, Repro]] = {}
    with tempfile.TemporaryDirectory(prefix="mia-bench-") as tmp:
        with_root = Path(tmp) / "with"
        if "with" in variants:
            with_root.mkdir()
            results["with"] = _loop(with_root, make_sandbox(with_root), "with")
        if "without" in variants:
            root = Path(tmp) / "without"
            root.mkdir()
            env = make_sandbox(root)
            _without_recipe_audit(root, with_root if "with" in variants else None)
            subprocess.run(["git", "commit", "-qam", "without the recipe audit"], cwd=root, env=env, check=True)
            results["without"] = _loop(root, env, "without")
    for variant, runs in results.items():
        _print_stages(f"Stages of the cold run, {variant} the recipe audit", runs["cold"])
        _print_stages(f"Stages of the attack-parameter rerun, {variant} the recipe audit", runs["attack-parameter rerun"])
    goals = {"cold": (COLD_GOAL_S, "without"), "no-op": (NOOP_GOAL_S, None), "attack-parameter rerun": (ATTACK_RERUN_GOAL_S, None)}
    print("\nThe loop (dvc repro wall clock, seconds; load average before -> after)")
    print(f"  {'':<24}" + "".join(f"{variant + ' the recipe audit':>34}" for variant in results) + "   goal")
    for figure, (goal, only) in goals.items():
        cells = "".join(
            f"{runs[figure].wall:>14.1f} (load {runs[figure].load[0]:.1f} -> {runs[figure].load[1]:.1f})" for runs in results.values()
        )
        judged = [variant for variant in results if only in (None, variant)]
        verdicts = ", ".join(f"{v}: {_verdict(results[v][figure].wall, goal)}" for v in judged)
        print(f"  {figure:<24}{cells}   <= {goal:.0f} s ({verdicts})")
    if "with" in results:
        with_runs = results["with"]
        print(f"  attack-parameter rerun / cold, with the recipe audit: {with_runs['attack-parameter rerun'].wall / with_runs['cold'].wall:.2f}")


if __name__ == "__main__":
    main()
