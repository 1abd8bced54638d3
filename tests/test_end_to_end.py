"""The real `dvc repro` on tiny params in a temporary git repository.

Checks every stage's outputs and the MLflow summary run; that a second
repro reruns nothing; that an attack parameter reruns only attack stages
and a defense parameter only that defense's stages (plus the report); that
bad params and data fail with one line and change no committed file; that
SIGKILL and SIGINT during a stage lose nothing and record nothing; that
forced reruns reproduce the metrics byte for byte; that a teammate who
pulls from a DVC remote sees the same results and reruns nothing; and that
queued experiments log to the project's own store. Every stage runs with
`PIPELINE_CHECK_PARAMS` set, so a param listed in dvc.yaml but never read
fails it.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from pipeline.tools.sandbox import PROJECT, make_sandbox

TINY = yaml.safe_load((PROJECT / "presets/tiny.yaml").read_text())  # the "tiny" preset, applied by dvc exp run
ATTACK_STAGES = {"train_attack", "attack_defense@dropout", "attack_defense@dp_sgd", "attack_defense@memguard"}

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
    env = make_sandbox(root)  # the default params; the first test applies the tiny preset
    return root, {**env, "PIPELINE_CHECK_PARAMS": "1"}


def _runs(root: Path) -> list:
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("membership-inference")
    return client.search_runs([experiment.experiment_id], max_results=1000)


def _ran_stages(output: str) -> set[str]:
    return {line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage '")}


def _commit(root: Path, env: dict) -> None:
    _run(["git", "add", "-A"], root, env)
    _run(["git", "commit", "-qm", "results", "--allow-empty"], root, env)


def _changed(root: Path, env: dict) -> list[str]:
    """`git status` entries: committed files changed or deleted, and new files."""
    return _run(["git", "status", "--porcelain", "--untracked-files=all"], root, env).stdout.splitlines()


def _metrics(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): p.read_text() for p in sorted((root / "metrics").rglob("*.json"))}


def test_the_tiny_preset_runs_the_whole_pipeline_as_one_experiment(project: tuple[Path, dict]) -> None:
    root, env = project
    result = _run([sys.executable, "-m", "pipeline.tools.presets", "run", "tiny", "-n", "tiny"], root, env)
    params = yaml.safe_load((root / "params.yaml").read_text())
    assert _deep_update(yaml.safe_load((PROJECT / "params.yaml").read_text()), TINY) == params  # exactly the preset
    assert "tiny" in _run(["dvc", "exp", "list", "--name-only"], root, env).stdout
    defenses = params["defense"]["run"]
    expected = {"prepare", "train_target", "train_shadows", "train_reference", "build_attack_dataset", "report"}
    expected |= ATTACK_STAGES | {f"defend@{name}" for name in defenses}
    expected |= {"audit_canaries"} | {f"audit_canaries_defense@{name}" for name in params["canaries"]["defenses"]}
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
    for row in report.values():  # each target's headline attack, chosen on shadow data
        head = row["headline"]
        assert head["attack"] in params["attack"]["enabled"] and head["chosen_by"].endswith("on shadow data")
        assert head["metrics"] == row["attacks"][head["attack"]]
        assert head["metrics"]["auc_ci_low"] <= head["metrics"]["auc"] <= head["metrics"]["auc_ci_high"]
        assert head["epsilon_lb_95"] >= 0
    dp = json.loads((root / "metrics/defenses/dp_sgd/utility.json").read_text())
    target_epsilon = params["defenses"]["dp_sgd"]["target_epsilon"]
    assert 0.9 * target_epsilon <= dp["dp_epsilon"] <= target_epsilon  # sigma calibrated to the budget
    dp_attacks = json.loads((root / "metrics/defenses/dp_sgd/attacks.json").read_text())
    assert all(v["dp_violations"] == 0 for v in dp_attacks.values())
    assert "accounted against empirical epsilon" in (root / "reports/report.md").read_text()
    canary_dp = json.loads((root / "metrics/canaries/dp_sgd.json").read_text())  # the one-run audit, same DP plan
    assert canary_dp["dp_epsilon"] == pytest.approx(dp["dp_epsilon"]) and not canary_dp["exceeds_accounted"]
    assert 0.0 <= canary_dp["white_box"]["epsilon_lb"] <= dp["dp_epsilon"]
    assert canary_dp["white_box"]["m"] == canary_dp["black_box"]["m"] == params["canaries"]["n"]
    canary_plain = json.loads((root / "metrics/canaries/undefended.json").read_text())
    assert "white_box" not in canary_plain and canary_plain["best_score"] == "black_box"
    assert [level["k"] for level in canary_plain["black_box"]["levels"]] == params["canaries"]["guesses"]
    assert report["dp_sgd"]["canary_audit"] == canary_dp
    assert "One-run canary audit" in (root / "reports/report.md").read_text()
    for score in ("white_box", "black_box"):
        assert (root / f"plots/canaries/dp_sgd/{score}.csv").read_text().startswith("k,correct,epsilon_lb")
    for key in ("dp_noise_multiplier", "dp_sampling_rate", "dp_steps", "dp_clip_norm"):  # the target's own DP plan
        assert canary_dp[key] == pytest.approx(dp[key])
    for name in defenses:
        assert (root / f"metrics/defenses/{name}/attacks.json").is_file()
        assert (root / f"plots/roc/{name}.csv").read_text().startswith("attack,fpr,tpr")
    for name in ("report.md", "roc.png", "privacy_utility.png", "canary_audit.png"):
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
    assert len(summary.data.metrics) <= 6 * len(report)  # a handful per target; every attack is in the table
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    assert "attacks_table.json" in {a.path for a in client.list_artifacts(summary.info.run_id)}
    experiment = client.get_experiment(summary.info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    contexts = {tag.value for d in summary.inputs.dataset_inputs for tag in d.tags if tag.key == "mlflow.data.context"}
    assert contexts == {"members", "non-members", "test", "attacker pool", "defender reference"}
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == summary.info.run_id]
    assert {r.data.tags["stage"] for r in children} == expected - {"report"}
    assert all(r.info.status == "FINISHED" for r in children)
    train_target = next(r for r in children if r.data.tags["stage"] == "train_target")
    assert "val_accuracy" in train_target.data.metrics
    mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
    model = mlflow.models.Model.load(f"runs:/{train_target.info.run_id}/model")  # signature and input example
    assert model.signature is not None and model.saved_input_example_info["type"] == "ndarray"
    assert train_target.data.tags["git_commit"] != "unknown"
    _commit(root, env)


def test_the_mlflow_ui_shows_the_audit_in_a_real_browser(project: tuple[Path, dict], tmp_path: Path) -> None:
    """`mlflow ui` on the run's store, looked at in headless Chromium as a new user would.

    After the one click on "Model training" the sidebar is the model-training
    one; the summary run unfolds into its nested stage runs; its artifacts
    include the HTML report. The server is stopped by its process group.
    """
    import urllib.request

    from pipeline.tools import ui_check

    if not ui_check.browser_available():
        if os.environ.get("CI"):
            pytest.fail("Debian's chromium and chromium-driver are missing; .ci/run installs them")
        pytest.skip("Debian's chromium and chromium-driver are not installed (.ci/run installs them)")
    root, _ = project
    (summary,) = [r for r in _runs(root) if r.data.tags.get("summary") == "true"]
    experiment = summary.info.experiment_id
    with ui_check.serve_ui(f"sqlite:///{root / 'mlflow.db'}") as base, ui_check.chromium(tmp_path / "profile") as driver:
        page = ui_check.open_training_runs(driver, base, experiment)
        assert "Model registry" in page and "Judges" not in page and "Prompts" not in page  # not the GenAI sidebar
        page = ui_check.expand_summary(driver, "train_target")
        for stage in ("prepare", "train_shadows", "train_reference", "defend@dropout", "attack_defense@dp_sgd"):
            assert stage in page, stage
        page = ui_check.open_run_artifacts(driver, base, experiment, summary.info.run_id)
        assert "report.html" in page and "attacks_table.json" in page
    with pytest.raises(OSError):  # the server is gone
        urllib.request.urlopen(f"{base}/health", timeout=2)


def test_second_repro_reruns_nothing(project: tuple[Path, dict]) -> None:
    root, env = project
    before = len(_runs(root))
    result = _run(["dvc", "repro"], root, env)
    assert _ran_stages(result.stdout) == set()
    assert len(_runs(root)) == before


def _set(root: Path, change: dict) -> None:
    params = yaml.safe_load((root / "params.yaml").read_text())
    (root / "params.yaml").write_text(yaml.safe_dump(_deep_update(params, change), sort_keys=False))


def test_an_attack_parameter_reruns_only_attack_stages(project: tuple[Path, dict]) -> None:
    root, env = project
    _set(root, {"attack": {"rmia": {"gamma": 2.0}}})
    result = _run(["dvc", "repro"], root, env)
    assert _ran_stages(result.stdout) == {*ATTACK_STAGES, "report"}
    _commit(root, env)


def test_changing_one_defense_reruns_only_its_stages_and_the_report(project: tuple[Path, dict]) -> None:
    root, env = project
    _set(root, {"defenses": {"dropout": {"rate": 0.3}}})
    result = _run(["dvc", "repro"], root, env)
    assert _ran_stages(result.stdout) == {"defend@dropout", "attack_defense@dropout", "report"}
    summary = max(
        (r for r in _runs(root) if r.data.tags.get("summary") == "true"), key=lambda r: r.info.start_time
    )
    assert summary.data.tags["stage_status.defend:dropout"] == "ran"
    assert summary.data.tags["stage_status.prepare"] == "cached"
    _commit(root, env)


def test_registering_models_reruns_only_the_report_and_tags_each_version(project: tuple[Path, dict]) -> None:
    """With mlflow.register_models on, every audited target is a registered version carrying its audit headline."""
    import mlflow

    root, env = project
    _set(root, {"mlflow": {"register_models": True}})
    result = _run(["dvc", "repro"], root, env)
    assert _ran_stages(result.stdout) == {"report"}
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    report = json.loads((root / "metrics/report.json").read_text())
    for name, row in report.items():
        (version,) = client.search_model_versions(f"name = 'membership-inference.{name}'")
        assert version.tags["audit.headline_attack"] == row["headline"]["attack"]
        assert float(version.tags["audit.headline_auc"]) == pytest.approx(row["headline"]["metrics"]["auc"], abs=5e-4)
        assert ("audit.dp_epsilon" in version.tags) == (name == "dp_sgd")
    _commit(root, env)


def _write_npz(path: Path, **arrays: np.ndarray) -> None:
    with open(path, "wb") as handle:
        np.savez(handle, **arrays)


BAD_INPUTS = [
    # (change to params, data file to create or None, text the one error line must contain)
    ({"epochs": 100}, None, "epochs: unknown key"),
    ({"seed": "abc"}, None, "seed: Input should be a valid integer"),
    ({"seed": True}, None, "seed: Input should be a valid integer"),
    ({"attack": {"enabled": ["lira_offlin"]}}, None, "unknown attack 'lira_offlin'"),
    ({"defenses": {"dropout": {"rate": 1.5}}}, None, "defenses.dropout.rate"),
    ({"defense": {"adaptive": "yes"}}, None, "defense.adaptive"),  # read by the defense and report stages only
    ({"attack": {"rmia": {"gamma": 0.5}}}, None, "attack.rmia.gamma"),
    ({"data": {"n_members": 5000, "n_shadow_pool": 10000}}, None, "data.n_members"),
    ({"data": {"n_shadow_pool": 100}}, None, "n_shadow_pool must be at least 2 * n_members = 120"),
    ({"data": {"dataset": "csv", "path": "data/raw/missing.csv"}}, None, "data.path: file not found"),
    ({"data": {"dataset": "csv", "path": "data/raw/bad.csv"}}, ("bad.csv", b"label,a\n1,\xff\xfe\n"), "bad.csv"),
    ({"data": {"dataset": "npz", "path": "data/raw/y2d.npz"}}, ("y2d.npz", "y2d"), "y2d.npz"),
    ({"data": {"dataset": "npz", "path": "data/raw/empty.npz"}}, ("empty.npz", "empty"), "empty.npz"),
    ({"target": {"architecture": "cnn", "conv_filters": [16, 32, 64, 128]}}, None, "target.conv_filters"),
]


def _make_data_file(path: Path, content: bytes | str) -> None:
    if content == "y2d":
        _write_npz(path, x=np.zeros((40, 3), np.float32), y=np.zeros((40, 3), np.int64))
    elif content == "empty":
        _write_npz(path, x=np.zeros((0, 3), np.float32), y=np.zeros(0, np.int64))
    else:
        path.write_bytes(content)


def test_bad_inputs_fail_with_one_line_and_change_no_committed_file(project: tuple[Path, dict]) -> None:
    root, env = project
    original = (root / "params.yaml").read_text()
    assert _changed(root, env) == []
    for change, data_file, expected in BAD_INPUTS:
        _set(root, change)
        if data_file is not None:
            _make_data_file(root / "data" / "raw" / data_file[0], data_file[1])
        result = _run(["dvc", "repro"], root, env, check=False)
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert result.returncode != 0, change
        assert len(errors) == 1 and expected in errors[0], (change, result.stderr[-2000:])
        assert "Traceback" not in result.stderr, change
        allowed = {" M params.yaml"} | ({f"?? data/raw/{data_file[0]}"} if data_file else set())
        assert set(_changed(root, env)) <= allowed, (change, _changed(root, env))
        (root / "params.yaml").write_text(original)
        if data_file is not None:
            (root / "data" / "raw" / data_file[0]).unlink()
    assert _ran_stages(_run(["dvc", "repro"], root, env).stdout) == set()
    assert _changed(root, env) == []


def _running_stage_pid(root: Path, stage: str, timeout: float = 180.0) -> int:
    """The pid of the stage process, read straight from the MLflow store once its run is RUNNING."""
    query = (
        "SELECT p.value FROM runs r JOIN tags s ON s.run_uuid = r.run_uuid AND s.key = 'stage' "
        "JOIN tags p ON p.run_uuid = r.run_uuid AND p.key = 'pid' WHERE r.status = 'RUNNING' AND s.value = ?"
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with sqlite3.connect(root / "mlflow.db", timeout=5) as db:
                found = db.execute(query, (stage,)).fetchall()
        except sqlite3.OperationalError:  # the store is being created
            found = []
        if found:
            return int(found[0][0])
        time.sleep(0.02)
    raise AssertionError(f"stage {stage} never started its MLflow run")


def _touch_code(root: Path, module: str) -> None:
    """Change a stage's code without changing what it computes, so DVC reruns it."""
    path = root / (module.replace(".", "/") + ".py")
    path.write_text(path.read_text() + "# touched\n")


