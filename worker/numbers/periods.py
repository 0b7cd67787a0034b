"""Monthly periods: period n of a number starts n calendar months after its rental moment.

Counted from the anchor every time, never from the previous date, so a number rented on
31 January renews on 28 (29) February, 31 March, 30 April, 31 May: a short month never
moves the day for good.
"""

from __future__ import annotations

import calendar
from datetime import datetime


def add_months(anchor: datetime, months: int) -> datetime:
    """`anchor` + `months` calendar months, the day clamped to the month's last day; the
    time of day and the zone kept."""
    if months < 0:
        raise ValueError("months must be >= 0")
    index = anchor.month - 1 + months
    year, month = anchor.year + index // 12, index % 12 + 1
    day = min(anchor.day, calendar.monthrange(year, month)[1])
    return anchor.replace(year=year, month=month, day=day)


def period_start(anchor: datetime, period: int) -> datetime:
    return add_months(anchor, period)


def period_end(anchor: datetime, period: int) -> datetime:
    return add_months(anchor, period + 1)
