"""The MLflow experiment is a classic model-training one, and the UI link points at its runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.core.tracking import (
    EXPERIMENT_KIND_TAG,
    MODEL_TRAINING_KIND,
    experiment_runs_url,
)


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri


def test_a_new_experiment_is_created_as_model_training(tmp_path: Path, store: str) -> None:
    import mlflow

    url = experiment_runs_url("audit", tmp_path, "http://127.0.0.1:5000/")
    experiment = mlflow.MlflowClient(tracking_uri=store).get_experiment_by_name("audit")
    assert url == f"http://127.0.0.1:5000/#/experiments/{experiment.experiment_id}/runs"
    assert experiment.tags[EXPERIMENT_KIND_TAG] == MODEL_TRAINING_KIND == "custom_model_development"


def test_an_existing_experiment_is_tagged_on_the_next_run(tmp_path: Path, store: str) -> None:
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=store)
    experiment_id = client.create_experiment("older")
    client.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, "genai_development")
    experiment_runs_url("older", tmp_path, "http://127.0.0.1:5000")
    assert client.get_experiment(experiment_id).tags[EXPERIMENT_KIND_TAG] == MODEL_TRAINING_KIND
