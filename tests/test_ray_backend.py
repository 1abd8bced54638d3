"""The Ray backend on a real local Ray cluster: same params, same bits; retries; one-line failures.

Each test starts a Ray head with 2 CPUs (2 workers) through
`pipeline.tools.ray_cluster`, inside a private network namespace that holds
only loopback (Ray's servers listen on every interface of their
namespace), and stops it by its process group when the command ends.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from scenarios import Sandbox, ran_stages

from pipeline.tools.ray_cluster import private_network
from pipeline.tools.sandbox import PROJECT

pytestmark = pytest.mark.slow


def _in_cluster(command: list[str], cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        pytest.fail("the Ray tests need util-linux's unshare and iproute2's ip (.ci/run installs them)")
    wrapped = private_network([sys.executable, "-m", "pipeline.tools.ray_cluster", "--num-cpus", "2", "--", *command])
    return subprocess.run(wrapped, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def _digests(root: Path, names: tuple[str, ...]) -> dict[str, str]:
    return {name: hashlib.sha256((root / name).read_bytes()).hexdigest() for name in names}


def test_ray_shards_give_the_local_backends_signals_and_metrics_bit_for_bit(tiny_copy: Sandbox) -> None:
    """On a copy of scenario `tiny` (tests/scenarios.py): its 4 shadow models in two shards, locally, then on Ray."""
    box = tiny_copy
    box.set_params({"compute": {"shard_size": 2}})  # 4 shadow models: two shards
    outputs = ("data/shadows/signals.npz", "metrics/shadows.json")  # logits, labels kept, robustness; accuracies
    local = box.repro("train_shadows")
    assert ran_stages(local.stdout) == {"validate", "train_shadows"}  # the prepared data come from the scenario
    assert "ray" not in local.stderr.lower()  # the local backend never touches Ray
    expected = _digests(box.root, outputs)
    box.set_params({"compute": {"backend": "ray"}})
    result = _in_cluster(["dvc", "repro", "train_shadows"], box.root, box.env)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert "Running stage 'train_shadows'" in result.stdout and "Running stage 'prepare'" not in result.stdout
    assert "shadows (Ray): 1/2 shards done" in result.stderr and "shadows (Ray): 2/2 shards done" in result.stderr
    assert _digests(box.root, outputs) == expected


def test_lost_workers_are_retried_and_failing_shards_are_one_line(tmp_path: Path) -> None:
    result = _in_cluster([sys.executable, str(PROJECT / "tests" / "ray_checks.py"), str(tmp_path)], PROJECT)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen["squares"] == [3, 12, 27, 48]  # in shard order, whatever order they finished in
    assert seen["retried"] == [7]  # the first worker died; Ray ran the shard again
    assert seen["lost"].startswith("compute: shard 1/1 of crash failed on Ray") and "\n" not in seen["lost"]
    assert seen["failed_1"] == "defenses.x: this shard's own one-line error"
    assert seen["failed_0"].startswith("compute: shard 1/1 of failing failed on Ray (ValueError: a bug in shard code")


def test_the_local_backend_does_not_import_ray() -> None:
    code = (
        "import sys; from pipeline.training.compute import run_shards; from pipeline.config import ComputeParams; "
        "assert run_shards(lambda s, k: s + k, 1, [1, 2], ComputeParams(), 'x') == [2, 3]; "
        "import pipeline.stages.train_shadows, pipeline.stages.defend; print('ray' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=PROJECT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
