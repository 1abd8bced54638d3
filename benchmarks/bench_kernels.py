"""CNN training under each of TensorFlow's CPU kernel sets, and each convolution path, side by side.

Run: ``.venv/bin/python benchmarks/bench_kernels.py [--epochs E] [--repeats R] [--settings cnn:1,cnn:16]``

TensorFlow turns oneDNN on by default only on some CPUs, and only oneDNN
(or a GPU) differentiates the grouped convolution the stack's CNN uses;
elsewhere `pipeline.stack.conv` convolves model by model. Each row runs
`bench_dp.py` (plain and DP-SGD epochs of the same CNNs) in its own
process with `TF_ENABLE_ONEDNN_OPTS` set, since TensorFlow reads it once
at import:

- oneDNN, grouped: the fast path, what oneDNN machines run;
- oneDNN, per model: the portable path on the same kernels (its cost);
- default kernels, per model: what a CPU without oneDNN runs.

Ratios are each row's ms/epoch over the first row's, in this one run.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROWS = (
    ("oneDNN, grouped", "1", []),
    ("oneDNN, per model", "1", ["--per-model-conv"]),
    ("default kernels, per model", "0", []),
)


def measure(onednn: str, flags: list[str], args: argparse.Namespace) -> dict[str, tuple[float, float]]:
    """(plain, DP) ms/epoch per setting, from one `bench_dp.py` process."""
    command = [sys.executable, str(HERE / "bench_dp.py"), "--settings", args.settings,
               "--epochs", str(args.epochs), "--repeats", str(args.repeats), *flags]  # fmt: skip
    out = subprocess.run(command, env={**os.environ, "TF_ENABLE_ONEDNN_OPTS": onednn}, capture_output=True, text=True)
    if out.returncode:
        sys.exit(f"bench_dp.py failed with TF_ENABLE_ONEDNN_OPTS={onednn}:\n{out.stderr[-2000:]}")
    rows = {}
    for line in out.stdout.splitlines():
        parts = line.split()
        if parts and parts[0] in ("cnn", "mlp") and len(parts) > 3:
            rows[f"{parts[0]}:{parts[1]}"] = (float(parts[2]), float(parts[3]))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--settings", default="cnn:1,cnn:16")
    args = parser.parse_args()
    results = {name: measure(onednn, flags, args) for name, onednn, flags in ROWS}
    base = results[ROWS[0][0]]
    print(f"digits CNN (16, 32 filters), ms per epoch, E = {args.epochs}, best of {args.repeats}; ratio to {ROWS[0][0]}")
    print(f"{'kernels, conv path':<30}{'setting':>9}{'plain':>9}{'ratio':>7}{'DP-SGD':>9}{'ratio':>7}")
    for name, rows in results.items():
        for setting, (plain, dp) in rows.items():
            b_plain, b_dp = base[setting]
            print(f"{name:<30}{setting:>9}{plain:>9.1f}{plain / b_plain:>7.2f}{dp:>9.1f}{dp / b_dp:>7.2f}")


if __name__ == "__main__":
    main()
