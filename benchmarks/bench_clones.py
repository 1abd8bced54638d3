"""Copies of a user's model the batched trainer does not cover: `stack.clones` vs a loop of Keras `fit` calls.

Run: ``.venv/bin/python benchmarks/bench_clones.py [--k K] [--epochs E]``

Both rows train K clones of a two-hidden-layer MLP on sklearn's digits
(350 points each, batch 32), measured side by side in this one process:
`train_clones` (one compiled model reused, Keras's training step per
batch) against what a user would write (a fresh clone, compile and `fit`
per model). Mean test accuracy shows both train the same models.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere

from sklearn.datasets import load_digits  # noqa: E402

from pipeline.config import ModelParams  # noqa: E402
from pipeline.core.tf_runtime import keras  # noqa: E402
from pipeline.core.types import Dataset  # noqa: E402
from pipeline.stack import Recipe, stack_logits, train_stack  # noqa: E402
from pipeline.training.user_model import design  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=20)
    args = parser.parse_args()
    digits = load_digits()
    x, y = (digits.data / 16.0).astype(np.float32), digits.target.astype(np.int64)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(x))
    test = order[-300:]
    keep = np.zeros((args.k, len(x)), bool)
    for k in range(args.k):
        keep[k, rng.permutation(order[:-300])[:350]] = True
    model = keras.Sequential([
        keras.Input((64,)), keras.layers.Dense(128, activation="relu"), keras.layers.Dense(64, activation="relu"),
        keras.layers.Dense(10, activation="softmax"),
    ])  # fmt: skip
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    architecture, _ = design(model, Dataset(x=x, y=y, n_classes=10, name="digits"), ModelParams())
    recipe = Recipe(epochs=args.epochs, batch_size=32, learning_rate=1e-3)

    start = time.perf_counter()
    stack = train_stack(architecture, recipe, x, y, keep, seed=0)
    clones_s = time.perf_counter() - start
    clones_acc = float(np.mean(stack_logits(stack, x[test]).argmax(-1) == y[test]))

    start = time.perf_counter()
    accuracies = []
    for k in range(args.k):
        fresh = keras.models.clone_model(model)
        fresh.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
        fresh.fit(x[keep[k]], y[keep[k]], epochs=args.epochs, batch_size=32, verbose=0)
        accuracies.append(float(np.mean(np.asarray(fresh(x[test])).argmax(-1) == y[test])))
    fit_s = time.perf_counter() - start

    print(f"{args.k} clones of a 2-hidden-layer MLP, {args.epochs} epochs of 350 digits, batch 32:")
    print(f"  stack.clones (one compiled model, train_on_batch): {clones_s:7.2f} s   mean test acc {clones_acc:.3f}")
    print(f"  loop of clone + compile + fit:                     {fit_s:7.2f} s   mean test acc {np.mean(accuracies):.3f}")
    print(f"  speed-up: {fit_s / clones_s:.1f}x")


if __name__ == "__main__":
    main()
