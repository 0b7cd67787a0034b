"""Retention of the outboxes: what went out is deleted after a while, nothing else.

- A published event (`published_at` set) is deleted `EVENTS_RETENTION_DAYS` after it was
  published. Consumers had it (at-least-once, deduplicated by id) and nothing of ours
  reads a published event again. An event the relay holds back (EVENTS_QUEUE_MAX) or has
  not reached is never deleted, however old.
- A sent mail is deleted `MAIL_RETENTION_DAYS` after it was sent; a failed one
  `MAIL_FAILED_RETENTION_DAYS` after it was written (longer by default: an operator may need
  to see what a customer never got). A pending mail is never deleted. Deleting a mail frees
  its dedupe key, which is safe because every key names a one-time fact (an alert's event
  id, the debit that depleted the account, the charge that disabled auto-reload): nothing
  queues that key again. A mail the log transport wrote as `BALANCE_HOME/mail/<id>.eml` on
  this machine is removed with its row.

Each kind is deleted in batches of `batch_size` rows, oldest first, one committed
transaction per batch, through an index (migration 0006): `ix_events_published`,
`ix_mail_sent`, `ix_mail_failed`. Rows are claimed FOR UPDATE SKIP LOCKED, so two purges
share the work. The cutoffs come from `as_of` (time from Python), never SQL now(); an
`as_of` later than the clock deletes no more than now would, since a deletion cannot be
undone.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import delete, select

from config import Settings
from worker.db.session import UnitOfWork
from worker.kernel import clock
from worker.outbox.models import Event, Mail

log = logging.getLogger(__name__)

BATCH_SIZE = 1000


@dataclass(frozen=True)
class Retention:
    """How long each kind of finished row is kept."""

    events: timedelta
    mails_sent: timedelta
    mails_failed: timedelta

    @classmethod
    def from_settings(cls, settings: Settings) -> Retention:
        """`EVENTS_RETENTION_DAYS`, `MAIL_RETENTION_DAYS`, `MAIL_FAILED_RETENTION_DAYS`."""
        return cls(
            events=timedelta(days=settings.events_retention_days),
            mails_sent=timedelta(days=settings.mail_retention_days),
            mails_failed=timedelta(days=settings.mail_failed_retention_days),
        )


def events_query(before: datetime, limit: int) -> Any:
    """Events published before `before`, oldest first (ix_events_published)."""
    return (
        select(Event.id)
        .where(Event.published_at < before)
        .order_by(Event.published_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )


def sent_mails_query(before: datetime, limit: int) -> Any:
    """Mails sent before `before`, oldest first (ix_mail_sent)."""
    return (
        select(Mail.id, Mail.transport)
        .where(Mail.status == "sent", Mail.sent_at < before)
        .order_by(Mail.sent_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )


def failed_mails_query(before: datetime, limit: int) -> Any:
    """Failed mails written before `before`, oldest first (ix_mail_failed)."""
    return (
        select(Mail.id, Mail.transport)
        .where(Mail.status == "failed", Mail.created_at < before)
        .order_by(Mail.created_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )


def _eml_name(mail_id: str) -> str:
    # As LogTransport names the file: the Message-ID's local part, `<id@domain>`.
    return re.sub(r"[^A-Za-z0-9_.-]", "", mail_id) + ".eml"


def _remove_files(rows: Sequence[Any], folder: Path | None) -> None:
    if folder is None:
        return
    for row in rows:
        if row.transport == "log":
            try:
                (folder / _eml_name(row.id)).unlink(missing_ok=True)
            except OSError as exc:  # a file left behind never stops the purge
                log.warning("purge: cannot remove %s.eml (%s)", row.id, exc)


def purge(
    uow: UnitOfWork,
    as_of: datetime,
    retention: Retention,
    *,
    batch_size: int = BATCH_SIZE,
    budget_seconds: float = 120.0,
    mail_folder: Path | None = None,
    monotonic: Callable[[], float] = time.monotonic,
) -> dict[str, Any]:
    """Delete published events and finished mails older than their retention as of `as_of`
    (an aware datetime; clamped to the clock). Batches of `batch_size` rows, each committed;
    stops starting batches after `budget_seconds` (seconds of wall time).

    Returns `{events, mails_sent, mails_failed}` (rows deleted) and `more` (True when the
    budget ran out with rows left: the next run goes on).
    """
    if batch_size < 1:
        raise ValueError("batch_size: must be at least 1")
    moment = min(as_of, clock.now())
    started = monotonic()
    kinds: list[tuple[str, Callable[[int], Any], type[Event] | type[Mail]]] = [
        ("events", lambda n: events_query(moment - retention.events, n), Event),
        ("mails_sent", lambda n: sent_mails_query(moment - retention.mails_sent, n), Mail),
        ("mails_failed", lambda n: failed_mails_query(moment - retention.mails_failed, n), Mail),
    ]
    counts: dict[str, Any] = {name: 0 for name, _, _ in kinds}
    more = False
    for name, query, model in kinds:
        while True:
            if monotonic() - started >= budget_seconds:
                more = True
                break
            rows = uow.session.execute(query(batch_size)).all()
            if rows:
                uow.session.execute(
                    delete(model).where(model.id.in_([row.id for row in rows])),
                    execution_options={"synchronize_session": False},
                )
            uow.commit()
            if model is Mail:
                _remove_files(rows, mail_folder)
            counts[name] += len(rows)
            if len(rows) < batch_size:
                break
        if more:
            break
    counts["more"] = more
    if any(counts[name] for name, _, _ in kinds):
        log.info(
            "purge as of %s: %d events, %d sent and %d failed mails deleted%s",
            clock.isoformat(moment),
            counts["events"],
            counts["mails_sent"],
            counts["mails_failed"],
            " (more to go)" if more else "",
        )
    return counts
