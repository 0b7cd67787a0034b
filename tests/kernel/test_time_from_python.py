"""Invariant 8: time comes from Python (as_of or the clock), never from SQL now()."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = re.compile(
    r"func\.now\(|func\.current_timestamp|server_default=.*now|CURRENT_TIMESTAMP|\bnow\(\)\s*['\"]"
    r"|clock_timestamp|transaction_timestamp|statement_timestamp",
    re.IGNORECASE,
)


def test_no_sql_clock_in_code_or_migrations() -> None:
    offenders = []
    for path in sorted((ROOT / "worker").rglob("*.py")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if FORBIDDEN.search(line):
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert offenders == []


def test_pattern_catches_sql_clock() -> None:
    assert FORBIDDEN.search("created_at = mapped_column(server_default=func.now())")
    assert FORBIDDEN.search("op.execute('UPDATE x SET t = CURRENT_TIMESTAMP')")
    assert not FORBIDDEN.search("created_at=now,")
