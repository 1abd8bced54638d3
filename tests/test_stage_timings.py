"""Stage timings for `make bench`: written only when asked, with start-up, tracking and total time."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from pipeline.core import timings
from pipeline.tools.sandbox import PROJECT


def test_process_age_counts_from_the_process_start() -> None:
    code = "import time; time.sleep(0.3); from pipeline.core.timings import process_age; print(process_age())"
    out = subprocess.run([sys.executable, "-c", code], cwd=PROJECT, capture_output=True, text=True, check=True)
    assert 0.3 <= float(out.stdout) < 30


def test_nothing_is_written_unless_asked(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv(timings.TIMINGS_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    timings.record("validate", 0.5)
    assert list(tmp_path.iterdir()) == []


def test_a_stage_writes_its_startup_tracking_and_total(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv(timings.TIMINGS_ENV, str(tmp_path / "t"))
    with timings.spent("tracking"):
        pass
    timings.record("train_attack@dropout", 0.5)
    written = json.loads((tmp_path / "t" / "train_attack@dropout.json").read_text())
    assert written["stage"] == "train_attack@dropout" and written["startup_s"] == 0.5
    assert written["tracking_s"] >= 0 and written["total_s"] > 0
