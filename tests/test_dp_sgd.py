"""DP-SGD: accounting, sampling, clipping, noise, per-example gradients, and a DP guard."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest

from pipeline import stack as S
from pipeline.core.errors import PipelineError
from pipeline.core.tf_runtime import tf
from pipeline.defenses import dp_sgd as D
from pipeline.defenses.base import TrainingJob
from pipeline.defenses.dp_sgd import DpSgdDefense
from pipeline.measures import accounting as A
from pipeline.measures.roc import roc

MLP = S.Architecture("mlp", (6,), 3, hidden_units=5)
CNN = S.Architecture("cnn", (6, 6, 2), 3, hidden_units=5, conv_filters=(3, 4))
# Its second conv layer (2x2 positions, 27 inputs, 8 outputs) takes the ghost-norm path.
CNN_GHOST = S.Architecture("cnn", (4, 4, 2), 3, hidden_units=5, conv_filters=(3, 8))
ARCHS = pytest.mark.parametrize("arch", [MLP, CNN, CNN_GHOST], ids=["mlp", "cnn", "cnn-ghost"])
RECIPE = S.Recipe(epochs=1, batch_size=4, learning_rate=1e-3)


def _weights(arch: S.Architecture, k: int, seed: int) -> list[tf.Tensor]:
    """Random weights, biases non-zero too, so every gradient term matters."""
    rng = np.random.default_rng(seed)
    return [
        tf.constant(w + 0.1 * rng.normal(size=w.shape).astype(np.float32))
        for w in S.init_weights(arch, k, rng)
    ]


def _batch(arch: S.Architecture, k: int, b: int, seed: int) -> tuple[tf.Tensor, tf.Tensor]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(k, b, *arch.input_shape)).astype(np.float32)
    y = rng.integers(0, arch.n_classes, size=(k, b)).astype(np.int32)
    return tf.constant(x), tf.constant(y)


# ---------------------------------------------------------------------------
# Accounting


def test_epsilon_falls_with_more_noise_and_fewer_steps():
    q, delta = 0.05, 1e-5
    by_sigma = [A.epsilon(s, q, 400, delta, "rdp") for s in (0.8, 1.0, 1.5, 2.0, 4.0)]
    assert all(a > b for a, b in zip(by_sigma, by_sigma[1:])), by_sigma
    by_steps = [A.epsilon(1.5, q, t, delta, "rdp") for t in (50, 200, 800)]
    assert all(a < b for a, b in zip(by_steps, by_steps[1:])), by_steps
    assert A.epsilon(1.5, q, 400, delta, "rdp") > A.epsilon(1.5, q, 400, 1e-3, "rdp")


@pytest.mark.parametrize("sigma", [1.0, 2.0])
def test_pld_is_tighter_than_rdp_and_close_to_it(sigma):
    q, steps, delta = 32 / 350, 440, 1e-5
    rdp = A.epsilon(sigma, q, steps, delta, "rdp")
    pld = A.epsilon(sigma, q, steps, delta, "pld")
    assert pld <= rdp
    assert pld >= 0.8 * rdp, (pld, rdp)


@pytest.mark.parametrize("accountant,target", [("rdp", 1.0), ("rdp", 4.0), ("pld", 3.0)])
def test_calibrated_noise_meets_the_target_closely(accountant, target):
    q, steps, delta = 32 / 350, 440, 1e-5
    sigma = A.calibrate_noise(target, q, steps, delta, accountant)
    eps = A.epsilon(sigma, q, steps, delta, accountant)
    assert eps <= target
    assert eps >= 0.98 * target, (sigma, eps)
    # and it is the smallest such sigma, to within the search tolerance
    assert A.epsilon(sigma * 0.99, q, steps, delta, accountant) > target


def test_an_unreachable_target_names_the_key():
    with pytest.raises(PipelineError, match=r"target_epsilon = 1e-05 cannot be reached"):
        A.calibrate_noise(1e-5, 0.5, 10_000, 1e-5, "rdp")


def test_rdp_convergence_warnings_are_silenced_but_others_are_not(caplog):
    caplog.set_level(logging.WARNING, logger="absl")
    # the raw accountant does warn at these settings ...
    import dp_accounting as dpa
    from dp_accounting.rdp import rdp_privacy_accountant

    event = dpa.SelfComposedDpEvent(dpa.PoissonSampledDpEvent(0.09, dpa.GaussianDpEvent(0.7)), 300)
    rdp_privacy_accountant.RdpAccountant().compose(event).get_epsilon(1e-5)
    assert any("failed to converge" in r.getMessage() for r in caplog.records)
    caplog.clear()
    # ... ours does not, and other absl warnings still get through its filter
    A.epsilon(0.7, 0.09, 300, 1e-5, "rdp")
    with A._quiet_absl():
        logging.getLogger("absl").warning("something else went wrong")
    messages = [r.getMessage() for r in caplog.records]
    assert not any("failed to converge" in m for m in messages), messages
    assert "something else went wrong" in messages


# ---------------------------------------------------------------------------
# The check of an ROC against (epsilon, delta)


def test_dp_violations_flags_an_roc_no_dp_model_can_have():
    fpr = np.array([0.0, 0.01, 0.05, 0.5, 1.0])
    tpr = np.array([0.0, 0.5, 0.7, 0.9, 1.0])
    found = A.dp_violations(fpr, tpr, epsilon=1.0, delta=1e-5, n_members=1000, n_nonmembers=1000)
    assert found
    assert {v["fpr"] for v in found} >= {0.01, 0.05}
    assert all(v["lower"] > v["allowed"] for v in found)


def test_dp_violations_accepts_a_consistent_roc():
    fpr = np.array([0.0, 0.1, 0.3, 0.6, 1.0])
    tpr = np.array([0.0, 0.2, 0.5, 0.75, 1.0])  # e^1 = 2.72: TPR and TNR sides both hold
    assert A.dp_violations(fpr, tpr, 1.0, 1e-5, 1000, 1000) == []


def test_dp_violations_allows_sampling_error_only():
    """TPR 0.30 at FPR 0.10 exceeds e^1 * 0.10 = 0.27: noise on 100 points, a violation on 100k."""
    fpr, tpr = np.array([0.0, 0.1, 1.0]), np.array([0.0, 0.3, 1.0])
    assert A.dp_violations(fpr, tpr, 1.0, 0.0, 100, 100) == []
    assert len(A.dp_violations(fpr, tpr, 1.0, 0.0, 100_000, 100_000)) == 1


# ---------------------------------------------------------------------------
# Sampling, clipping, noise


def test_poisson_batches_include_each_example_independently_at_rate_q():
    n, k, q, steps = 200, 3, 0.1, 400
    members = tf.constant(np.arange(k * n, dtype=np.int32).reshape(k, n))
    hits = np.zeros((k, n))
    sizes = []
    for s in range(steps):
        idx, valid = (t.numpy() for t in D.poisson_batch(members, q, tf.constant([7, s])))
        assert idx.shape == valid.shape
        for row in range(k):
            chosen = idx[row][valid[row]]
            assert np.all(chosen // n == row)  # each model draws its own members only
            assert len(np.unique(chosen)) == len(chosen)
            hits[row, chosen % n] += 1
            sizes.append(len(chosen))
        # padded to the largest batch of the step, no further
        assert valid.shape[1] == valid.sum(axis=1).max()
    sizes = np.array(sizes)
    assert abs(sizes.mean() - q * n) < 4 * math.sqrt(q * (1 - q) * n / sizes.size)
    assert 0.7 < sizes.var() / (n * q * (1 - q)) < 1.3  # binomial, not a fixed size
    rate = hits / steps  # per example, ~ q with sd sqrt(q(1-q)/steps) = 0.015
    assert abs(rate.mean() - q) < 0.005
    assert np.all(np.abs(rate - q) < 6 * math.sqrt(q * (1 - q) / steps))


def test_clipping_bounds_every_example_and_leaves_small_ones_alone():
    # K=1, 4 examples, gradients in two tensors; norms 5, 0.5, 0, 13
    g1 = tf.constant([[[3.0, 0.0], [0.3, 0.0], [0.0, 0.0], [5.0, 0.0]]])
    g2 = tf.constant([[[[4.0]], [[0.4]], [[0.0]], [[12.0]]]])
    c1, c2 = D.clip_per_example([g1, g2], clip_norm=1.0)
    norms = np.sqrt(np.sum(c1.numpy() ** 2, -1) + np.sum(c2.numpy() ** 2, (-2, -1)))[0]
    np.testing.assert_allclose(norms, [1.0, 0.5, 0.0, 1.0], rtol=1e-6)
    np.testing.assert_allclose(c1.numpy()[0, 0], [0.6, 0.0], rtol=1e-6)  # direction kept
    np.testing.assert_array_equal(c1.numpy()[0, 1], g1.numpy()[0, 1])  # untouched, bit for bit
    np.testing.assert_array_equal(c2.numpy()[0, 1], g2.numpy()[0, 1])
    assert np.all(np.isfinite(c1.numpy())) and np.all(np.isfinite(c2.numpy()))

    rng = np.random.default_rng(0)
    big = [tf.constant(rng.normal(scale=s, size=(2, 50, 7)).astype(np.float32)) for s in (0.01, 10.0)]
    clipped = D.clip_per_example(big, clip_norm=0.3)
    per_example = np.sqrt(sum(np.sum(c.numpy() ** 2, -1) for c in clipped))
    assert np.all(per_example <= 0.3 * (1 + 1e-5))


def test_noise_has_standard_deviation_sigma_times_c():
    sigma, c = 1.3, 0.7
    zeros = [tf.zeros([1, 100, 100]), tf.zeros([1, 100])]
    noisy = D.add_noise(zeros, sigma, c, tf.constant([3, 4]))
    values = np.concatenate([t.numpy().ravel() for t in noisy])  # 10,100 draws
    # the sd estimate's relative error is ~ 1 / sqrt(2 * 10100) = 0.7%
    assert abs(values.std() / (sigma * c) - 1.0) < 0.03
    assert abs(values.mean()) < 4 * sigma * c / math.sqrt(values.size)
    assert abs(np.corrcoef(noisy[0].numpy().ravel()[:100], noisy[1].numpy().ravel())[0, 1]) < 0.4
    again = D.add_noise(zeros, sigma, c, tf.constant([3, 4]))
    np.testing.assert_array_equal(noisy[0].numpy(), again[0].numpy())
    other = D.add_noise(zeros, sigma, c, tf.constant([3, 5]))
    assert not np.allclose(noisy[0].numpy(), other[0].numpy())


def test_the_noise_sampler_is_standard_normal_tails_included():
    """Kolmogorov-Smirnov against N(0, 1), and the mass beyond 3 and 4 standard deviations."""
    from scipy.stats import kstest, norm

    z = D.stateless_normals(400_001, tf.constant([5, 6])).numpy().astype(np.float64)
    assert z.shape == (400_001,) and np.all(np.isfinite(z))
    assert kstest(z, "norm").pvalue > 1e-3
    for cut in (3.0, 4.0):
        expected = 2 * norm.sf(cut) * z.size
        assert abs(np.sum(np.abs(z) > cut) - expected) < 5 * math.sqrt(expected)
    half = z.size // 2  # the cosine and sine halves come from the same uniforms: independent normals
    assert abs(np.corrcoef(z[:half], z[half : 2 * half])[0, 1]) < 0.01
    assert abs(np.corrcoef(z[:half] ** 2, z[half : 2 * half] ** 2)[0, 1]) < 0.01


# ---------------------------------------------------------------------------
# Per-example gradients


@pytest.mark.parametrize("arch", [MLP, CNN], ids=["mlp", "cnn"])
def test_forward_layers_expose_each_layers_input_and_pre_activation(arch):
    """What ghost clipping reads: per kernel, its input a and pre-activation a W + b, in model layout.

    Conv layers hold the K models side by side in the channel axis: model
    m's output channels are its own convolution of its own input channels.
    """
    k = 2
    w = _weights(arch, k, 0)
    x, _ = _batch(arch, k, 5, 1)
    logits, layers = S.forward_layers(arch, w, x)
    np.testing.assert_array_equal(logits.numpy(), S.forward(arch, w, x).numpy())
    np.testing.assert_array_equal(layers[-1].outputs.numpy(), logits.numpy())
    assert len(layers) == len(w) // 2
    for layer, kernel, bias in zip(layers, w[::2], w[1::2]):
        if layer.kind == "dense":
            want = tf.einsum("kbd,kdh->kbh", layer.inputs, kernel) + bias[:, None, :]
            np.testing.assert_allclose(layer.outputs.numpy(), want.numpy(), rtol=1e-5, atol=1e-6)
            continue
        cin, cout = kernel.shape[3], kernel.shape[4]
        for m in range(k):
            own = tf.nn.conv2d(layer.inputs[..., m * cin : (m + 1) * cin], kernel[m], 1, "SAME") + bias[m]
            got = layer.outputs[..., m * cout : (m + 1) * cout]
            np.testing.assert_allclose(got.numpy(), own.numpy(), rtol=1e-5, atol=1e-6)


def _one_tape_per_example(arch, w, x, y) -> list[list[list[np.ndarray]]]:
    """[model][example] -> that example's gradient, one weight list, each from its own tape."""
    out = []
    for m in range(x.shape[0]):
        single = [v[m : m + 1] for v in w]
        rows = []
        for i in range(x.shape[1]):
            with tf.GradientTape() as tape:
                tape.watch(single)
                logits = S.forward(arch, single, x[m : m + 1, i : i + 1])
                loss = tf.nn.sparse_softmax_cross_entropy_with_logits(y[m : m + 1, i : i + 1], logits)
            rows.append([g.numpy()[0] for g in tape.gradient(loss, single)])
        out.append(rows)
    return out


