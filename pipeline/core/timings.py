"""Where one stage process's time goes, for `make bench`: start-up and imports, MLflow tracking, the rest.

Off unless `PIPELINE_STAGE_TIMINGS` names a folder; then `record` writes
`<folder>/<stage>.json` when the stage ends:

- `startup_s`: from the process's start (Linux's /proc; elsewhere from the
  first import of this module) to the stage's first line: the interpreter
  and the stage module's imports;
- `tracking_s`: time spent in `spent()` blocks, which `stages.common`
  wraps around every MLflow call (its import and store connection included);
- `total_s`: from the process's start to the end of the stage.

The rest of `total_s` is the stage's work, libraries it imports on first
use included.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

TIMINGS_ENV = "PIPELINE_STAGE_TIMINGS"
_IMPORTED = time.monotonic()
_spent: dict[str, float] = {}


def process_age() -> float:
    """Seconds since this process started (10 ms resolution on Linux)."""
    try:
        with open("/proc/self/stat") as stat, open("/proc/uptime") as uptime:
            started = int(stat.read().rsplit(")", 1)[1].split()[19]) / os.sysconf("SC_CLK_TCK")
            return float(uptime.read().split()[0]) - started
    except (OSError, ValueError, IndexError):
        return time.monotonic() - _IMPORTED


@contextlib.contextmanager
def spent(kind: str) -> Iterator[None]:
    """Add the block's wall time to `kind`'s total."""
    start = time.monotonic()
    try:
        yield
    finally:
        _spent[kind] = _spent.get(kind, 0.0) + time.monotonic() - start


def record(stage: str, startup: float) -> None:
    """Write the stage's timings if `PIPELINE_STAGE_TIMINGS` is set; `startup` is `process_age()` at its first line."""
    folder = os.environ.get(TIMINGS_ENV)
    if not folder:
        return
    timings = {"stage": stage, "startup_s": startup, "total_s": process_age()}
    timings |= {f"{kind}_s": seconds for kind, seconds in _spent.items()}
    Path(folder).mkdir(parents=True, exist_ok=True)
    (Path(folder) / f"{stage}.json").write_text(json.dumps(timings) + "\n")
