"""The results table: one row per target (utility, every attack, the headline) and its summaries for MLflow and DVC."""

from __future__ import annotations

from typing import Any

from pipeline.reporting.cells import cell, csv_number


def build_table(
    utility: dict[str, dict], attacks: dict[str, dict], headlines: dict[str, dict], canaries: dict[str, dict] | None = None
) -> dict[str, dict[str, Any]]:
    """Rows keyed by target ("undefended" first, then each defense): utility, every attack, the headline.

    A target with a one-run canary audit (`canaries`, by target) carries
    its summary as "canary_audit".
    """
    canaries = canaries or {}
    return {
        name: {**utility[name], "attacks": attacks[name], "headline": headlines[name]}
        | ({"canary_audit": canaries[name]} if name in canaries else {})
        for name in utility
    }


def headline_metrics(table: dict[str, dict[str, Any]]) -> dict[str, float | None]:
    """The summary run's few metrics per target: utility, the headline attack's AUC and TPR, epsilon where DP applies.

    Every attack's numbers go to the run's table artifact (`attack_rows`), not to metrics.
    """
    out: dict[str, float | None] = {}
    for name, row in table.items():
        head = row["headline"]
        out[f"{name}.test_accuracy"] = row["test_accuracy"]
        out[f"{name}.generalization_gap"] = row["generalization_gap"]
        out[f"{name}.headline_auc"] = head["metrics"]["auc"]
        out[f"{name}.headline_tpr_at_1pct_fpr"] = head["metrics"].get("tpr_at_1pct_fpr")
        if "dp_epsilon" in row:
            out[f"{name}.dp_epsilon"] = row["dp_epsilon"]
            out[f"{name}.epsilon_lower_bound"] = head["epsilon_lb_95"]
        if "canary_audit" in row:
            out[f"{name}.canary_epsilon_lb"] = row["canary_audit"]["epsilon_lb"]
    return out


def dvc_summary(table: dict[str, dict[str, Any]], recipes: dict[str, float | None]) -> dict[str, Any]:
    """The few figures DVC shows as metrics (`dvc exp show`), grouped by figure so each column name is short:
    `accuracy.<target>` (test accuracy), `auc.<target>` and `tpr_1pct.<target>` (the headline attack's AUC and
    TPR at 1% FPR), `canary_leak.<recipe>` (the recipe audit's canary leakage, `recipes`)."""
    return {
        "accuracy": {name: row["test_accuracy"] for name, row in table.items()},
        "auc": {name: row["headline"]["metrics"]["auc"] for name, row in table.items()},
        "tpr_1pct": {name: row["headline"]["metrics"].get("tpr_at_1pct_fpr") for name, row in table.items()},
        "canary_leak": recipes,
    }


def audit_tags(row: dict[str, Any]) -> dict[str, str]:
    """A target's audit headline as model-version tags: what a model owner sees beside the version."""
    head = row["headline"]
    tags = {
        "audit.headline_attack": head["attack"],
        "audit.headline_auc": cell(head["metrics"]["auc"]),
        "audit.headline_tpr_at_1pct_fpr": cell(head["metrics"].get("tpr_at_1pct_fpr")),
        "audit.test_accuracy": cell(row["test_accuracy"]),
    }
    if "dp_epsilon" in row:
        tags["audit.dp_epsilon"] = cell(row["dp_epsilon"])
        tags["audit.epsilon_lower_bound_95"] = cell(head["epsilon_lb_95"])
    return tags


def attack_rows(table: dict[str, dict[str, Any]]) -> dict[str, list[Any]]:
    """Every attack on every target as columns (target, attack, headline?, metrics...): an MLflow table."""
    keys = ("auc", "auc_ci_low", "auc_ci_high", "tpr_at_1pct_fpr", "tpr_at_1pct_fpr_ci_low", "tpr_at_1pct_fpr_ci_high",
            "tpr_at_lowest_fpr", "advantage", "balanced_accuracy", "epsilon_lb", "shadow_tpr_at_1pct_fpr")  # fmt: skip
    columns: dict[str, list[Any]] = {"target": [], "attack": [], "headline": [], **{key: [] for key in keys}}
    for name, row in table.items():
        for attack, values in row["attacks"].items():
            columns["target"].append(name)
            columns["attack"].append(attack)
            columns["headline"].append(attack == row["headline"]["attack"])
            for key in keys:
                columns[key].append(values.get(key))
    return columns


def frontier_csv(table: dict[str, dict[str, Any]]) -> str:
    """One row per target: utility against the headline attack (chosen on shadows), for a DVC scatter plot."""
    lines = ["target,test_accuracy,headline_auc,headline_tpr_at_1pct_fpr"]
    for name, row in table.items():
        head = row["headline"]["metrics"]
        lines.append(f"{name},{row['test_accuracy']:.6g},{csv_number(head['auc'])},{csv_number(head.get('tpr_at_1pct_fpr'))}")
    return "\n".join(lines) + "\n"
