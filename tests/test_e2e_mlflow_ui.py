"""`mlflow ui` on scenario `tiny`'s store, looked at in headless Chromium as a new user would.

After the one click on "Model training" the sidebar is the model-training
one; the summary run unfolds into its nested stage runs; its page shows
its description, the headline table, in the window as it opens (once
the assistant panel is closed, as a user does), above its metrics and params; its
artifacts include the HTML report. The server is stopped by its process group.
"""

from __future__ import annotations

import os
import urllib.request
from pathlib import Path

import pytest
from scenarios import Built

pytestmark = pytest.mark.slow


def test_the_mlflow_ui_shows_the_audit_in_a_real_browser(tiny: Built, tmp_path: Path) -> None:
    from pipeline.tools import ui_check

    if not ui_check.browser_available():
        if os.environ.get("CI"):
            pytest.fail("Debian's chromium and chromium-driver are missing; .ci/run installs them")
        pytest.skip("Debian's chromium and chromium-driver are not installed (.ci/run installs them)")
    box = tiny.sandbox
    (summary,) = box.summaries()
    experiment = summary.info.experiment_id
    with ui_check.serve_ui(box.store) as base, ui_check.chromium(tmp_path / "profile") as driver:
        page = ui_check.open_training_runs(driver, base, experiment)
        assert "Model registry" in page and "Judges" not in page and "Prompts" not in page  # not the GenAI sidebar
        page = ui_check.expand_summary(driver, "train_target")
        for stage in ("prepare", "train_shadows", "train_reference", "defend@dropout", "attack_defense@dp_sgd"):
            assert stage in page, stage
        head = box.read_json("metrics/report.json")["undefended"]["headline"]["attack"]
        page = ui_check.open_run_overview(driver, base, experiment, summary.info.run_id, "Membership-inference audit")
        assert head in page and "TPR@1%FPR" in page  # the description: the headline table
        assert "stage_runs" in page and "stage_status" not in page  # one tag links the stage runs, not two per stage
        ui_check.close_assistant(driver)  # as a user does; with it open the page stacks the run's facts on top
        page = ui_check.open_run_overview(driver, base, experiment, summary.info.run_id, "Membership-inference audit")
        assert page.index("Membership-inference audit") < page.index("Metrics (") < page.index("Parameters (")
        for text in ("Membership-inference audit", "TPR@1%FPR", head):  # the description's title, table head, first row
            assert ui_check.seen_without_scrolling(driver, text), text
        page = ui_check.open_run_artifacts(driver, base, experiment, summary.info.run_id)
        assert "report.html" in page and "attacks_table.json" in page
    with pytest.raises(OSError):  # the server is gone
        urllib.request.urlopen(f"{base}/health", timeout=2)
