"""One seeded CNN run in this process's TensorFlow kernels, for `test_kernels.py`.

Usage: python tests/kernel_run.py OUT.npz. The caller sets
TF_ENABLE_ONEDNN_OPTS; this script records which convolution path ran.
Writes the logits on held-out digits after one training step (plain and
DP-SGD, each a stack of 4 models) and the test accuracies after 15 epochs.
"""

from __future__ import annotations

import sys

import numpy as np
from sklearn.datasets import load_digits

from pipeline import stack as S
from pipeline.defenses import dp_sgd
from pipeline.defenses.base import TrainingJob
from pipeline.defenses.dp_sgd import DpSgdDefense


def main(out: str) -> None:
    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[..., None]
    y = d.target.astype(np.int64)
    rng = np.random.default_rng(0)
    keep = np.zeros((4, 1000), bool)
    for row in keep:
        row[rng.choice(1000, 350, replace=False)] = True
    arch = S.Architecture("cnn", (8, 8, 1), 10, hidden_units=32, conv_filters=(16, 32))
    test_x, test_y = x[1000:], y[1000:]

    one_step = S.Recipe(epochs=1, batch_size=350, learning_rate=1e-2)
    plain = S.stack_logits(S.train_stack(arch, one_step, x[:1000], y[:1000], keep, seed=3), test_x)
    dp = DpSgdDefense(type="dp_sgd", noise_multiplier=1.0, clip_norm=1.0, epochs=1, batch_size=350)
    job = TrainingJob(arch, one_step, x[:1000], y[:1000], keep, seed=3)
    private = dp_sgd.train(job, dp).observe(test_x)

    trained = S.train_stack(arch, S.Recipe(epochs=15, batch_size=32, learning_rate=1e-3), x[:1000], y[:1000], keep, seed=3)
    accuracy = (S.stack_logits(trained, test_x).argmax(-1) == test_y).mean(axis=1)
    np.savez(
        out, plain=plain, private=private, accuracy=accuracy,
        grouped=np.array(S.grouped_gradients_supported()),
    )  # fmt: skip


if __name__ == "__main__":
    main(sys.argv[1])
