"""Lists for people: a rich table (issue 18). `--json` never comes here (common.emit).

Imported only when a list is printed without --json, so rich stays out of every other
command's start-up (the fast-CLI budget in README.md).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

# Values that say a row needs a look: coloured, never relied on (a pipe gets plain text).
_STYLES = {
    "failed": "red",
    "declined": "red",
    "suspended": "red",
    "succeeded": "green",
    "active": "green",
    "pending": "yellow",
}


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return "; ".join(_cell(v) for v in value)
    if isinstance(value, dict):
        # A posting {ledger_account, amount} reads as "usage_revenue:EUR 5.00".
        return " ".join(_cell(v) for v in value.values())
    return str(value)


def columns_of(rows: Sequence[dict[str, Any]], wanted: Sequence[str] | None) -> list[str]:
    """`wanted` (those present in any row), else every key of the rows, in first-seen order."""
    seen: list[str] = []
    for item in rows:
        for key in item:
            if key not in seen:
                seen.append(key)
    if wanted:
        return [c for c in wanted if c in seen]
    return seen


def print_table(
    rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None, title: str | None = None
) -> None:
    """Rows as a table on stdout: the terminal's width on a terminal, 200 columns in a pipe
    (so redirected output is not wrapped at 80); an empty list prints `(none)`."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = Console(
        file=sys.stdout,
        width=None if sys.stdout.isatty() else 200,
        highlight=False,
        soft_wrap=False,
    )
    if not rows:
        console.print("(none)")
        return
    names = columns_of(rows, columns)
    table = Table(title=title, show_lines=False, header_style="bold")
    for name in names:
        numeric = name in {"amount", "balance", "balance_after", "unapplied", "monthly_fee"}
        table.add_column(
            name,
            justify="right" if numeric else "left",
            overflow="fold",
            no_wrap=name in {"id", "created_at"},
        )
    for item in rows:
        cells = []
        for name in names:
            text = _cell(item.get(name))
            style = _STYLES.get(text) if name == "status" else None
            cells.append(Text(text, style=style or ""))  # Text: no markup is interpreted
        table.add_row(*cells)
    console.print(table)
    console.print(f"{len(rows)} row{'s' if len(rows) != 1 else ''}", style="dim")
