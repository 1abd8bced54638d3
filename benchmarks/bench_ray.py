"""Reference-model training on Ray (2 local workers) against the local backend, side by side in one run.

Run: ``.venv/bin/python benchmarks/bench_ray.py [--models M] [--shard-size S]``

Both rows train the same M reference models of the digits MLP (350
points each, 40 epochs, as the default pipeline), in shards of S models:
one after another in this process (`compute.backend: local`), or as Ray
tasks on a 2-CPU local cluster. On a 2-core machine this measures Ray's
overhead (worker start-up, TensorFlow import per worker, object
transfer), not a speed-up: both rows have the same two cores. The per
shard time is what the cost model in docs/operations.md ("Scaling out")
scales. Ray runs in a private network namespace (see `pipeline.tools.ray_cluster`).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere

from pipeline.tools.ray_cluster import private_network  # noqa: E402


def measure(models: int, shard_size: int) -> None:
    import numpy as np

    from pipeline.config import ComputeParams, DataParams
    from pipeline.datasets.loaders import load_dataset
    from pipeline.datasets.splits import make_splits
    from pipeline.defenses.base import train_undefended
    from pipeline.stack import Architecture, Recipe
    from pipeline.training.attacker import ModelSet, train_reference

    dataset = load_dataset(DataParams())
    splits = make_splits(len(dataset.y), DataParams(), np.random.default_rng(0))
    arch = Architecture("mlp", dataset.x.shape[1:], dataset.n_classes, hidden_units=128)
    recipe = Recipe(epochs=40, batch_size=32, learning_rate=1e-3)
    times = {}
    signals = {}
    for backend in ("local", "ray"):
        compute = ComputeParams(backend=backend, shard_size=shard_size)
        start = time.perf_counter()
        signals[backend] = train_reference(dataset, splits, ModelSet(arch, recipe, train_undefended, models, 0, "reference", compute))
        times[backend] = time.perf_counter() - start
    shards = -(-models // shard_size)
    same = np.array_equal(signals["local"].logits, signals["ray"].logits)
    print(f"{models} reference models of the digits MLP in {shards} shards of {shard_size} (40 epochs, 350 points each):")
    print(f"  local backend, shards in turn:       {times['local']:7.2f} s   ({times['local'] / shards:.2f} s per shard)")
    print(f"  Ray, 2 local workers (1 CPU each):   {times['ray']:7.2f} s   ({times['ray'] / times['local']:.2f}x local; the same bits: {same})")
    print("  (an overhead figure: both rows share this machine's 2 cores)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", type=int, default=16)
    parser.add_argument("--shard-size", type=int, default=8)
    parser.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inside:
        measure(args.models, args.shard_size)
        return
    inner = [sys.executable, __file__, "--inside", "--models", str(args.models), "--shard-size", str(args.shard_size)]
    command = private_network([sys.executable, "-m", "pipeline.tools.ray_cluster", "--num-cpus", "2", "--", *inner])
    sys.exit(subprocess.run(command, cwd=Path(__file__).resolve().parents[1], env={**os.environ}).returncode)


if __name__ == "__main__":
    main()
