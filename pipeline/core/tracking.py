"""The only module that talks to MLflow.

By default runs go to an embedded SQLite store, `mlflow.db` in the project
root, with artifacts in `mlartifacts/`; `MLFLOW_TRACKING_URI` points them
at a tracking server instead. A stage that DVC runs in a temporary copy
(`dvc exp run --queue` or `--temp`) logs to the original project's store.
Each stage logs one run; the report stage's run is the summary that the
other stage runs are nested under.

Logging is cheap: a stage's metrics and dataset inputs are held and
written in one batch each when its run ends (before the stage exits, so
the run is complete whatever the ending), and MLflow's usage telemetry is
off unless `MLFLOW_DISABLE_TELEMETRY` says otherwise (its exit handler
waits on a network request). Every MLflow call counts as tracking time in
`pipeline.core.timings`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import subprocess
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.core.io import rounded
from pipeline.core.processes import StageInterrupted, pid_alive
from pipeline.core.timings import spent

PARENT_TAG = "mlflow.parentRunId"
PID_TAG, HOST_TAG = "pid", "host"
NOTE_TAG = "mlflow.note.content"  # the run's description, a Markdown block on its page in the UI
STAGE_RUNS_TAG, STAGE_RUNS_FILE = "stage_runs", "stage_runs.json"
# MLflow 3's experiment kind: "custom_model_development" makes the UI treat the
# experiment as classic model training rather than a GenAI app.
EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND = "mlflow.experimentKind", "custom_model_development"


def _store_root(root: Path) -> Path:
    """The project whose default store `root` logs to: DVC's `DVC_ROOT` when `root` is one of its temporary copies.

    Queued and `--temp` experiments run in `<project>/.dvc/tmp/exps/...`,
    which DVC deletes afterwards, with `DVC_ROOT` naming the project.
    """
    project = os.environ.get("DVC_ROOT")
    if project and root.resolve().is_relative_to((Path(project) / ".dvc" / "tmp").resolve()):
        return Path(project).resolve()
    return root.resolve()


def tracking_uri(root: Path) -> str:
    """`MLFLOW_TRACKING_URI` if set, else the SQLite file in the project root (the original one for a DVC copy)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{_store_root(root) / 'mlflow.db'}"


def _git_commit(root: Path) -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"


def _store_lock(root: Path) -> contextlib.AbstractContextManager:
    """A lock held while a stage opens the SQLite store, else nothing.

    Queued experiments (`dvc queue start --jobs 2`) start their first
    stages together: on a new store, two processes creating its tables at
    once make one fail (`duplicate column name`), and two creating the
    experiment make one fail. A tracking server handles its own writers.
    """
    uri = tracking_uri(root)
    if not uri.startswith("sqlite:///"):
        return contextlib.nullcontext()
    from filelock import FileLock

    return FileLock(uri.removeprefix("sqlite:///") + ".lock")


def _connect(experiment: str, root: Path) -> str:
    """Point MLflow at the store and return the experiment's id, creating it once as a model-training experiment.

    An experiment created earlier without the kind tag gets it here.
    """
    logging.getLogger("mlflow").setLevel(logging.WARNING)  # e.g. "Creating initial MLflow database tables"
    with _store_lock(root):
        return _open_experiment(experiment, root)


def _open_experiment(experiment: str, root: Path) -> str:
    import mlflow

    mlflow.set_tracking_uri(tracking_uri(root))
    found = mlflow.get_experiment_by_name(experiment)
    if found is not None:
        if found.tags.get(EXPERIMENT_KIND_TAG) != MODEL_TRAINING_KIND:
            mlflow.MlflowClient().set_experiment_tag(found.experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND)
        return found.experiment_id
    location = None
    if tracking_uri(root).startswith("sqlite:"):
        location = (_store_root(root) / "mlartifacts").as_uri()
    return mlflow.create_experiment(
        experiment, artifact_location=location, tags={EXPERIMENT_KIND_TAG: MODEL_TRAINING_KIND}
    )


def experiment_runs_url(experiment: str, root: Path, base_url: str) -> str:
    """The UI's address of the experiment's training runs (the experiment is created if missing)."""
    return f"{base_url.rstrip('/')}/#/experiments/{_connect(experiment, root)}/runs"


