"""Make the MLflow UI screenshots of docs/operations.md with the browser-test harness (`pipeline.tools.ui_check`).

In a throwaway copy of the project it runs two experiments with
`dvc exp run -S ...` (default params, two defenses, the second with another
dropout rate), serves that copy's store with `mlflow ui` and photographs,
in headless Chromium, what docs/operations.md's "The MLflow UI" section walks
through:

- docs/ui-runs.png      the experiment's runs after the click on "Model training",
                        the newest summary run unfolded into its stage runs;
- docs/ui-summary.png   that summary run as its page opens: the description (headline table), metrics, facts;
- docs/ui-report.png    its artifacts, with the HTML report open;
- docs/ui-compare.png   the compare view of the two experiments' summary runs.

    .venv/bin/python docs/screenshots.py      (about 5 minutes on 2 cores)
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from pipeline.tools.sandbox import PROJECT, make_sandbox
from pipeline.tools.ui_check import (
    browser_available,
    chromium,
    close_assistant,
    expand_summary,
    open_compare,
    open_run_artifacts,
    open_training_runs,
    serve_ui,
    wait_for_text,
)

EXPERIMENTS = (
    ["-S", "defense.run=[dropout,dp_sgd]"],
    ["-S", "defense.run=[dropout,dp_sgd]", "-S", "defenses.dropout.rate=0.3"],
)


def _summary_runs(root: Path) -> tuple[str, list[str]]:
    """The experiment id and the summary runs, newest first."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("membership-inference").experiment_id
    runs = client.search_runs([experiment], "tags.summary = 'true'", order_by=["attributes.start_time DESC"])
    return experiment, [run.info.run_id for run in runs]


def _wait_for_preview(driver: Any, timeout_s: float = 60.0) -> None:
    """Wait until the artifact view has rendered the HTML report in its frame."""
    deadline = time.monotonic() + timeout_s
    while not driver.find_elements("tag name", "iframe"):
        if time.monotonic() > deadline:
            raise RuntimeError("the artifact view never rendered report.html")
        time.sleep(0.5)
    time.sleep(3)  # the frame's own images and layout


def main() -> None:
    if not browser_available():
        sys.exit("error: needs Debian's chromium and chromium-driver (apt-get install -y chromium chromium-driver)")

    out = PROJECT / "docs"
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder) / "project"
        root.mkdir()
        env = make_sandbox(root)
        for overrides in EXPERIMENTS:
            print("dvc exp run", " ".join(overrides), flush=True)
            subprocess.run(["dvc", "exp", "run", *overrides], cwd=root, env=env, check=True, capture_output=True)
        experiment, summaries = _summary_runs(root)
        with serve_ui(f"sqlite:///{root / 'mlflow.db'}") as base, chromium(Path(folder) / "profile") as driver:
            open_training_runs(driver, base, experiment)
            close_assistant(driver)
            expand_summary(driver, "train_target", index=len(summaries) - 1)  # the first experiment ran every stage
            driver.save_screenshot(str(out / "ui-runs.png"))
            driver.get(f"{base}/#/experiments/{experiment}/runs/{summaries[0]}")
            wait_for_text(driver, "undefended.headline_auc")  # the page as it opens: the description, metrics, facts
            time.sleep(1)
            driver.save_screenshot(str(out / "ui-summary.png"))
            open_run_artifacts(driver, base, experiment, summaries[0])
            driver.find_element("xpath", "//*[normalize-space(text())='report.html']").click()
            _wait_for_preview(driver)
            driver.save_screenshot(str(out / "ui-report.png"))
            open_compare(driver, base, experiment, summaries[:2])
            driver.save_screenshot(str(out / "ui-compare.png"))
    print("wrote docs/ui-runs.png, docs/ui-summary.png, docs/ui-report.png, docs/ui-compare.png")


if __name__ == "__main__":
    main()
