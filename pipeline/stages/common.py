"""What every stage shares: paths, the params it may read, loading prepared data, the tracked run.

Stages run from the project root (DVC's working directory), so every path
here is relative to it. Nothing here imports TensorFlow or MLflow at import
time, so stages that never touch a model start fast.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel

from pipeline.config import Params, flatten, load_params
from pipeline.core.errors import PipelineError
from pipeline.core.io import (
    load_npz,
    staged_outputs,
    sweep_stale_temporaries,
    write_json,
    write_npz,
)
from pipeline.core.processes import StageInterrupted, interrupts_raise_stage_interrupted
from pipeline.core.signals import SIGNAL_FIELDS, target_signals
from pipeline.core.timings import process_age, record
from pipeline.core.types import Dataset, Signals, Splits

ROOT = Path(".")
PREPARED = ROOT / "data" / "prepared"
RUNS = ROOT / "data" / "runs"
METRICS = ROOT / "metrics"
PLOTS = ROOT / "plots"
REPORTS = ROOT / "reports"
TARGET = ROOT / "data" / "target"
SHADOWS = ROOT / "data" / "shadows" / "signals.npz"
REFERENCE = ROOT / "data" / "reference" / "signals.npz"
DEFENSES = ROOT / "data" / "defenses"
RECIPES = ROOT / "data" / "recipes"  # <recipe>/outputs.npz: the recipe audit's models' outputs on the design
VALIDATED = ROOT / "data" / "validated"
REQUIREMENTS = VALIDATED / "requirements.json"  # what the settings require of the data and model (stage validate)
VALIDATED_DEFENSES = VALIDATED / "defenses"  # <name>.json: each run defense's class, settings, code fingerprint
AUDITED_MODEL = PREPARED / "model.keras"  # target.model, copied by prepare so every stage reads one file
CUSTOM_OBJECTS = PREPARED / "custom_objects.py"  # target.custom_objects, copied by prepare beside the model
OUTPUTS_FILE = "outputs.npz"  # a trained target's candidate index (N,), logits (N, C) and robustness (S, 1, N)
ATTACK_DATASET_FILE = "attack_dataset.npz"
SPLIT_ROLES = ("members", "nonmembers", "test", "shadow_pool", "defender_reference")
OUTPUT_FOLDERS = (ROOT / "data", METRICS, PLOTS, REPORTS)
CHECK_PARAMS_ENV = "PIPELINE_CHECK_PARAMS"  # set: a stage fails if a declared param goes unread


class ScopedParams:
    """A read-only view of the params that lets a stage read only what it declares.

    `scopes` are the dotted keys the stage lists under `params:` in dvc.yaml.
    Reading a value outside them raises, so a stage cannot depend on a
    param DVC does not know it uses; every read is recorded, so a declared
    scope nobody reads can be found too (`unread_scopes`).
    """

    def __init__(
        self, root: Params, scopes: tuple[str, ...], path: str = "", value: Any = None, reads: set[str] | None = None
    ) -> None:
        self._root, self._scopes, self._path = root, scopes, path
        self._value = root if value is None else value
        self._reads = set() if reads is None else reads

    def _child(self, key: str, value: Any) -> Any:
        full = f"{self._path}.{key}" if self._path else key
        covering = [s for s in self._scopes if full == s or full.startswith(s + ".")]
        if covering:
            self._reads.update(covering)
            return value
        if any(s.startswith(full + ".") for s in self._scopes) and isinstance(value, (BaseModel, dict)):
            return ScopedParams(self._root, self._scopes, full, value, self._reads)
        raise PipelineError(f"this stage reads param {full!r}, which its params in dvc.yaml do not list")

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return self._child(name, getattr(self._value, name))

    def __getitem__(self, key: str) -> Any:
        return self._child(key, self._value[key])

    def unread_scopes(self) -> list[str]:
        """Declared scopes the stage never read."""
        return [s for s in self._scopes if s not in self._reads]

    def declared_values(self) -> dict[str, object]:
        """The flattened params under the declared scopes, as the stage's MLflow run logs them."""
        return {
            key: value
            for key, value in flatten(self._root).items()
            if any(key == scope or key.startswith(scope + ".") for scope in self._scopes)
        }

    def whole_file(self) -> Params:
        """Every param: for the params check (stage `validate`, which depends on the whole file) and the summary run's record."""
        return self._root


def main(stage: Callable[[ScopedParams], None], scopes: tuple[str, ...]) -> None:
    """Run a stage body on the params it declares, all its outputs written only if it succeeds.

    A user error prints one line and exits 1; SIGINT or SIGTERM fail the
    stage (exit 130 or 143) without recording anything. Temporaries that a
    killed earlier run left behind are removed first. With
    `PIPELINE_STAGE_TIMINGS` set, where the process's time went is written
    there (`pipeline.core.timings`).
    """
    startup = process_age()
    try:
        _run_stage(stage, scopes)
    finally:
        record("@".join([Path(sys.argv[0]).stem, *sys.argv[1:]]), startup)


