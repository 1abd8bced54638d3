"""Bad params and data, SIGKILL and SIGINT in a real `dvc repro`: one line, nothing lost, nothing recorded.

Each test works on its own copy of scenario `trimmed` (tests/scenarios.py),
a committed, complete run: bad inputs must fail with one `error:` line and
change no committed file but dvc.lock's record of stage `validate` (params
that pass its checks and fail on the data in `prepare` leave validate's run
recorded; the next `dvc repro` after the fix reruns validate alone); a stage killed (SIGKILL) or interrupted (SIGINT)
while it runs must leave every output as it was, and the next `dvc repro`
must recover.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from scenarios import Sandbox, ran_stages

pytestmark = pytest.mark.slow


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


def _lock_changes(box: Sandbox, committed: str) -> set[str]:
    """The stages whose dvc.lock entry differs from the committed one."""
    before, after = (yaml.safe_load(text)["stages"] for text in (committed, (box.root / "dvc.lock").read_text()))
    return {name for name in before.keys() | after.keys() if before.get(name) != after.get(name)}


def test_bad_inputs_fail_with_one_line_and_change_no_committed_file(trimmed_copy: Sandbox) -> None:
    box = trimmed_copy
    original, lock = (box.root / "params.yaml").read_text(), (box.root / "dvc.lock").read_text()
    assert box.changed() == []
    recovered = False
    for change, data_file, expected in BAD_INPUTS:
        box.set_params(change)
        if data_file is not None:
            _make_data_file(box.root / "data" / "raw" / data_file[0], data_file[1])
        result = box.repro(check=False)
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert result.returncode != 0, change
        assert len(errors) == 1 and expected in errors[0], (change, result.stderr[-2000:])
        assert "Traceback" not in result.stderr, change
        allowed = {" M params.yaml"} | ({f"?? data/raw/{data_file[0]}"} if data_file else set())
        validated = " M dvc.lock" in box.changed()  # params that pass validate and fail in prepare, on the data
        if validated:
            assert _lock_changes(box, lock) == {"validate"}, change
            allowed.add(" M dvc.lock")
        assert set(box.changed()) <= allowed, (change, box.changed())
        (box.root / "params.yaml").write_text(original)
        if data_file is not None:
            (box.root / "data" / "raw" / data_file[0]).unlink()
        if validated and not recovered:  # once: the fixed params rerun validate alone, which restores its record
            assert ran_stages(box.repro().stdout) == {"validate"}
            assert (box.root / "dvc.lock").read_text() == lock
            recovered = True
        (box.root / "dvc.lock").write_text(lock)
    assert recovered  # the data cases pass validate (it does not read the data)
    assert ran_stages(box.repro().stdout) == set()
    assert box.changed() == []


def _stage_run(root: Path, stage: str, timeout: float = 180.0) -> int:
    """The pid of the stage's process once its MLflow run is RUNNING."""
    query = (
        "SELECT p.value FROM runs r JOIN tags s ON s.run_uuid = r.run_uuid AND s.key = 'stage' "
        "JOIN tags p ON p.run_uuid = r.run_uuid AND p.key = 'pid' WHERE r.status = 'RUNNING' AND s.value = ?"
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with sqlite3.connect(root / "mlflow.db", timeout=5) as db:
                found = db.execute(query, (stage,)).fetchall()
        except sqlite3.OperationalError:  # the store is busy
            found = []
        if found:
            return int(found[0][0])
        time.sleep(0.02)  # polling the store, not waiting for time to pass
    raise AssertionError(f"stage {stage} never started its MLflow run")


def _touch_code(root: Path, module: str) -> None:
    """Change a stage's code without changing what it computes, so DVC reruns it."""
    path = root / (module.replace(".", "/") + ".py")
    path.write_text(path.read_text() + "# touched\n")


def _interrupt_stage(box: Sandbox, stage: str, sig: int, after_line: str | None = None) -> subprocess.CompletedProcess:
    """Run `dvc repro` and send `sig` to the stage's process once its MLflow run is under way.

    With `after_line`, only once the stage has also printed a line holding it
    (the stage's output goes straight to `dvc repro`'s).
    """
    repro = subprocess.Popen(["dvc", "repro"], cwd=box.root, env=box.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen = []
    try:
        while after_line is not None and (line := repro.stdout.readline()):
            seen.append(line)
            if after_line in line:
                break
        os.kill(_stage_run(box.root, stage), sig)
        out, err = repro.communicate(timeout=300)
        out = "".join(seen) + out
    finally:
        if repro.poll() is None:
            repro.kill()
            repro.communicate()
    return subprocess.CompletedProcess(repro.args, repro.returncode, out, err)


@pytest.mark.parametrize("stage", ["train_shadows", "train_attack"])
def test_sigkill_during_a_stage_loses_nothing_and_repro_recovers(trimmed_copy: Sandbox, stage: str) -> None:
    box = trimmed_copy
    module = f"pipeline.stages.{stage}"
    before = box.metrics()
    _touch_code(box.root, module)
    killed = _interrupt_stage(box, stage, signal.SIGKILL)
    assert killed.returncode != 0
    assert set(box.changed()) == {f" M {module.replace('.', '/')}.py"}  # nothing lost or half-written
    box.repro()
    assert box.metrics() == before
    assert not list(box.root.rglob(".~tmp-*"))
    assert not [r for r in box.runs() if r.info.status == "RUNNING"]  # the orphan was marked KILLED
    assert any(r.info.status == "KILLED" for r in box.runs())


def test_sigint_during_an_attack_fit_fails_the_stage_and_records_nothing(trimmed_copy: Sandbox) -> None:
    box = trimmed_copy
    module = "pipeline.stages.train_attack"
    _touch_code(box.root, module)
    lock = (box.root / "dvc.lock").read_text()
    interrupted = _interrupt_stage(box, "train_attack", signal.SIGINT, after_line="attacks on the undefended target:")
    assert interrupted.returncode != 0
    assert "interrupted by SIGINT; nothing was recorded" in interrupted.stderr
    assert (box.root / "dvc.lock").read_text() == lock
    assert set(box.changed()) == {f" M {module.replace('.', '/')}.py"}
    latest = max((r for r in box.runs() if r.data.tags.get("stage") == "train_attack"), key=lambda r: r.info.start_time)
    assert latest.info.status == "KILLED"