def test_the_ghost_path_is_taken_where_it_is_cheaper():
    """CNN_GHOST's second conv layer (T = 4, 27 in, 8 out) takes Gram matrices, the others do not."""
    assert D.ghost_is_cheaper(4, 27, 8)
    assert not D.ghost_is_cheaper(16, 18, 3)  # CNN_GHOST's first conv layer
    assert not D.ghost_is_cheaper(9, 27, 4) and not D.ghost_is_cheaper(36, 18, 3)  # CNN's
    assert D.ghost_is_cheaper(1, 6, 5)  # Dense, T = 1: the classic ghost norm |a|^2 |g|^2


@ARCHS
def test_per_example_gradients_match_one_tape_per_example(arch):
    k, b = 2, 4
    w = _weights(arch, k, 2)
    x, y = _batch(arch, k, b, 3)
    batched = [g.numpy() for g in D.per_example_gradients(arch, RECIPE, w, x, y)]
    assert [g.shape for g in batched] == [(k, b, *v.shape[1:]) for v in w]
    for m, rows in enumerate(_one_tape_per_example(arch, w, x, y)):
        for i, direct in enumerate(rows):
            for got, want in zip(batched, direct):
                np.testing.assert_allclose(got[m, i], want, rtol=1e-4, atol=1e-6)


