"""A stage run's metrics and dataset inputs are held and written in one batch each, whatever the ending."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.core.tracking import stage_run


@pytest.fixture
def client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return mlflow.MlflowClient(tracking_uri=uri)


def log_everything(run: object) -> None:
    run.log_metrics({"auc": 0.123456789, "missing": None})
    run.log_metrics({"epsilon": 2.0}, step=3)
    run.log_history({"loss": np.array([1.0, 0.5])})
    run.log_dataset(np.zeros((4, 2)), np.zeros(4), "digits:members", "data/prepared", "members")


def test_a_finished_run_holds_every_metric_and_input(tmp_path: Path, client) -> None:
    with stage_run("train_attack", "e", tmp_path, {"seed": 42}) as run:
        log_everything(run)
        assert client.get_run(run.run_id).data.metrics == {}  # held until the run ends
    logged = client.get_run(run.run_id)
    assert logged.info.status == "FINISHED" and logged.data.params == {"seed": "42"}
    assert logged.data.metrics == {"auc": 0.123457, "epsilon": 2.0, "loss": 0.5}
    assert [m.step for m in client.get_metric_history(run.run_id, "loss")] == [0, 1]
    [dataset] = logged.inputs.dataset_inputs
    assert dataset.dataset.name == "digits:members" and dataset.tags[0].value == "members"


def test_a_failed_run_still_gets_what_was_logged(tmp_path: Path, client) -> None:
    with pytest.raises(RuntimeError), stage_run("train_attack", "e", tmp_path, {}) as run:
        log_everything(run)
        raise RuntimeError("the stage failed")
    logged = client.get_run(run.run_id)
    assert logged.info.status == "FAILED" and "auc" in logged.data.metrics and logged.inputs.dataset_inputs
