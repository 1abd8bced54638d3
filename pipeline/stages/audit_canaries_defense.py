"""Stage `audit_canaries_defense@<name>`: the one-run canary audit of a defense's training.

As `audit_canaries`, with the defense, through its `canary_run`: a
DP-SGD defense trains under the target's DP plan (its sampling rate,
noise and steps, so the accountant's epsilon covers every canary) and also
carries gradient canaries, scored white-box; its accountant's epsilon, at
the audit's delta, is written beside the bound, which must not exceed it.
"""

from __future__ import annotations

import sys

from pipeline.canaries.audit import (
    canary_job,
    draw_canaries,
    gradient_canaries,
    score_run,
)
from pipeline.canaries.simulation import simulate_white_box_bounds
from pipeline.core.errors import PipelineError
from pipeline.core.seeding import derive_seed
from pipeline.stages.audit_canaries import PARAMS, record
from pipeline.stages.common import RUNS, ScopedParams, load_prepared, main, tracked
from pipeline.stages.trained_models import load_defense, target_design


def params_for(name: str) -> tuple[str, ...]:
    """The params stage audit_canaries_defense@<name> reads (the defense's own settings come validated)."""
    return PARAMS


def run(params: ScopedParams, name: str) -> None:
    defense = load_defense(name)
    stage = f"audit_canaries_defense@{name}"
    with tracked(stage, params, run_file=RUNS / f"audit_canaries_defense-{name}.json") as run_log:
        dataset, splits = load_prepared()
        architecture, recipe = target_design(dataset, params.target)
        c = params.canaries
        canaries = draw_canaries(dataset, splits, c.kind, c.n, params.seed)
        job = canary_job(
            dataset, splits, architecture, recipe, canaries, derive_seed(params.seed, "canary run"), f"{name} canary run"
        )
        coordinates, included = gradient_canaries(architecture, c.n, params.seed)
        try:
            trained = defense.canary_run(job, len(splits.members), c.n, (coordinates, included), c.delta)
        except PipelineError as error:  # a defense's own message cannot know its name
            raise PipelineError(str(error).replace("defenses.<name>", f"defenses.{name}")) from None
        gradient, simulated = None, None
        if trained.gradient_scores is not None:  # a white-box audit: where its bound sits for the accounted mechanism
            gradient = (trained.gradient_scores[0], included)
            info = trained.models.info
            simulated = simulate_white_box_bounds(
                c.n, info["dp_sampling_rate"], info["dp_noise_multiplier"], int(info["dp_steps"]), c.guesses, c.delta,
                tests=2, seed=derive_seed(params.seed, "canary simulation"),
            )  # fmt: skip
        scored = score_run(trained.models, job, canaries, gradient)
        record(name, scored, params, run_log, trained.accounted_epsilon, simulated)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m pipeline.stages.audit_canaries_defense <defense name>")
    main(lambda params: run(params, sys.argv[1]), params_for(sys.argv[1]))
