"""The window an operator's list asks for: `--limit N --since TS --until TS` (issue 18).

CONTRACT.md (Operator basics): `--limit` keeps the newest N, still printed oldest first;
`since` is inclusive and `until` exclusive ([since, until)), so consecutive windows never
print a row twice. Timestamps are ISO-8601 with an offset (worker/kernel/clock.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from worker.kernel.clock import parse_as_of
from worker.kernel.errors import ValidationError

MAX_LIMIT = 100_000


@dataclass(frozen=True)
class Window:
    limit: int | None = None
    since: datetime | None = None
    until: datetime | None = None


def window(limit: object = None, since: object = None, until: object = None) -> Window:
    """Checked window. `limit`: a whole number 1..100000 (an int, or exactly its ASCII
    digits as a string: no surrounding white space), None for all; `since`/`until`:
    ISO-8601 with offset or None. Raises ValidationError naming `limit`, `since` or
    `until` (until not after since)."""
    count: int | None = None
    if limit is not None:
        # Exactly digits, as amounts are exact: " 5" is refused, not trimmed (issue fixred 5).
        if isinstance(limit, str) and limit.isdigit() and limit.isascii():
            limit = int(limit)
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
            raise ValidationError("limit", f"must be a whole number from 1 to {MAX_LIMIT}")
        count = limit
    start = None if since is None else parse_as_of(since, "since")
    end = None if until is None else parse_as_of(until, "until")
    if start is not None and end is not None and end <= start:
        raise ValidationError("until", "must be after --since")
    return Window(limit=count, since=start, until=end)
