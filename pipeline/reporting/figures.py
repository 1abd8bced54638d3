"""The report's figures: log-log ROC panels, the privacy-utility trade-off, the canary audit's bounds."""

from __future__ import annotations

from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def highlighted_attacks(table: dict[str, dict[str, Any]]) -> dict[str, list[str]]:
    """Per target, the attacks worth a colour: the headline (chosen on shadows) and the post-hoc best ones."""
    out = {}
    for name, row in table.items():
        picks = [row["headline"]["attack"]] + [best["attack"] for best in row["headline"]["optimistic"].values()]
        out[name] = [attack for attack in dict.fromkeys(picks) if attack is not None]
    return out


def roc_figure(curves: dict[str, dict[str, np.ndarray]], highlight: dict[str, list[str]] | None = None) -> plt.Figure:
    """Log-log ROC panels, one per target (four to a row), one line per attack, chance dashed.

    With `highlight`, each panel colours only its target's listed attacks
    and draws the others thin and grey, so the strongest few stand out.
    """
    n = len(curves)
    cols = min(n, 4)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3.4 * rows + 0.9), squeeze=False, sharex=True, sharey=True)
    attacks = [name for name in next(iter(curves.values())) if name != "fpr"]
    colors = {name: plt.cm.tab20(i % 20) for i, name in enumerate(attacks)}
    if highlight is not None:  # few coloured attacks: distinct colours, the same on every panel
        picked = dict.fromkeys(attack for names in highlight.values() for attack in names)
        colors = {name: plt.cm.tab10(i % 10) for i, name in enumerate(picked)}
    for ax, (target, table) in zip(axes.flat, curves.items()):
        fpr = table["fpr"]
        shown = attacks if highlight is None else highlight.get(target, [])
        for attack in attacks:
            if attack in shown:
                style = {"color": colors[attack], "linewidth": 1.8 if highlight else 1.2, "label": attack, "zorder": 3}
            else:
                style = {"color": "0.6", "linewidth": 0.7, "alpha": 0.5, "label": "other attacks", "zorder": 2}
            ax.plot(fpr, np.maximum(table[attack], fpr[0] / 10), **style)
        ax.plot(fpr, fpr, "k--", linewidth=0.8, label="chance")
        ax.set(xscale="log", yscale="log", title=target, xlim=(fpr[0], 1), ylim=(fpr[0] / 10, 1.05))
        ax.grid(True, which="both", alpha=0.3)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel("false-positive rate")
    for ax in axes[:, 0]:
        ax.set_ylabel("true-positive rate")
    legend = {}
    for ax in axes.flat[:n]:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            legend.setdefault(label, handle)
    fig.legend(legend.values(), legend.keys(), loc="lower center", ncol=min(len(legend), 5), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.75 / (3.4 * rows + 0.9), 1, 1))
    return fig


def privacy_utility_figure(table: dict[str, dict[str, Any]]) -> plt.Figure:
    """Test accuracy against the headline attack's AUC and TPR at 1% FPR (95% intervals as bars), one point per target."""
    fig, axes = plt.subplots(1, 2, figsize=(10.0, 4.2), sharey=True)
    for ax, key, label, chance in (
        (axes[0], "auc", "headline attack's AUC (0.5 = no leakage)", 0.5),
        (axes[1], "tpr_at_1pct_fpr", "headline attack's TPR at 1% FPR (0.01 = chance)", 0.01),
    ):
        for name, row in table.items():
            m = row["headline"]["metrics"]
            value, low, high = m.get(key), m.get(f"{key}_ci_low"), m.get(f"{key}_ci_high")
            if value is None:
                continue
            error = None if low is None else [[value - low], [high - value]]
            ax.errorbar([value], [row["test_accuracy"]], xerr=error, fmt="o", markersize=6, capsize=3)
            ax.annotate(name, (value, row["test_accuracy"]), textcoords="offset points", xytext=(5, 4), fontsize=8)
        ax.axvline(chance, color="k", linestyle="--", linewidth=0.8)
        ax.set(xlabel=label)
        ax.grid(True, alpha=0.3)
    axes[0].set_ylabel("test accuracy")
    fig.suptitle("Privacy-utility trade-off (up and left is better; attack chosen on shadow data)")
    fig.tight_layout()
    return fig


def canary_figure(canaries: dict[str, dict[str, Any]]) -> plt.Figure:
    """The one-run bound against the number of guesses, per target and score; accounted epsilons dashed."""
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for i, (name, c) in enumerate(canaries.items()):
        color = plt.cm.tab10(i % 10)
        for score, style in (("white_box", "-"), ("black_box", ":")):
            if score in c:
                levels = c[score]["levels"]
                ax.plot([lv["k"] for lv in levels], [lv["epsilon_lb"] for lv in levels], style, marker="o",
                        color=color, label=f"{name}, {score.replace('_', '-')}")  # fmt: skip
        if "dp_epsilon" in c:
            ax.axhline(c["dp_epsilon"], color=color, linestyle="--", linewidth=0.9, label=f"{name}, accounted")
    ax.set(xscale="log", xlabel="guesses k (the rest abstain)", ylabel="epsilon lower bound (95%)")
    ax.set_title("One-run canary audit")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
