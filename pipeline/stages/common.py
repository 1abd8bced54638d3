"""What every stage shares: paths, loading prepared data, the tracked run.

Stages run from the project root (DVC's working directory), so every path
here is relative to it.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from pipeline.config import Params, flatten, load_params
from pipeline.errors import PipelineError
from pipeline.io import atomic_path, load_npz, write_json, write_npz
from pipeline.models import TrainedTarget
from pipeline.signals import SIGNAL_FIELDS
from pipeline.types import Dataset, Signals, Splits

ROOT = Path(".")
PREPARED = ROOT / "data" / "prepared"
RUNS = ROOT / "data" / "runs"
METRICS = ROOT / "metrics"
PLOTS = ROOT / "plots"
SHADOWS = ROOT / "data" / "shadows" / "signals.npz"
REFERENCE = ROOT / "data" / "reference" / "signals.npz"
SPLIT_ROLES = ("members", "nonmembers", "test", "shadow_pool", "defender_reference")


def load_prepared() -> tuple[Dataset, Splits]:
    """The dataset and splits written by the prepare stage."""
    data = load_npz(PREPARED / "dataset.npz", ("x", "y", "n_classes", "name"))
    splits = load_npz(PREPARED / "splits.npz", SPLIT_ROLES)
    dataset = Dataset(x=data["x"], y=data["y"], n_classes=int(data["n_classes"]), name=str(data["name"]))
    return dataset, Splits(**splits)


def stage_params(params: Params, scopes: tuple[str, ...]) -> dict[str, object]:
    """The flattened params under the given dotted prefixes (what a stage reads)."""
    return {
        key: value
        for key, value in flatten(params).items()
        if any(key == scope or key.startswith(scope + ".") for scope in scopes)
    }


@contextlib.contextmanager
def tracked(
    stage: str,
    params: Params,
    scopes: tuple[str, ...],
    run_file: Path | None = None,
    run_name: str | None = None,
    tags: dict[str, str] | None = None,
) -> Iterator:
    """The stage's MLflow run; on success its id goes to `run_file` (data/runs/<stage>.json)."""
    from pipeline.tracking import stage_run

    logged = stage_params(params, scopes)
    with stage_run(stage, params.mlflow.experiment, ROOT.resolve(), logged, run_name=run_name, tags=tags) as run:
        yield run
        write_json(run_file or RUNS / f"{stage}.json", {"stage": stage, "run_id": run.run_id})


def history_rows(history: dict[str, np.ndarray]) -> list[dict[str, float]]:
    """Per-epoch learning curves of one model as rows for a DVC plot."""
    epochs = len(next(iter(history.values())))
    return [{"epoch": e + 1, **{k: float(v[e]) for k, v in history.items()}} for e in range(epochs)]


def main(stage: Callable[[Params], None]) -> None:
    """Run a stage body; a user error prints one line and exits with status 1."""
    try:
        stage(load_params(ROOT / "params.yaml"))
    except PipelineError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)


def save_signals(path: Path, signals: Signals, **extra: np.ndarray) -> None:
    """Signals (and any extra arrays, such as logits on the candidates) as one .npz."""
    write_npz(path, **{field: getattr(signals, field) for field in SIGNAL_FIELDS}, **extra)


def load_signals(path: Path, extra: tuple[str, ...] = ()) -> tuple[Signals, dict[str, np.ndarray]]:
    """Inverse of `save_signals`: the signals and the named extra arrays."""
    arrays = load_npz(path, SIGNAL_FIELDS + extra)
    return Signals(**{field: arrays[field] for field in SIGNAL_FIELDS}), {key: arrays[key] for key in extra}


def load_shadows() -> tuple[Signals, np.ndarray, np.ndarray]:
    """The undefended shadows' signals on the pool, logits on the candidates, robustness on the pool."""
    signals, extra = load_signals(SHADOWS, ("candidate_logits", "robustness"))
    return signals, extra["candidate_logits"], extra["robustness"]


def save_target(folder: Path, target: TrainedTarget, run_log: object, metrics_file: Path, curves_file: Path) -> None:
    """Write the model, utility metrics and learning curves of a (defended) target, and log them."""
    with atomic_path(folder / "model.keras") as tmp:
        target.model.save(tmp)
    write_json(metrics_file, target.utility)
    write_json(curves_file, history_rows(target.history))
    run_log.log_metrics(target.utility)
    run_log.log_history(target.history)


def log_model(run_log: object, target: TrainedTarget, dataset: Dataset, splits: Splits) -> None:
    """Log the deployed Keras model with a signature and the members it was trained on."""
    run_log.log_keras_model(target.model, dataset.x[splits.members[:5]])
    run_log.log_dataset(dataset.x[splits.members], dataset.y[splits.members], f"{dataset.name}-members", "data/prepared", "training")
