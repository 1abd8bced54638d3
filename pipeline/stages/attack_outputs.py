"""Writing one target's attack results: metrics, ROC curves, per-point scores.

Shared by `train_attack` (the undefended target) and `attack_defense@<name>`, so
every row of the report is written the same way.
"""

from __future__ import annotations

import sys
from pathlib import Path

from pipeline.attacks.audit import Audit, dp_violation_counts
from pipeline.core.io import write_json, write_npz, write_text
from pipeline.core.types import AttackInput
from pipeline.measures.roc_grid import roc_csv, roc_on_grid
from pipeline.stages.common import PLOTS

PRINTED = ("auc", "advantage", "tpr_at_1pct_fpr", "tpr_at_lowest_fpr")  # each attack's line in the stage's output


def record_audit(
    target_name: str,
    audit: Audit,
    data: AttackInput,
    run_log: object,
    metrics_file: Path,
    scores_file: Path | None,
    dp_guarantee: tuple[float, float] | None = None,
) -> dict:
    """Write and log one target's attack metrics, ROC curves and (if `scores_file`) per-point scores.

    For a DP-trained target, `dp_guarantee` = (epsilon, delta) adds each
    attack's count of ROC points that break the guarantee beyond sampling
    error (`dp_violations`); any count above 0 means a bug.
    """
    metrics = audit.metrics_dict()
    if dp_guarantee is not None:
        for name, count in dp_violation_counts(audit, *dp_guarantee).items():
            metrics[name]["dp_violations"] = count
            if count:
                print(f"WARNING: {name} breaks the DP guarantee at {count} ROC point(s): this means a bug", file=sys.stderr)
    write_json(metrics_file, metrics)
    table = roc_on_grid(audit.results)
    write_text(PLOTS / "roc" / f"{target_name}.csv", roc_csv(table))
    if scores_file is not None:
        write_npz(
            scores_file,
            index=data.target.index,
            labels=data.target.labels,
            is_member=data.target.keep[0],
            **{name: result.target.scores for name, result in audit.results.items()},
        )
    for name, values in metrics.items():
        run_log.log_metrics({f"{name}.{key}": value for key, value in values.items()})
    for name, values in metrics.items():
        print(f"  {target_name} / {name}: " + ", ".join(f"{k} {_fmt(values.get(k))}" for k in PRINTED))
    return metrics


def _fmt(value: object) -> str:
    if value is None:
        return "not measurable"
    return f"{value:.3f}" if isinstance(value, float) else str(value)
