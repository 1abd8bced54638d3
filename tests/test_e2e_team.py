"""Working as a team: outputs shared through a DVC remote, and experiments queued from a shell.

Each test changes its own copy of scenario `trimmed` (tests/scenarios.py):
a teammate who clones the repository and pulls from the remote sees the
same results and reruns nothing; `dvc exp run --queue` experiments log to
the project's own MLflow store and restore the trained models from the
cache.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
import yaml
from scenarios import Sandbox, ran_stages

pytestmark = pytest.mark.slow

# Outputs DVC caches (pushed and pulled); metrics/, plots/ and reports/ are `cache: false`, committed by git.
CACHED_OUTPUTS = ("data/attack_scores.npz", "data/target/model.keras", "data/summary_run.json")


def test_a_teammate_pulls_the_outputs_from_a_dvc_remote_and_reruns_nothing(trimmed_copy: Sandbox, tmp_path: Path) -> None:
    box = trimmed_copy
    # A removed defense's run record and recipe outputs (dp_sgd's, dropped in scenario `trimmed`) are no stage's
    # output, so DVC neither caches nor pushes them, yet they count in the folder deps `data/runs` (the report's)
    # and `data/recipes` (recipe_attack's): drop them, as a user would, and settle those two stages.
    stages = set(box.run("dvc", "stage", "list", "--name-only").stdout.split())
    lock = yaml.safe_load((box.root / "dvc.lock").read_text())["stages"]  # keeps entries of removed stages
    outputs = {out["path"] for name in stages for out in lock[name].get("outs", [])}
    for leftover in [*(box.root / "data/runs").glob("*.json"), *(box.root / "data/recipes").iterdir()]:
        if str(leftover.relative_to(box.root)) not in outputs:
            shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()
    assert ran_stages(box.repro().stdout) <= {"recipe_attack", "report"}
    box.commit()
    box.run("dvc", "remote", "add", "-d", "team", str(tmp_path / "remote"))
    box.commit()  # the remote's address travels with the repository
    assert "pushed" in box.run("dvc", "push").stdout
    clone = tmp_path / "clone"
    box.run("git", "clone", "-q", str(box.root), str(clone))
    teammate = Sandbox(clone, {**box.env, "MLFLOW_TRACKING_URI": f"sqlite:///{clone / 'mlflow.db'}"})
    tracked = set(teammate.run("git", "ls-files").stdout.splitlines())
    assert "reports/report.md" in tracked and not tracked & set(CACHED_OUTPUTS)
    assert not [path for path in CACHED_OUTPUTS if (clone / path).exists()]
    assert teammate.status()  # cached outputs missing
    teammate.run("dvc", "pull")
    assert teammate.status() == {}
    assert ran_stages(teammate.repro().stdout) == set()
    for path in ("reports/report.md", *CACHED_OUTPUTS):
        assert (clone / path).read_bytes() == (box.root / path).read_bytes(), path
    assert teammate.metrics() == box.metrics()
    assert not (clone / "mlflow.db").exists()  # no stage ran, so nothing was logged


def _queue_finished(box: Sandbox, env: dict, names: set[str], timeout: float = 600.0) -> dict[str, str]:
    """Poll `dvc queue status` until none of `names` is queued or running; name -> final status."""
    deadline = time.monotonic() + timeout
    while True:
        rows = [line.split() for line in box.run("dvc", "queue", "status", env=env).stdout.splitlines()]
        status = {row[1]: row[-1] for row in rows if len(row) > 2 and row[1] in names}
        if set(status) == names and not {"Queued", "Running"} & set(status.values()):
            return status
        assert time.monotonic() < deadline, status
        time.sleep(5)  # the polling interval: each `dvc queue status` costs a second of CPU the workers need


def test_queued_experiments_log_to_the_project_store_without_mlflow_tracking_uri(trimmed_copy: Sandbox) -> None:
    """`dvc exp run --queue` and `dvc queue start --jobs 2` as from an activated environment, on a new store.

    Each experiment runs in a temporary copy under `.dvc/tmp/exps` that DVC
    deletes afterwards; with no MLFLOW_TRACKING_URI, its runs still land in
    the project's own mlflow.db (and artifacts), and it restores every
    model and attack from the cache, rerunning only what its change reads:
    the recipe comparison's accuracy tolerance reruns `recipe_attack` and
    the report. The store does not exist yet, as in a fresh clone: both
    workers' first stages open it at once, and neither may fail creating it.
    """
    import mlflow

    box = trimmed_copy
    shell = {key: value for key, value in box.env.items() if key != "MLFLOW_TRACKING_URI"}
    (box.root / "mlflow.db").unlink()
    tolerances = {"tolerance-2pct": 0.02, "tolerance-5pct": 0.05}
    try:
        for name, tolerance in tolerances.items():
            box.run("dvc", "exp", "run", "--queue", "-S", f"recipe_audit.accuracy_tolerance={tolerance}", "-n", name, env=shell)
        box.run("dvc", "queue", "start", "--jobs", "2", env=shell)
        assert _queue_finished(box, shell, set(tolerances)) == dict.fromkeys(tolerances, "Success")
    except BaseException:  # workers exit once the queue is empty; on a failure, stop them here
        box.run("dvc", "queue", "stop", "--kill", env=shell, check=False)
        raise
    assert set(tolerances) <= set(box.run("dvc", "exp", "list", "--name-only", env=shell).stdout.split())

    runs = box.runs()
    summaries = {r.data.tags.get("dvc_experiment"): r for r in runs if r.data.tags.get("summary") == "true"}
    assert set(summaries) == set(tolerances) and len(runs) == 2 * len(tolerances)
    client = mlflow.MlflowClient(tracking_uri=box.store)
    for name, summary in summaries.items():
        assert summary.info.status == "FINISHED"
        assert float(summary.data.params["recipe_audit.accuracy_tolerance"]) == tolerances[name]
        assert "report.html" in {a.path for a in client.list_artifacts(summary.info.run_id)}
        children = {r.data.tags["stage"] for r in runs if r.data.tags.get("mlflow.parentRunId") == summary.info.run_id}
        assert children == {"recipe_attack"}
        assert ran_stages(box.run("dvc", "queue", "logs", name, env=shell).stdout) == {"validate", "recipe_attack", "report"}
