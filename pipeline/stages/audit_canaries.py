"""Stage `audit_canaries`: the one-run canary audit of the undefended target's training.

Trains the target's architecture and recipe once on its members plus the
input canaries whose coins came up, scores every canary with the run's
released outputs and writes the one-run epsilon lower bound (an
"effective epsilon" of the undefended training) to
metrics/canaries/undefended.json, the bound at every guess count to
plots/canaries/undefended/black_box.csv. `audit_canaries_defense@<name>` does the
same for a defense (`record` is shared).
"""

from __future__ import annotations

from dataclasses import asdict

from pipeline.canaries.audit import (
    CanaryRun,
    audit_run,
    audit_summary,
    canary_job,
    draw_canaries,
    score_run,
)
from pipeline.canaries.simulation import SimulatedBounds
from pipeline.core.io import write_json, write_text
from pipeline.core.seeding import derive_seed
from pipeline.defenses.base import train_undefended
from pipeline.stages.common import (
    METRICS,
    PLOTS,
    RUNS,
    ScopedParams,
    load_prepared,
    main,
    tracked,
)
from pipeline.stages.trained_models import target_design

PARAMS = ("seed", "target", "canaries.n", "canaries.kind", "canaries.guesses", "canaries.delta", "mlflow.experiment")


def levels_csv(levels: list[dict]) -> str:
    """One score's bound at every guess count (k, correct, epsilon_lb): a line of DVC's plot."""
    return "k,correct,epsilon_lb\n" + "".join(f"{lv['k']},{lv['correct']},{lv['epsilon_lb']:.6g}\n" for lv in levels)


def record(
    name: str, run: CanaryRun, params: ScopedParams, run_log: object, accounted: float | None,
    simulated: SimulatedBounds | None = None,
) -> None:  # fmt: skip
    """Audit the scored run and write, log and print its bounds (with the white-box bound's simulated spread)."""
    c = params.canaries
    summary = audit_summary(run, audit_run(run, c.guesses, c.delta), c.kind, accounted)
    if simulated is not None:
        summary["white_box"]["simulated"] = asdict(simulated)
    write_json(METRICS / "canaries" / f"{name}.json", summary)
    for score in run.scores:
        write_text(PLOTS / "canaries" / name / f"{score}.csv", levels_csv(summary[score]["levels"]))
    run_log.log_metrics(
        {"canary_epsilon_lb": summary["epsilon_lb"], "canary_run_test_accuracy": summary["test_accuracy"]}
        | {f"canary_epsilon_lb.{score}": summary[score]["epsilon_lb"] for score in run.scores}
    )
    parts = ", ".join(f"{score} {summary[score]['epsilon_lb']:.3f}" for score in run.scores)
    claim = "" if accounted is None else f" (accountant: {accounted:.3f})"
    print(f"canary audit of {name}: epsilon >= {summary['epsilon_lb']:.3f} at 95%{claim}; {parts}")
    if simulated is not None:
        print(
            f"  white-box bound of the accounted mechanism, {simulated.repeats} simulated runs: median "
            f"{simulated.median:.3f}, 5th to 95th percentile {simulated.p05:.3f} to {simulated.p95:.3f}"
        )
    if summary.get("exceeds_accounted"):
        print(f"WARNING: the canary audit of {name} refutes its accounted epsilon: a bug in DP training or accounting")


def run(params: ScopedParams) -> None:
    with tracked("audit_canaries", params, run_file=RUNS / "audit_canaries.json") as run_log:
        dataset, splits = load_prepared()
        architecture, recipe = target_design(dataset, params.target)
        canaries = draw_canaries(dataset, splits, params.canaries.kind, params.canaries.n, params.seed)
        job = canary_job(dataset, splits, architecture, recipe, canaries, derive_seed(params.seed, "canary run"), "canary run")
        record("undefended", score_run(train_undefended(job), job, canaries), params, run_log, None)


if __name__ == "__main__":
    main(run, PARAMS)
