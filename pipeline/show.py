"""Print the results table of the last run and how to open the MLflow UI.

Run by `make run` after `dvc repro`; reads only `metrics/report.json`.
"""

from __future__ import annotations

import sys

from pipeline.errors import PipelineError
from pipeline.io import read_json
from pipeline.report import HEADLINE, strongest

LABELS = {"auc": "AUC", "advantage": "adv", "tpr_at_1pct_fpr": "TPR@1%", "tpr_at_0.1pct_fpr": "TPR@0.1%"}


def table_text(table: dict) -> str:
    """A fixed-width table: one row per target, one row per attack under it."""
    lines = [f"{'target / attack':<34}{'test acc':>9}" + "".join(f"{LABELS[k]:>10}" for k in HEADLINE)]
    for name, row in table.items():
        best, _ = strongest(row, "auc")
        lines.append(f"{name:<34}{row['test_accuracy']:>9.3f}   (strongest by AUC: {best})")
        for attack, values in row["attacks"].items():
            cells = "".join(
                f"{'n/m' if values.get(k) is None else format(values[k], '.3f'):>10}" for k in HEADLINE
            )
            lines.append(f"  {attack:<32}{'':>9}{cells}")
    return "\n".join(lines)


def main() -> None:
    try:
        table = read_json("metrics/report.json")
    except PipelineError as error:
        sys.exit(f"error: {error}")
    print()
    print(table_text(table))
    print("\nn/m = not measurable (too few non-members for that false-positive rate)")
    print("Full report: reports/report.md   Compare runs: make ui, then open http://127.0.0.1:5000")


if __name__ == "__main__":
    main()
