"""Time comes from Python, never from SQL now(): every job can be replayed `as_of`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from worker.kernel.controls import refuse_control
from worker.kernel.errors import ValidationError

# Jobs add days and months to `as_of`: a moment near datetime's own limits (years 1 and
# 9999) would overflow there instead of being refused. Every real replay lies inside these.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9000, 1, 1, tzinfo=UTC)


def now() -> datetime:
    return datetime.now(UTC)


def parse_as_of(value: object, field: str = "as_of") -> datetime:
    """ISO-8601 with offset, or None for now. A naive timestamp is refused: it is ambiguous;
    so is a moment outside [EARLIEST, LATEST). Raises ValidationError naming `field`."""
    if value is None:
        return now()
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str):
        # fromisoformat stops reading at a NUL ("...+00:00\x00" parses): refuse it first.
        refuse_control(value, field)
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            raise ValidationError(field, f"is not an ISO-8601 timestamp: {value[:40]!r}") from None
    else:
        raise ValidationError(field, "must be an ISO-8601 timestamp string")
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValidationError(field, "needs a UTC offset, e.g. 2026-11-21T10:00:00+00:00")
    try:
        moment = moment.astimezone(UTC)
    except OverflowError:
        moment = EARLIEST - timedelta(days=1)  # beyond year 1 or 9999: refused just below
    if not EARLIEST <= moment < LATEST:
        raise ValidationError(
            field, f"must lie between {EARLIEST.year} and {LATEST.year} (jobs add months to it)"
        )
    return moment


def isoformat(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()
