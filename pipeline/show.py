"""Print the results table of the last run and how to open the MLflow UI.

Run by `make run` after `dvc repro`; reads only `metrics/report.json`.
"""

from __future__ import annotations

import sys

from pipeline.errors import PipelineError
from pipeline.io import read_json
from pipeline.report import strongest


def table_text(table: dict) -> str:
    """One row per target: utility, and the strongest attack by AUC and by TPR at 1% FPR."""
    lines = [f"{'target':<28}{'test acc':>9}{'gap':>8}   {'max AUC (attack)':<30}max TPR@1%FPR (attack)"]
    for name, row in table.items():
        by_auc, auc = strongest(row, "auc")
        by_tpr, tpr = strongest(row, "tpr_at_1pct_fpr")
        lines.append(
            f"{name:<28}{row['test_accuracy']:>9.3f}{row['generalization_gap']:>8.3f}   "
            f"{_value(auc) + f' ({by_auc})':<30}{_value(tpr) + f' ({by_tpr})':<30}".rstrip()
        )
    return "\n".join(lines)


def _value(value: float | None) -> str:
    return "n/m" if value is None else f"{value:.3f}"


def main() -> None:
    try:
        table = read_json("metrics/report.json")
    except PipelineError as error:
        sys.exit(f"error: {error}")
    print()
    print(table_text(table))
    print("\nn/m = not measurable (too few non-members for that false-positive rate)")
    print("Every attack on every target: reports/report.md (or: .venv/bin/dvc metrics show)")
    print("Compare runs: make ui, then open http://127.0.0.1:5000")


if __name__ == "__main__":
    main()
