"""The tiny preset, run as one DVC experiment from a fresh repository, writes every output and one MLflow summary.

Reads scenario `tiny` (tests/scenarios.py) without changing it: the
stages that ran, each stage's metrics and reports, the DP-SGD target's
accounted epsilon against its canary audit, and the MLflow runs (the
summary, its nested stage runs, the logged target model).
"""

from __future__ import annotations

import shlex

import pytest
import yaml
from scenarios import STDERR_MARK, TINY_PRESET, Built, attack_stages, deep_update, ran_stages, recipe_stages

from pipeline.tools.sandbox import PROJECT

pytestmark = pytest.mark.slow


def _expected_stages(params: dict) -> set[str]:
    """Every stage of dvc.yaml under these params."""
    defenses = params["defense"]["run"]
    expected = {"validate", "prepare", "train_target", "train_shadows", "train_reference", "build_attack_dataset", "report"}
    expected |= attack_stages(params) | recipe_stages(params) | {f"defend@{name}" for name in defenses}
    return expected | {"audit_canaries"} | {f"audit_canaries_defense@{name}" for name in params["canaries"]["defenses"]}


def test_the_tiny_preset_runs_every_stage_as_one_experiment(tiny: Built) -> None:
    box = tiny.sandbox
    params = box.params()
    assert deep_update(yaml.safe_load((PROJECT / "params.yaml").read_text()), TINY_PRESET) == params  # exactly the preset
    assert "tiny" in box.run("dvc", "exp", "list", "--rev", "HEAD~1", "--name-only").stdout  # the results' parent commit
    assert ran_stages(tiny.log) == _expected_stages(params)
    errors = tiny.log.split(STDERR_MARK)[1]
    assert not [line for line in errors.splitlines() if "Warning" in line]  # no library warnings for a first run
    target = box.read_json("metrics/target.json")
    assert target["test_accuracy"] >= 0.5  # it learns: chance is 0.1 on ten digits


def test_every_stage_writes_its_metrics_and_the_report_its_table(tiny: Built) -> None:
    box = tiny.sandbox
    params = box.params()
    defenses = params["defense"]["run"]
    prepared = box.read_json("metrics/prepare.json")
    assert (prepared["n_members"], prepared["n_nonmembers"], prepared["n_test"], prepared["n_shadow_pool"]) == (60, 60, 60, 120)
    target = box.read_json("metrics/target.json")
    assert 0.3 < target["test_accuracy"] <= 1.0
    assert (box.root / "data/target/model.keras").is_file()
    attacks = box.read_json("metrics/attacks.json")
    assert list(attacks) == params["attack"]["enabled"]
    for metrics in attacks.values():
        assert 0.0 <= metrics["auc"] <= 1.0
        assert metrics["tpr_at_1pct_fpr"] is None  # 60 non-members cannot measure 1% FPR
    report = box.read_json("metrics/report.json")
    assert list(report) == ["undefended", *defenses]
    for row in report.values():  # each target's headline attack, chosen on shadow data
        head = row["headline"]
        assert head["attack"] in params["attack"]["enabled"] and head["chosen_by"].endswith("on shadow data")
        assert head["metrics"] == row["attacks"][head["attack"]]
        assert head["metrics"]["auc_ci_low"] <= head["metrics"]["auc"] <= head["metrics"]["auc_ci_high"]
        assert head["epsilon_lb_95"] >= 0
    for name in defenses:
        assert (box.root / f"metrics/defenses/{name}/attacks.json").is_file()
        assert (box.root / f"plots/roc/{name}.csv").read_text().startswith("attack,fpr,tpr")
    for name in ("report.md", "roc.png", "privacy_utility.png", "canary_audit.png"):
        assert (box.root / "reports" / name).stat().st_size > 0
    assert "| undefended |" in (box.root / "reports/report.md").read_text()
    summary = box.read_json("metrics/summary.json")  # the DVC metrics: the headline figures, by figure
    assert set(summary) == {"accuracy", "auc", "tpr_1pct", "canary_leak"}
    assert summary["auc"] == {name: row["headline"]["metrics"]["auc"] for name, row in report.items()}
    assert summary["accuracy"] == {name: row["test_accuracy"] for name, row in report.items()}
    shown = box.run("dvc", "metrics", "show").stdout
    assert "accuracy.undefended" in shown and "auc.dropout" in shown


def test_the_printed_summary_has_every_target_and_the_recipe_audits_answer(tiny: Built) -> None:
    """What `make run` prints after `dvc repro` (`python -m pipeline.tools.show`)."""
    box = tiny.sandbox
    printed = box.python("-m", "pipeline.tools.show").stdout
    rows = [line.split()[0] for line in printed.splitlines()[2:] if line.strip()]
    assert rows[: 1 + len(box.params()["defense"]["run"])] == ["undefended", *box.params()["defense"]["run"]]
    assert "Does dropout reduce leakage?" in printed and "paired difference" in printed


