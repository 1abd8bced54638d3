"""The report as Markdown: setup, threat model, summary, every attack, DP and canary audits, exposed points."""

from __future__ import annotations

from typing import Any

from pipeline.reporting.cells import cell, markdown_table, named, with_interval


def _summary(table: dict[str, dict[str, Any]], context: dict[str, Any]) -> list[str]:
    """The headline attack of each target, chosen on shadow data, with intervals, bound and PPV at priors."""
    lowest = f"1/{context['n_members']}"
    rows = []
    for name, row in table.items():
        head = row["headline"]
        m = head["metrics"]
        rows.append([
            name, cell(row["test_accuracy"]), cell(row["generalization_gap"]), head["attack"],
            with_interval(m, "auc"), with_interval(m, "tpr_at_1pct_fpr"), with_interval(m, "tpr_at_lowest_fpr"),
            cell(head["epsilon_lb_95"]), f"{cell(m['ppv_at_1pct_prior'])} / {cell(m['ppv_at_10pct_prior'])}",
        ])  # fmt: skip
    return [
        "## Summary",
        "",
        f"Each target's **headline attack is chosen on shadow data** (the attack whose shadow scores are best for "
        f"`attack.tune_for` = {context['tune_for']}), before the target's membership is looked at, as a real "
        "adversary would choose. Brackets: 95% stratified bootstrap intervals (1,000 resamples of the members "
        f"and of the non-members). `TPR@{lowest}` is the TPR at the lowest FPR the {context['n_members']} "
        "non-members can measure (at most one false positive); its interval is approximate, since a bootstrap "
        "of an extreme order statistic covers less than 95% (81% in a simulation with Gaussian scores, against "
        "95% for AUC and TPR at 1% FPR). The epsilon lower bound holds at 95%: its threshold is chosen on shadow "
        "data and it is computed once on the target (Clopper-Pearson, each candidate an independent trial, the "
        "usual approximation when auditing one trained model). PPV is the precision of the attack's calls at "
        "its shadow-chosen 1%-FPR threshold when 1% / 10% of the queried records are members (n/m when no "
        "non-member was called).",
        "",
        *markdown_table(
            ["target", "test acc", "gap", "headline attack", "AUC", "TPR@1%FPR", f"TPR@{lowest}",
             "eps lower bd (95%)", "PPV at 1% / 10% prior"],
            rows,
        ),  # fmt: skip
        "",
        "**Optimistic, chosen with the answer key:** the best attack on each target picked after looking at the "
        "target's membership. It overstates what an adversary can expect; it is shown only for comparison.",
        "",
        *markdown_table(
            ["target", "best AUC (attack)", "best TPR@1%FPR (attack)"],
            [[name, _optimistic(row, "auc"), _optimistic(row, "tpr_at_1pct_fpr")] for name, row in table.items()],
        ),
    ]


def _optimistic(row: dict[str, Any], key: str) -> str:
    return named(row["headline"]["optimistic"][key])


def _seed_section(seed: dict[str, float] | None) -> list[str]:
    """The original report's inflated measurement beside the honest one."""
    if not seed:
        return []
    return [
        "",
        "## The original report's measurement against the honest one",
        "",
        "The report this project grew from trained its attack classifier on one shadow model's members and "
        "non-members and then measured its accuracy on those same rows; on its own data it reported 0.85. This "
        "project's data and models do not reproduce that number, but the same way of measuring, applied here, "
        "stands beside the same classifier scored on the target's own members and non-members; the difference "
        "is what scoring an attack on its own training data adds:",
        "",
        *markdown_table(
            ["measurement", "accuracy"],
            [
                ["attack classifier on its own training rows (the original's way)",
                 cell(seed["accuracy_on_own_training_rows"])],
                ["the same classifier on the target's members and non-members (balanced)",
                 cell(seed["balanced_accuracy_on_target"])],
            ],
        ),  # fmt: skip
    ]


DETAIL = ("advantage", "balanced_accuracy", "tpr_at_0.1pct_fpr", "epsilon_lb", "shadow_tpr_at_1pct_fpr")


