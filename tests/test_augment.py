"""Perturbed copies for the augmentation label-only attack."""

import numpy as np

from pipeline.training.augment import (
    N_NOISE,
    NOISE_SCALES,
    robustness,
    robustness_by_setting,
    variant_settings,
)


def test_images_get_four_one_pixel_shifts() -> None:
    x = np.zeros((1, 3, 3, 1), np.float32)
    x[0, 1, 1, 0] = 1.0
    [copies] = variant_settings(x, rng=np.random.default_rng(0))
    assert len(copies) == 4
    moved = {tuple(np.argwhere(c[0, :, :, 0] == 1.0)[0]) for c in copies}
    assert moved == {(2, 1), (0, 1), (1, 2), (1, 0)}
    assert all(c.sum() == 1.0 for c in copies)  # zero fill, nothing wraps around


def test_tabular_rows_get_seeded_noise_at_each_scale() -> None:
    x = np.zeros((400, 3), np.float32)
    a = variant_settings(x, rng=np.random.default_rng(1))
    b = variant_settings(x, rng=np.random.default_rng(1))
    assert [len(copies) for copies in a] == [N_NOISE] * len(NOISE_SCALES)
    assert all(np.array_equal(p, q) for pa, pb in zip(a, b) for p, q in zip(pa, pb))
    for scale, copies in zip(NOISE_SCALES, a):
        assert abs(float(np.std(copies[0])) - scale) < 0.1 * scale


def test_robustness_is_the_share_of_copies_labelled_right() -> None:
    labels = np.array([0, 1])
    outputs = iter([np.array([[[5.0, 0.0], [0.0, 5.0]]]), np.array([[[5.0, 0.0], [5.0, 0.0]]])])
    share = robustness(lambda copy: next(outputs), [np.zeros((2, 1)), np.zeros((2, 1))], labels)
    np.testing.assert_allclose(share, [[1.0, 0.5]])


def test_robustness_by_setting_stacks_one_row_per_setting() -> None:
    x = np.zeros((5, 2), np.float32)
    labels = np.zeros(5, np.int64)
    always_right = robustness_by_setting(lambda q: np.tile([[[1.0, 0.0]]], (2, len(q), 1)), x, labels, np.random.default_rng(0))
    assert always_right.shape == (len(NOISE_SCALES), 2, 5) and always_right.min() == 1.0
