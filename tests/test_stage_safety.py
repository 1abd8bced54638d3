"""The pieces that keep a failed, interrupted or killed stage from losing or faking a result."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.checks import check
from pipeline.config import parse_params
from pipeline.core.errors import PipelineError
from pipeline.core.io import (
    TEMP_PREFIX,
    staged_outputs,
    staged_path,
    sweep_stale_temporaries,
    write_json,
    write_text,
)
from pipeline.core.processes import StageInterrupted, interrupts_raise_stage_interrupted
from pipeline.stages.common import ScopedParams


def test_staged_outputs_replace_files_only_when_the_block_succeeds(tmp_path: Path) -> None:
    write_text(tmp_path / "a.txt", "old a")
    write_text(tmp_path / "b.txt", "old b")
    with pytest.raises(RuntimeError):
        with staged_outputs():
            write_text(tmp_path / "a.txt", "new a")
            raise RuntimeError("the stage fails after writing one output")
    assert (tmp_path / "a.txt").read_text() == "old a"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.txt"]  # no temporary left
    with staged_outputs():
        write_text(tmp_path / "a.txt", "new a")
        write_json(tmp_path / "b.txt", {"b": 1})
        assert (tmp_path / "a.txt").read_text() == "old a"  # held back until the end
        assert staged_path(tmp_path / "a.txt").read_text() == "new a"
        assert staged_path(tmp_path / "a.txt").name == "a.txt"
    assert (tmp_path / "a.txt").read_text() == "new a" and '"b": 1' in (tmp_path / "b.txt").read_text()


def test_sweep_removes_temporaries_of_dead_processes_only(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    stale = tmp_path / "metrics" / f"{TEMP_PREFIX}{dead_pid}-abc"
    live = tmp_path / "metrics" / f"{TEMP_PREFIX}{os.getppid()}-def"
    for folder in (stale, live):
        folder.mkdir(parents=True)
        (folder / "report.json").write_text("{}")
    assert sweep_stale_temporaries([tmp_path]) == [stale]
    assert not stale.exists() and live.exists()


def test_interrupt_cannot_be_swallowed_by_except_keyboard_interrupt() -> None:
    """scikit-learn's MLP fit catches KeyboardInterrupt and returns; the stage's interrupt passes through."""
    before = signal.getsignal(signal.SIGINT)  # Python's default handler, or SIG_IGN when started in the background
    with pytest.raises(StageInterrupted) as caught:
        with interrupts_raise_stage_interrupted():
            try:
                os.kill(os.getpid(), signal.SIGINT)
            except KeyboardInterrupt:
                pytest.fail("the interrupt was caught as KeyboardInterrupt")
    assert caught.value.exit_code == 130
    assert signal.getsignal(signal.SIGINT) is before  # handlers restored


def test_scoped_params_refuse_undeclared_reads_and_report_unread_scopes() -> None:
    params = parse_params({"data": {"n_members": 200}, "defense": {"run": []}})
    view = ScopedParams(params, ("seed", "data.n_members", "defense.run"))
    assert view.data.n_members == 200 and view.seed == 42
    with pytest.raises(PipelineError, match="'data.n_test'"):
        _ = view.data.n_test
    with pytest.raises(PipelineError, match="'target'"):
        _ = view.target
    assert view.unread_scopes() == ["defense.run"]


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ({"seed": True}, "seed"),
        ({"target": {"epochs": 40.5}}, "target.epochs"),
        ({"attack": {"rmia": {"gamma": True}}}, "attack.rmia.gamma"),
        ({"data": {"n_members": "350"}}, "data.n_members"),
        ({"attack": {"metric": {"class_dependent": 1}}}, "attack.metric.class_dependent"),
    ],
)
def test_booleans_are_not_numbers_and_numbers_are_not_booleans(raw: dict, key: str) -> None:
    raw = {"defense": {"run": []}, **raw}
    with pytest.raises(PipelineError, match=key):
        check(parse_params(raw))


def test_orphaned_runs_are_marked_killed(tmp_path: Path) -> None:
    import mlflow

    from pipeline.core.tracking import stage_run

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    script = (
        "import os, sys\n"
        "from pathlib import Path\n"
        "from pipeline.core.tracking import stage_run\n"
        "with stage_run('train_target', 'e', Path(sys.argv[1]), {}):\n"
        "    os.kill(os.getpid(), 9)\n"
    )
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    killed = subprocess.run([sys.executable, "-c", script, str(tmp_path)], env=env, capture_output=True, timeout=120)
    assert killed.returncode == -9
    client = mlflow.MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("e").experiment_id
    [orphan] = client.search_runs([experiment])
    assert orphan.info.status == "RUNNING"
    os.environ["MLFLOW_TRACKING_URI"] = uri
    try:
        with stage_run("prepare", "e", tmp_path, {}):
            pass
    finally:
        del os.environ["MLFLOW_TRACKING_URI"]
    assert client.get_run(orphan.info.run_id).info.status == "KILLED"


def test_exponent_floats_without_a_dot_load_as_numbers(tmp_path: Path) -> None:
    """`dvc exp run -S defenses.l2.weight=1e-5` writes `1e-05`, which YAML 1.1 would read as a string."""
    from pipeline.config import load_params

    path = tmp_path / "params.yaml"
    path.write_text("defense:\n  run: [l2]\ndefenses:\n  l2:\n    type: l2\n    weight: 1e-05\ntarget:\n  learning_rate: 2E+1\n")
    params = load_params(path)
    assert params.defenses["l2"].weight == 1e-5 and params.target.learning_rate == 20.0
    path.write_text("seed: 1e3\n")
    with pytest.raises(PipelineError, match="seed"):
        load_params(path)  # a float is still not an integer


def test_interrupts_during_the_commit_of_outputs_are_ignored() -> None:
    from pipeline.core.processes import interrupts_ignored

    with interrupts_raise_stage_interrupted():
        with interrupts_ignored():
            os.kill(os.getpid(), signal.SIGINT)
            sum(range(1000))  # give the handler bytecodes to run on
        with pytest.raises(StageInterrupted):
            os.kill(os.getpid(), signal.SIGINT)
            sum(range(1000))


@pytest.mark.parametrize("name", ["undefended", "target"])
def test_a_defense_may_not_take_the_undefended_targets_file_names(name: str) -> None:
    with pytest.raises(PipelineError, match=f"defense name '{name}' is reserved"):
        parse_params({"defense": {"run": []}, "defenses": {name: {"type": "l2"}}})


def test_written_numbers_stop_at_six_significant_digits(tmp_path: Path) -> None:
    """float32 kernels differ between CPUs in the 7th digit: what the pipeline writes does not reach it."""
    import json

    import numpy as np

    write_json(tmp_path / "m.json", {"auc": 0.66001234, "tpr": np.float32(1 / 3), "n": 350, "ok": True,
                                     "none": None, "curve": [1.23456789e-5, 2.0], "nested": {"eps": 4.000000017}})  # fmt: skip
    back = json.loads((tmp_path / "m.json").read_text())
    assert back == {"auc": 0.660012, "tpr": 0.333333, "n": 350, "ok": True, "none": None,
                    "curve": [1.23457e-05, 2.0], "nested": {"eps": 4.0}}  # fmt: skip
    assert isinstance(back["n"], int) and back["ok"] is True
