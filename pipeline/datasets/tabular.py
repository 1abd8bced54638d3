"""A user's CSV table as numeric features, raw labels and named extra columns.

The file is UTF-8 text (a byte-order mark is allowed) with a header row;
its delimiter, `,` `;` or tab, is detected. Blank lines, and lines holding
only delimiters and whitespace, are skipped. A feature column is numeric
when at least half of its cells read as numbers (decimal commas, NaN and
infinity included): then every cell that is not a finite number is an
error listing each by line, never a reason to re-encode the column. Only a
column mostly of other text is categorical: one-hot encoded (one 0/1
column per value, values in sorted order, named `<column>=<value>`) or
refused. Empty feature cells are refused, never imputed. Standard library
`csv` only.
"""

from __future__ import annotations

import csv
import io
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from pipeline.core.errors import PipelineError

DELIMITERS = ",;\t"
SNIFF_LINES = 100  # non-blank lines the delimiter is detected on
COMMA_NUMBER = re.compile(r"[+-]?(\d{1,3}(\.\d{3})+|\d+),\d+")  # 1,5 or 1.234,5 (or 1,234): a number, mistyped
NUMERIC_SHARE = 0.5  # a feature column whose cells read as numbers at least this often is numeric, never one-hot encoded
LISTED = 5  # cells a message quotes before "and N more"
QUOTED = 24  # characters of a cell a message quotes


@dataclass(frozen=True)
class Table:
    """Rows in file order: float32 features, stripped label cells, raw extra cells; the columns one-hot encoded."""

    features: np.ndarray  # (N, F) float32
    feature_names: tuple[str, ...]
    labels: np.ndarray  # (N,) str
    extra: dict[str, np.ndarray]  # column name -> (N,) str, the cells as written
    one_hot: dict[str, int]  # each one-hot encoded column -> the number of 0/1 columns it became


def read_table(
    path: Path,
    name: str,
    label_column: str,
    categorical: Literal["one_hot", "error"] = "one_hot",
    extra_columns: tuple[str, ...] = (),
) -> Table:
    """Read the CSV at `path`; `name` is how messages call it (the path the user gave)."""
    header, lines, rows = _rows(path, name)
    _check_header(header, name)
    if label_column not in header:
        raise PipelineError(
            f"data.label_column: {label_column!r} is not a column of {name} (columns: {', '.join(header)}); "
            "set it to the column holding the class"
        )
    for column in extra_columns:
        if column not in header:
            raise PipelineError(
                f"{name}: has no column {column!r} (columns: {', '.join(header)}); add it or name one of these"
            )
    label_at = header.index(label_column)
    labels = [row[label_at].strip() for row in rows]
    _check_labels(labels, lines, label_column, name)
    kept = {label_column, *extra_columns}
    blocks, names, one_hot, problems = [], [], {}, []
    for at, column in enumerate(header):
        if column in kept:
            continue
        try:
            block, values = _feature_block(column, [row[at].strip() for row in rows], lines, name, categorical)
        except PipelineError as error:  # each column's problem gets its line
            problems.append(str(error))
            continue
        blocks.append(block)
        if values is None:
            names.append(column)
        else:
            names.extend(f"{column}={value}" for value in values)
            one_hot[column] = len(values)
    if problems:
        raise PipelineError("\n".join(problems))
    if not blocks:
        raise PipelineError(f"{name}: no feature columns besides {', '.join(map(repr, sorted(kept)))}; add some")
    extra = {column: np.asarray([row[header.index(column)] for row in rows], dtype=str) for column in extra_columns}
    return Table(np.hstack(blocks), tuple(names), np.asarray(labels, dtype=str), extra, one_hot)


def one_hot_summary(one_hot: dict[str, int], most: int = 20) -> str:
    """The one-hot encoded columns as a summary line names them: `'colour' (3 columns), ...`, or `none`."""
    shown = [f"{column!r} ({count} columns)" for column, count in one_hot.items()]
    return _listed(shown, most) or "none"


