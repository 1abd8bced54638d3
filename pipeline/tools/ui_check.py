"""Look at the MLflow UI as a person does: a real `mlflow ui` server and headless Chromium.

Used by the browser test (`tests/test_e2e_mlflow_ui.py`) and by
`docs/screenshots.py`, which makes the screenshots of docs/operations.md. Needs
Debian's `chromium` and `chromium-driver` (`.ci/run` installs them) and
the `selenium` package (the `dev` extra). The server binds to 127.0.0.1
and is stopped by its process group, which `serve_ui` started.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
CHROMIUM_FLAGS = (
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--window-size=1600,1000",
)  # fmt: skip


def browser_available() -> bool:
    """Whether Chromium and its driver are installed."""
    return Path(CHROMIUM).is_file() and Path(CHROMEDRIVER).is_file()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def serve_ui(store_uri: str, timeout_s: float = 120.0) -> Iterator[str]:
    """`mlflow ui` on 127.0.0.1 against `store_uri`; yields its base URL and stops its process group on exit."""
    port = free_port()
    mlflow = Path(sys.executable).with_name("mlflow")
    server = subprocess.Popen(
        [str(mlflow), "ui", "--backend-store-uri", store_uri, "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"mlflow ui did not come up on {base} (exit code {server.poll()})")
            time.sleep(0.5)
        yield base
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


@contextlib.contextmanager
def chromium(profile: Path) -> Iterator[Any]:
    """Headless Chromium driven by Selenium, with a fresh profile folder (as a new user's browser)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def wait_for_text(driver: Any, text: str, timeout_s: float = 60.0) -> str:
    """The page's visible text once it contains `text`."""
    deadline = time.monotonic() + timeout_s
    while True:
        body = driver.find_element("tag name", "body").text
        if text in body:
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"the page never showed {text!r}; it shows: {body[:600]!r}")
        time.sleep(0.5)


def close_assistant(driver: Any) -> None:
    """Close MLflow's assistant side panel (its header's last button), as a user does: it takes a third of the window.

    With it open, the run page is too narrow for its two-column layout and
    stacks the run's facts, datasets and tags above the description.
    """
    headers = driver.find_elements("xpath", "//*[normalize-space(text())='MLflow Assistant']/ancestor::*[.//button][1]")
    if not headers:
        return  # closed already (the browser remembers), or an MLflow without it
    headers[0].find_elements("tag name", "button")[-1].click()
    deadline = time.monotonic() + 10
    while driver.find_elements("xpath", "//*[normalize-space(text())='MLflow Assistant']") and time.monotonic() < deadline:
        time.sleep(0.2)


def seen_without_scrolling(driver: Any, text: str) -> bool:
    """Whether the first element whose own text is `text` lies inside the window as the page opened (scrolled to the top)."""
    element = driver.find_element("xpath", f"//*[normalize-space(text())={text!r}]")
    top, bottom, height = driver.execute_script(
        "const r = arguments[0].getBoundingClientRect(); return [r.top, r.bottom, window.innerHeight];", element
    )
    return top >= 0 and bottom <= height


def open_training_runs(driver: Any, base: str, experiment_id: str) -> str:
    """The experiment's runs page after the one click on "Model training"; returns the page text."""
    driver.get(f"{base}/#/experiments/{experiment_id}/runs")
    wait_for_text(driver, "Model training")
    driver.find_element("xpath", "//*[normalize-space(text())='Model training']").click()
    wait_for_text(driver, "Model registry")
    return wait_for_text(driver, "summary")  # the runs table has loaded


def expand_summary(driver: Any, shows: str, index: int = 0) -> str:
    """Unfold the nested stage runs of the `index`-th summary run in the runs table (newest first).

    Waits until the page shows `shows` (a nested stage's name); returns the page text.
    """
    name = driver.find_elements("xpath", "//*[@role='gridcell']//*[starts-with(normalize-space(text()), 'summary')]")[index]
    cell = name.find_element("xpath", "./ancestor::*[@role='gridcell'][1]")
    cell.find_element("css selector", "button").click()  # the row's expander comes first in the cell
    return wait_for_text(driver, shows)


def open_run_overview(driver: Any, base: str, experiment_id: str, run_id: str, shows: str) -> str:
    """A run's page as it opens (Overview tab), once it shows `shows`; returns the page text."""
    driver.get(f"{base}/#/experiments/{experiment_id}/runs/{run_id}")
    return wait_for_text(driver, shows)


def open_run_artifacts(driver: Any, base: str, experiment_id: str, run_id: str) -> str:
    """A run's page, Artifacts tab; returns the page text."""
    driver.get(f"{base}/#/experiments/{experiment_id}/runs/{run_id}/artifacts")
    return wait_for_text(driver, "report.html")


def open_compare(driver: Any, base: str, experiment_id: str, run_ids: list[str]) -> str:
    """The compare view of `run_ids`; returns the page text."""
    runs = ",".join(f'"{run_id}"' for run_id in run_ids)
    driver.get(f'{base}/#/compare-runs?runs=[{runs}]&experiments=["{experiment_id}"]')
    return wait_for_text(driver, f"Comparing {len(run_ids)} Runs")
