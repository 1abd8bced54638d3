"""A tiny `dvc repro` logging to a real `mlflow server` on a throwaway PostgreSQL cluster.

The server proxies artifacts: the pipeline talks HTTP only, and the summary
run's files land under the server's artifacts folder. Runs, nested stage
runs, dataset inputs and the logged model are checked through the API; then
both servers are stopped by PID and must be gone.
"""

from __future__ import annotations

import os
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest
import yaml

from pipeline.core.processes import pid_alive
from pipeline.tools.presets import applied, overrides
from pipeline.tools.sandbox import PROJECT, make_sandbox
from pipeline.tools.tracking_server import (
    postgres_bin,
    postgres_cluster,
    tracking_server,
)

pytestmark = pytest.mark.slow

SMALLER = {  # on top of the tiny preset: one defense, no adaptive models, shorter training
    "defense.run": ["memguard"],
    "canaries.defenses": [],
    "defense.adaptive": False,
    "target.epochs": 5,
    "attack.shadow_classifier.classifier": "logistic_regression",
}
STAGES = {
    "prepare", "train_target", "train_shadows", "train_reference", "build_attack_dataset", "train_attack",
    "defend@memguard", "attack_defense@memguard", "audit_canaries", "report",
}  # fmt: skip


def _tiny_params() -> str:
    params = yaml.safe_load((PROJECT / "params.yaml").read_text())
    flat = {**overrides("tiny", PROJECT / "presets"), **SMALLER}
    return yaml.safe_dump(applied(params, flat), sort_keys=False)


def _refuses(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


def _group_gone(pid: int) -> bool:
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_the_pipeline_logs_to_a_team_server_on_postgresql(tmp_path: Path) -> None:
    import mlflow

    if postgres_bin() is None:
        if os.environ.get("CI"):
            pytest.fail("Debian's postgresql is missing; .ci/run installs it")
        pytest.skip("Debian's postgresql is not installed (.ci/run installs it)")
    root, artifacts = tmp_path / "project", tmp_path / "artifacts"
    root.mkdir()
    artifacts.mkdir()
    env = make_sandbox(root, _tiny_params())
    # The cluster folder sits directly under the system temp folder: under root, PostgreSQL runs
    # as the `postgres` user, which cannot enter pytest's private tmp_path.
    with (
        tempfile.TemporaryDirectory(prefix="mia-postgres-") as cluster,
        postgres_cluster(Path(cluster)) as db,
        tracking_server(db.uri, artifacts, tmp_path / "mlflow-server.log") as server,
    ):
        repro = subprocess.run(
            ["dvc", "repro"], cwd=root, env={**env, "MLFLOW_TRACKING_URI": server.url},
            capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        assert repro.returncode == 0, f"{repro.stdout}\n{repro.stderr}"
        assert not (root / "mlflow.db").exists()  # nothing went to the embedded store

        client = mlflow.MlflowClient(tracking_uri=server.url)
        experiment = client.get_experiment_by_name("membership-inference")
        runs = client.search_runs([experiment.experiment_id], max_results=1000)
        (summary,) = [r for r in runs if r.data.tags.get("summary") == "true"]
        assert summary.info.status == "FINISHED"
        assert summary.info.artifact_uri.startswith("mlflow-artifacts:")  # proxied, not a client-side path
        children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == summary.info.run_id]
        assert {r.data.tags["stage"] for r in children} == STAGES - {"report"}
        assert all(r.info.status == "FINISHED" for r in children)
        contexts = {t.value for d in summary.inputs.dataset_inputs for t in d.tags if t.key == "mlflow.data.context"}
        assert contexts == {"members", "non-members", "test", "attacker pool", "defender reference"}

        train_target = next(r for r in children if r.data.tags["stage"] == "train_target")
        previous_uri = mlflow.get_tracking_uri()
        mlflow.set_tracking_uri(server.url)  # a logged model's mlflow-artifacts: URI resolves against it
        try:
            downloaded = mlflow.artifacts.download_artifacts(
                f"runs:/{train_target.info.run_id}/model", dst_path=str(tmp_path / "model")
            )  # into tmp_path: Model.load of a runs:/ URI would leave a temporary folder behind
        finally:
            mlflow.set_tracking_uri(previous_uri)
        assert mlflow.models.Model.load(downloaded).signature is not None

        stored = artifacts / experiment.experiment_id / summary.info.run_id / "artifacts"
        for name in ("report.html", "attacks_table.json"):
            assert (stored / name).stat().st_size > 0, name  # written by the server, not by the pipeline
    assert not pid_alive(db.pid) and not pid_alive(server.pid)
    assert _group_gone(server.pid)  # the server's workers too
    assert _refuses(db.port) and _refuses(server.port)