@ARCHS
def test_fast_norms_and_clipped_sums_equal_a_direct_per_example_computation(arch):
    """Ghost / unfolded norms and the weighted backward pass against one tape per example, to float32 precision."""
    k, b, clip = 2, 5, 0.3
    w = _weights(arch, k, 4)
    x, y = _batch(arch, k, b, 5)
    valid = tf.constant([[True, True, False, True, False], [True] * 5])
    direct = _one_tape_per_example(arch, w, x, y)
    want_sq = np.array([[sum(float(np.sum(g.astype(np.float64) ** 2)) for g in ex) for ex in rows] for rows in direct])
    got_sq = D.per_example_sq_norms(arch, RECIPE, w, x, y).numpy()
    np.testing.assert_allclose(got_sq, want_sq, rtol=1e-5)
    assert np.ptp(np.sqrt(want_sq)) > 0 and np.any(np.sqrt(want_sq) > clip)  # clipping bites, unevenly

    sums, losses, _ = D.clipped_sum(arch, RECIPE, w, x, y, valid, clip)
    factors = np.minimum(1.0, clip / np.sqrt(want_sq)) * valid.numpy()
    for j, got in enumerate(sums):
        want = [sum(factors[m, i] * ex[j].astype(np.float64) for i, ex in enumerate(rows)) for m, rows in enumerate(direct)]
        np.testing.assert_allclose(got.numpy(), np.stack(want), rtol=1e-5, atol=1e-7)
    assert np.all(losses.numpy()[~valid.numpy()] == 0)


