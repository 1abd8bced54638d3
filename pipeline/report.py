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


def build_table(utility: dict[str, dict], attacks: dict[str, dict]) -> dict[str, dict[str, Any]]:
    """Rows keyed by target ("undefended" first, then each defense)."""
    return {name: {**utility[name], "attacks": attacks[name]} for name in utility}


HEADLINE = ("auc", "advantage", "tpr_at_1pct_fpr", "tpr_at_0.1pct_fpr")


def headline_metrics(table: dict[str, dict[str, Any]]) -> dict[str, float | None]:
    """The summary run's metrics: utility and strongest attack per target, headline numbers per attack."""
    out: dict[str, float | None] = {}
    for name, row in table.items():
        out[f"{name}.test_accuracy"] = row["test_accuracy"]
        out[f"{name}.generalization_gap"] = row["generalization_gap"]
        out[f"{name}.max_auc"] = strongest(row, "auc")[1]
        out[f"{name}.max_tpr_at_1pct_fpr"] = strongest(row, "tpr_at_1pct_fpr")[1]
        for attack, values in row["attacks"].items():
            out.update({f"{name}.{attack}.{key}": values.get(key) for key in HEADLINE})
    return out


def strongest(row: dict[str, Any], key: str) -> tuple[str, float | None]:
    """The attack with the highest `key` on this target, and that value."""
    best = [(v[key], n) for n, v in row["attacks"].items() if v.get(key) is not None]
    if not best:
        return "-", None
    value, name = max(best)
    return name, value


def frontier_csv(table: dict[str, dict[str, Any]]) -> str:
    """One row per target: utility against the strongest attack, for a DVC scatter plot."""
    lines = ["target,test_accuracy,max_auc,max_tpr_at_1pct_fpr"]
    for name, row in table.items():
        auc, tpr = strongest(row, "auc")[1], strongest(row, "tpr_at_1pct_fpr")[1]
        lines.append(f"{name},{row['test_accuracy']:.6g},{_csv(auc)},{_csv(tpr)}")
    return "\n".join(lines) + "\n"


def _csv(value: float | None) -> str:
    return "" if value is None else f"{value:.6g}"


def _cell(value: Any) -> str:
    if value is None:
        return "n/m"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def _markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


DETAIL = ("auc", "advantage", "balanced_accuracy", "ppv", "tpr_at_1pct_fpr", "tpr_at_0.1pct_fpr", "epsilon_lb")


def markdown(table: dict[str, dict[str, Any]], context: dict[str, Any], exposed: list[dict]) -> str:
    """The report as Markdown: setup, threat model, summary, every attack, exposed points, figures."""
    lines = [
        "# Membership-inference audit",
        "",
        f"Dataset `{context['dataset']}`: {context['n_members']} members train the target, "
        f"{context['n_members']} non-members are held out, {context['n_test']} test points measure utility, "
        f"and the attacker's {context['n_shadow_pool']}-point shadow pool is disjoint from all of them. "
        f"{context['n_shadows']} shadow models train on halves of the pool with the target's recipe; "
        f"{context['n_reference']} reference models (online attacks only) on halves of the candidates plus the pool.",
        "",
        "**Threat model.** The attacker can query the target and see its full output vector "
        "(label-only attacks: the label only), knows the architecture and training recipe "
        + ("and the defense (adaptive evaluation: its shadows are trained with it)" if context["adaptive"] else
           "but not the defense (non-adaptive: undefended shadows)")
        + ", and holds data from the same distribution, disjoint from the target's. Offline attacks "
        "never see the candidate records during training; online LiRA assumes the attacker also holds "
        "the candidate records (not their membership) and trains reference models on them. Every "
        "threshold and attack model is fit on shadow or reference models only; every number below "
        "is measured on the target's own members and non-members.",
        "",
        "## Summary",
        "",
        "The strongest attack on each target, by AUC and by TPR at 1% FPR. "
        "n/m = not measurable: too few non-members for that false-positive rate.",
        "",
    ]
    rows = []
    for name, row in table.items():
        by_auc, auc = strongest(row, "auc")
        by_tpr, tpr = strongest(row, "tpr_at_1pct_fpr")
        rows.append([name, _cell(row["test_accuracy"]), _cell(row["generalization_gap"]),
                     f"{_cell(auc)} ({by_auc})", f"{_cell(tpr)} ({by_tpr})"])
    lines += _markdown_table(["target", "test acc", "gap", "max AUC", "max TPR@1%FPR"], rows)
    lines += ["", "## Every attack on every target", ""]
    rows = [
        [name, attack] + [_cell(values.get(key)) for key in DETAIL]
        for name, row in table.items()
        for attack, values in row["attacks"].items()
    ]
    lines += _markdown_table(
        ["target", "attack", "AUC", "advantage", "bal. acc", "PPV", "TPR@1%", "TPR@0.1%", "eps lower bd"], rows
    )
    lines += dp_section(table)
    if exposed:
        lines += [
            "",
            f"## Most exposed training points (undefended target, {context['exposed_by']})",
            "",
            "Members the attack scores highest; `FPR at score` is the share of non-members scoring "
            "at least as high, i.e. the false alarms an attacker pays to flag that point.",
            "",
        ]
        lines += _markdown_table(
            ["dataset index", "class", "score", "FPR at score"],
            [[str(r["index"]), str(r["label"]), f"{r['score']:.3g}", _cell(r["fpr_at_score"])] for r in exposed],
        )
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


