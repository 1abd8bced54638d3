"""What the training stages share: saving a trained target, its logged model and its outputs.

A training stage queries its models once for everything an attack may need
(logits on the candidates, label queries on perturbed copies) and saves it,
so attack stages read files and never load TensorFlow.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.config import ComputeParams, ModelParams
from pipeline.core.io import atomic_path, read_json, write_json, write_npz
from pipeline.core.tf_runtime import keras, tf
from pipeline.core.types import Dataset, Splits
from pipeline.defenses.base import Defense, load_class, train_undefended
from pipeline.stack import Architecture, Recipe
from pipeline.stages.common import (
    AUDITED_MODEL,
    CUSTOM_OBJECTS,
    OUTPUTS_FILE,
    VALIDATED_DEFENSES,
    history_rows,
    log_split_inputs,
)
from pipeline.training.attacker import ModelSet, robustness_signal
from pipeline.training.target import TrainedTarget, architecture_for, recipe_for
from pipeline.training.user_model import design, load_model_file


def save_target(folder: Path, target: TrainedTarget, run_log: object, metrics_file: Path, curves_file: Path) -> None:
    """Write the model, utility metrics and learning curves of a (defended) target, and log them."""
    with atomic_path(folder / "model.keras") as tmp:
        target.model.save(tmp)
    write_json(metrics_file, target.utility)
    write_json(curves_file, history_rows(target.history))
    run_log.log_metrics(target.utility)
    run_log.log_history(target.history)


def query_target(target: TrainedTarget, dataset: Dataset, splits: Splits, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """What the target releases on the candidates (N, C), and its robustness on their perturbed copies (S, 1, N)."""
    candidates = splits.candidates
    return target.observe(dataset.x[candidates]), robustness_signal(target.defended.observe, dataset, candidates, seed)


def save_target_outputs(folder: Path, target: TrainedTarget, dataset: Dataset, splits: Splits, seed: int) -> None:
    """`query_target`'s outputs, with the candidates they are on."""
    logits, robustness = query_target(target, dataset, splits, seed)
    write_npz(folder / OUTPUTS_FILE, index=splits.candidates, candidate_logits=logits, robustness=robustness)


def load_defense(name: str) -> Defense:
    """Run defense `name` as stage `validate` resolved it: its class and settings (data/validated/defenses/<name>.json)."""
    record = read_json(VALIDATED_DEFENSES / f"{name}.json")
    return load_class(record["entry"]).model_validate(record["settings"])


TARGET_ROLES = ("members", "test", "defender_reference")  # what a target's training reads


def log_model(run_log: object, target: TrainedTarget, dataset: Dataset, splits: Splits) -> None:
    """Log the deployed Keras model with a signature, and the data it was trained and measured on."""
    requirements = [f"tensorflow=={tf.__version__}", f"keras=={keras.__version__}"]
    run_log.log_keras_model(target.model, dataset.x[splits.members[:5]], requirements)
    log_split_inputs(run_log, dataset, splits, TARGET_ROLES)


def audited_model(target: ModelParams) -> keras.Model:
    """The user's model (target.model) as prepare copied it, its custom objects registered first."""
    return load_model_file(AUDITED_MODEL, target.model, CUSTOM_OBJECTS if target.custom_objects else None)


def target_design(dataset: Dataset, target: ModelParams) -> tuple[Architecture, Recipe]:
    """The target's architecture and training recipe: from params, or copied from the audited model."""
    if target.model is None:
        return architecture_for(dataset, target), recipe_for(target)
    return design(audited_model(target), dataset, target)


def undefended_models(
    dataset: Dataset, target: ModelParams, n_models: int, seed: int, tag: str, compute: ComputeParams
) -> ModelSet:
    """K attacker models with the target's architecture and recipe, trained without a defense, where `compute` says."""
    return ModelSet(*target_design(dataset, target), train_undefended, n_models, seed, tag, compute)
