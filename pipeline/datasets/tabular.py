"""A user's CSV table as numeric features, raw labels and named extra columns.

The file is UTF-8 text (a byte-order mark is allowed) with a header row;
its delimiter, `,` `;` or tab, is detected. Blank lines, and lines holding
only delimiters and whitespace, are skipped. A feature column with any
non-numeric cell is categorical: one-hot encoded (one 0/1 column per value,
values in sorted order, named `<column>=<value>`) or refused. Empty
feature cells are refused, never imputed. Standard library `csv` only.
"""

from __future__ import annotations

import csv
import io
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from pipeline.core.errors import PipelineError

DELIMITERS = ",;\t"
SNIFF_LINES = 100  # non-blank lines the delimiter is detected on
COMMA_NUMBER = re.compile(r"[+-]?(\d{1,3}(\.\d{3})+|\d+),\d+")  # 1,5 or 1.234,5 (or 1,234): not one-hot material


@dataclass(frozen=True)
class Table:
    """Rows in file order: float32 features, stripped label cells, raw extra cells."""

    features: np.ndarray  # (N, F) float32
    feature_names: tuple[str, ...]
    labels: np.ndarray  # (N,) str
    extra: dict[str, np.ndarray]  # column name -> (N,) str, the cells as written


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
    for line, label in zip(lines, labels):
        if not label:
            raise PipelineError(f"{name}: line {line} has an empty {label_column!r} cell; give every row a label")
    kept = {label_column, *extra_columns}
    blocks, names = [], []
    for at, column in enumerate(header):
        if column not in kept:
            block, block_names = _feature_block(column, [row[at].strip() for row in rows], lines, name, categorical)
            blocks.append(block)
            names.extend(block_names)
    if not blocks:
        raise PipelineError(f"{name}: no feature columns besides {', '.join(map(repr, sorted(kept)))}; add some")
    extra = {column: np.asarray([row[header.index(column)] for row in rows], dtype=str) for column in extra_columns}
    return Table(np.hstack(blocks), tuple(names), np.asarray(labels, dtype=str), extra)


def _rows(path: Path, name: str) -> tuple[list[str], list[int], list[list[str]]]:
    """Header, and the non-blank data rows with their line numbers, each as long as the header."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            text = handle.read()
    except UnicodeDecodeError:
        raise PipelineError(f"{name}: not UTF-8 text; save it as a UTF-8 CSV file") from None
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


def _feature_block(
    column: str, cells: list[str], lines: list[int], name: str, categorical: Literal["one_hot", "error"]
) -> tuple[np.ndarray, list[str]]:
    """(N, 1) float32 values of a numeric column, or (N, k) one-hot of a categorical one."""
    for line, cell in zip(lines, cells):
        if not cell:
            raise PipelineError(
                f"{name}: line {line} has an empty {column!r} cell; fill it in or drop the row (nothing is imputed)"
            )
    text = [(line, cell) for line, cell in zip(lines, cells) if not _is_number(cell)]
    if not text:
        return np.asarray([float(cell) for cell in cells], dtype=np.float32)[:, None], [column]
    line, cell = text[0]
    if all(COMMA_NUMBER.fullmatch(c) for _, c in text):
        raise PipelineError(
            f"{name}: column {column!r} holds numbers written with commas (line {line}: {cell!r}); "
            "save the file with decimal points and no thousands separators"
        )
    if categorical == "error":
        raise PipelineError(
            f"{name}: line {line} has the non-numeric {column!r} value {cell!r}; make the column numeric, "
            "or set data.categorical: one_hot to one-hot encode it"
        )
    values = sorted(set(cells))
    code = {value: at for at, value in enumerate(values)}
    codes = [code[cell] for cell in cells]
    print(f"{name}: categorical column {column!r} one-hot encoded as {len(values)} columns", file=sys.stderr)
    return np.eye(len(values), dtype=np.float32)[codes], [f"{column}={value}" for value in values]


def _is_number(cell: str) -> bool:
    """Whether Python's float() reads the cell (as the numeric columns are parsed)."""
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _shown(delimiter: str) -> str:
    """The delimiter as a message names it."""
    return "tab" if delimiter == "\t" else repr(delimiter)
