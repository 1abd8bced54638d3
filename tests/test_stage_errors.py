"""A stage given bad params exits non-zero with one line naming the key, writing nothing."""

import shutil
import subprocess
import sys
from pathlib import Path

import yaml

PROJECT = Path(__file__).resolve().parents[1]


def _stage(tmp_path: Path, params: dict, stage: str = "prepare") -> subprocess.CompletedProcess:
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    shutil.copytree(PROJECT / "pipeline", tmp_path / "pipeline", ignore=shutil.ignore_patterns("__pycache__"))
    return subprocess.run(
        [sys.executable, "-m", f"pipeline.stages.{stage}"], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )


def test_unknown_key_is_one_line_and_writes_nothing(tmp_path: Path) -> None:
    params = yaml.safe_load((PROJECT / "params.yaml").read_text())
    params["data"]["n_member"] = 10
    result = _stage(tmp_path, params)
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0
    assert "data.n_member: unknown key" in result.stderr
    assert not (tmp_path / "data").exists() and not (tmp_path / "mlflow.db").exists()


def test_unknown_defense_is_one_line(tmp_path: Path) -> None:
    params = yaml.safe_load((PROJECT / "params.yaml").read_text())
    params["defenses"]["dp"] = {"type": "telepathy"}
    result = _stage(tmp_path, params, "validate")  # the first stage of every dvc repro
    assert result.returncode == 1 and "defenses.dp" in result.stderr and "dropout" in result.stderr
    assert not (tmp_path / "data").exists()
    assert result.stderr.strip().count("\n") == 0
