"""The real `dvc repro` on tiny params in a temporary git repository.

Checks every stage's outputs, the MLflow summary run and its nested stage
runs, that a second repro reruns nothing, that changing one defense reruns
only that defense and the report, and that a failing stage leaves its run
FAILED with a one-line error.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from pipeline.sandbox import PROJECT, make_sandbox

TINY = {
    "data": {"n_members": 60, "n_test": 60, "n_shadow_pool": 120},
    "target": {"epochs": 20, "hidden_units": 32},
    "shadows": {"n_models": 4},
    "reference": {"n_models": 4},
    "attack": {"shadow_classifier": {"epochs": 2}},
    "defense": {"run": ["dropout", "dp_sgd", "memguard"]},
}

pytestmark = pytest.mark.slow


def _deep_update(base: dict, change: dict) -> dict:
    for key, value in change.items():
        if isinstance(value, dict):
            _deep_update(base.setdefault(key, {}), value)
        else:
            base[key] = value
    return base


def _run(args: list[str], cwd: Path, env: dict, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("project")
    params = _deep_update(yaml.safe_load((PROJECT / "params.yaml").read_text()), TINY)
    return root, make_sandbox(root, yaml.safe_dump(params, sort_keys=False))


def _runs(root: Path) -> list:
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("membership-inference")
    return client.search_runs([experiment.experiment_id], max_results=1000)


def _ran_stages(output: str) -> set[str]:
    return {line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage '")}


def test_full_repro(project: tuple[Path, dict]) -> None:
    root, env = project
    result = _run(["dvc", "repro"], root, env)
    params = yaml.safe_load((root / "params.yaml").read_text())
    defenses = params["defense"]["run"]
    expected = {"prepare", "train_target", "train_shadows", "train_reference", "build_attack_dataset", "train_attack", "report"}
    expected |= {f"defend@{name}" for name in defenses}
    assert _ran_stages(result.stdout) == expected

    prepared = json.loads((root / "metrics/prepare.json").read_text())
    assert (prepared["n_members"], prepared["n_nonmembers"], prepared["n_test"], prepared["n_shadow_pool"]) == (60, 60, 60, 120)
    target = json.loads((root / "metrics/target.json").read_text())
    assert 0.3 < target["test_accuracy"] <= 1.0
    assert (root / "data/target/model.keras").is_file()
    attacks = json.loads((root / "metrics/attacks.json").read_text())
    assert list(attacks) == params["attack"]["enabled"]
    for metrics in attacks.values():
        assert 0.0 <= metrics["auc"] <= 1.0
        assert metrics["tpr_at_1pct_fpr"] is None  # 60 non-members cannot measure 1% FPR
    report = json.loads((root / "metrics/report.json").read_text())
    assert list(report) == ["undefended", *defenses]
    dp = json.loads((root / "metrics/defenses/dp_sgd/utility.json").read_text())
    target_epsilon = params["defenses"]["dp_sgd"]["target_epsilon"]
    assert 0.9 * target_epsilon <= dp["dp_epsilon"] <= target_epsilon  # sigma calibrated to the budget
    dp_attacks = json.loads((root / "metrics/defenses/dp_sgd/attacks.json").read_text())
    assert all(v["dp_violations"] == 0 for v in dp_attacks.values())
    assert "accounted against empirical epsilon" in (root / "reports/report.md").read_text()
    for name in defenses:
        assert (root / f"metrics/defenses/{name}/attacks.json").is_file()
        assert (root / f"plots/roc/{name}.csv").read_text().startswith("attack,fpr,tpr")
    for name in ("report.md", "roc.png", "privacy_utility.png"):
        assert (root / "reports" / name).stat().st_size > 0
    assert "| undefended |" in (root / "reports/report.md").read_text()

    shown = _run(["dvc", "metrics", "show"], root, env).stdout
    assert "test_accuracy" in shown and "auc" in shown

    runs = _runs(root)
    summaries = [r for r in runs if r.data.tags.get("summary") == "true"]
    assert len(summaries) == 1
    summary = summaries[0]
    assert summary.info.status == "FINISHED"
    assert summary.data.params["target.epochs"] == "20"
    assert "undefended.test_accuracy" in summary.data.metrics
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == summary.info.run_id]
    assert {r.data.tags["stage"] for r in children} == expected - {"report"}
    assert all(r.info.status == "FINISHED" for r in children)
    train_target = next(r for r in children if r.data.tags["stage"] == "train_target")
    assert "val_accuracy" in train_target.data.metrics
    assert train_target.data.tags["git_commit"] != "unknown"


def test_second_repro_reruns_nothing(project: tuple[Path, dict]) -> None:
    root, env = project
    before = len(_runs(root))
    result = _run(["dvc", "repro"], root, env)
    assert _ran_stages(result.stdout) == set()
    assert len(_runs(root)) == before


def test_changing_one_defense_reruns_only_it_and_the_report(project: tuple[Path, dict]) -> None:
    root, env = project
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["defenses"]["dropout"]["rate"] = 0.3
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    result = _run(["dvc", "repro"], root, env)
    assert _ran_stages(result.stdout) == {"defend@dropout", "report"}
    summary = max(
        (r for r in _runs(root) if r.data.tags.get("summary") == "true"), key=lambda r: r.info.start_time
    )
    assert summary.data.tags["stage_status.defend:dropout"] == "ran"
    assert summary.data.tags["stage_status.prepare"] == "cached"


def test_failing_stage_leaves_run_failed_and_one_line_error(project: tuple[Path, dict]) -> None:
    root, env = project
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["data"]["n_members"] = 5000
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    result = _run(["dvc", "repro"], root, env, check=False)
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "data.n_members" in errors[0] and "1797" in errors[0]
    assert "Traceback" not in result.stderr
    assert not (root / "data/prepared").exists()
    latest = max((r for r in _runs(root) if r.data.tags.get("stage") == "prepare"), key=lambda r: r.info.start_time)
    assert latest.info.status == "FAILED"


def test_same_params_give_the_same_metrics(project: tuple[Path, dict]) -> None:
    """Back to valid params, forced reruns of training and attacks reproduce the metrics exactly."""
    root, env = project
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["data"]["n_members"] = TINY["data"]["n_members"]
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    _run(["dvc", "repro"], root, env)
    before = {name: (root / name).read_text() for name in ("metrics/target.json", "metrics/attacks.json")}
    _run(["dvc", "repro", "-f", "-s", "train_target"], root, env)
    _run(["dvc", "repro", "-f", "-s", "train_attack"], root, env)
    after = {name: (root / name).read_text() for name in before}
    assert after == before