class StageRun:
    """Logging helpers bound to one active MLflow run; metrics and dataset inputs wait for `flush`."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self._metrics: list[Any] = []
        self._datasets: list[Any] = []

    def log_params(self, params: dict[str, Any]) -> None:
        import mlflow

        with spent("tracking"):
            mlflow.log_params({k: str(v) for k, v in params.items()})

    def describe(self, markdown: str) -> None:
        """The run's description: the Markdown block the UI shows on the run's page, above its metrics and params."""
        import mlflow

        with spent("tracking"):
            mlflow.MlflowClient().set_tag(self.run_id, NOTE_TAG, markdown)

    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        """Log the numeric entries; None ("not measurable") is left out, not logged as 0."""
        numeric = {k: float(v) for k, v in rounded(metrics).items() if isinstance(v, (int, float)) and v is not None}
        self._hold_metrics([(key, value, step or 0) for key, value in numeric.items()])

    def log_history(self, history: dict[str, np.ndarray]) -> None:
        """Per-epoch curves: one metric per key, one step per epoch."""
        self._hold_metrics(
            [
                (key, rounded(float(value)), step)
                for key, values in history.items()
                for step, value in enumerate(np.asarray(values).reshape(-1))
            ]
        )

    def _hold_metrics(self, values: list[tuple[str, float, int]]) -> None:
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        self._metrics.extend(Metric(key, value, stamp, step) for key, value, step in values)

    def flush(self) -> None:
        """Write the held metrics and dataset inputs, one batch each."""
        import mlflow

        with spent("tracking"):
            if self._metrics:
                mlflow.MlflowClient().log_batch(self.run_id, metrics=self._metrics)
            if self._datasets:
                mlflow.MlflowClient().log_inputs(self.run_id, datasets=self._datasets)
        self._metrics, self._datasets = [], []

    def log_figure(self, figure: Any, name: str) -> None:
        import mlflow

        with spent("tracking"):
            mlflow.log_figure(figure, name)

    def log_table(self, columns: dict[str, list[Any]], name: str) -> None:
        """A table artifact (JSON, columns of equal length) that the UI shows and filters."""
        import mlflow

        with spent("tracking"):
            mlflow.log_table(data=columns, artifact_file=name)

    def log_artifact(self, path: str | Path, folder: str | None = None) -> None:
        import mlflow

        with spent("tracking"):
            mlflow.log_artifact(str(path), artifact_path=folder)

    def log_dataset(self, x: np.ndarray, y: np.ndarray, name: str, source: str, context: str) -> None:
        """Record a dataset this stage consumed, shown as the run's input (its record is held, not the arrays)."""
        import mlflow.data
        from mlflow.entities import Dataset, DatasetInput, InputTag
        from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

        with spent("tracking"), warnings.catch_warnings():  # a local path matches two equivalent source types
            warnings.simplefilter("ignore", UserWarning)
            record = mlflow.data.from_numpy(x, targets=y, source=source, name=name).to_dict()
        fields = ("name", "digest", "source_type", "source", "schema", "profile")
        entity = Dataset(**{field: record.get(field) for field in fields})
        self._datasets.append(DatasetInput(entity, [InputTag(MLFLOW_DATASET_CONTEXT, context)]))

    def log_keras_model(self, model: Any, example: np.ndarray, requirements: list[str], name: str = "model") -> None:
        """Log a Keras model with its signature, `example` as its input example, and explicit pip `requirements`.

        It goes through MLflow's TensorFlow flavour, which stores the Keras
        model as is and loads back as a pyfunc: the Keras flavour (MLflow
        3.17 and 3.18) fails to save an input example (it writes the file
        before creating the model folder; mlflow/mlflow#16183). Giving the
        requirements skips MLflow's inference of them, which costs seconds
        per call.
        """
        import mlflow.tensorflow
        from mlflow.models import infer_signature

        with spent("tracking"):
            signature = infer_signature(example, model.predict(example, verbose=0))
            mlflow.tensorflow.log_model(
                model, name=name, signature=signature, input_example=example, pip_requirements=requirements
            )


