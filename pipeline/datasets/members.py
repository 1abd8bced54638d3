"""Which rows trained a user's model: a 0/1 marker column, or a file of row numbers.

With `target.model` the data must say which of its rows the model was
trained on (`data.member_column` or `data.member_index`); these become
the audit's members, and only unmarked rows become non-members, test
data or the attacker's pool.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.core.errors import PipelineError

_TRUE = {"1", "1.0", "true", "yes", "y", "t"}
_FALSE = {"0", "0.0", "false", "no", "n", "f"}


def rows_from_column(values: np.ndarray, shown: str) -> np.ndarray:
    """(N,) bool from a marker column: booleans, 0/1 numbers, or text such as 1/0, true/false, yes/no."""
    values = np.asarray(values).reshape(-1) if np.ndim(values) == 2 and np.shape(values)[1] == 1 else np.asarray(values)
    if values.ndim != 1:
        raise PipelineError(f"data.member_column: {shown} must hold one 0/1 mark per row, got shape {values.shape}")
    if values.dtype == bool:
        return values.copy()
    if values.dtype.kind in "iuf":
        bad = np.flatnonzero(~np.isin(values, (0, 1)))
        if bad.size:
            raise PipelineError(
                f"data.member_column: {shown} row {int(bad[0])} holds {values[bad[0]].item()!r}; "
                "mark each row 1 (trained on) or 0"
            )
        return values == 1
    marks = np.empty(len(values), dtype=bool)
    for row, value in enumerate(values):
        text = str(value).strip().lower()
        if text not in _TRUE | _FALSE:
            raise PipelineError(
                f"data.member_column: {shown} row {row} holds {str(value)!r}; mark each row 1 (trained on) or 0 "
                "(true/false and yes/no work too)"
            )
        marks[row] = text in _TRUE
    return marks


def rows_from_index_file(path: Path, shown: str, n_rows: int) -> np.ndarray:
    """(N,) bool from a file of 0-based row numbers: .npy of integers, or text with one number per line."""
    if path.suffix == ".npy":
        try:
            numbers = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as error:
            raise PipelineError(f"data.member_index: {shown} is not a readable .npy array ({error})") from None
        if numbers.dtype.kind not in "iu" or numbers.ndim != 1:
            raise PipelineError(f"data.member_index: {shown} must be a 1-D integer array, got {numbers.dtype} {numbers.shape}")
        lines = [f"entry {i}" for i in range(len(numbers))]
    else:
        try:
            text = path.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError:
            raise PipelineError(f"data.member_index: {shown} is not UTF-8 text; write one row number per line") from None
        parsed = []
        lines = []
        for at, line in enumerate(text.splitlines(), start=1):
            cell = line.strip().rstrip(",")
            if not cell:
                continue
            if not cell.isdigit():
                raise PipelineError(
                    f"data.member_index: {shown} line {at} holds {line.strip()!r}; write one 0-based row number per line"
                )
            parsed.append(int(cell))
            lines.append(f"line {at}")
        numbers = np.asarray(parsed, dtype=np.int64)
    if numbers.size == 0:
        raise PipelineError(f"data.member_index: {shown} lists no rows; list the rows that trained target.model")
    out_of_range = np.flatnonzero((numbers < 0) | (numbers >= n_rows))
    if out_of_range.size:
        at = int(out_of_range[0])
        raise PipelineError(
            f"data.member_index: {shown} {lines[at]} names row {int(numbers[at])}, but the data has rows 0 to {n_rows - 1}"
        )
    unique, counts = np.unique(numbers, return_counts=True)
    if (counts > 1).any():
        raise PipelineError(f"data.member_index: {shown} lists row {int(unique[counts > 1][0])} more than once")
    marks = np.zeros(n_rows, dtype=bool)
    marks[numbers] = True
    return marks
