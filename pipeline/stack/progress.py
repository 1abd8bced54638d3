"""The progress bar of long training loops: tqdm on stderr, shown only on a terminal."""

from __future__ import annotations

import sys

from tqdm import tqdm

__all__ = ["progress_bar"]


def progress_bar(label: str | None, total: int, unit: str = "epoch") -> tqdm | None:
    """A tqdm bar of `total` `unit`s on stderr; none without a label or when stderr is not a terminal."""
    if label is None or not sys.stderr.isatty():
        return None
    return tqdm(total=total, desc=label, unit=unit, file=sys.stderr, dynamic_ncols=True)
