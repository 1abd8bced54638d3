"""Shadow-model training: batched (pipeline.stack) vs a sequential Keras loop.

Run: ``.venv/bin/python benchmarks/bench_training.py [--quick] [--epochs E] [--k K]``

Every row runs in its own freshly spawned process, so its wall time and
its peak memory are its own: peak memory is that process's RSS high-water
mark (``resource.getrusage(RUSAGE_SELF).ru_maxrss``), which includes the
Python + TensorFlow runtime; the RSS right before the timed work is printed
next to it. Wall times cover the timed work only (model building,
compiling/tracing and training; not the TensorFlow import).

To add a row (a DP-SGD trainer, a timed ``dvc repro``), write a function
``Config -> Row`` and add it to ``ROWS``; ``main`` runs and prints them all.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere


@dataclass(frozen=True)
class Config:
    """One benchmark setting: K shadow MLPs on sklearn digits."""

    k: int = 64
    n_per_model: int = 350
    epochs: int = 20
    batch_size: int = 32
    learning_rate: float = 1e-3
    hidden_units: int = 128
    seed: int = 0


@dataclass
class Row:
    """One measured line of the table."""

    name: str
    wall_s: float
    mean_test_acc: float | None = None
    peak_rss_mib: float = float("nan")
    rss_before_mib: float = float("nan")
    extra: dict[str, float] = field(default_factory=dict)


# ---------------------------------------------------------------------------
# Shared set-up


def _rss_high_water_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def digits_problem(cfg: Config) -> dict[str, np.ndarray]:
    """Digits split into a 700-point shadow pool and a test set; K random subsets."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.data / 16.0).astype(np.float32)
    y = d.target.astype(np.int64)
    rng = np.random.default_rng(cfg.seed)
    perm = rng.permutation(len(x))
    pool, test = perm[:700], perm[700:]
    keep = np.zeros((cfg.k, len(x)), bool)
    for row in keep:
        row[rng.choice(pool, cfg.n_per_model, replace=False)] = True
    return {"x": x, "y": y, "keep": keep, "test": test}


def architecture_and_recipe(cfg: Config):
    from pipeline.stack import Architecture, Recipe

    arch = Architecture("mlp", (64,), 10, hidden_units=cfg.hidden_units)
    recipe = Recipe(cfg.epochs, cfg.batch_size, cfg.learning_rate)
    return arch, recipe


def training_flops(cfg: Config) -> float:
    """Matmul FLOPs of training: 3x forward (forward, input grads, weight grads).

    Forward per example: 2 * (64*hidden + hidden*10) multiply-adds counted
    as 2 FLOPs each; bias, ReLU, softmax and Adam are left out (elementwise).
    """
    forward = 2 * (64 * cfg.hidden_units + cfg.hidden_units * 10)
    return 3.0 * forward * cfg.k * cfg.n_per_model * cfg.epochs


# ---------------------------------------------------------------------------
# Rows


def row_batched(cfg: Config) -> Row:
    """All K models in one pipeline.stack.train_stack call."""
    from pipeline.stack import stack_logits, train_stack

    data = digits_problem(cfg)
    arch, recipe = architecture_and_recipe(cfg)
    rss_before = _rss_high_water_mib()
    t0 = time.perf_counter()
    stack = train_stack(arch, recipe, data["x"], data["y"], data["keep"], seed=cfg.seed)
    wall = time.perf_counter() - t0
    logits = stack_logits(stack, data["x"][data["test"]])
    acc = (logits.argmax(-1) == data["y"][data["test"]]).mean(axis=1)
    return Row("batched train_stack", wall, float(acc.mean()), _rss_high_water_mib(), rss_before)


def row_sequential(cfg: Config) -> Row:
    """K separate Keras models, built, compiled and fit one after another."""
    from pipeline.core.tf_runtime import keras
    from pipeline.stack import keras_model

    data = digits_problem(cfg)
    arch, recipe = architecture_and_recipe(cfg)
    x, y, test = data["x"], data["y"], data["test"]
    rss_before = _rss_high_water_mib()
    accs = []
    wall = 0.0
    for k in range(cfg.k):
        t0 = time.perf_counter()
        keras.backend.clear_session()
        keras.utils.set_random_seed(cfg.seed * 100_003 + k)
        model = keras_model(arch, recipe)
        model.compile(
            keras.optimizers.Adam(recipe.learning_rate), "sparse_categorical_crossentropy"
        )
        rows = data["keep"][k]
        model.fit(x[rows], y[rows], epochs=recipe.epochs, batch_size=recipe.batch_size, verbose=0)
        wall += time.perf_counter() - t0
        accs.append((model.predict(x[test], verbose=0).argmax(-1) == y[test]).mean())
    return Row(
        "sequential keras fit", wall, float(np.mean(accs)), _rss_high_water_mib(), rss_before
    )


