"""The simulated spread of the white-box canary bound under the accounted mechanism, and how it is labelled."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.canaries.simulation import simulate_white_box_bounds, step_evidence
from pipeline.reporting.markdown import canary_section, simulated_spread
from pipeline.tools.show import COPY_MARGIN, canary_cell

KS = (20, 50, 100, 200)


def test_step_evidence_is_the_trainers_log_likelihood_ratio():
    """The same numbers DpTrainer.dirac_evidence computes in the graph, for q < 1 and q = 1."""
    from types import SimpleNamespace

    from pipeline.defenses.dp_sgd import DpTrainer

    observed = np.linspace(-3, 4, 15)
    for q in (0.1, 1.0):
        dp = SimpleNamespace(noise_multiplier=1.7, sampling_rate=q, clip_norm=2.0)
        trainer = SimpleNamespace(dp=dp)
        from pipeline.core.tf_runtime import tf

        expected = np.asarray(DpTrainer.dirac_evidence(trainer, tf.constant(observed * 2.0, tf.float32)))
        np.testing.assert_allclose(step_evidence(observed, q, 1.7), expected, rtol=1e-5, atol=1e-5)


def test_more_noise_means_lower_bounds_and_the_spread_is_ordered():
    loud = simulate_white_box_bounds(400, 0.5, 0.7, 20, KS, 1e-5, tests=2, repeats=20, seed=1)
    quiet = simulate_white_box_bounds(400, 0.5, 10.0, 20, KS, 1e-5, tests=2, repeats=20, seed=1)
    assert loud.p05 <= loud.median <= loud.p95 and quiet.p05 <= quiet.median <= quiet.p95
    assert loud.median > quiet.median + 0.5
    assert quiet.median < 0.3  # sigma 10 over 20 steps: close to nothing to find


def test_the_simulation_is_seeded():
    a = simulate_white_box_bounds(200, 0.3, 1.0, 10, KS, 1e-5, tests=1, repeats=5, seed=3)
    b = simulate_white_box_bounds(200, 0.3, 1.0, 10, KS, 1e-5, tests=1, repeats=5, seed=3)
    assert a == b


def _canary(bound: float, accuracy: float, simulated: dict | None = None) -> dict:
    white = {"epsilon_lb": bound, "m": 100, "k": 20, "correct": 18, "levels": []}
    if simulated:
        white["simulated"] = simulated
    return {"epsilon_lb": bound, "kind": "mislabeled", "confidence": 0.95, "delta": 1e-5, "test_accuracy": accuracy,
            "white_box": white, "dp_epsilon": 4.0}  # fmt: skip


def test_the_report_shows_where_the_draw_sits_and_names_a_retrained_copy():
    spread = {"median": 1.12, "p05": 0.89, "p95": 1.33, "repeats": 100}
    assert simulated_spread(_canary(1.79, 0.8, spread)) == "1.12 [0.89, 1.33]"
    text = "\n".join(canary_section({"undefended": _canary(1.79, 0.8, spread)}, audited_model="data/raw/model.keras"))
    assert "undefended (a retrained copy of data/raw/model.keras)" in text and "1.12 [0.89, 1.33]" in text


@pytest.mark.parametrize(("copy_accuracy", "shown"), [(0.90, "4.57 (a copy, acc 0.900)"), (0.633, "n/a (a copy, acc 0.633)")])
def test_the_summary_shows_a_copys_bound_only_near_the_models_accuracy(copy_accuracy, shown):
    row = {"test_accuracy": 0.907, "canary_audit": {"epsilon_lb": 4.57, "test_accuracy": copy_accuracy}}
    assert canary_cell(row, "data/raw/model.keras") == shown
    assert abs(0.907 - 0.90) <= COPY_MARGIN < abs(0.907 - 0.633)
    assert canary_cell(row, None) == "4.57"