def markdown(
    table: dict[str, dict[str, Any]],
    context: dict[str, Any],
    exposed: list[dict],
    seed: dict[str, float] | None,
    canaries: dict[str, dict[str, Any]] | None = None,
    opening: list[str] | None = None,
) -> str:
    """The report as Markdown: the `opening` section (which recipe leaks less), setup, threat model, summary,
    every attack, DP and canary audits, exposed points, figures."""
    canaries = canaries or {}
    n_attacks = len(next(iter(table.values()))["attacks"])
    lines = [
        "# Membership-inference audit",
        "",
        *([*opening, "", "## This audit's target and its defenses", ""] if opening else []),
        (
            f"Dataset `{context['dataset']}`: the target is the given model `{context['audited_model']}`, audited as "
            f"it is (never retrained; defended variants retrain its architecture); its {context['n_members']} "
            "training rows are the members, and every other role below is drawn from rows it never saw: "
            if context.get("audited_model")
            else f"Dataset `{context['dataset']}`: {context['n_members']} members train the target, "
        )
        + f"{context['n_members']} non-members are held out, {context['n_test']} test points measure utility, "
        f"and the attacker's {context['n_shadow_pool']}-point shadow pool is disjoint from all of them. "
        f"Every attacker model trains exactly like the target, on {context['n_members']} points: "
        f"{context['n_shadows']} shadow models on points of the pool, {context['n_reference']} reference models "
        "(online attacks only) on halves of the candidates, every candidate IN for exactly half of them"
        + (f"; copies of the given model train {context['attacker_models_train']}." if context.get("audited_model") else "."),
        "",
        "**Threat model.** The attacker can query the target and see its full output vector "
        "(label-only attacks: the label only), knows the architecture and training recipe "
        + ("and the defense (adaptive evaluation: its models are trained with it, with the same DP plan and as much "
           "defender data)" if context["adaptive"] else "but not the defense (non-adaptive: undefended shadows)")
        + ", and holds data from the same distribution, disjoint from the target's. Offline attacks "
        "never see the candidate records during training; online LiRA assumes the attacker also holds "
        "the candidate records (not their membership) and trains reference models on them. Every decision "
        "threshold (balanced accuracy, PPV, the 1%-FPR calls, the epsilon bound), attack model, tuned parameter "
        "and the headline attack is chosen on shadow or reference models only; every number below is measured "
        "once on the target's own members and non-members. AUC, advantage and TPR at a fixed FPR summarise the "
        "target's whole ROC curve, as is standard: they use its membership to score, and choose nothing. "
        + context["preprocessing"],
        "",
        *_summary(table, context),
    ]
    if not context.get("audited_model"):  # the original report's way of measuring applies to a model trained here
        lines += _seed_section(seed)
    lines += [
        "",
        "## Every attack on every target",
        "",
        f"n/m = not measurable: too few non-members for that false-positive rate. `eps lower bd` holds at "
        f"1 - 0.05/{n_attacks} per attack (Bonferroni over the {n_attacks} attacks), so even the largest of a "
        "row group holds at 95%. `shadow TPR@1%` is what the attacker measured on shadow data before the "
        "target: the basis of the headline choice.",
        "",
    ]
    rows = [
        [name, attack, with_interval(values, "auc"), with_interval(values, "tpr_at_1pct_fpr"),
         with_interval(values, "tpr_at_lowest_fpr")] + [cell(values.get(key)) for key in DETAIL]
        for name, row in table.items()
        for attack, values in row["attacks"].items()
    ]  # fmt: skip
    lines += markdown_table(
        ["target", "attack", "AUC", "TPR@1%", f"TPR@1/{context['n_members']}", "advantage", "bal. acc",
         "TPR@0.1%", "eps lower bd", "shadow TPR@1%"],
        rows,
    )  # fmt: skip
    lines += dp_section(table)
    lines += canary_section(canaries, context.get("audited_model"))
    if exposed:
        lines += [
            "",
            f"## Most exposed training points (undefended target, {context['exposed_by']})",
            "",
            "Members the headline attack scores highest; `FPR at score` is the share of non-members scoring "
            "at least as high, i.e. the false alarms an attacker pays to flag that point.",
            "",
        ]
        lines += markdown_table(
            ["dataset index", "class", "score", "FPR at score"],
            [[str(r["index"]), str(r["label"]), f"{r['score']:.3g}", cell(r["fpr_at_score"])] for r in exposed],
        )
    lines += [
        "",
        "## Figures",
        "",
        "ROC curves on log-log axes, one panel per target: coloured, the target's headline attack and the "
        "attacks that are best on it after the fact; grey, every other attack.",
        "",
        "![ROC curves on log-log axes](roc.png)",
        "",
        "![Privacy-utility trade-off](privacy_utility.png)",
        "",
    ]
    if canaries:
        lines += ["![One-run canary audit: the epsilon lower bound at every guess count](canary_audit.png)", ""]
    return "\n".join(lines)


