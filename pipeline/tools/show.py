"""Print the results table of the last run and how to open the MLflow UI.

Run by `make run` after `dvc repro`; reads `metrics/report.json`, and
`metrics/prepare.json` for the CSV columns one-hot encoded.
"""

from __future__ import annotations

import sys

from pipeline.core.errors import PipelineError
from pipeline.core.io import read_json
from pipeline.datasets.tabular import one_hot_summary
from pipeline.reporting.cells import with_interval


def table_text(table: dict) -> str:
    """One row per target: utility, and its headline attack (chosen on shadow data) with 95% intervals."""
    lines = [
        f"{'target':<18}{'test acc':>9}{'gap':>8}   {'headline attack':<20}{'AUC [95% CI]':<24}{'TPR@1%FPR [95% CI]':<24}"
        "canary eps >= (accounted)"
    ]
    for name, row in table.items():
        head = row["headline"]["metrics"]
        canary = row.get("canary_audit")
        audit = "-" if canary is None else f"{canary['epsilon_lb']:.2f}"
        if canary is not None and "dp_epsilon" in canary:
            audit += f" ({canary['dp_epsilon']:.2f})"
        lines.append(
            f"{name:<18}{row['test_accuracy']:>9.3f}{row['generalization_gap']:>8.3f}   "
            f"{row['headline']['attack']:<20}{with_interval(head, 'auc'):<24}{with_interval(head, 'tpr_at_1pct_fpr'):<24}"
            f"{audit}"
        )
    return "\n".join(lines)


def main() -> None:
    try:
        table = read_json("metrics/report.json")
        one_hot = read_json("metrics/prepare.json").get("one_hot_encoded")
    except PipelineError as error:
        sys.exit(f"error: {error}")
    print()
    print(table_text(table))
    if one_hot:
        print(f"\none-hot encoded CSV columns: {one_hot_summary(one_hot)}")
    print("\nheadline attack: chosen on shadow data before looking at the target; n/m = not measurable")
    print("canary eps: the one-run canary audit's epsilon lower bound (95%), beside the accountant's for DP")
    print("Every attack on every target: reports/report.md (or: .venv/bin/dvc metrics show)")
    print("Compare runs: make ui (it prints the link to the experiment's runs)")


if __name__ == "__main__":
    main()
