"""The privacy-utility report: one table of targets by utility and attacks, and figures.

Pure functions: they take the metrics the stages wrote and return a table,
Markdown text and matplotlib figures; the report stage writes them.
"""

from __future__ import annotations

from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

HEADLINE = ("auc", "advantage", "tpr_at_1pct_fpr", "tpr_at_0.1pct_fpr")
UTILITY = ("test_accuracy", "train_accuracy", "generalization_gap")


def build_table(utility: dict[str, dict], attacks: dict[str, dict]) -> dict[str, dict[str, Any]]:
    """Rows keyed by target ("undefended" first, then each defense)."""
    return {name: {**utility[name], "attacks": attacks[name]} for name in utility}


def strongest(row: dict[str, Any], key: str) -> tuple[str, float | None]:
    """The attack with the highest `key` on this target, and that value."""
    best = [(v[key], n) for n, v in row["attacks"].items() if v.get(key) is not None]
    if not best:
        return "-", None
    value, name = max(best)
    return name, value


def _cell(value: Any) -> str:
    if value is None:
        return "n/m"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def markdown(table: dict[str, dict[str, Any]], context: dict[str, Any]) -> str:
    """The report as Markdown: setup, threat model, the table, the figures."""
    attacks = list(next(iter(table.values()))["attacks"])
    lines = [
        "# Membership-inference audit",
        "",
        f"Dataset `{context['dataset']}`: {context['n_members']} members train the target, "
        f"{context['n_members']} non-members are held out, {context['n_test']} test points measure utility, "
        f"and the attacker's {context['n_shadow_pool']}-point shadow pool is disjoint from all of them. "
        f"{context['n_shadows']} shadow models, each trained on half of the pool with the target's recipe.",
        "",
        "**Threat model.** The attacker can query the target and see its full output vector "
        "(label-only attacks see the label only), knows the architecture and training recipe "
        + ("and the defense (adaptive evaluation: shadows trained with it)" if context["adaptive"] else
           "but not the defense (non-adaptive: undefended shadows)")
        + ", and holds data from the same distribution that is disjoint from the target's. Every "
        "threshold and attack model is fit on shadow data only; every number below is measured on "
        "the target's own members and non-members.",
        "",
        "## Results",
        "",
        "n/m = not measurable: too few non-members to estimate that false-positive rate.",
        "",
    ]
    header = ["target", "test acc", "gap"]
    for attack in attacks:
        header += [f"{attack} AUC", "adv", "TPR@1%", "TPR@0.1%"]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "---|" * len(header))
    for name, row in table.items():
        cells = [name, _cell(row["test_accuracy"]), _cell(row["generalization_gap"])]
        for attack in attacks:
            cells += [_cell(row["attacks"][attack].get(key)) for key in HEADLINE]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "## Figures",
        "",
        "![ROC curves on log-log axes](roc.png)",
        "",
        "![Privacy-utility trade-off](privacy_utility.png)",
        "",
    ]
    return "\n".join(lines)


def roc_figure(curves: dict[str, dict[str, np.ndarray]]) -> plt.Figure:
    """One log-log ROC panel per target, one line per attack, chance as a dashed line."""
    n = len(curves)
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 4.0), squeeze=False, sharey=True)
    for ax, (target, table) in zip(axes[0], curves.items()):
        fpr = table["fpr"]
        for attack, tpr in table.items():
            if attack != "fpr":
                ax.plot(fpr, np.maximum(tpr, fpr[0] / 10), label=attack)
        ax.plot(fpr, fpr, "k--", linewidth=0.8, label="chance")
        ax.set(xscale="log", yscale="log", xlabel="false-positive rate", title=target)
        ax.set_xlim(fpr[0], 1)
        ax.set_ylim(fpr[0] / 10, 1.05)
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel("true-positive rate")
    axes[0][-1].legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig


def privacy_utility_figure(table: dict[str, dict[str, Any]]) -> plt.Figure:
    """Test accuracy against each attack's AUC, one marker per target and attack."""
    fig, ax = plt.subplots(figsize=(6.0, 4.5))
    attacks = list(next(iter(table.values()))["attacks"])
    markers = "osD^v<>p*h"
    for i, attack in enumerate(attacks):
        xs = [row["attacks"][attack]["auc"] for row in table.values()]
        ys = [row["test_accuracy"] for row in table.values()]
        ax.scatter(xs, ys, marker=markers[i % len(markers)], label=attack)
    for name, row in table.items():
        _, auc = strongest(row, "auc")
        ax.annotate(name, (auc, row["test_accuracy"]), textcoords="offset points", xytext=(5, 4), fontsize=8)
    ax.axvline(0.5, color="k", linestyle="--", linewidth=0.8)
    ax.set(xlabel="attack AUC (0.5 = no leakage)", ylabel="test accuracy", title="Privacy-utility trade-off")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
