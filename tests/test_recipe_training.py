"""A recipe's K models on the shared design: what trains on what, and what is saved of them."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.core.types import Dataset, Splits
from pipeline.defenses.base import train_undefended
from pipeline.defenses.output import LabelOnlyDefense
from pipeline.recipes.design import audit_design
from pipeline.recipes.training import audit_job, train_recipe
from pipeline.stack import Architecture, Recipe


@pytest.fixture(scope="module")
def setting(digits):
    perm = digits["perm"]
    dataset = Dataset(x=digits["x"], y=digits["y"], n_classes=10, name="digits")
    splits = Splits(members=perm[:60], nonmembers=perm[60:120], test=perm[120:220], shadow_pool=perm[220:340],
                    defender_reference=perm[340:360])  # fmt: skip
    design = audit_design(dataset, splits, n_models=4, n_canaries=10, seed=3)
    arch = Architecture("mlp", (64,), 10, hidden_units=16)
    job = audit_job(dataset, splits, design, arch, Recipe(epochs=15, batch_size=16, learning_rate=1e-2), seed=5)
    return dataset, splits, design, job


def test_the_design_is_the_candidates_and_canaries_copied_from_the_shadow_pool(setting):
    dataset, splits, design, _ = setting
    assert np.array_equal(np.sort(design.pool), np.sort(splits.candidates))
    assert design.keep.shape == (4, 120 + 10) and (design.keep.sum(axis=0) == 2).all()
    sources = dataset.x[splits.shadow_pool]
    for x, y in zip(design.canary_x, design.canary_y):  # each canary copies a shadow-pool record, with a wrong label
        row = np.flatnonzero((sources == x).all(axis=1))
        assert row.size and y != dataset.y[splits.shadow_pool][row[0]]


def test_the_job_trains_each_model_on_its_design_columns_and_never_on_defender_rows(setting):
    _, splits, design, job = setting
    columns = design.keep.shape[1]
    assert np.array_equal(job.keep[:, :columns], design.keep) and not job.keep[:, columns:].any()
    assert job.defender[:, columns:].all() and not job.defender[:, :columns].any()
    assert len(job.x) == columns + len(splits.defender_reference)
    assert np.array_equal(job.y[120:columns], design.canary_y)


def test_outputs_are_every_models_release_on_every_column(setting):
    _, _, design, job = setting
    plain = train_recipe(job, design, train_undefended)
    assert plain.logits.shape == (4, design.keep.shape[1], 10) and plain.logits.dtype == np.float32
    assert plain.test_accuracy.shape == (4,) and (plain.test_accuracy > 0.3).all()
    released = train_recipe(job, design, LabelOnlyDefense(type="label_only").train)
    probs = np.exp(released.logits.astype(np.float64))
    assert np.allclose(probs.max(axis=-1), 1.0, atol=1e-3)  # a label-only release: one-hot vectors
    assert np.array_equal(released.logits.argmax(-1), plain.logits.argmax(-1))  # the same models (same seed)
