"""The Ray backend on a real local Ray cluster: same params, same bits; retries; one-line failures.

One Ray head with 2 CPUs (2 workers), started through
`pipeline.tools.ray_cluster` inside a private network namespace that holds
only loopback (Ray's servers listen on every interface of their
namespace) and stopped by its process group when its command ends, serves
both checks (fixture `on_ray`; a head's start-up is most of a check's
time): first `dvc repro train_shadows` on a copy of scenario `tiny`, then
`tests/ray_checks.py`, whose lost worker comes last.
"""

from __future__ import annotations

import hashlib
import json
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from scenarios import Built, ran_stages

from pipeline.tools.ray_cluster import private_network
from pipeline.tools.sandbox import PROJECT

pytestmark = pytest.mark.slow

SHADOW_OUTPUTS = ("data/shadows/signals.npz", "metrics/shadows.json")  # logits, labels kept, robustness; accuracies


@dataclass(frozen=True)
class RayRuns:
    local: subprocess.CompletedProcess  # `dvc repro train_shadows` with the local backend, before the cluster
    expected: dict[str, str]  # its outputs' digests
    cluster: subprocess.CompletedProcess  # the cluster's own run of both commands
    repro_out: str  # `dvc repro train_shadows` on Ray: its output, its error stream, its exit status
    repro_err: str
    repro_status: int
    checks: str  # tests/ray_checks.py's output and error stream
    digests: dict[str, str]  # the outputs' digests after the Ray run


def _digests(root: Path, names: tuple[str, ...]) -> dict[str, str]:
    return {name: hashlib.sha256((root / name).read_bytes()).hexdigest() for name in names}


@pytest.fixture(scope="module")
def on_ray(tiny: Built, tmp_path_factory: pytest.TempPathFactory) -> RayRuns:
    """A copy of `tiny`'s 4 shadow models in two shards, locally, then both checks in one cluster."""
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        pytest.fail("the Ray tests need util-linux's unshare and iproute2's ip (.ci/run installs them)")
    folder = tmp_path_factory.mktemp("ray")
    box = tiny.copy(folder / "repo")
    box.set_params({"compute": {"shard_size": 2}})  # 4 shadow models: two shards
    local = box.repro("train_shadows")
    expected = _digests(box.root, SHADOW_OUTPUTS)
    box.set_params({"compute": {"backend": "ray"}})
    logs = {name: folder / name for name in ("repro.out", "repro.err", "repro.status", "checks.out")}
    q = {name: shlex.quote(str(path)) for name, path in {**logs, "repo": box.root, "project": PROJECT, "folder": folder}.items()}
    script = (
        f"cd {q['repo']} && dvc repro train_shadows > {q['repro.out']} 2> {q['repro.err']}; echo $? > {q['repro.status']}; "
        f"cd {q['project']} && {shlex.quote(sys.executable)} tests/ray_checks.py {q['folder']} > {q['checks.out']} 2>&1"
    )
    wrapped = private_network([sys.executable, "-m", "pipeline.tools.ray_cluster", "--num-cpus", "2", "--", "sh", "-c", script])
    cluster = subprocess.run(wrapped, cwd=PROJECT, env=box.env, capture_output=True, text=True, timeout=900)
    text = {name: path.read_text() if path.exists() else "" for name, path in logs.items()}
    return RayRuns(
        local, expected, cluster, text["repro.out"], text["repro.err"], int(text["repro.status"] or -1),
        text["checks.out"], _digests(box.root, SHADOW_OUTPUTS),
    )  # fmt: skip


def test_ray_shards_give_the_local_backends_signals_and_metrics_bit_for_bit(on_ray: RayRuns) -> None:
    assert ran_stages(on_ray.local.stdout) == {"validate", "train_shadows"}  # the prepared data come from the scenario
    assert "ray" not in on_ray.local.stderr.lower()  # the local backend never touches Ray
    assert on_ray.repro_status == 0, on_ray.repro_out[-2000:] + on_ray.repro_err[-3000:] + on_ray.cluster.stderr[-2000:]
    assert "Running stage 'train_shadows'" in on_ray.repro_out and "Running stage 'prepare'" not in on_ray.repro_out
    assert "shadows (Ray): 1/2 shards done" in on_ray.repro_err and "shadows (Ray): 2/2 shards done" in on_ray.repro_err
    assert on_ray.digests == on_ray.expected


def test_lost_workers_are_retried_and_failing_shards_are_one_line(on_ray: RayRuns) -> None:
    assert on_ray.cluster.returncode == 0, on_ray.checks[-3000:] + on_ray.cluster.stderr[-2000:]
    seen = json.loads(on_ray.checks.strip().splitlines()[-1])
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
