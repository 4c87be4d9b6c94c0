"""Plain-text and markdown tables for human-readable reports."""
from __future__ import annotations

from typing import Any, Sequence


def fmt(value: Any, precision: int = 2) -> str:
    """Format a cell: floats with ``precision`` decimals, ints with thousands separators."""
    if isinstance(value, bool) or value is None:
        return "-" if value is None else str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.{precision}f}"
    return str(value)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], precision: int = 2) -> str:
    """Render a GitHub-style markdown table."""
    cells = [[fmt(c, precision) for c in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    line = lambda items: "| " + " | ".join(s.ljust(w) for s, w in zip(items, widths)) + " |"  # noqa: E731
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(headers), sep] + [line(r) for r in cells]) + "\n"