def test_the_readmes_dvc_exp_show_commands_fit_a_terminal(tiny: Built) -> None:
    """Each `dvc exp show` line of the README, run as written: one figure's columns, one per target or recipe."""
    commands = [line.split("  #")[0] for line in (PROJECT / "README.md").read_text().splitlines() if line.startswith("dvc exp show ")]
    assert len(commands) == 2
    box = tiny.sandbox
    params = box.params()
    figures = {
        "auc": ["undefended", *params["defense"]["run"]],
        "canary_leak": ["undefended", *params["defense"]["run"], *params["recipe_audit"]["dp_baseline"]],
    }
    for command, (figure, names) in zip(commands, figures.items(), strict=True):
        header = box.run(*shlex.split(command), "--csv").stdout.splitlines()[0].split(",")
        assert len(header) <= 60
        assert [column for column in header if "." in column] == [f"{figure}.{name}" for name in names]


def test_the_dp_sgd_target_meets_its_budget_and_its_canary_audit_uses_the_same_plan(tiny: Built) -> None:
    box = tiny.sandbox
    params = box.params()
    dp = box.read_json("metrics/defenses/dp_sgd/utility.json")
    target_epsilon = params["defenses"]["dp_sgd"]["target_epsilon"]
    assert 0.9 * target_epsilon <= dp["dp_epsilon"] <= target_epsilon  # sigma calibrated to the budget
    dp_attacks = box.read_json("metrics/defenses/dp_sgd/attacks.json")
    assert all(v["dp_violations"] == 0 for v in dp_attacks.values())
    report_md = (box.root / "reports/report.md").read_text()
    assert "accounted against empirical epsilon" in report_md
    canary_dp = box.read_json("metrics/canaries/dp_sgd.json")  # the one-run audit, same DP plan
    assert canary_dp["dp_epsilon"] == pytest.approx(dp["dp_epsilon"]) and not canary_dp["exceeds_accounted"]
    assert 0.0 <= canary_dp["white_box"]["epsilon_lb"] <= dp["dp_epsilon"]
    assert canary_dp["white_box"]["m"] == canary_dp["black_box"]["m"] == params["canaries"]["n"]
    canary_plain = box.read_json("metrics/canaries/undefended.json")
    assert "white_box" not in canary_plain and canary_plain["best_score"] == "black_box"
    assert [level["k"] for level in canary_plain["black_box"]["levels"]] == params["canaries"]["guesses"]
    assert box.read_json("metrics/report.json")["dp_sgd"]["canary_audit"] == canary_dp
    assert "One-run canary audit" in report_md
    for score in ("white_box", "black_box"):
        assert (box.root / f"plots/canaries/dp_sgd/{score}.csv").read_text().startswith("k,correct,epsilon_lb")
    for key in ("dp_noise_multiplier", "dp_sampling_rate", "dp_steps", "dp_clip_norm"):  # the target's own DP plan
        assert canary_dp[key] == pytest.approx(dp[key])


def test_one_mlflow_summary_run_holds_every_stage_run_and_the_logged_target(tiny: Built) -> None:
    import mlflow

    box = tiny.sandbox
    report = box.read_json("metrics/report.json")
    runs = box.runs()
    (summary,) = box.summaries()
    assert summary.info.status == "FINISHED"
    assert summary.data.params["target.epochs"] == "20"
    description = summary.data.tags["mlflow.note.content"]  # the run page's first block: the headline table
    for name, row in report.items():
        head = row["headline"]
        assert f"| {name} | {row['test_accuracy']:.3f} | {head['attack']} | {head['metrics']['auc']:.3f} [" in description
    assert "stage_runs" in summary.data.tags and not any(tag.startswith("stage_status") for tag in summary.data.tags)
    assert "undefended.test_accuracy" in summary.data.metrics
    recipes = box.read_json("metrics/recipes.json")["recipes"]
    assert len(summary.data.metrics) <= 6 * len(report) + 3 * len(recipes)  # a handful per target and recipe
    client = mlflow.MlflowClient(tracking_uri=box.store)
    assert "attacks_table.json" in {a.path for a in client.list_artifacts(summary.info.run_id)}
    experiment = client.get_experiment(summary.info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    contexts = {tag.value for d in summary.inputs.dataset_inputs for tag in d.tags if tag.key == "mlflow.data.context"}
    assert contexts == {"members", "non-members", "test", "attacker pool", "defender reference"}
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == summary.info.run_id]
    assert {r.data.tags["stage"] for r in children} == _expected_stages(box.params()) - {"report", "validate"}
    assert all(r.info.status == "FINISHED" for r in children)
    train_target = next(r for r in children if r.data.tags["stage"] == "train_target")
    assert "val_accuracy" in train_target.data.metrics
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(box.store)
    try:
        model = mlflow.models.Model.load(f"runs:/{train_target.info.run_id}/model")  # signature and input example
    finally:
        mlflow.set_tracking_uri(previous)
    assert model.signature is not None and model.saved_input_example_info["type"] == "ndarray"
    assert train_target.data.tags["git_commit"] != "unknown"
