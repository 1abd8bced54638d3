"""Canaries and the canary run: what trains, what is scored, and the DP plan it runs under."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from pipeline import stack as S
from pipeline.canaries.audit import (
    canary_job,
    draw_canaries,
    gradient_canaries,
    score_run,
)
from pipeline.canaries.records import canary_sources, coins, make_canaries
from pipeline.core.errors import PipelineError
from pipeline.core.types import Dataset, Splits
from pipeline.defenses import dp_sgd as D
from pipeline.defenses.base import train_undefended
from pipeline.defenses.dp_sgd import DpSgdDefense


def _data(n: int = 240, d: int = 32, classes: int = 3, seed: int = 0) -> tuple[Dataset, Splits]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    x = (rng.normal(size=(n, d)) + 2.0 * np.eye(classes, d)[y]).astype(np.float32)
    idx = rng.permutation(n)
    splits = Splits(idx[:64], idx[64:128], idx[128:176], idx[176:224], idx[224:])
    return Dataset(x, y, classes, "gaussians"), splits


def test_mislabeled_canaries_are_unused_records_with_a_wrong_label() -> None:
    dataset, splits = _data()
    sources = canary_sources(splits)
    assert not set(sources) & set(splits.members)
    x, y = make_canaries("mislabeled", 100, dataset, sources, np.random.default_rng(1))
    rows = [int(np.flatnonzero((dataset.x == row).all(axis=1))[0]) for row in x]
    assert set(rows) <= set(sources) and len(set(rows)) == 100
    assert np.all(y != dataset.y[rows]) and set(y) <= {0, 1, 2}
    with pytest.raises(PipelineError, match="canaries.n"):
        make_canaries("mislabeled", len(sources) + 1, dataset, sources, np.random.default_rng(1))


def test_ood_canaries_lie_in_the_data_range_and_coins_are_fair() -> None:
    dataset, splits = _data()
    x, y = make_canaries("ood", 500, dataset, canary_sources(splits), np.random.default_rng(2))
    assert x.shape == (500, 32) and np.all(x >= dataset.x.min(0)) and np.all(x <= dataset.x.max(0))
    assert set(y) == {0, 1, 2}
    included = coins(10_000, np.random.default_rng(3))
    assert abs(included.mean() - 0.5) < 4 * 0.005


def test_the_canary_run_trains_on_the_members_and_the_included_canaries_only() -> None:
    dataset, splits = _data()
    canaries = draw_canaries(dataset, splits, "mislabeled", 80, seed=5)
    assert np.array_equal(canaries.x, draw_canaries(dataset, splits, "mislabeled", 80, seed=5).x)  # one seed
    arch = S.Architecture("mlp", (32,), 3, hidden_units=16)
    job = canary_job(dataset, splits, arch, S.Recipe(2, 16, 1e-2), canaries, seed=0)
    n = len(dataset.x)
    assert set(np.flatnonzero(job.keep[0, :n])) == set(splits.members)
    assert np.array_equal(job.keep[0, n:], canaries.included)
    assert np.array_equal(job.x[n:], canaries.x) and np.array_equal(job.y[n:], canaries.y)
    run = score_run(train_undefended(job), job, canaries)
    scores, included = run.scores["black_box"]
    assert scores.shape == (80,) and np.all(scores <= 0) and np.array_equal(included, canaries.included)


def test_an_undefended_model_that_memorises_its_canaries_is_caught_black_box() -> None:
    """Mislabeled canaries a wide MLP fits: their released loss tells included from excluded ones."""
    from pipeline.canaries.audit import audit_run

    dataset, splits = _data()
    canaries = draw_canaries(dataset, splits, "mislabeled", 150, seed=2)
    arch = S.Architecture("mlp", (32,), 3, hidden_units=256)
    job = canary_job(dataset, splits, arch, S.Recipe(epochs=80, batch_size=16, learning_rate=3e-3), canaries, seed=0)
    run = score_run(train_undefended(job), job, canaries)
    result = audit_run(run, [20, 50, 150], 1e-5)["black_box"]
    assert result.epsilon_lb > 1.0
    flipped = dataclasses.replace(run, scores={"black_box": (run.scores["black_box"][0], ~canaries.included)})
    assert audit_run(flipped, [20, 50, 150], 1e-5)["black_box"].epsilon_lb == 0.0  # the scores point the right way


def _simulated_scores(q: float, steps: int, sigma: float, included: bool, n: int = 100_000) -> np.ndarray:
    """What `DpTrainer.dirac_evidence` sums to for a gradient canary, by simulation of its model.

    Each step the coordinate (in units of C) is b + N(0, sigma^2), b ~
    Bernoulli(q) if included, 0 if not; the score is the summed log ratio
    log(1 - q + q exp((y - 1/2) / sigma^2)) - log(1 - q).
    """
    rng = np.random.default_rng(0)
    y = (rng.random((n, steps)) < q) * included + sigma * rng.standard_normal((n, steps))
    return (np.log1p(q * np.expm1((y - 0.5) / sigma**2)) - np.log1p(-q)).sum(axis=1)


def _canary_run(noise_multiplier: float, clip_norm: float, seed: int):
    dataset, splits = _data()
    arch = S.Architecture("mlp", (32,), 3, hidden_units=64)
    recipe = S.Recipe(epochs=2, batch_size=8, learning_rate=1e-3)
    canaries = draw_canaries(dataset, splits, "ood", 40, seed=1)
    job = canary_job(dataset, splits, arch, recipe, canaries, seed=0)
    defense = DpSgdDefense(type="dp_sgd", noise_multiplier=noise_multiplier, target_epsilon=None, clip_norm=clip_norm)
    coordinates, included = gradient_canaries(arch, 2000, seed=seed)
    assert len(set(coordinates)) == 2000
    models, scores = D.train_with_canaries(job, defense, len(splits.members), 40, (coordinates, included))
    return D.plan(recipe, len(splits.members), defense), models, scores[0], included


@pytest.mark.parametrize("noise_multiplier, clip_norm", [(1.0, 1.0), (2.0, 0.5)])
def test_gradient_canaries_enter_each_step_at_the_plans_rate_and_noise(noise_multiplier: float, clip_norm: float) -> None:
    """The white-box scores have the law of the plan's mechanism, included and excluded canaries apart.

    Everything else at a canary's coordinate (the members' gradients) is
    the same in law for both groups, and small against the noise. A canary
    that never enters, or enters every step, or noise at the wrong scale,
    moves the means by many standard errors.
    """
    plan, models, scores, included = _canary_run(noise_multiplier, clip_norm, seed=3)
    assert models.info["dp_epsilon"] == plan.epsilon and models.info["dp_sampling_rate"] == plan.sampling_rate
    assert models.info["dp_steps"] == plan.steps == 16  # the target's plan: the canaries change nothing in it
    for group in (True, False):
        expected = _simulated_scores(plan.sampling_rate, plan.steps, noise_multiplier, group)
        got = scores[included == group]
        assert abs(got.mean() - expected.mean()) < 4 * expected.std() / np.sqrt(len(got))
        assert got.std() == pytest.approx(expected.std(), rel=0.15)


def _summary(scores: np.ndarray, included: np.ndarray, accounted: float | None) -> dict:
    from pipeline.canaries.audit import CanaryRun, audit_run, audit_summary

    plan = {"dp_noise_multiplier": 3.0, "dp_sampling_rate": 0.1, "dp_steps": 100.0, "dp_clip_norm": 1.0}
    run = CanaryRun({"white_box": (scores, included)}, {"test_accuracy": 0.9, **plan})
    return audit_summary(run, audit_run(run, [100, 1000], 1e-5), "ood", accounted)


def test_a_bound_above_the_accounted_epsilon_is_flagged_loudly() -> None:
    from pipeline.reporting.markdown import canary_section, dp_section

    rng = np.random.default_rng(0)
    included = rng.random(1000) < 0.5
    leaky = _summary(included + 0.1 * rng.standard_normal(1000), included, accounted=1.0)  # a "DP" run that leaks
    assert leaky["epsilon_lb"] > 3 and leaky["exceeds_accounted"]
    honest = _summary(included + 3.0 * rng.standard_normal(1000), included, accounted=1.0)
    assert not honest["exceeds_accounted"]
    assert "WARNING" in "\n".join(canary_section({"dp_sgd": leaky}))
    assert "WARNING" not in "\n".join(canary_section({"dp_sgd": honest}))
    row = {
        "dp_epsilon": 1.0, "dp_delta": 1e-5, "dp_noise_multiplier": 3.0, "dp_clip_norm": 1.0, "dp_sampling_rate": 0.1,
        "dp_steps": 100, "attacks": {"loss": {"dp_violations": 0}},
        "headline": {"epsilon_lb_95": 0.0, "attack": "loss", "epsilon_lb_any_attack": {"value": 0.0, "attack": "loss"}},
    }  # fmt: skip
    assert "WARNING" in "\n".join(dp_section({"dp_sgd": row | {"canary_audit": leaky}}))
    assert "WARNING" not in "\n".join(dp_section({"dp_sgd": row | {"canary_audit": honest}}))


@pytest.mark.parametrize("q", [1.0, 0.25])
def test_gradient_canary_evidence_is_the_one_step_likelihood_ratio(q: float) -> None:
    """log(1 - q + q exp((y - 1/2) / sigma^2)) - log(1 - q) for y = observed / C; linear in y when q = 1."""
    from types import SimpleNamespace

    from pipeline.core.tf_runtime import tf
    from pipeline.defenses.dp_sgd import DpTrainer

    sigma, clip = 2.0, 0.5
    observed = np.array([[-1.0, 0.0, 0.3, 2.0]], np.float32)
    fake = SimpleNamespace(dp=SimpleNamespace(noise_multiplier=sigma, sampling_rate=q, clip_norm=clip))
    got = DpTrainer.dirac_evidence(fake, tf.constant(observed)).numpy()
    a = (observed.astype(np.float64) / clip - 0.5) / sigma**2
    expected = a if q == 1.0 else np.log1p(q * np.expm1(a)) - np.log1p(-q)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