def test_one_step_privatises_the_gradient_as_specified():
    """Poisson batch -> clip each example to C -> sum -> + N(0, (sigma C)^2) -> / (q n) (+ L2)."""
    rng = np.random.default_rng(8)
    n_rows, n, k = 40, 16, 2
    x = rng.normal(size=(n_rows, *MLP.input_shape)).astype(np.float32)
    y = rng.integers(0, MLP.n_classes, n_rows)
    members = np.stack([np.arange(0, n), np.arange(20, 20 + n)]).astype(np.int32)
    recipe = S.Recipe(epochs=1, batch_size=4, learning_rate=1e-3, l2=0.01)
    defense = DpSgdDefense(type="dp_sgd", noise_multiplier=0.7, clip_norm=0.5)
    dp = D.plan(recipe, n, defense)
    assert (dp.sampling_rate, dp.steps_per_epoch) == (0.25, 4)
    trainer = D.DpTrainer(MLP, dp, S.init_weights(MLP, k, rng), x, y)
    grads, _, _, sizes = trainer.noisy_gradient(tf.constant(members), tf.constant(9), tf.constant(2))

    idx, valid = D.poisson_batch(tf.constant(members), 0.25, tf.constant([9, 6]))
    w = [v.read_value() for v in trainer.vars]
    per = D.clip_per_example(
        D.per_example_gradients(MLP, recipe, w, tf.gather(x, idx), tf.gather(y.astype(np.int32), idx)), 0.5
    )
    mask = valid.numpy().astype(np.float32)
    sums = [tf.constant(np.einsum("kb...,kb->k...", g.numpy(), mask)) for g in per]
    noise = D.add_noise([tf.zeros_like(g) for g in sums], 0.7, 0.5, tf.constant([9, 7]))
    for got, total, z, wi in zip(grads, sums, noise, w):
        want = (total + z) / (0.25 * n) + (2 * 0.01 * wi if len(wi.shape) > 2 else 0.0)
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(sizes.numpy(), mask.sum(axis=1))


