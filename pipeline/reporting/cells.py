"""How the report writes a number: three decimals, an interval, n/m where not measurable; Markdown tables."""

from __future__ import annotations

from typing import Any


def cell(value: Any) -> str:
    if value is None:
        return "n/m"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def csv_number(value: float | None) -> str:
    return "" if value is None else f"{value:.6g}"


def with_interval(values: dict[str, Any], key: str) -> str:
    """"0.654 [0.612, 0.695]", the value with its 95% bootstrap interval; "n/m" when not measurable."""
    low, high = values.get(f"{key}_ci_low"), values.get(f"{key}_ci_high")
    if values.get(key) is None or low is None:
        return cell(values.get(key))
    return f"{values[key]:.3f} [{low:.3f}, {high:.3f}]"


def named(best: dict[str, Any]) -> str:
    """"0.091 (lira_online)", or "0 (none)" when no attack scored above 0."""
    return "0 (none)" if best["attack"] is None else f"{cell(best['value'])} ({best['attack']})"


def markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]
