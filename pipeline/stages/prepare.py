"""Stage `prepare`: load and check the dataset, write seeded disjoint splits.

Tabular features are standardised here, after the split, with statistics
of the shadow pool only (`data.standardized`).
"""

from __future__ import annotations

import numpy as np

from pipeline.data import load_dataset, make_splits, standardized
from pipeline.io import atomic_path, write_json
from pipeline.seeding import rng_for
from pipeline.stages.common import METRICS, PREPARED, ROOT, SPLIT_ROLES, ScopedParams, log_split_inputs, main, tracked

PARAMS = ("seed", "data", "mlflow.experiment")


def run(params: ScopedParams) -> None:
    with tracked("prepare", params) as run_log:
        dataset = load_dataset(params.data, ROOT)
        splits = make_splits(len(dataset.y), params.data, rng_for(params.seed, "splits"))
        dataset = standardized(dataset, splits.shadow_pool)
        summary = {
            "n_samples": int(len(dataset.y)),
            "n_classes": dataset.n_classes,
            "n_features": int(np.prod(dataset.x.shape[1:])),
            **{f"n_{role}": int(len(getattr(splits, role))) for role in SPLIT_ROLES},
            "standardized_on": "shadow_pool" if dataset.x.ndim == 2 else None,
        }
        with atomic_path(PREPARED) as out:
            out.mkdir()
            np.savez(out / "dataset.npz", x=dataset.x, y=dataset.y, n_classes=dataset.n_classes, name=dataset.name)
            np.savez(out / "splits.npz", **{role: getattr(splits, role) for role in SPLIT_ROLES})
        write_json(METRICS / "prepare.json", summary)
        run_log.log_metrics({key: value for key, value in summary.items() if isinstance(value, int)})
        run_log.log_dataset(dataset.x, dataset.y, dataset.name, params.data.path or params.data.dataset, "source")
        log_split_inputs(run_log, dataset, splits, SPLIT_ROLES)
        print(
            f"prepare: {dataset.name}, {summary['n_samples']} samples, {dataset.n_classes} classes -> "
            f"{summary['n_members']} members, {summary['n_nonmembers']} non-members, "
            f"{summary['n_test']} test, {summary['n_shadow_pool']} shadow pool"
        )


if __name__ == "__main__":
    main(run, PARAMS)