def _interrupt_stage(root: Path, env: dict, stage: str, sig: int, delay: float) -> subprocess.CompletedProcess:
    """Run `dvc repro` and send `sig` to the stage's process `delay` seconds into its MLflow run."""
    repro = subprocess.Popen(["dvc", "repro"], cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    pid = _running_stage_pid(root, stage)
    time.sleep(delay)
    os.kill(pid, sig)
    out, err = repro.communicate(timeout=300)
    return subprocess.CompletedProcess(repro.args, repro.returncode, out, err)


@pytest.mark.parametrize("stage", ["train_shadows", "train_attack"])
def test_sigkill_during_a_stage_loses_nothing_and_repro_recovers(project: tuple[Path, dict], stage: str) -> None:
    root, env = project
    module = f"pipeline.stages.{stage}"
    before = _metrics(root)
    _touch_code(root, module)
    killed = _interrupt_stage(root, env, stage, signal.SIGKILL, 0.0)
    assert killed.returncode != 0
    assert set(_changed(root, env)) == {f" M {module.replace('.', '/')}.py"}  # nothing lost or half-written
    _run(["dvc", "repro"], root, env)
    assert _metrics(root) == before
    assert not list(root.rglob(".~tmp-*"))
    assert not [r for r in _runs(root) if r.info.status == "RUNNING"]  # the orphan was marked KILLED
    assert any(r.info.status == "KILLED" for r in _runs(root))
    _commit(root, env)


def test_sigint_during_an_attack_fit_fails_the_stage_and_records_nothing(project: tuple[Path, dict]) -> None:
    root, env = project
    module = "pipeline.stages.train_attack"
    _touch_code(root, module)
    lock = (root / "dvc.lock").read_text()
    interrupted = _interrupt_stage(root, env, "train_attack", signal.SIGINT, 0.3)
    assert interrupted.returncode != 0
    assert "interrupted by SIGINT; nothing was recorded" in interrupted.stderr
    assert (root / "dvc.lock").read_text() == lock
    assert set(_changed(root, env)) == {f" M {module.replace('.', '/')}.py"}
    latest = max((r for r in _runs(root) if r.data.tags.get("stage") == "train_attack"), key=lambda r: r.info.start_time)
    assert latest.info.status == "KILLED"
    _run(["git", "checkout", "--", "."], root, env)


def test_same_params_give_the_same_metrics(project: tuple[Path, dict]) -> None:
    """Forced reruns of training and attacks reproduce the metrics exactly."""
    root, env = project
    _run(["dvc", "repro"], root, env)
    before = _metrics(root)
    _run(["dvc", "repro", "-f", "-s", "train_target"], root, env)
    _run(["dvc", "repro", "-f", "-s", "defend@dropout"], root, env)
    _run(["dvc", "repro", "-f", "-s", "train_attack"], root, env)
    assert _metrics(root) == before


def test_a_removed_defense_no_longer_shows(project: tuple[Path, dict]) -> None:
    root, env = project
    _run(["dvc", "repro"], root, env)  # settle the forced reruns above (a saved .keras file differs in its zip timestamps)
    _set(root, {"defense": {"run": ["dropout", "memguard"]}, "canaries": {"defenses": []}})
    assert _ran_stages(_run(["dvc", "repro"], root, env).stdout) == {"report"}
    assert "dp_sgd" not in _run(["dvc", "metrics", "show"], root, env).stdout
    assert "dp_sgd" not in _run(["dvc", "plots", "show", "--json"], root, env).stdout
    assert list(json.loads((root / "metrics/report.json").read_text())) == ["undefended", "dropout", "memguard"]


# Outputs DVC caches (pushed and pulled); metrics/, plots/ and reports/ are `cache: false`, committed by git.
CACHED_OUTPUTS = ("data/attack_scores.npz", "data/target/model.keras", "data/summary_run.json")


def test_a_teammate_pulls_the_outputs_from_a_dvc_remote_and_reruns_nothing(
    project: tuple[Path, dict], tmp_path: Path
) -> None:
    root, env = project
    # The removed defense's run records (test above) are no stage's output, so DVC neither caches nor
    # pushes them, yet they count in the report's `data/runs` dep: drop them and settle the report first.
    stages = set(_run(["dvc", "stage", "list", "--name-only"], root, env).stdout.split())
    lock = yaml.safe_load((root / "dvc.lock").read_text())["stages"]  # keeps entries of removed stages
    outputs = {out["path"] for name in stages for out in lock[name].get("outs", [])}
    for record in (root / "data/runs").glob("*.json"):
        if str(record.relative_to(root)) not in outputs:
            record.unlink()
    assert _ran_stages(_run(["dvc", "repro"], root, env).stdout) <= {"report"}
    _commit(root, env)
    _run(["dvc", "remote", "add", "-d", "team", str(tmp_path / "remote")], root, env)
    _commit(root, env)  # the remote's address travels with the repository
    assert "pushed" in _run(["dvc", "push"], root, env).stdout
    clone = tmp_path / "clone"
    _run(["git", "clone", "-q", str(root), str(clone)], tmp_path, env)
    teammate = {**env, "MLFLOW_TRACKING_URI": f"sqlite:///{clone / 'mlflow.db'}"}
    tracked = set(_run(["git", "ls-files"], clone, teammate).stdout.splitlines())
    assert "reports/report.md" in tracked and not tracked & set(CACHED_OUTPUTS)
    assert not [path for path in CACHED_OUTPUTS if (clone / path).exists()]
    assert json.loads(_run(["dvc", "status", "--json"], clone, teammate).stdout)  # cached outputs missing
    _run(["dvc", "pull"], clone, teammate)
    assert json.loads(_run(["dvc", "status", "--json"], clone, teammate).stdout) == {}
    assert _ran_stages(_run(["dvc", "repro"], clone, teammate).stdout) == set()
    for path in ("reports/report.md", *CACHED_OUTPUTS):
        assert (clone / path).read_bytes() == (root / path).read_bytes(), path
    assert _metrics(clone) == _metrics(root)
    assert not (clone / "mlflow.db").exists()  # no stage ran, so nothing was logged


def _queue_finished(root: Path, env: dict, names: set[str], timeout: float = 600.0) -> dict[str, str]:
    """Poll `dvc queue status` until none of `names` is queued or running; name -> final status."""
    deadline = time.monotonic() + timeout
    while True:
        rows = [line.split() for line in _run(["dvc", "queue", "status"], root, env).stdout.splitlines()]
        status = {row[1]: row[-1] for row in rows if len(row) > 2 and row[1] in names}
        if set(status) == names and not {"Queued", "Running"} & set(status.values()):
            return status
        assert time.monotonic() < deadline, status
        time.sleep(5)  # each `dvc queue status` costs a second of CPU the workers need


def test_queued_experiments_log_to_the_project_store_without_mlflow_tracking_uri(project: tuple[Path, dict]) -> None:
    """`dvc exp run --queue` and `dvc queue start --jobs 2` as from an activated environment.

    Each experiment runs in a temporary copy under `.dvc/tmp/exps` that DVC
    deletes afterwards; with no MLFLOW_TRACKING_URI, its runs still land in
    the project's own mlflow.db (and artifacts), and it restores the trained
    models from the cache, rerunning only the attack stages and the report.
    """
    import mlflow

    root, env = project
    shell = {key: value for key, value in env.items() if key != "MLFLOW_TRACKING_URI"}
    before = {r.info.run_id for r in _runs(root)}
    gammas = {"gamma-1-5": 1.5, "gamma-3": 3.0}
    for name, gamma in gammas.items():
        _run(["dvc", "exp", "run", "--queue", "-S", f"attack.rmia.gamma={gamma}", "-n", name], root, shell)
    _run(["dvc", "queue", "start", "--jobs", "2"], root, shell)
    assert _queue_finished(root, shell, set(gammas)) == dict.fromkeys(gammas, "Success")
    assert set(gammas) <= set(_run(["dvc", "exp", "list", "--name-only"], root, shell).stdout.split())

    defenses = yaml.safe_load((root / "params.yaml").read_text())["defense"]["run"]
    attacks = {"train_attack", *(f"attack_defense@{name}" for name in defenses)}
    new = [r for r in _runs(root) if r.info.run_id not in before]
    summaries = {r.data.tags.get("dvc_experiment"): r for r in new if r.data.tags.get("summary") == "true"}
    assert set(summaries) == set(gammas) and len(new) == len(gammas) * (len(attacks) + 1)
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    for name, summary in summaries.items():
        assert summary.info.status == "FINISHED"
        assert float(summary.data.params["attack.rmia.gamma"]) == gammas[name]
        assert "report.html" in {a.path for a in client.list_artifacts(summary.info.run_id)}
        children = {r.data.tags["stage"] for r in new if r.data.tags.get("mlflow.parentRunId") == summary.info.run_id}
        assert children == attacks
        assert _ran_stages(_run(["dvc", "queue", "logs", name], root, shell).stdout) == attacks | {"report"}