@contextlib.contextmanager
def stage_run(
    stage: str,
    experiment: str,
    root: Path,
    params: dict[str, Any],
    run_name: str | None = None,
    tags: dict[str, str] | None = None,
) -> Iterator[StageRun]:
    """Open the run for one stage; it ends KILLED if the stage is interrupted, FAILED if the body raises.

    Runs that a killed process left RUNNING are marked KILLED first. The
    held metrics and inputs are written before the run ends, whatever the ending.
    """
    with spent("tracking"):
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        import mlflow

        experiment_id = _connect(experiment, root)
        mark_orphans_killed(experiment_id)
        all_tags = {
            "stage": stage,
            "git_commit": _git_commit(root),
            PID_TAG: str(os.getpid()),
            HOST_TAG: socket.gethostname(),
            **(tags or {}),
        }
        if os.environ.get("DVC_EXP_NAME"):
            all_tags["dvc_experiment"] = os.environ["DVC_EXP_NAME"]
        run = mlflow.start_run(experiment_id=experiment_id, run_name=run_name or stage, tags=all_tags)
        handle = StageRun(run.info.run_id)
    status = "FINISHED"
    try:
        handle.log_params(params)
        yield handle
    except StageInterrupted:
        status = "KILLED"
        raise
    except BaseException:
        status = "FAILED"
        raise
    finally:
        try:
            handle.flush()
        finally:
            with spent("tracking"):
                mlflow.end_run(status=status)


def mark_orphans_killed(experiment_id: str) -> list[str]:
    """Mark KILLED the RUNNING runs of this host whose process is gone (killed with SIGKILL, say)."""
    import mlflow

    client = mlflow.MlflowClient()
    host = socket.gethostname().replace("'", "")
    running = client.search_runs(
        [experiment_id], filter_string=f"attributes.status = 'RUNNING' and tags.{HOST_TAG} = '{host}'", max_results=1000
    )
    orphans = [
        run.info.run_id
        for run in running
        if run.data.tags.get(PID_TAG, "").isdigit() and not pid_alive(int(run.data.tags[PID_TAG]))
    ]
    for run_id in orphans:
        client.set_terminated(run_id, status="KILLED")
    return orphans


def register_model(run_id: str, name: str, tags: dict[str, str]) -> str:
    """Register the Keras model logged by run `run_id` as `name` (once per run) and set `tags` on that version.

    A later `dvc repro` that reuses the same training run updates the tags
    of its version instead of adding a version. Returns the version.
    """
    import mlflow

    client = mlflow.MlflowClient()
    existing = [v for v in client.search_model_versions(f"name = '{name}'") if v.run_id == run_id]
    version = existing[0].version if existing else mlflow.register_model(f"runs:/{run_id}/model", name).version
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)
    return str(version)


def nest_stage_runs(summary_run_id: str, stage_runs: dict[str, str]) -> dict[str, str]:
    """Hang each stage run that has no parent yet under the summary run, and record the links in one place.

    Runs of stages DVC skipped already belong to an earlier summary; they
    are linked only by the summary's `stage_runs.json` artifact (stage ->
    run id and status) and its one `stage_runs` tag, which counts them, so
    the run page's tags stay readable. Returns stage -> "ran", "cached" or
    "missing".
    """
    import mlflow

    client = mlflow.MlflowClient()
    status = {}
    for stage, run_id in stage_runs.items():
        try:
            run = client.get_run(run_id)
        except mlflow.exceptions.MlflowException:
            status[stage] = "missing"
            continue
        if PARENT_TAG in run.data.tags:
            status[stage] = "cached"
        else:
            client.set_tag(run_id, PARENT_TAG, summary_run_id)
            status[stage] = "ran"
    links = {stage: {"run_id": run_id, "status": status[stage]} for stage, run_id in stage_runs.items()}
    client.log_dict(summary_run_id, links, STAGE_RUNS_FILE)
    counts = {state: list(status.values()).count(state) for state in ("ran", "cached", "missing")}
    summary = ", ".join(f"{count} {state}" for state, count in counts.items() if count)
    client.set_tag(summary_run_id, STAGE_RUNS_TAG, f"{len(status)} stage runs: {summary} (see {STAGE_RUNS_FILE})")
    return status