def _rows(path: Path, name: str) -> tuple[list[str], list[int], list[list[str]]]:
    """Header, and the non-blank data rows with their line numbers, each as long as the header."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            text = handle.read()
    except UnicodeDecodeError:
        raise PipelineError(f"{name}: not UTF-8 text; save it as a UTF-8 CSV file") from None
    if not any(line.strip(DELIMITERS + " ") for line in text.splitlines()):
        raise PipelineError(f"{name}: the file is empty; write a header row, then one row per sample")
    delimiter = _delimiter(text, name)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    try:
        numbered = [(reader.line_num, row) for row in reader if any(cell.strip() for cell in row)]
    except csv.Error as error:
        raise PipelineError(f"{name}: line {reader.line_num} is not readable CSV ({error}); fix its quotes") from None
    if len(numbered) < 2:
        raise PipelineError(f"{name}: needs a header row and at least one data row")
    (_, header), body = numbered[0], numbered[1:]
    for line, row in body:
        if len(row) != len(header):
            raise PipelineError(
                f"{name}: line {line} has {len(row)} fields, header has {len(header)} (delimiter "
                f"{_shown(delimiter)}); give every row one value per column"
            )
    return [cell.strip() for cell in header], [line for line, _ in body], [row for _, row in body]


def _delimiter(text: str, name: str) -> str:
    """`,` `;` or tab, as csv.Sniffer reads the first non-blank lines, else the header line alone.

    The header alone decides when a ragged row makes the sample
    inconsistent, so that row's line gets its own error.
    """
    sample = [line for line in text.splitlines() if line.strip(DELIMITERS + " ")][:SNIFF_LINES]
    for lines in (sample, sample[:1]):
        try:
            return csv.Sniffer().sniff("\n".join(lines), delimiters=DELIMITERS).delimiter
        except csv.Error:
            continue
    raise PipelineError(
        f"{name}: cannot tell the delimiter from the first {SNIFF_LINES} lines (candidates: ',', ';', tab); "
        "save the file with one of them between every two columns"
    )


def _check_header(header: list[str], name: str) -> None:
    """Every column named, and named once: features are known by their names."""
    for at, column in enumerate(header):
        if not column:
            raise PipelineError(
                f"{name}: column {at + 1} has no name in the header; name it or drop it "
                "(pandas writes its row index so: save with to_csv(index=False))"
            )
        if header.index(column) != at:
            raise PipelineError(f"{name}: column {column!r} appears twice in the header; rename one of them")


def _check_labels(labels: list[str], lines: list[int], column: str, name: str) -> None:
    """Every row labelled, and numeric labels finite (a NaN label is no class)."""
    for line, label in zip(lines, labels):
        if not label:
            raise PipelineError(f"{name}: line {line} has an empty {column!r} cell; give every row a label")
    numbers = [_float(label) for label in labels]
    if all(number is not None for number in numbers):  # numeric labels: NaN or infinity is no class
        for line, label, number in zip(lines, labels, numbers):
            if not _finite(number):
                raise PipelineError(
                    f"{name}: line {line} has {_quoted(label)} in the label column {column!r}, not a class; "
                    "give every row a class"
                )


def _feature_block(
    column: str, cells: list[str], lines: list[int], name: str, categorical: Literal["one_hot", "error"]
) -> tuple[np.ndarray, list[str] | None]:
    """(N, 1) float32 values of a numeric column and None, or (N, k) one-hot of a categorical one and its k values."""
    for line, cell in zip(lines, cells):
        if not cell:
            raise PipelineError(
                f"{name}: line {line} has an empty {column!r} cell; fill it in or drop the row (nothing is imputed)"
            )
    numbers = [_number(cell) for cell in cells]
    share = sum(number is not None for number in numbers) / len(cells)
    if share >= NUMERIC_SHARE:
        bad = [(line, cell) for line, cell, number in zip(lines, cells, numbers) if not _finite(number)]
        if bad:
            raise PipelineError(_not_numbers(column, bad, share, name))
        return np.asarray(numbers, dtype=np.float32)[:, None], None
    if categorical == "error":
        line, cell = next((line, cell) for line, cell, number in zip(lines, cells, numbers) if number is None)
        raise PipelineError(
            f"{name}: line {line} has the non-numeric {column!r} value {_quoted(cell)}; make the column numeric, "
            "or set data.categorical: one_hot to one-hot encode it"
        )
    values = sorted(set(cells))
    code = {value: at for at, value in enumerate(values)}
    return np.eye(len(values), dtype=np.float32)[[code[cell] for cell in cells]], values


def _not_numbers(column: str, bad: list[tuple[int, str]], share: float, name: str) -> str:
    """The line refusing a numeric column's cells that are not finite numbers, each quoted with its line.

    `share` is the part of the column's cells that read as numbers.
    """
    cells = _listed([f"line {line} {_quoted(cell)}" for line, cell in bad], LISTED)
    if all(COMMA_NUMBER.fullmatch(cell) for _, cell in bad):
        fix = "write numbers with a decimal point and no thousands separator"
    else:
        fix = (
            f"correct {'it' if len(bad) == 1 else 'them'} or drop {'its row' if len(bad) == 1 else 'their rows'} "
            "(nothing is imputed); a column is categorical only when most of its cells are not numbers"
        )
    count = "1 cell is" if len(bad) == 1 else f"{len(bad)} cells are"
    return (
        f"{name}: column {column!r} is numeric ({math.floor(share * 100)}% of its cells read as numbers) but {count} "
        f"not a finite number: {cells}; {fix}"
    )


def _number(cell: str) -> float | None:
    """The feature cell as a number: what float() reads (NaN and infinity too), NaN for a decimal comma; else None.

    A decimal comma counts towards a numeric column but, as NaN, is refused as written.
    """
    return math.nan if COMMA_NUMBER.fullmatch(cell) else _float(cell)


def _float(cell: str) -> float | None:
    """What Python's float() reads from the cell, or None."""
    try:
        return float(cell)
    except ValueError:
        return None


def _finite(number: float | None) -> bool:
    return number is not None and math.isfinite(number)


def _quoted(cell: str) -> str:
    """The cell as a message quotes it: escaped (a NUL byte reads \\x00), long ones cut."""
    return repr(cell) if len(cell) <= QUOTED else f"{cell[:QUOTED]!r}..."


def _listed(items: list[str], most: int) -> str:
    """The items joined by `, `, past `most` ending `and N more`."""
    if len(items) <= most:
        return ", ".join(items)
    return f"{', '.join(items[:most])} and {len(items) - most} more"


def _shown(delimiter: str) -> str:
    """The delimiter as a message names it."""
    return "tab" if delimiter == "\t" else repr(delimiter)
