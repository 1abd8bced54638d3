"""Print the results table of the last run and how to open the MLflow UI.

Run by `make run` after `dvc repro`; reads `metrics/report.json`,
`metrics/prepare.json` for the CSV columns one-hot encoded, and
`metrics/recipes.json` for the recipe audit's answer: does dropout reduce
leakage here?
"""

from __future__ import annotations

import sys
import textwrap

from pipeline.core.errors import PipelineError
from pipeline.core.io import read_json
from pipeline.datasets.tabular import one_hot_summary
from pipeline.reporting.cells import with_interval
from pipeline.reporting.recipes import answer

COPY_MARGIN = 0.05  # a retrained copy's canary bound is shown only within this much test accuracy of the model


def canary_cell(row: dict, audited_model: str | None) -> str:
    """The canary audit's bound (and the accountant's epsilon), or why it is not shown.

    For a user's model audited as given, the canary run trains a copy of
    its architecture: its bound says so, and is left out when the copy's
    test accuracy is more than COPY_MARGIN from the model's own.
    """
    canary = row.get("canary_audit")
    if canary is None:
        return "-"
    if audited_model:
        if abs(canary["test_accuracy"] - row["test_accuracy"]) > COPY_MARGIN:
            return f"n/a (a copy, acc {canary['test_accuracy']:.3f})"
        return f"{canary['epsilon_lb']:.2f} (a copy, acc {canary['test_accuracy']:.3f})"
    cell = f"{canary['epsilon_lb']:.2f}"
    return cell + (f" ({canary['dp_epsilon']:.2f})" if "dp_epsilon" in canary else "")


def table_text(table: dict, audited_model: str | None = None) -> str:
    """One row per target: utility, and its headline attack (chosen on shadow data) with 95% intervals."""
    lines = [
        f"{'target':<18}{'test acc':>9}{'gap':>8}   {'headline attack':<20}{'AUC [95% CI]':<24}{'TPR@1%FPR [95% CI]':<24}"
        "canary eps >= (accounted)"
    ]
    for name, row in table.items():
        head = row["headline"]["metrics"]
        audit = canary_cell(row, audited_model if name == "undefended" else None)
        lines.append(
            f"{name:<18}{row['test_accuracy']:>9.3f}{row['generalization_gap']:>8.3f}   "
            f"{row['headline']['attack']:<20}{with_interval(head, 'auc'):<24}{with_interval(head, 'tpr_at_1pct_fpr'):<24}"
            f"{audit}"
        )
    return "\n".join(lines)


def main() -> None:
    try:
        table = read_json("metrics/report.json")
        prepared = read_json("metrics/prepare.json")
        one_hot = prepared.get("one_hot_encoded")
        comparison = read_json("metrics/recipes.json")
    except PipelineError as error:
        sys.exit(f"error: {error}")
    print()
    print(table_text(table, prepared.get("audited_model")))
    if one_hot:
        print(f"\none-hot encoded CSV columns: {one_hot_summary(one_hot)}")
    print("\n" + textwrap.fill(answer(comparison).replace("**", ""), width=110))
    print("\nheadline attack: chosen on shadow data before looking at the target; n/m = not measurable")
    print("canary eps: the one-run canary audit's epsilon lower bound (95%), beside the accountant's for DP")
    if prepared.get("audited_model"):
        print(f"  (for the given model, a retrained copy's; shown only within {COPY_MARGIN} of the model's test accuracy)")
    print("Every attack on every target: reports/report.md (every number: metrics/report.json, metrics/recipes.json)")
    print("Compare runs: make ui (it prints the link to the experiment's runs)")


if __name__ == "__main__":
    main()