# ---------------------------------------------------------------------------
# Training


def _job(digits, arch, k=2, n=120, epochs=2, seed=0, recipe=None, eval_data=True):
    x = digits["x"][digits["perm"][:400]].reshape(-1, *arch.input_shape)
    y = digits["y"][digits["perm"][:400]]
    keep = np.zeros((k, len(x)), bool)
    for row, start in zip(keep, range(0, 400, 400 // k)):
        row[start : start + n] = True
    test = digits["perm"][1500:]
    ev = (digits["x"][test].reshape(-1, *arch.input_shape), digits["y"][test]) if eval_data else None
    recipe = recipe or S.Recipe(epochs=epochs, batch_size=20, learning_rate=5e-3)
    return TrainingJob(arch, recipe, x, y, keep, seed, None, ev)


DIGIT_MLP = S.Architecture("mlp", (64,), 10, hidden_units=32)


def test_training_is_seeded_and_reports_its_guarantee(digits):
    defense = DpSgdDefense(type="dp_sgd", noise_multiplier=1.1, clip_norm=0.8, epochs=3)
    a = defense.train(_job(digits, DIGIT_MLP, seed=5))  # as the defense stages train it
    b = D.train(_job(digits, DIGIT_MLP, seed=5), defense)
    c = D.train(_job(digits, DIGIT_MLP, seed=6), defense)
    wa, wb, wc = (np.concatenate([w.ravel() for w in m.network(1).get_weights()]) for m in (a, b, c))
    np.testing.assert_array_equal(wa, wb)
    assert not np.allclose(wa, wc)
    assert not np.allclose(a.network(0).get_weights()[0], a.network(1).get_weights()[0])

    q, steps = 20 / 120, 3 * 6
    assert a.info == pytest.approx(
        {
            "dp_epsilon": A.epsilon(1.1, q, steps, 1e-5, "rdp"),
            "dp_delta": 1e-5,
            "dp_noise_multiplier": 1.1,
            "dp_clip_norm": 0.8,
            "dp_sampling_rate": q,
            "dp_steps": steps,
        }
    )
    assert set(a.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert all(h.shape == (2, 3) and np.all(np.isfinite(h)) for h in a.history.values())
    x = digits["x"][:50]
    probs = a.network(1).predict(x, verbose=0)
    logits = a.observe(x)[1]
    want = np.exp(logits - logits.max(1, keepdims=True))
    np.testing.assert_allclose(probs, want / want.sum(1, keepdims=True), atol=1e-5)


def test_target_epsilon_is_calibrated(digits):
    defense = DpSgdDefense(type="dp_sgd", noise_multiplier=None, target_epsilon=2.0, epochs=2)
    models = D.train(_job(digits, DIGIT_MLP, k=1), defense)
    assert models.info["dp_epsilon"] <= 2.0
    assert models.info["dp_epsilon"] >= 1.95
    assert models.info["dp_noise_multiplier"] == pytest.approx(
        A.calibrate_noise(2.0, 20 / 120, 12, 1e-5, "rdp")
    )


def test_cnn_with_dropout_and_l2_trains(digits):
    arch = S.Architecture("cnn", (8, 8, 1), 10, hidden_units=16, conv_filters=(4, 8))
    recipe = S.Recipe(epochs=2, batch_size=20, learning_rate=5e-3, dropout=0.2, l2=1e-4, label_smoothing=0.1)
    models = D.train(_job(digits, arch, recipe=recipe), DpSgdDefense(type="dp_sgd"))
    assert models.history["loss"].shape == (2, 2)
    assert np.all(np.isfinite(models.observe(digits["x"][:10].reshape(-1, 8, 8, 1))))
    assert models.network(0).get_weights()[0].shape == (3, 3, 1, 4)


def test_a_strict_budget_bounds_the_loss_attack(digits):
    """The DP guard: every ROC point of a loss-threshold attack on an (eps, delta)-DP
    model satisfies TPR <= e^eps FPR + delta (and TNR <= e^eps FNR + delta) up to
    sampling error. 20% of the labels are flipped, so a non-private model that
    memorises them does violate it: the check has power on this data.
    """
    x, y = digits["x"], digits["y"].copy()
    rng = np.random.default_rng(0)
    flip = rng.random(len(y)) < 0.2
    y[flip] = (y[flip] + rng.integers(1, 10, flip.sum())) % 10
    members, nonmembers, test = np.split(digits["perm"], [400, 800])
    keep = np.zeros((1, len(x)), bool)
    keep[0, members] = True
    arch = S.Architecture("mlp", (64,), 10, hidden_units=128)
    candidates = np.concatenate([members, nonmembers])
    is_member = np.arange(len(candidates)) < len(members)

    def violations(logits: np.ndarray, eps: float) -> list:
        z = logits - logits.max(1, keepdims=True)
        loss = np.log(np.exp(z).sum(1)) - z[np.arange(len(z)), y[candidates]]
        curve = roc(-loss, is_member)  # low loss means member
        return A.dp_violations(curve.fpr, curve.tpr, eps, 1e-5, len(members), len(nonmembers))

    job = TrainingJob(arch, S.Recipe(20, 32, 1e-2), x, y, keep, 1, None, (x[test], digits["y"][test]))
    private = D.train(job, DpSgdDefense(type="dp_sgd", noise_multiplier=None, target_epsilon=2.0))
    eps = private.info["dp_epsilon"]
    assert eps <= 2.0
    assert private.history["val_accuracy"][0, -1] > 0.5  # it learned something (chance: 0.1)
    assert violations(private.observe(x[candidates])[0], eps) == []

    plain = S.train_stack(arch, S.Recipe(60, 32, 1e-2), x, y, keep, seed=1)  # memorises all 400
    assert len(violations(S.stack_logits(plain, x[candidates])[0], eps)) > 10


# Epsilon of the Poisson-subsampled Gaussian mechanism, computed once with an
# accountant independent of dp-accounting: Microsoft's prv-accountant 0.2.0
# (PRVAccountant, eps_error 0.01, delta_error 1e-10), as (sigma, q, steps, delta,
# its lower and upper bounds on the true epsilon). The first row is the default
# DP plan (n = 350, batch 32, 40 epochs of 11 steps).
INDEPENDENT_EPSILONS = [
    (2.4, 32 / 350, 440, 1e-5, 3.6654, 3.6854),
    (1.0, 0.01, 1000, 1e-5, 1.8182, 1.8382),
    (1.1, 256 / 60000, 14100, 1e-5, 2.3751, 2.3951),
]


@pytest.mark.parametrize(("sigma", "q", "steps", "delta", "low", "high"), INDEPENDENT_EPSILONS)
def test_epsilon_agrees_with_an_independent_accountant(sigma, q, steps, delta, low, high):
    assert low - 0.01 <= A.epsilon(sigma, q, steps, delta, "pld") <= high + 0.01  # PLD is near exact
    assert low <= A.epsilon(sigma, q, steps, delta, "rdp") <= 1.2 * high  # RDP: an upper bound, not far above


def test_the_default_plan_accounts_every_step_it_trains():
    """40 epochs of round(350 / 32) = 11 Poisson steps, accounted at the true epsilon for that sigma."""
    recipe = S.Recipe(epochs=40, batch_size=32, learning_rate=0.01)
    dp = D.plan(recipe, 350, DpSgdDefense(type="dp_sgd", noise_multiplier=2.4, accountant="pld"))
    assert (dp.steps, dp.sampling_rate) == (440, 32 / 350)
    sigma, q, steps, delta, low, high = INDEPENDENT_EPSILONS[0]
    assert low - 0.01 <= dp.epsilon <= high + 0.01


def test_training_runs_exactly_the_steps_it_accounts_for(digits):
    job = _job(digits, DIGIT_MLP, k=2, n=120, epochs=3)
    dp = D.plan(job.recipe, 120, DpSgdDefense(type="dp_sgd", noise_multiplier=1.0))
    rng = np.random.default_rng(0)
    trainer = D.DpTrainer(DIGIT_MLP, dp, S.init_weights(DIGIT_MLP, 2, rng), job.x, job.y)
    members = np.stack([np.flatnonzero(row) for row in job.keep]).astype(np.int32)
    S.fit(trainer, members, rng)
    assert int(trainer.optimizer.iterations.numpy()) == dp.steps == 3 * round(120 / 20)


# ---------------------------------------------------------------------------
# randomness: secure (sampling and noise from os.urandom)


def test_secure_samplers_are_uniform_and_standard_normal_and_unseeded():
    n = 200_000
    u = D.secure_uniforms((n,))
    assert u.dtype == np.float64 and u.shape == (n,)
    assert u.min() >= 0.0 and u.max() < 1.0
    # mean 1/2, sd 1/sqrt(12); 5 standard errors throughout (false alarms ~1e-6)
    assert abs(u.mean() - 0.5) < 5 * math.sqrt(1 / 12 / n)
    assert abs(u.var() - 1 / 12) < 5 * math.sqrt(1 / 180 / n)  # Var((U - 1/2)^2) = 1/180
    z = D.secure_normals((n,))
    assert abs(z.mean()) < 5 / math.sqrt(n)
    assert abs(z.std() - 1.0) < 5 * math.sqrt(1 / (2 * n))
    tail = np.mean(np.abs(z) > 1.959964)  # two-sided 5%
    assert abs(tail - 0.05) < 5 * math.sqrt(0.05 * 0.95 / n)
    assert D.secure_normals((3, 5)).shape == (3, 5)  # odd sizes too
    np.random.seed(0)
    first = D.secure_normals((100,))
    np.random.seed(0)
    assert not np.allclose(first, D.secure_normals((100,)))  # no seed reaches them


def _secure_trainer(arch, k, n, batch_size, sigma, clip, seed=0, l2=0.0):
    """A secure-mode DpTrainer on random data, its members (K, n) and plan."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(k * n, *arch.input_shape)).astype(np.float32)
    y = rng.integers(0, arch.n_classes, k * n)
    recipe = S.Recipe(epochs=1, batch_size=batch_size, learning_rate=1e-3, l2=l2)
    defense = DpSgdDefense(type="dp_sgd", noise_multiplier=sigma, clip_norm=clip, randomness="secure")
    dp = D.plan(recipe, n, defense)
    trainer = D.DpTrainer(arch, dp, S.init_weights(arch, k, rng), x, y)
    return trainer, np.arange(k * n, dtype=np.int32).reshape(k, n), dp


def test_secure_step_adds_noise_of_scale_sigma_c_from_the_secure_draws():
    """Secure step: batch from the stored uniforms, sum + sigma C z with the stored normals, / (q n)."""
    arch = S.Architecture("mlp", (64,), 10, hidden_units=128)  # 2 x 9748 noisy coordinates
    sigma, clip, n = 1.3, 0.7, 40
    trainer, members, dp = _secure_trainer(arch, 2, n, 10, sigma, clip, l2=0.01)
    trainer.epoch_inputs(members, np.random.default_rng(0))  # what fit calls before each epoch: fresh draws
    grads, _, _, sizes = trainer.noisy_gradient(tf.constant(members), tf.constant(9), tf.constant(2))

    chosen = trainer.secure.uniforms.numpy()[2] < dp.sampling_rate
    idx, valid = D.select_batch(tf.constant(members), tf.constant(chosen))
    np.testing.assert_array_equal(sizes.numpy(), chosen.sum(axis=1))
    w = [v.read_value() for v in trainer.vars]
    xb, yb = tf.gather(trainer.x, idx), tf.gather(trainer.y, idx)
    sums, _, _ = D.clipped_sum(arch, trainer.recipe, w, xb, yb, valid, clip)
    noise = []
    for got, total, z, wi in zip(grads, sums, trainer.secure.normals, w):
        l2 = 2 * 0.01 * wi.numpy() if len(wi.shape) > 2 else 0.0
        added = (got.numpy() - l2) * (dp.sampling_rate * n) - total.numpy()
        np.testing.assert_allclose(added, sigma * clip * z.numpy()[2], rtol=1e-3, atol=1e-3)
        noise.append(added.ravel())
    noise = np.concatenate(noise)
    # ~19.5k coordinates: the sd estimate's relative error is ~0.5%
    assert abs(noise.std() / (sigma * clip) - 1.0) < 0.03
    assert abs(noise.mean()) < 5 * sigma * clip / math.sqrt(noise.size)


def test_secure_poisson_batches_have_mean_size_q_n_and_fresh_draws_each_epoch():
    trainer, members, dp = _secure_trainer(MLP, 3, 200, 20, 1.0, 1.0)
    q, n = dp.sampling_rate, 200
    members_t = tf.constant(members)
    sizes, masks = [], []
    for _ in range(30):  # 30 epochs of 10 steps, the same seed every time
        trainer.epoch_inputs(members, np.random.default_rng(0))
        for s in range(dp.steps_per_epoch):
            _, valid = trainer.batch(members_t, tf.constant([7, 0]), tf.constant(s))
            sizes += valid.numpy().sum(axis=1).tolist()
        masks.append(trainer.secure.uniforms.numpy()[0] < q)
    sizes = np.array(sizes)  # 900 binomial(200, 0.1) draws
    assert abs(sizes.mean() - q * n) < 5 * math.sqrt(q * (1 - q) * n / sizes.size)
    assert 0.7 < sizes.var() / (n * q * (1 - q)) < 1.3
    assert not np.array_equal(masks[0], masks[1])  # every epoch draws afresh


def test_secure_training_does_not_reproduce_but_seeded_does(digits):
    def weights(randomness: str) -> np.ndarray:
        defense = DpSgdDefense(type="dp_sgd", noise_multiplier=1.1, epochs=1, randomness=randomness)
        models = D.train(_job(digits, DIGIT_MLP, k=1, epochs=1, seed=5, eval_data=False), defense)
        return np.concatenate([w.ravel() for w in models.network(0).get_weights()])

    np.testing.assert_array_equal(weights("seeded"), weights("seeded"))
    a, b = weights("secure"), weights("secure")
    assert not np.allclose(a, b)
    assert not np.allclose(a, weights("seeded"))


def test_the_plan_trains_the_defenses_own_recipe_where_it_sets_one() -> None:
    """epochs, batch size and learning rate: the defense's where given, else the target's; a single point is a job."""
    recipe = S.Recipe(epochs=3, batch_size=8, learning_rate=1e-3)
    own = D.plan(recipe, 64, DpSgdDefense(type="dp_sgd", noise_multiplier=1.0, epochs=2, batch_size=16, learning_rate=0.05))
    assert (own.recipe.epochs, own.recipe.batch_size, own.recipe.learning_rate) == (2, 16, 0.05)
    inherited = D.plan(recipe, 64, DpSgdDefense(type="dp_sgd", noise_multiplier=1.0))
    assert (inherited.recipe.epochs, inherited.recipe.batch_size, inherited.recipe.learning_rate) == (3, 8, 1e-3)
    single = D.plan(recipe, 1, DpSgdDefense(type="dp_sgd", noise_multiplier=1.0))
    assert (single.sampling_rate, single.steps_per_epoch) == (1.0, 1)  # full-batch steps on the one point
    with pytest.raises(PipelineError, match="no training points"):
        D.plan(recipe, 0, DpSgdDefense(type="dp_sgd", noise_multiplier=1.0))
