"""`dvc repro` logging to a real `mlflow server` on a throwaway PostgreSQL cluster.

The server proxies artifacts: the pipeline talks HTTP only, and the summary
run's files land under the server's artifacts folder. Runs, nested stage
runs, dataset inputs and the logged model are checked through the API; then
both servers are stopped by PID and must be gone.
"""

from __future__ import annotations

import os
import socket
import tempfile
from pathlib import Path

import pytest
from scenarios import Sandbox, attack_stages, ran_stages

from pipeline.core.processes import pid_alive
from pipeline.tools.tracking_server import (
    postgres_bin,
    postgres_cluster,
    tracking_server,
)

pytestmark = pytest.mark.slow

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


def test_the_pipeline_logs_to_a_team_server_on_postgresql(trimmed_copy: Sandbox, tmp_path: Path) -> None:
    """Scenario `trimmed`'s copy, its target retrained and an attack setting changed, logging to the server.

    `dvc repro -f -s train_target` retrains the target alone (byte for byte
    the same outputs, so nothing downstream is stale), logging its run and
    model; then a changed `attack.rmia.gamma` reruns the attack stages and
    the report, which nests every run it finds on the server.
    """
    import mlflow

    if postgres_bin() is None:
        if os.environ.get("CI"):
            pytest.fail("Debian's postgresql is missing; .ci/run installs it")
        pytest.skip("Debian's postgresql is not installed (.ci/run installs it)")
    box = trimmed_copy
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    (box.root / "mlflow.db").unlink()
    box.set_params({"attack": {"rmia": {"gamma": 2.5}}})
    # The cluster folder sits directly under the system temp folder: under root, PostgreSQL runs
    # as the `postgres` user, which cannot enter pytest's private tmp_path.
    with (
        tempfile.TemporaryDirectory(prefix="mia-postgres-") as cluster,
        postgres_cluster(Path(cluster)) as db,
        tracking_server(db.uri, artifacts, tmp_path / "mlflow-server.log") as server,
    ):
        env = {**box.env, "MLFLOW_TRACKING_URI": server.url}
        assert ran_stages(box.run("dvc", "repro", "-f", "-s", "train_target", env=env).stdout) == {"train_target"}
        attacks = attack_stages(box.params())
        assert ran_stages(box.run("dvc", "repro", env=env).stdout) == {"validate", *attacks, "report"}
        assert not (box.root / "mlflow.db").exists()  # nothing went to the embedded store

        client = mlflow.MlflowClient(tracking_uri=server.url)
        experiment = client.get_experiment_by_name("membership-inference")
        runs = client.search_runs([experiment.experiment_id], max_results=1000)
        (summary,) = [r for r in runs if r.data.tags.get("summary") == "true"]
        assert summary.info.status == "FINISHED"
        assert summary.info.artifact_uri.startswith("mlflow-artifacts:")  # proxied, not a client-side path
        children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == summary.info.run_id]
        assert {r.data.tags["stage"] for r in children} == attacks | {"train_target"}
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
