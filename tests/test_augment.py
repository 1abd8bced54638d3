"""Perturbed copies for the augmentation label-only attack."""

import numpy as np

from pipeline.augment import robustness, variants


def test_images_get_four_one_pixel_shifts() -> None:
    x = np.zeros((1, 3, 3, 1), np.float32)
    x[0, 1, 1, 0] = 1.0
    copies = variants(x, n_noise=8, noise_scale=0.1, rng=np.random.default_rng(0))
    assert len(copies) == 4
    moved = {tuple(np.argwhere(c[0, :, :, 0] == 1.0)[0]) for c in copies}
    assert moved == {(2, 1), (0, 1), (1, 2), (1, 0)}
    assert all(c.sum() == 1.0 for c in copies)  # zero fill, nothing wraps around


def test_tabular_rows_get_seeded_noise() -> None:
    x = np.zeros((50, 3), np.float32)
    a = variants(x, n_noise=5, noise_scale=0.2, rng=np.random.default_rng(1))
    b = variants(x, n_noise=5, noise_scale=0.2, rng=np.random.default_rng(1))
    assert len(a) == 5 and all(np.array_equal(p, q) for p, q in zip(a, b))
    assert abs(float(np.std(a[0])) - 0.2) < 0.05


def test_robustness_is_the_share_of_copies_labelled_right() -> None:
    labels = np.array([0, 1])
    outputs = iter([np.array([[[5.0, 0.0], [0.0, 5.0]]]), np.array([[[5.0, 0.0], [5.0, 0.0]]])])
    share = robustness(lambda copy: next(outputs), [np.zeros((2, 1)), np.zeros((2, 1))], labels)
    np.testing.assert_allclose(share, [[1.0, 0.5]])