def row_matmul_peak(cfg: Config) -> Row:
    """The machine's float32 matmul rate: best of a few large tf.matmul calls."""
    from pipeline.core.tf_runtime import tf

    best = 0.0
    sizes = (1024, 2048) if cfg.k <= 8 else (2048, 4096)
    for n in sizes:
        rng = np.random.default_rng(0)
        a = tf.constant(rng.standard_normal((n, n), dtype=np.float32))
        b = tf.constant(rng.standard_normal((n, n), dtype=np.float32))
        matmul = tf.function(lambda a, b: tf.matmul(a, b))
        matmul(a, b).numpy()
        for _ in range(5):
            t0 = time.perf_counter()
            matmul(a, b).numpy()
            best = max(best, 2.0 * n**3 / (time.perf_counter() - t0))
    return Row("float32 matmul peak", 0.0, extra={"flops_per_s": best})


def _median_ms(fn: Callable[[], object], repeats: int = 20) -> float:
    """Median ms of `repeats` calls of a traced function after one warm-up call (results fetched)."""
    from pipeline.core.tf_runtime import tf

    times = []
    for i in range(repeats + 1):
        start = time.perf_counter()
        tf.nest.map_structure(lambda t: t.numpy(), fn())
        if i:
            times.append(time.perf_counter() - start)
    return 1e3 * float(np.median(times))


def row_epoch_profile(cfg: Config) -> Row:
    """Where one compiled epoch's time goes: the whole epoch, its matmuls alone, its Adam updates alone.

    The epoch is the batched trainer's traced epoch (no tracing in the
    timing); "matmuls" runs the epoch's forward and backward matmuls of
    every step with nothing else, "Adam" the epoch's fused Adam updates of
    all K models with nothing else, each in one traced loop of as many steps.
    """
    from pipeline.core.tf_runtime import tf
    from pipeline.stack import Trainer, init_weights
    from pipeline.stack.optimizer import FusedAdam

    data = digits_problem(cfg)
    arch, recipe = architecture_and_recipe(cfg)
    members = np.stack([np.flatnonzero(row) for row in data["keep"]]).astype(np.int32)
    init = init_weights(arch, cfg.k, np.random.default_rng(cfg.seed))
    trainer = Trainer(arch, recipe, init, data["x"], data["y"], cfg.n_per_model)
    rng = np.random.default_rng(cfg.seed)
    order = tf.constant(trainer.epoch_inputs(members, rng))
    epoch_ms = _median_ms(lambda: trainer.epoch(order, tf.constant(np.int32(1))))

    steps, b = trainer.n_steps, cfg.batch_size
    gen = np.random.default_rng(0)
    a, g_out = (tf.constant(gen.standard_normal(shape, dtype=np.float32)) for shape in ((cfg.k, b, 64), (cfg.k, b, 10)))
    w1, w2 = (tf.constant(w) for w in (init[0], init[2]))

    @tf.function(autograph=False)
    def matmuls() -> tf.Tensor:
        def body(s, acc):
            hidden = tf.einsum("kbd,kdh->kbh", a, w1)
            logits = tf.einsum("kbh,khc->kbc", hidden, w2)
            g_hidden = tf.einsum("kbc,khc->kbh", g_out + 0.0 * logits, w2)
            grads = (tf.einsum("kbh,kbc->khc", hidden, g_out), tf.einsum("kbd,kbh->kdh", a, g_hidden))
            return s + 1, acc + tf.add_n([tf.reduce_sum(g[:, :1, :1]) for g in grads])

        return tf.while_loop(lambda s, _: s < steps, body, (tf.constant(0), tf.constant(0.0)))[1]

    variables = [tf.Variable(w) for w in init]
    adam = FusedAdam(variables, recipe.learning_rate)
    grads = [tf.constant(gen.standard_normal(w.shape, dtype=np.float32)) for w in init]

    @tf.function(autograph=False)
    def adam_steps() -> tf.Tensor:
        def body(s):
            adam.apply(grads)
            return s + 1

        return tf.while_loop(lambda s: s < steps, body, (tf.constant(0),))

    return Row(
        "compiled epoch profile", 0.0,
        extra={"epoch_ms": epoch_ms, "matmul_ms": _median_ms(matmuls), "adam_ms": _median_ms(adam_steps)},
    )  # fmt: skip


