"""DP-SGD epoch time against non-private training of the same models, side by side.

Run: ``.venv/bin/python benchmarks/bench_dp.py [--epochs E] [--repeats R] [--settings mlp:64,cnn:16]``

For each setting (architecture, K models) both trainers get the same
sklearn-digits data (n = 350 points per model), batch size 32 (DP-SGD's
expected Poisson batch), learning rate and initial weights; DP-SGD uses
sigma = 1, C = 1. Both run round(n / 32) = 11 steps per epoch.

- ms/epoch: the compiled epoch of each trainer (``stack.Trainer``, the
  engine of ``train_stack``, and ``dp_sgd.DpTrainer``) after one warm-up
  epoch, median over E epochs, best of R; plain and DP alternate.
- noise ms/epoch: drawing and adding the epoch's Gaussian noise alone
  (``dp_sgd.add_noise`` on every weight, once per step, in one traced
  loop): one normal per weight per model and step, the part of DP-SGD
  no clipping technique removes. noise / plain is what it adds to the
  ratio where it does not overlap with the rest of the step.
- whole call: one ``stack.train_stack`` and one ``dp_sgd.train`` of
  E epochs each, tracing, set-up and export included (accounting cached).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere

from sklearn.datasets import load_digits  # noqa: E402

from pipeline import stack as S  # noqa: E402
from pipeline.core.tf_runtime import tf  # noqa: E402
from pipeline.defenses import dp_sgd  # noqa: E402
from pipeline.defenses.base import TrainingJob  # noqa: E402
from pipeline.defenses.dp_sgd import DpSgdDefense  # noqa: E402
from pipeline.stack import conv  # noqa: E402

SETTINGS = "mlp:1,mlp:16,mlp:64,cnn:1,cnn:16,cnn:64"
N_PER_MODEL, BATCH, LR = 350, 32, 1e-3


def _data(kind: str, k: int) -> tuple[S.Architecture, np.ndarray, np.ndarray, np.ndarray]:
    d = load_digits()
    x = (d.data / 16.0).astype(np.float32)
    shape = (64,) if kind == "mlp" else (8, 8, 1)
    arch = S.Architecture(kind, shape, 10, hidden_units=128, conv_filters=(16, 32))
    rng = np.random.default_rng(0)
    pool = rng.permutation(len(x))[:700]
    keep = np.zeros((k, len(x)), bool)
    for row in keep:
        row[rng.choice(pool, N_PER_MODEL, replace=False)] = True
    return arch, x.reshape(-1, *shape), d.target.astype(np.int64), keep


def _epoch_ms(trainer: S.Trainer, members: np.ndarray, epochs: int, rng: np.random.Generator) -> float:
    """Median ms of `epochs` compiled epochs after a warm-up one, each on the trainer's own inputs."""
    times = []
    for e in range(epochs + 1):
        inputs = tf.constant(trainer.epoch_inputs(members, rng))
        start = time.perf_counter()
        out = trainer.epoch(inputs, tf.constant(np.int32(e)))
        _ = [t.numpy() for t in out]
        if e:
            times.append(time.perf_counter() - start)
    return 1e3 * float(np.median(times))


def _noise_ms(init: list[np.ndarray], steps: int, epochs: int) -> float:
    """Median ms of one epoch's noise alone: `steps` draws of N(0, 1) for every weight of every model."""
    zeros = [tf.zeros(w.shape) for w in init]

    @tf.function(autograph=False)
    def epoch_noise(seed: tf.Tensor) -> tf.Tensor:
        def body(s, acc):
            noisy = dp_sgd.add_noise(zeros, 1.0, 1.0, tf.stack([seed, s]))
            return s + 1, acc + tf.add_n([tf.reduce_sum(z[:1]) for z in noisy])

        return tf.while_loop(lambda s, _: s < steps, body, (tf.constant(0), tf.constant(0.0)))[1]

    times = []
    for e in range(epochs + 1):
        start = time.perf_counter()
        epoch_noise(tf.constant(e)).numpy()
        if e:
            times.append(time.perf_counter() - start)
    return 1e3 * float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10, help="timed epochs (E)")
    parser.add_argument("--repeats", type=int, default=3, help="best of R")
    parser.add_argument("--settings", default=SETTINGS, help=f"model:K pairs (default {SETTINGS})")
    parser.add_argument(
        "--per-model-conv", action="store_true",
        help="convolve model by model even where the kernels differentiate grouped convolutions (bench_kernels.py)",
    )  # fmt: skip
    args = parser.parse_args()
    if args.per_model_conv:
        conv.grouped_gradients_supported = lambda: False  # the path TensorFlow's default CPU kernels take
    defense = DpSgdDefense(type="dp_sgd", noise_multiplier=1.0, clip_norm=1.0)

    path = "grouped" if conv.grouped_gradients_supported() else "per-model"
    print(f"digits, n = {N_PER_MODEL} per model, batch {BATCH}, E = {args.epochs}, best of {args.repeats}; conv: {path}")
    print(
        f"{'model':<6}{'K':>4}{'plain ms/epoch':>16}{'DP ms/epoch':>13}{'ratio':>7}"
        f"{'noise ms/epoch':>16}{'noise/plain':>13}{'plain call s':>14}{'DP call s':>11}{'ratio':>7}"
    )
    for kind, k in ((kind, int(k)) for kind, k in (pair.split(":") for pair in args.settings.split(","))):
        arch, x, y, keep = _data(kind, k)
        recipe = S.Recipe(epochs=args.epochs, batch_size=BATCH, learning_rate=LR)
        plan = dp_sgd.plan(recipe, N_PER_MODEL, defense)  # also caches the accounting
        members = np.stack([np.flatnonzero(row) for row in keep]).astype(np.int32)
        init = S.init_weights(arch, k, np.random.default_rng(0))
        plain_trainer = S.Trainer(arch, recipe, init, x, y, N_PER_MODEL)
        dp_trainer = dp_sgd.DpTrainer(arch, plan, init, x, y)
        rng = np.random.default_rng(1)
        best = {"plain": np.inf, "dp": np.inf, "noise": np.inf}
        for _ in range(args.repeats):
            best["plain"] = min(best["plain"], _epoch_ms(plain_trainer, members, args.epochs, rng))
            best["dp"] = min(best["dp"], _epoch_ms(dp_trainer, members, args.epochs, rng))
            best["noise"] = min(best["noise"], _noise_ms(init, plan.steps_per_epoch, args.epochs))

        start = time.perf_counter()
        S.train_stack(arch, recipe, x, y, keep, seed=0)
        plain_s = time.perf_counter() - start
        start = time.perf_counter()
        dp_sgd.train(TrainingJob(arch, recipe, x, y, keep, 0), defense)
        dp_s = time.perf_counter() - start
        print(
            f"{kind:<6}{k:>4}{best['plain']:>16.1f}{best['dp']:>13.1f}{best['dp'] / best['plain']:>7.2f}"
            f"{best['noise']:>16.1f}{best['noise'] / best['plain']:>13.2f}{plain_s:>14.2f}{dp_s:>11.2f}{dp_s / plain_s:>7.2f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
