"""The summary run's description in the MLflow UI: the headline table, the first thing its run page shows.

MLflow shows a long description collapsed to its first few lines ("Show
more"), so the table comes right after a one-line title.
"""

from __future__ import annotations

from typing import Any

from pipeline.reporting.cells import cell, markdown_table, with_interval


def run_description(table: dict[str, dict[str, Any]], answer: str) -> str:
    """Markdown: per target its test accuracy, headline attack (chosen on shadow data) with AUC and TPR at 1% FPR
    and their 95% intervals, the epsilon lower bound and, for a DP target, its accounted epsilon; then the recipe
    audit's one-sentence answer. The whole report is the run's `report.html` artifact."""
    rows = []
    for name, row in table.items():
        head = row["headline"]
        m = head["metrics"]
        accounted = cell(row.get("dp_epsilon")) if "dp_epsilon" in row else "-"
        rows.append([
            name, cell(row["test_accuracy"]), head["attack"], with_interval(m, "auc"),
            with_interval(m, "tpr_at_1pct_fpr"), cell(head["epsilon_lb_95"]), accounted,
        ])  # fmt: skip
    header = ["target", "test acc", "headline attack", "AUC", "TPR@1%FPR", "eps lower bd (95%)", "DP epsilon"]
    lines = [
        "**Membership-inference audit**",  # one line, so the collapsed description box still shows the table's rows
        "",
        *markdown_table(header, rows),
        "",
        "Each target's headline attack is chosen on shadow data; brackets are 95% bootstrap intervals; n/m: not "
        "measurable with this many non-members.",
        "",
        answer,
        "",
        "The full report is the artifact `report.html`; every attack's numbers are in `attacks_table.json`.",
    ]
    return "\n".join(lines)
