"""The report's opening section, "Which recipe leaks less", and its figure, from metrics/recipes.json.

It answers the question a defense evaluation asks: does this defense
reduce leakage, by how much, at what accuracy cost, and does a tuned
DP-SGD setting do better? The numbers come from the recipe audit
(`pipeline.recipes.comparison`); this module only words and draws them.
"""

from __future__ import annotations

from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from pipeline.reporting.cells import markdown_table  # noqa: E402

VERDICTS = {
    "dp_leaks_less": "beaten: DP-SGD ({settings}) is as accurate and leaks less on the canaries",
    "dp_leaks_more": "not beaten: every DP-SGD setting as accurate ({settings}) leaks more on the canaries",
    "undecided": "undecided: the canary intervals of the DP-SGD settings as accurate ({settings}) overlap its",
    "no_dp_as_accurate": "no DP-SGD setting of the baseline is as accurate",
}


def estimate(values: dict[str, Any] | None) -> str:
    """"0.291 [0.149, 0.349]", or "n/m" when not measurable."""
    if not values or values.get("value") is None:
        return "n/m"
    return f"{values['value']:.3f} [{values['low']:.3f}, {values['high']:.3f}]"


def _signed(values: dict[str, Any] | None) -> str:
    if not values or values.get("value") is None:
        return "n/m"
    mark = " *" if values.get("excludes_zero") else ""
    return f"{values['value']:+.3f} [{values['low']:+.3f}, {values['high']:+.3f}]{mark}"


def level_label(metric: str | None) -> str:
    """"TPR@0.1%FPR" for "tpr_at_0.1pct_fpr"."""
    if metric is None:
        return "n/m"
    return "TPR@" + metric.removeprefix("tpr_at_").replace("pct_fpr", "%FPR")


def answer(comparison: dict[str, Any], defense: str = "dropout") -> str:
    """One sentence: does `defense` reduce the headline attack's canary leakage here, and by how much?"""
    rows, key = comparison["recipes"], comparison["leakage_metric"]
    if defense not in rows or key is None:
        return f"{defense} is not among this run's recipes, or the canaries measure no low FPR: no answer for it."
    head = comparison["headline_attack"]
    base, row = rows["undefended"], rows[defense]
    before = base["attacks"][head]["canaries"][key]["value"]
    after = row["attacks"][head]["canaries"][key]["value"]
    gap = row["difference_from_undefended"]["canaries"][key]
    if not gap.get("excludes_zero"):
        verdict = f"Not measurably: {defense} does not change canary leakage beyond noise on this data"
    elif gap["value"] < 0:
        verdict = f"Yes: {defense} reduces canary leakage on this data"
    else:
        verdict = f"No: {defense} increases canary leakage on this data"
    return (
        f"**Does {defense} reduce leakage?** {verdict}. Over {comparison['n_models']} models per recipe, "
        f"{head}'s {level_label(key)} on the canaries is {before:.3f} undefended and {after:.3f} with {defense}, "
        f"a paired difference of {_signed(gap)}, at a test-accuracy change of {row['test_accuracy_difference']:+.3f}."
    )


