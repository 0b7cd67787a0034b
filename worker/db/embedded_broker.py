"""The embedded broker's table of delivered messages, kept small.

kombu's SQLAlchemy transport (the embedded default, `BALANCE_HOME/broker.db`) marks a message
delivered (`visible = false`) instead of deleting it and never reads it again: a message
that must be delivered again (a worker shutting down with it unacknowledged, a reject with
requeue) is written as a new row. So every task message ever sent stays in the file (beat
alone sends about 6,100 a day). The purge job deletes the delivered ones, in batches.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from sqlalchemy import create_engine, inspect, text
from sqlalchemy.pool import NullPool

MESSAGE_TABLE = "kombu_message"  # kombu's default; we pass it no table-name options
BATCH_SIZE = 1000

_DELETE_DELIVERED = text(
    f"DELETE FROM {MESSAGE_TABLE} WHERE id IN "
    f"(SELECT id FROM {MESSAGE_TABLE} WHERE visible = :delivered ORDER BY id LIMIT :limit)"
)


def purge_delivered(
    broker_url: str,
    *,
    batch_size: int = BATCH_SIZE,
    budget_seconds: float = 60.0,
    monotonic: Callable[[], float] = time.monotonic,
) -> tuple[int, bool]:
    """Delete delivered messages from an embedded (`sqla+...`) broker; any other broker URL
    is left alone. Returns (rows deleted, more left when `budget_seconds` ran out).

    Each batch of `batch_size` is its own short transaction, so the workers' own use of the
    file (SQLite allows one writer at a time) waits milliseconds, not the whole purge."""
    if not broker_url.startswith("sqla+"):
        return 0, False
    engine = create_engine(broker_url.removeprefix("sqla+"), poolclass=NullPool)
    deleted = 0
    started = monotonic()
    try:
        with engine.connect() as conn:
            if not inspect(conn).has_table(MESSAGE_TABLE):
                return 0, False
            conn.rollback()
            while True:
                if monotonic() - started >= budget_seconds:
                    return deleted, True
                with conn.begin():
                    count = conn.execute(
                        _DELETE_DELIVERED, {"delivered": False, "limit": batch_size}
                    ).rowcount
                deleted += count
                if count < batch_size:
                    return deleted, False
    finally:
        engine.dispose()
