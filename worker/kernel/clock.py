"""Time comes from Python, never from SQL now(): every job can be replayed `as_of`."""

from __future__ import annotations

from datetime import UTC, datetime

from worker.kernel.errors import ValidationError


def now() -> datetime:
    return datetime.now(UTC)


def parse_as_of(value: object, field: str = "as_of") -> datetime:
    """ISO-8601 with offset, or None for now. A naive timestamp is refused: it is ambiguous."""
    if value is None:
        return now()
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            raise ValidationError(field, f"is not an ISO-8601 timestamp: {value[:40]!r}") from None
    else:
        raise ValidationError(field, "must be an ISO-8601 timestamp string")
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValidationError(field, "needs a UTC offset, e.g. 2026-11-21T10:00:00+00:00")
    return moment.astimezone(UTC)


def isoformat(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()
