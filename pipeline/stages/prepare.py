"""Stage `prepare`: load and check the dataset, write seeded disjoint splits.

Tabular features are standardised here, after the split, with statistics
of the shadow pool only (`data.standardized`). With `target.model` the
data stay as the model reads them, the members are the rows that trained
it, and the model file is checked against the data and copied into
data/prepared, so later stages depend on it through that folder. A
given model the batched trainer cannot rebuild is refused here, in
seconds, when a run defense needs that trainer (stage `validate` lists
them in data/validated/requirements.json), rather than after the attacker's
models have trained. CSV columns one-hot encoded are named in the printed
line, in metrics/prepare.json (`one_hot_encoded`) and as the MLflow run's
param `one_hot_encoded`.
"""

from __future__ import annotations

import shutil
from dataclasses import replace

import numpy as np

from pipeline.core.errors import PipelineError
from pipeline.core.io import atomic_path, read_json, write_json
from pipeline.core.seeding import rng_for
from pipeline.datasets.loaders import load_data, raw_file, validate_dataset
from pipeline.datasets.splits import make_splits, standardized
from pipeline.datasets.tabular import one_hot_summary
from pipeline.stages.common import (
    AUDITED_MODEL,
    METRICS,
    PREPARED,
    REQUIREMENTS,
    ROOT,
    SPLIT_ROLES,
    ScopedParams,
    log_split_inputs,
    main,
    tracked,
)

PARAMS = ("seed", "data", "target.model", "mlflow.experiment")


def refuse_unbuildable_defenses(batched: bool, audited: str) -> None:
    """Stop at once if a trained defense must retrain an architecture the batched trainer cannot rebuild."""
    needing = {key: names for key, names in read_json(REQUIREMENTS)["defenses_needing_the_batched_trainer"].items() if names}
    if needing and not batched:
        listed = " and ".join(f"{key}: {', '.join(names)}" for key, names in needing.items())
        raise PipelineError(
            f"{listed}: these defenses retrain the model with the project's batched trainer, which cannot rebuild "
            f"{audited}'s architecture (it covers the MLP and CNN of docs/your-data-and-model.md); list only output "
            "defenses (memguard, top_k, rounding, label_only) and ensemble in defense.run, and none in "
            "recipe_audit.dp_baseline, for this model"
        )


def run(params: ScopedParams) -> None:
    with tracked("prepare", params) as run_log:
        loaded = load_data(params.data, ROOT)
        dataset = loaded.dataset
        audited = params.target.model
        copies = None
        if audited is not None:  # TensorFlow is imported only to check a given model against its data
            from pipeline.training.user_model import (
                batched_design,
                check_fits,
                describe,
                load_model_file,
            )

            model_file = raw_file(audited, "target.model", ROOT)
            model = load_model_file(model_file, audited)
            dataset = replace(dataset, n_classes=check_fits(model, dataset, audited))
            validate_dataset(dataset, params.data, loaded.classes)
            copies = describe(model, dataset.n_classes)
            refuse_unbuildable_defenses(batched_design(model, dataset.n_classes) is not None, audited)
        splits = make_splits(len(dataset.y), params.data, rng_for(params.seed, "splits"), dataset.trained)
        if audited is None:  # a given model reads the features as it was trained on them
            dataset = standardized(dataset, splits.shadow_pool)
        summary = {
            "n_samples": int(len(dataset.y)),
            "n_classes": dataset.n_classes,
            "n_features": int(np.prod(dataset.x.shape[1:])),
            **{f"n_{role}": int(len(getattr(splits, role))) for role in SPLIT_ROLES},
            "standardized_on": "shadow_pool" if dataset.x.ndim == 2 and audited is None else None,
            "one_hot_encoded": loaded.one_hot,  # each CSV column one-hot encoded -> its number of 0/1 columns
        }
        if audited is not None:
            summary.update({"audited_model": audited, "attacker_models_train": copies})
        with atomic_path(PREPARED) as out:
            out.mkdir()
            np.savez(out / "dataset.npz", x=dataset.x, y=dataset.y, n_classes=dataset.n_classes, name=dataset.name)
            np.savez(out / "splits.npz", **{role: getattr(splits, role) for role in SPLIT_ROLES})
            if audited is not None:
                shutil.copyfile(model_file, out / AUDITED_MODEL.name)
        write_json(METRICS / "prepare.json", summary)
        run_log.log_metrics({key: value for key, value in summary.items() if isinstance(value, int)})
        run_log.log_params({"one_hot_encoded": one_hot_summary(loaded.one_hot)})
        run_log.log_dataset(dataset.x, dataset.y, dataset.name, params.data.path or params.data.dataset, "source")
        log_split_inputs(run_log, dataset, splits, SPLIT_ROLES)
        print(
            f"prepare: {dataset.name}, {summary['n_samples']} samples, {dataset.n_classes} classes -> "
            f"{summary['n_members']} members, {summary['n_nonmembers']} non-members, "
            f"{summary['n_test']} test, {summary['n_shadow_pool']} shadow pool"
            + (f"; one-hot encoded: {one_hot_summary(loaded.one_hot)}" if loaded.one_hot else "")
        )


if __name__ == "__main__":
    main(run, PARAMS)