def section(comparison: dict[str, Any]) -> list[str]:
    """The Markdown section: the question answered, the method in brief, the table, the verdicts against DP-SGD."""
    rows, key, head = comparison["recipes"], comparison["leakage_metric"], comparison["headline_attack"]
    pop_levels = [name for name in next(iter(rows.values()))["attacks"][head]["population"] if name != "auc"]
    table = []
    for name, row in rows.items():
        attack = row["attacks"][head]
        acc = row["test_accuracy"]
        gap = row.get("difference_from_undefended", {}).get("canaries", {}).get(key) if key else None
        verdict = row.get("against_dp_frontier")
        table.append([
            name + (f" (DP-SGD, eps {row['info']['dp_epsilon']:.3g})" if row["dp"] else ""),
            f"{acc['mean']:.3f} [{acc['low']:.3f}, {acc['high']:.3f}]",
            estimate(attack["population"]["auc"]),
            *(estimate(attack["population"][level]) for level in pop_levels),
            estimate(attack["canaries"].get("tpr_at_1pct_fpr")),
            estimate(attack["canaries"].get(key)) if key else "n/m",
            "-" if name == "undefended" else _signed(gap),
            "-" if verdict is None else verdict["verdict"].replace("_", " "),
        ])  # fmt: skip
    verdicts = [
        f"- **{name}**: " + VERDICTS[row["against_dp_frontier"]["verdict"]].format(
            settings=", ".join(row["against_dp_frontier"]["dp_settings"]) or "none"
        )
        for name, row in rows.items()
        if "against_dp_frontier" in row
    ]
    return [
        "## Which recipe leaks less",
        "",
        answer(comparison),
        "",
        f"Each recipe (the undefended training, each defense, and DP-SGD at several epsilons) trained "
        f"{comparison['n_models']} models on complementary halves of the {comparison['n_pool']} candidates plus "
        f"{comparison['n_canaries']} mislabeled canaries, the same halves for every recipe, so the comparisons are "
        f"paired. Each model in turn is the target and the other {comparison['n_models'] - 1} are its reference "
        f"models, trained with the same recipe (an adaptive attacker); the attack is {head}, fixed in advance. "
        "Decisions are pooled over the targets. Brackets: 95% intervals from a bootstrap that resamples whole "
        "models (each model's decisions are one cluster), widened for the number of models; the paired difference "
        "resamples the same models for both recipes (* where its interval excludes zero). n/m: not measurable, "
        "too few non-member decisions for that false-positive rate.",
        "",
        *markdown_table(
            ["recipe", "test acc (mean [min, max])", "AUC", *(level_label(level) for level in pop_levels),
             "canary TPR@1%FPR", f"canary {level_label(key)}", f"canary {level_label(key)} minus undefended",
             "against DP-SGD"],
            table,
        ),  # fmt: skip
        "",
        f"**Against the tuned DP-SGD baseline** (Aerni, Zhang and Tramer 2024): is some DP-SGD setting at least as "
        f"accurate (within {comparison['accuracy_tolerance']:g} of mean test accuracy) and leaking less on the "
        f"canaries ({head}'s {level_label(key)}, the 95% intervals apart)?",
        "",
        *(verdicts or ["- no DP-SGD recipe ran, so no comparison"]),
        "",
        "![Canary leakage against test accuracy, every recipe, the DP-SGD frontier drawn through its points](recipes.png)",
    ]


def figure(comparison: dict[str, Any]) -> plt.Figure:
    """Canary leakage (x, with its interval) against mean test accuracy (y), one point per recipe, DP-SGD joined."""
    rows, key, head = comparison["recipes"], comparison["leakage_metric"], comparison["headline_attack"]
    fig, ax = plt.subplots(figsize=(7.0, 4.6))
    dp = []
    for name, row in rows.items():
        leak = row["attacks"][head]["canaries"].get(key) if key else None
        if not leak or leak.get("value") is None:
            continue
        x, y = leak["value"], row["test_accuracy"]["mean"]
        color = "tab:blue" if row["dp"] else ("black" if name == "undefended" else "tab:orange")
        ax.errorbar([x], [y], xerr=[[x - leak["low"]], [leak["high"] - x]], fmt="o", color=color, capsize=3)
        ax.annotate(name, (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
        if row["dp"]:
            dp.append((row["info"].get("dp_epsilon", 0.0), x, y))
    if dp:
        _, xs, ys = zip(*sorted(dp))
        ax.plot(xs, ys, "-", color="tab:blue", linewidth=1, label="DP-SGD frontier (by epsilon)")
        ax.legend(fontsize=8, loc="lower right")
    ax.set(xlabel=f"canary {level_label(key)} of {head} (0 = no leakage)", ylabel="mean test accuracy")
    ax.set_title("Which recipe leaks less (up and left is better)")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    return fig


def canary_leakage(comparison: dict[str, Any]) -> dict[str, float | None]:
    """Each recipe's canary leakage: the headline attack's TPR on the canaries at the comparison's FPR (its
    `leakage_metric`, the lowest FPR the canaries measure), by recipe; empty when no FPR is measurable."""
    key, head = comparison["leakage_metric"], comparison["headline_attack"]
    if key is None:
        return {}
    return {name: row["attacks"][head]["canaries"][key]["value"] for name, row in comparison["recipes"].items()}


def summary_metrics(comparison: dict[str, Any]) -> dict[str, float | None]:
    """At most three numbers per recipe for the summary run: accuracy, population and canary leakage."""
    key, head = comparison["leakage_metric"], comparison["headline_attack"]
    out: dict[str, float | None] = {}
    for name, row in comparison["recipes"].items():
        attack = row["attacks"][head]
        out[f"recipe.{name}.test_accuracy"] = row["test_accuracy"]["mean"]
        out[f"recipe.{name}.tpr_at_0.1pct_fpr"] = attack["population"].get("tpr_at_0.1pct_fpr", {}).get("value")
        if key:
            out[f"recipe.{name}.canary_{key}"] = attack["canaries"][key]["value"]
    return out
