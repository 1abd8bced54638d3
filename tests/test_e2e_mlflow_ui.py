"""`mlflow ui` on scenario `tiny`'s store, looked at in headless Chromium as a new user would.

After the one click on "Model training" the sidebar is the model-training
one; the summary run unfolds into its nested stage runs; its page shows
its description, the headline table, above its metrics and params; its
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
        # MLflow 3's run page lists the run's facts, datasets and tags first (one `stage_runs` tag, not one per
        # stage), then the description, above the metrics and the 100-odd params
        assert "Membership-inference audit" in page and page.rindex("Membership-inference audit") < page.index("Metrics (")
        assert "stage_runs" in page and "stage_status" not in page
        page = ui_check.open_run_artifacts(driver, base, experiment, summary.info.run_id)
        assert "report.html" in page and "attacks_table.json" in page
    with pytest.raises(OSError):  # the server is gone
        urllib.request.urlopen(f"{base}/health", timeout=2)