ROWS: dict[str, Callable[[Config], Row]] = {
    "matmul_peak": row_matmul_peak,
    "epoch_profile": row_epoch_profile,
    "batched": row_batched,
    "sequential": row_sequential,
}


# ---------------------------------------------------------------------------
# Running and printing


def _child(fn_name: str, cfg: Config, queue) -> None:
    queue.put(ROWS[fn_name](cfg))


def run_isolated(name: str, cfg: Config) -> Row:
    """Run one row in a fresh spawned process (own RSS high-water mark)."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(name, cfg, queue))
    proc.start()
    row = queue.get()
    proc.join()
    return row


def _load() -> str:
    return "load average {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="K=8, 3 epochs: a smoke run")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--k", type=int, default=None)
    args = parser.parse_args(argv)
    cfg = Config(k=8, epochs=3) if args.quick else Config()
    cfg = Config(
        k=args.k or cfg.k,
        epochs=args.epochs or cfg.epochs,
        n_per_model=cfg.n_per_model,
        batch_size=cfg.batch_size,
        learning_rate=cfg.learning_rate,
        hidden_units=cfg.hidden_units,
    )

    print(
        f"K={cfg.k} MLPs (64-{cfg.hidden_units}-10) on sklearn digits, {cfg.n_per_model} "
        f"training points each, {cfg.epochs} epochs, batch {cfg.batch_size}, "
        f"Adam {cfg.learning_rate}; {os.cpu_count()} CPU cores; {_load()}"
    )
    rows = {name: run_isolated(name, cfg) for name in ROWS}
    print(f"finished; {_load()}\n")

    header = ("row", "wall s", "mean test acc", "peak RSS MiB", "RSS before")
    print("{:24s} {:>9s} {:>14s} {:>13s} {:>11s}".format(*header))
    for row in rows.values():
        if row.name in ("float32 matmul peak", "compiled epoch profile"):
            continue
        acc = f"{row.mean_test_acc:.4f}" if row.mean_test_acc is not None else "-"
        print(
            f"{row.name:24s} {row.wall_s:9.2f} {acc:>14s} "
            f"{row.peak_rss_mib:13.0f} {row.rss_before_mib:11.0f}"
        )
    batched, sequential = rows["batched"], rows["sequential"]
    print(f"\nspeed-up, sequential / batched wall time: {sequential.wall_s / batched.wall_s:.1f}x")
    print("peak RSS: resource.getrusage ru_maxrss of each row's own spawned process")

    flops = training_flops(cfg)
    achieved = flops / batched.wall_s
    peak = rows["matmul_peak"].extra["flops_per_s"]
    print(
        f"\nbatched training arithmetic: {flops / 1e9:.1f} GFLOP (3x forward matmuls) "
        f"in {batched.wall_s:.2f} s = {achieved / 1e9:.1f} GFLOP/s"
    )
    print(f"machine float32 matmul rate (large tf.matmul): {peak / 1e9:.1f} GFLOP/s")
    print(f"achieved / machine: {achieved / peak:.1%} (wall time includes tracing the graph)")

    prof = rows["epoch_profile"].extra
    per_epoch = flops / cfg.epochs
    print(
        f"\none compiled epoch ({per_epoch / 1e9:.2f} GFLOP): {prof['epoch_ms']:.1f} ms = "
        f"{per_epoch / prof['epoch_ms'] / 1e6:.1f} GFLOP/s, {per_epoch / prof['epoch_ms'] / 1e-3 / peak:.1%} of the matmul rate"
    )
    print(
        f"  of which the same matmuls alone take {prof['matmul_ms']:.1f} ms "
        f"({per_epoch / prof['matmul_ms'] / 1e-3 / peak:.1%} of the rate: K small batched matmuls), "
        f"the Adam updates alone {prof['adam_ms']:.1f} ms (elementwise, memory-bound), "
        f"the rest (gathers, activations, loss, bias gradients, op dispatch) "
        f"{prof['epoch_ms'] - prof['matmul_ms'] - prof['adam_ms']:.1f} ms"
    )


if __name__ == "__main__":
    main()
