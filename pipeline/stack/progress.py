"""The progress of long training loops: a tqdm bar on a terminal, plain lines in a log.

On a terminal, tqdm redraws one line. Written to a file (`dvc queue logs`,
a CI log, `make run > log`), a bar would be one endless line, so there
the loop prints a plain line every `LineProgress.EVERY_S` seconds, and a
last one, and only when it runs that long: quick loops stay quiet.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from tqdm import tqdm

__all__ = ["LineProgress", "progress_bar"]


class LineProgress:
    """tqdm's `update`, `set_postfix` and `close`, as a line on stderr at most every EVERY_S seconds."""

    EVERY_S = 10.0

    def __init__(self, label: str, total: int, unit: str) -> None:
        self.label, self.total, self.unit = label, total, unit
        self.done, self.postfix = 0, ""
        self.start = self.last = time.monotonic()

    def set_postfix(self, values: dict[str, Any]) -> None:
        self.postfix = ", ".join(f"{key} {value}" for key, value in values.items())

    def update(self, n: int = 1) -> None:
        self.done += n
        if time.monotonic() - self.last >= self.EVERY_S:
            self._line()

    def close(self) -> None:
        if time.monotonic() - self.start >= self.EVERY_S:
            self._line()

    def _line(self) -> None:
        self.last = time.monotonic()
        extra = f", {self.postfix}" if self.postfix else ""
        print(f"{self.label}: {self.done}/{self.total} {self.unit}s ({self.last - self.start:.0f} s{extra})",
              file=sys.stderr, flush=True)  # fmt: skip


def progress_bar(label: str | None, total: int, unit: str = "epoch") -> tqdm | LineProgress | None:
    """A tqdm bar of `total` `unit`s on stderr's terminal, plain lines when stderr is a file; none without a label."""
    if label is None:
        return None
    if not sys.stderr.isatty():
        return LineProgress(label, total, unit)
    return tqdm(total=total, desc=label, unit=unit, file=sys.stderr, dynamic_ncols=True)