def dp_section(table: dict[str, dict[str, Any]]) -> list[str]:
    """Accounted epsilon beside the empirical lower bound for every DP-trained target.

    An attack operating point that breaks the accounted guarantee beyond
    sampling error is flagged loudly: it can only come from a bug.
    """
    rows, broken = [], []
    for name, row in table.items():
        if "dp_epsilon" not in row:
            continue
        attack, bound = strongest(row, "epsilon_lb")
        violations = sum(v.get("dp_violations") or 0 for v in row["attacks"].values())
        if violations:
            broken.append(name)
        rows.append([
            name, f"{row['dp_epsilon']:.3g}", f"{row['dp_delta']:.1e}", f"{row['dp_noise_multiplier']:.3g}",
            f"{row['dp_clip_norm']:.3g}", f"{row['dp_sampling_rate']:.3g}", str(int(row["dp_steps"])),
            f"{_cell(bound)} ({attack})", str(violations),
        ])
    if not rows:
        return []
    lines = [
        "",
        "## Differential privacy: accounted against empirical epsilon",
        "",
        "The accountant's epsilon is an upper bound on what any attack can achieve; the empirical "
        "lower bound comes from the best attack's operating points (Clopper-Pearson 95% per point). "
        "It is the largest of many such bounds (every attack, every threshold) and is not corrected "
        "for that choice, so it is optimistic: read it as an indication, not as a 95% bound. "
        "`violations` counts ROC points with TPR > e^eps FPR + delta beyond sampling error.",
        "",
        "DP-SGD's Poisson sampling and noise here come from generators seeded by `seed` in "
        "params.yaml, so that runs reproduce. The guarantee assumes the noise is secret: a model "
        "meant for deployment must be trained with noise from a secure random source.",
        "",
    ]
    if broken:
        lines += [f"**WARNING: the DP guarantee is broken for {', '.join(broken)}. This means a bug "
                  "in the DP training or accounting; do not trust these epsilons.**", ""]
    return lines + _markdown_table(
        ["target", "accounted eps", "delta", "noise multiplier", "clip norm", "sampling rate", "steps",
         "empirical eps lower bound", "violations"],
        rows,
    )


def roc_figure(curves: dict[str, dict[str, np.ndarray]]) -> plt.Figure:
    """Log-log ROC panels, one per target (four to a row), one line per attack, chance dashed."""
    n = len(curves)
    cols = min(n, 4)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3.4 * rows + 0.9), squeeze=False, sharex=True, sharey=True)
    attacks = [name for name in next(iter(curves.values())) if name != "fpr"]
    colors = {name: plt.cm.tab20(i % 20) for i, name in enumerate(attacks)}
    for ax, (target, table) in zip(axes.flat, curves.items()):
        fpr = table["fpr"]
        for attack in attacks:
            ax.plot(fpr, np.maximum(table[attack], fpr[0] / 10), color=colors[attack], linewidth=1.2, label=attack)
        ax.plot(fpr, fpr, "k--", linewidth=0.8, label="chance")
        ax.set(xscale="log", yscale="log", title=target, xlim=(fpr[0], 1), ylim=(fpr[0] / 10, 1.05))
        ax.grid(True, which="both", alpha=0.3)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel("false-positive rate")
    for ax in axes[:, 0]:
        ax.set_ylabel("true-positive rate")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 5), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.75 / (3.4 * rows + 0.9), 1, 1))
    return fig


def privacy_utility_figure(table: dict[str, dict[str, Any]]) -> plt.Figure:
    """Test accuracy against the strongest attack's AUC and TPR at 1% FPR, one point per target."""
    fig, axes = plt.subplots(1, 2, figsize=(10.0, 4.2), sharey=True)
    for ax, key, label, chance in (
        (axes[0], "auc", "strongest attack's AUC (0.5 = no leakage)", 0.5),
        (axes[1], "tpr_at_1pct_fpr", "strongest attack's TPR at 1% FPR (0.01 = chance)", 0.01),
    ):
        for name, row in table.items():
            _, value = strongest(row, key)
            if value is None:
                continue
            ax.scatter([value], [row["test_accuracy"]], s=40)
            ax.annotate(name, (value, row["test_accuracy"]), textcoords="offset points", xytext=(5, 4), fontsize=8)
        ax.axvline(chance, color="k", linestyle="--", linewidth=0.8)
        ax.set(xlabel=label)
        ax.grid(True, alpha=0.3)
    axes[0].set_ylabel("test accuracy")
    fig.suptitle("Privacy-utility trade-off (up and left is better)")
    fig.tight_layout()
    return fig


def roc_csv(table: dict[str, np.ndarray]) -> str:
    """ROC points in long form (attack, fpr, tpr), the shape DVC's plot templates group by."""
    lines = ["attack,fpr,tpr"]
    for attack, tpr in table.items():
        if attack != "fpr":
            lines += [f"{attack},{f:.6g},{t:.6g}" for f, t in zip(table["fpr"], tpr)]
    return "\n".join(lines) + "\n"


def parse_roc_csv(text: str) -> dict[str, np.ndarray]:
    """Inverse of `roc_csv`: the wide table {"fpr": grid, attack: tpr, ...}."""
    rows = [line.split(",") for line in text.splitlines()[1:] if line]
    attacks = list(dict.fromkeys(row[0] for row in rows))
    table = {"fpr": np.array([float(r[1]) for r in rows if r[0] == attacks[0]])}
    for attack in attacks:
        table[attack] = np.array([float(r[2]) for r in rows if r[0] == attack])
    return table
