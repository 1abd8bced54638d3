"""Stage `report`: one table and figures for every target, and the MLflow summary run.

It depends on the whole params.yaml, so any edit reruns it and the
summary run records every change (stage `validate` has checked every key
before any training).

The summary run carries every parameter and the headline metrics, and the
stage runs of this `dvc repro` are nested under it; runs of stages DVC
skipped are linked by tag (they made the cached outputs used here).
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

from pipeline.config import flatten
from pipeline.core.io import (
    atomic_path,
    load_npz,
    read_json,
    read_text,
    staged_path,
    write_json,
    write_text,
)
from pipeline.core.types import AttackScores
from pipeline.measures.roc import most_exposed
from pipeline.measures.roc_grid import parse_roc_csv
from pipeline.reporting import recipes as recipe_report
from pipeline.reporting.description import run_description
from pipeline.reporting.figures import (
    canary_figure,
    highlighted_attacks,
    privacy_utility_figure,
    roc_figure,
)
from pipeline.reporting.html import html_page
from pipeline.reporting.markdown import markdown
from pipeline.reporting.table import (
    attack_rows,
    audit_tags,
    build_table,
    dvc_summary,
    frontier_csv,
    headline_metrics,
)
from pipeline.stages.common import (
    METRICS,
    PLOTS,
    REPORTS,
    ROOT,
    RUNS,
    SPLIT_ROLES,
    ScopedParams,
    load_prepared,
    log_split_inputs,
    main,
    tracked,
)

SUMMARY_RUN = ROOT / "data" / "summary_run.json"
UPSTREAM = (
    "prepare", "train_target", "train_shadows", "train_reference", "build_attack_dataset", "train_attack", "audit_canaries",
    "recipe_attack",
)  # fmt: skip
PARAMS = (
    "data.dataset", "shadows.n_models", "reference.n_models", "attack.enabled", "attack.tune_for", "defense",
    "canaries.defenses", "recipe_audit.dp_baseline", "mlflow",
)  # fmt: skip
PREPROCESSING = {
    None: "Features are used as loaded (images scaled by a constant): no statistic of any record enters preprocessing.",
    "shadow_pool": "Tabular features are standardised with the mean and standard deviation of the shadow pool, data "
    "disjoint from the target's members and non-members standing in for public data, so no member's value "
    "reaches preprocessing and the DP accounting needs no term for it.",
}


def _most_exposed(attack: str) -> list[dict]:
    """The undefended target's members that `attack` scores highest."""
    arrays = load_npz(ROOT / "data" / "attack_scores.npz", ("index", "labels", "is_member", attack))
    scores = AttackScores(arrays[attack], arrays["is_member"], arrays["labels"])
    return most_exposed(scores, arrays["index"], top=10)


def _register_targets(table: dict, experiment: str) -> None:
    """Each audited target in the Model Registry as `<experiment>.<target>`, its audit headline as version tags."""
    from pipeline.core.tracking import register_model

    for name, row in table.items():
        run_file = RUNS / ("train_target.json" if name == "undefended" else f"defend-{name}.json")
        version = register_model(read_json(run_file)["run_id"], f"{experiment}.{name}", audit_tags(row))
        print(f"report: registered {experiment}.{name} version {version}")


def _summary_name() -> str:
    """"summary", or "summary <experiment>" under `dvc exp run`."""
    return f"summary {os.environ.get('DVC_EXP_NAME', '')}".strip()