def dp_section(table: dict[str, dict[str, Any]]) -> list[str]:
    """Accounted epsilon beside the empirical lower bounds for every DP-trained target.

    An attack operating point that breaks the accounted guarantee beyond
    sampling error is flagged loudly: it can only come from a bug.
    """
    rows, broken = [], []
    for name, row in table.items():
        if "dp_epsilon" not in row:
            continue
        head = row["headline"]
        any_attack = head["epsilon_lb_any_attack"]
        violations = sum(v.get("dp_violations") or 0 for v in row["attacks"].values())
        if violations:
            broken.append(name)
        canary = row.get("canary_audit")
        if canary is not None and canary.get("exceeds_accounted"):
            broken.append(name)
        rows.append([
            name, f"{row['dp_epsilon']:.3g}", f"{row['dp_delta']:.1e}", f"{row['dp_noise_multiplier']:.3g}",
            f"{row['dp_clip_norm']:.3g}", f"{row['dp_sampling_rate']:.3g}", str(int(row["dp_steps"])),
            "not run" if canary is None else f"{canary['epsilon_lb']:.3g} ({canary['best_score'].replace('_', '-')})",
            f"{cell(head['epsilon_lb_95'])} ({head['attack']})", named(any_attack), str(violations),
        ])  # fmt: skip
    if not rows:
        return []
    lines = [
        "",
        "## Differential privacy: accounted against empirical epsilon",
        "",
        "The accountant's epsilon is an upper bound on what any attack can achieve. The one-run canary audit's "
        "bound (next section) comes from a separate training run under the same DP plan with 2 x canaries.n "
        "canaries. The membership attacks' lower bounds "
        "hold at 95% and allow for the accounted delta (TPR <= e^eps FPR + delta): the headline attack's "
        "(chosen on shadow data, its threshold too), and the largest Bonferroni-corrected bound over all "
        "attacks. Far below the accounted epsilon is expected: "
        "membership attacks on a few hundred records cannot certify much. "
        "`violations` counts ROC points with TPR > e^eps FPR + delta beyond sampling error.",
        "",
        "DP-SGD's Poisson sampling and noise come from generators seeded by `seed` in params.yaml unless "
        "`randomness: secure` is set, so that runs reproduce. The guarantee assumes the noise is secret: a model "
        "meant for deployment must be trained with `randomness: secure`.",
        "",
    ]
    if broken:
        lines += [f"**WARNING: the DP guarantee is broken for {', '.join(dict.fromkeys(broken))}. This means a bug "
                  "in the DP training or accounting; do not trust these epsilons.**", ""]
    return lines + markdown_table(
        ["target", "accounted eps", "delta", "noise multiplier", "clip norm", "sampling rate", "steps",
         "eps lower bd, canary audit (95%)", "eps lower bd, headline attack (95%)", "eps lower bd, any attack (95%)",
         "violations"],
        rows,
    )


def simulated_spread(c: dict[str, Any]) -> str:
    """"1.12 [0.89, 1.33]": the accounted mechanism's simulated white-box bound (median [5th, 95th percentile])."""
    spread = c.get("white_box", {}).get("simulated")
    return "-" if spread is None else f"{spread['median']:.3g} [{spread['p05']:.3g}, {spread['p95']:.3g}]"


def canary_section(canaries: dict[str, dict[str, Any]], audited_model: str | None = None) -> list[str]:
    """The one-run canary audits: every audited target's empirical epsilon, against its accountant's where DP.

    With `audited_model` (a user's model audited as given), the canary runs
    retrain its architecture: the rows say so, beside each copy's accuracy.
    """
    if not canaries:
        return []
    rows, refuted = [], []
    for name, c in canaries.items():
        if c.get("exceeds_accounted"):
            refuted.append(name)
        scores = [
            f"{c[score]['epsilon_lb']:.3g} ({c[score]['correct']}/{c[score]['k']} right)" if score in c else "-"
            for score in ("white_box", "black_box")
        ]
        accounted = "-" if "dp_epsilon" not in c else f"{c['dp_epsilon']:.3g}"
        label = f"{name} (a retrained copy of {audited_model})" if audited_model and name == "undefended" else name
        rows.append([label, f"**{c['epsilon_lb']:.3g}**", *scores, simulated_spread(c), accounted, f"{c['test_accuracy']:.3f}"])
    first = next(iter(canaries.values()))
    m = next(first[score]["m"] for score in ("black_box", "white_box") if score in first)
    lines = [
        "",
        "## One-run canary audit (Steinke, Nasr and Jagielski 2023)",
        "",
        f"Each audited target's training is run once more on its members plus {m} `{first['kind']}` canaries, "
        "each included on its own fair coin (DP-SGD runs add as many gradient canaries, under the target's DP "
        "plan). The auditor guesses the inclusion of the k/2 highest- and k/2 lowest-scoring canaries and "
        "abstains on the rest; the number right gives a lower bound on epsilon that holds at "
        f"{first['confidence']:.0%} over the coins, at delta {first['delta']:.0e}, corrected for every guess count "
        "and score tried (the bound shown is the largest). Black-box: the released outputs' loss on each input "
        "canary; white-box: the likelihood ratio of each gradient canary's inclusion, given the noisy gradient sum at its "
        "coordinate in every step. "
        "For a target without DP the bound is an effective epsilon: its training is not (eps, delta)-DP "
        "for any smaller eps. It proves leakage, never its absence: a low bound may be a weak audit. "
        "One canary run is one draw: `simulated` shows where a white-box bound sits among 100 simulated audits "
        "of the accounted mechanism itself (the same canaries, sampling, noise, guess counts and correction; "
        "median [5th, 95th percentile]).",
        "",
    ]
    if refuted:
        lines += [f"**WARNING: the canary audit refutes the accounted epsilon of {', '.join(refuted)}. This means "
                  "a bug in the DP training or accounting; do not trust these epsilons.**", ""]
    return lines + markdown_table(
        ["target", "eps lower bd (95%)", "white-box", "black-box", "white-box, simulated", "accounted eps",
         "canary run's test accuracy"],
        rows,
    )
