"""The attacker's shadow and reference models reproduce the target's training exactly.

Same training-set size, the defender's amount of reference data, and under
DP-SGD the same noise, sampling rate and steps: an online attack whose
reference models train on more data than the target is weaker than the
threat model promises.
"""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.config import DataParams
from pipeline.datasets.loaders import load_dataset
from pipeline.datasets.splits import make_splits
from pipeline.defenses.base import DefendedModels, TrainingJob, train_undefended
from pipeline.defenses.dp_sgd import DpSgdDefense
from pipeline.stack import Architecture, Recipe
from pipeline.training.attacker import ModelSet, train_reference, train_shadows
from pipeline.training.target import train_target

PARAMS = DataParams(n_members=60, n_test=30, n_shadow_pool=140, n_defender_reference=12)
RECIPE = Recipe(epochs=1, batch_size=16, learning_rate=1e-3)


@pytest.fixture(scope="module")
def setup():
    dataset = load_dataset(PARAMS)
    splits = make_splits(len(dataset.y), PARAMS, np.random.default_rng(0))
    arch = Architecture("mlp", dataset.x.shape[1:], dataset.n_classes, hidden_units=8)
    return dataset, splits, arch


def _recording(jobs: list[TrainingJob]):
    def train(job: TrainingJob) -> DefendedModels:
        jobs.append(job)
        return train_undefended(job)

    return train


def test_every_attacker_model_trains_on_as_many_points_with_as_much_defender_data(setup) -> None:
    dataset, splits, arch = setup
    jobs: list[TrainingJob] = []
    train = _recording(jobs)
    train_target(dataset, splits, arch, RECIPE, train, seed=1, label=None)
    train_shadows(dataset, splits, ModelSet(arch, RECIPE, train, 4, 2, "shadows"))
    reference = train_reference(dataset, splits, ModelSet(arch, RECIPE, train, 6, 3, "reference"))
    target_job, shadow_job, reference_job = jobs
    for job in jobs:
        assert (job.keep.sum(axis=1) == 60).all()
        assert (job.defender.sum(axis=1) == 12).all()
        assert not np.any(job.keep & job.defender)
    n_candidates = len(splits.candidates)
    assert (reference.keep.sum(axis=0) == 3).all()  # every candidate IN for exactly half
    assert not reference_job.defender[:, :n_candidates].any()  # defender data from the pool, never a candidate
    assert not reference_job.keep[:, n_candidates:].any()
    assert (shadow_job.keep.sum(axis=0) <= 2).all()


def test_dp_sgd_attacker_models_get_the_targets_noise_and_steps(setup) -> None:
    """Under DP-SGD the plan depends on n: matched sizes give the same sigma, q and steps."""
    dataset, splits, arch = setup
    train = DpSgdDefense(type="dp_sgd", noise_multiplier=None, target_epsilon=3.0).train
    infos = []

    def recording(job: TrainingJob) -> DefendedModels:
        models = train(job)
        infos.append(models.info)
        return models

    train_target(dataset, splits, arch, RECIPE, recording, seed=1, label=None)
    train_shadows(dataset, splits, ModelSet(arch, RECIPE, recording, 2, 2, "shadows"))
    train_reference(dataset, splits, ModelSet(arch, RECIPE, recording, 4, 3, "reference"))
    target, shadows, references = infos
    for key in ("dp_noise_multiplier", "dp_sampling_rate", "dp_steps", "dp_epsilon"):
        assert shadows[key] == target[key] and references[key] == target[key], key