def _save_figure(figure: object, path: Path) -> bytes:
    """Write the figure as a PNG (held back until the stage succeeds) and return its bytes."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buffer.getvalue())
    return buffer.getvalue()


def effective_params(params: ScopedParams, sizes: dict[str, Any]) -> dict[str, Any]:
    """Every param, flattened, as the run used it: with a given model, `data.n_members` is its member column's
    count (prepare's sizes), not the params value it ignores, and `data.n_nonmembers` is logged beside it."""
    logged = flatten(params.whole_file())
    if sizes.get("audited_model"):
        for role in ("members", "nonmembers"):
            logged[f"data.n_{role}"] = sizes[f"n_{role}"]
    return logged


def run(params: ScopedParams) -> None:
    from pipeline.core.tracking import nest_stage_runs

    sizes = read_json(METRICS / "prepare.json")
    with tracked(
        "report", params, SUMMARY_RUN, _summary_name(), {"summary": "true"}, logged=effective_params(params, sizes)
    ) as run_log:
        targets = ["undefended", *params.defense.run]
        utility = {"undefended": read_json(METRICS / "target.json")}
        attacks = {"undefended": read_json(METRICS / "attacks.json")}
        headlines = {"undefended": read_json(METRICS / "headline.json")}
        for name in params.defense.run:
            utility[name] = read_json(METRICS / "defenses" / name / "utility.json")
            attacks[name] = read_json(METRICS / "defenses" / name / "attacks.json")
            headlines[name] = read_json(METRICS / "defenses" / name / "headline.json")
        canaries = {
            name: read_json(METRICS / "canaries" / f"{name}.json") for name in ["undefended", *params.canaries.defenses]
        }
        table = build_table(utility, attacks, headlines, canaries)
        exposed_by = headlines["undefended"]["attack"]
        context = {
            "dataset": params.data.dataset,
            "n_members": sizes["n_members"],
            "n_test": sizes["n_test"],
            "n_shadow_pool": sizes["n_shadow_pool"],
            "n_shadows": params.shadows.n_models,
            "n_reference": params.reference.n_models,
            "adaptive": params.defense.adaptive,
            "tune_for": params.attack.tune_for,
            "preprocessing": PREPROCESSING[sizes.get("standardized_on")],
            "exposed_by": exposed_by,
            "audited_model": sizes.get("audited_model"),
            "attacker_models_train": sizes.get("attacker_models_train"),
        }
        exposed = _most_exposed(exposed_by) if exposed_by in params.attack.enabled else []
        seed_comparison = read_json(METRICS / "seed_comparison.json")
        curves = {name: parse_roc_csv(read_text(PLOTS / "roc" / f"{name}.csv")) for name in targets}
        roc = roc_figure(curves, highlighted_attacks(table))
        tradeoff = privacy_utility_figure(table)
        comparison = read_json(METRICS / "recipes.json")
        write_json(METRICS / "report.json", table)
        write_json(METRICS / "summary.json", dvc_summary(table, recipe_report.canary_leakage(comparison)))
        write_text(PLOTS / "frontier.csv", frontier_csv(table))
        text = markdown(table, context, exposed, seed_comparison, canaries, recipe_report.section(comparison))
        write_text(REPORTS / "report.md", text)
        figures = {
            "roc.png": _save_figure(roc, REPORTS / "roc.png"),
            "privacy_utility.png": _save_figure(tradeoff, REPORTS / "privacy_utility.png"),
            "canary_audit.png": _save_figure(canary_figure(canaries), REPORTS / "canary_audit.png"),
            "recipes.png": _save_figure(recipe_report.figure(comparison), REPORTS / "recipes.png"),
        }
        write_text(REPORTS / "report.html", html_page(text, figures, "Membership-inference audit"))

        run_log.describe(run_description(table, recipe_report.answer(comparison)))
        run_log.log_metrics(headline_metrics(table) | recipe_report.summary_metrics(comparison))
        run_log.log_table(attack_rows(table), "attacks_table.json")
        dataset, splits = load_prepared()
        log_split_inputs(run_log, dataset, splits, SPLIT_ROLES)
        run_log.log_artifact(staged_path(METRICS / "recipes.json"))
        for name in ("report.html", "report.md", "roc.png", "privacy_utility.png", "canary_audit.png", "recipes.png"):
            run_log.log_artifact(staged_path(REPORTS / name))
        run_log.log_artifact(staged_path(METRICS / "report.json"))
        if params.mlflow.register_models:
            _register_targets(table, params.mlflow.experiment)
        stages = {stage: stage for stage in UPSTREAM}
        for name in params.defense.run:
            stages |= {f"defend@{name}": f"defend-{name}", f"attack_defense@{name}": f"attack_defense-{name}"}
        for name in params.canaries.defenses:
            stages[f"audit_canaries_defense@{name}"] = f"audit_canaries_defense-{name}"
        stages["recipe_undefended"] = "recipe-undefended"
        for name in params.defense.run:
            stages[f"recipe@{name}"] = f"recipe-{name}"
        for name in params.recipe_audit.dp_baseline:
            stages[f"recipe_dp@{name}"] = f"recipe-{name}"
        runs = {stage: read_json(RUNS / f"{file}.json")["run_id"] for stage, file in stages.items()}
        status = nest_stage_runs(run_log.run_id, runs)
        ran = [stage for stage, state in status.items() if state == "ran"]
        print(f"report: reports/report.md; summary run {run_log.run_id} with {len(ran)} new stage run(s) nested")


if __name__ == "__main__":
    main(run, PARAMS)
