"""The recipe audit's paired design: complementary pairs, exact halves, mislabeled canaries, seeded."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.core.errors import PipelineError
from pipeline.core.types import Dataset
from pipeline.recipes.design import make_design, paired_keep

K, N, M = 8, 40, 6


def keep(seed: int = 0) -> np.ndarray:
    return paired_keep(N, M, K, np.random.default_rng(seed))


def dataset(rows: int = 60, classes: int = 4) -> Dataset:
    x = np.arange(rows * 3, dtype=np.float32).reshape(rows, 3)  # every row distinct
    return Dataset(x=x, y=np.arange(rows) % classes, n_classes=classes, name="toy")


def test_every_pool_point_and_canary_is_in_for_exactly_half_the_models():
    k = keep()
    assert k.shape == (K, N + M) and k.dtype == bool
    assert (k.sum(axis=0) == K // 2).all()


def test_models_come_in_complementary_pairs():
    k = keep()
    assert (k[0::2] == ~k[1::2]).all()
    assert len({row.tobytes() for row in k}) == K  # the pairs are different halves


def test_every_model_trains_on_half_the_pool_and_half_the_canaries():
    k = keep()
    assert (k[:, :N].sum(axis=1) == N // 2).all()
    assert (k[:, N:].sum(axis=1) == M // 2).all()


def test_the_seed_fixes_the_design():
    assert (keep(3) == keep(3)).all()
    assert (keep(3) != keep(4)).any()


def test_canaries_are_mislabeled_copies_of_records_outside_the_pool():
    data = dataset()
    pool, sources = np.arange(20), np.arange(10, 60)  # sources overlap the pool on purpose
    design = make_design(data, pool, sources, M, K, np.random.default_rng(0))
    assert (design.pool == pool).all()
    assert design.is_canary.sum() == M and not design.is_canary[:20].any()
    rows = [int(np.flatnonzero((data.x == x).all(axis=1))[0]) for x in design.canary_x]
    assert len(set(rows)) == M and min(rows) >= 20  # each from a distinct row, none from the pool
    assert (design.canary_y != data.y[rows]).all()
    assert design.keep.shape == (K, 20 + M) and (design.keep.sum(axis=0) == K // 2).all()


def test_make_design_is_reproducible_from_the_seed():
    data = dataset()
    a, b = (make_design(data, np.arange(20), np.arange(20, 60), M, K, np.random.default_rng(5)) for _ in range(2))
    assert (a.keep == b.keep).all() and (a.canary_x == b.canary_x).all() and (a.canary_y == b.canary_y).all()


def test_an_odd_pool_leaves_one_point_out():
    design = make_design(dataset(), np.arange(21), np.arange(21, 60), M, K, np.random.default_rng(0))
    assert design.pool.size == 20 and np.isin(design.pool, np.arange(21)).all()
    assert (design.keep[:, :20].sum(axis=1) == 10).all()


@pytest.mark.parametrize(
    "n_models, n_canaries, key",
    [(2, 6, "recipe_audit.n_models"), (7, 6, "recipe_audit.n_models"), (8, 5, "recipe_audit.n_canaries"),
     (8, 0, "recipe_audit.n_canaries"), (8, 42, "recipe_audit.n_canaries")],
)
def test_bad_sizes_name_the_params_key(n_models, n_canaries, key):
    with pytest.raises(PipelineError, match=key):
        make_design(dataset(), np.arange(20), np.arange(20, 60), n_canaries, n_models, np.random.default_rng(0))