def _run_stage(stage: Callable[[ScopedParams], None], scopes: tuple[str, ...]) -> None:
    try:
        with interrupts_raise_stage_interrupted():
            sweep_stale_temporaries(list(OUTPUT_FOLDERS))
            view = ScopedParams(load_params(ROOT / "params.yaml"), scopes)
            with staged_outputs():
                stage(view)
                unread = view.unread_scopes()
                if unread and os.environ.get(CHECK_PARAMS_ENV):
                    raise PipelineError(f"dvc.yaml lists params this stage never reads: {', '.join(unread)}")
    except PipelineError as error:
        for line in str(error).splitlines():
            print(f"error: {line}", file=sys.stderr)
        sys.exit(1)
    except StageInterrupted as interrupt:
        print(f"error: stage {interrupt}; nothing was recorded (run dvc repro again)", file=sys.stderr)
        sys.exit(interrupt.exit_code)


@contextlib.contextmanager
def tracked(
    stage: str,
    params: ScopedParams,
    run_file: Path | None = None,
    run_name: str | None = None,
    tags: dict[str, str] | None = None,
    logged: dict[str, object] | None = None,
) -> Iterator:
    """The stage's MLflow run, logging the params it declares (or `logged`).

    On success its id goes to `run_file` (data/runs/<stage>.json).
    """
    from pipeline.core.tracking import stage_run

    values = params.declared_values() if logged is None else logged
    with stage_run(stage, params.mlflow.experiment, ROOT.resolve(), values, run_name=run_name, tags=tags) as run:
        yield run
        write_json(run_file or RUNS / f"{stage}.json", {"stage": stage, "run_id": run.run_id})


def load_prepared() -> tuple[Dataset, Splits]:
    """The dataset and splits written by the prepare stage."""
    data = load_npz(PREPARED / "dataset.npz", ("x", "y", "n_classes", "name"))
    splits = load_npz(PREPARED / "splits.npz", SPLIT_ROLES)
    dataset = Dataset(x=data["x"], y=data["y"], n_classes=int(data["n_classes"]), name=str(data["name"]))
    return dataset, Splits(**splits)


ROLE_NAMES = {
    "members": "members",
    "nonmembers": "non-members",
    "test": "test",
    "shadow_pool": "attacker pool",
    "defender_reference": "defender reference",
    "candidates": "candidates (members and non-members)",
}


def log_split_inputs(run_log: object, dataset: Dataset, splits: Splits, roles: tuple[str, ...]) -> None:
    """Log each named split as an MLflow dataset input of the run, its role as the input's context.

    The UI's Datasets column and compare view then tell which data a run
    used, by name, digest and source (the prepared dataset).
    """
    for role in roles:
        index = getattr(splits, role)
        if len(index):
            run_log.log_dataset(
                dataset.x[index], dataset.y[index], f"{dataset.name}:{role}", str(PREPARED), ROLE_NAMES[role]
            )


def history_rows(history: dict[str, np.ndarray]) -> list[dict[str, float]]:
    """Per-epoch learning curves of one model as rows for a DVC plot (none for a model given as a file)."""
    epochs = len(next(iter(history.values()))) if history else 0
    return [{"epoch": e + 1, **{k: float(v[e]) for k, v in history.items()}} for e in range(epochs)]


def save_signals(path: Path, signals: Signals, **extra: np.ndarray) -> None:
    """Signals (and any extra arrays, such as logits on the candidates) as one .npz."""
    write_npz(path, **{field: getattr(signals, field) for field in SIGNAL_FIELDS}, **extra)


def load_signals(path: Path, extra: tuple[str, ...] = ()) -> tuple[Signals, dict[str, np.ndarray]]:
    """Inverse of `save_signals`: the signals and the named extra arrays."""
    arrays = load_npz(path, SIGNAL_FIELDS + extra)
    return Signals(**{field: arrays[field] for field in SIGNAL_FIELDS}), {key: arrays[key] for key in extra}


def load_target_outputs(folder: Path, dataset: Dataset, splits: Splits) -> tuple[Signals, np.ndarray]:
    """A trained target's signals on the candidates and its robustness, as its training stage saved them."""
    arrays = load_npz(folder / OUTPUTS_FILE, ("index", "candidate_logits", "robustness"))
    if not np.array_equal(arrays["index"], splits.candidates):
        raise PipelineError(f"{folder / OUTPUTS_FILE}: saved for other candidates than data/prepared's; run dvc repro")
    return target_signals(arrays["candidate_logits"], dataset, splits), arrays["robustness"]


def load_shadows() -> tuple[Signals, np.ndarray, np.ndarray]:
    """The undefended shadows' signals on the pool, logits on the candidates, robustness on the pool."""
    signals, extra = load_signals(SHADOWS, ("candidate_logits", "robustness"))
    return signals, extra["candidate_logits"], extra["robustness"]
