"""Transactional outbox for facts other services need, and the relay that publishes them.

An event row is written in the same DB transaction as the change it reports; the relay
publishes committed rows and marks them. A crash between publish and mark republishes
(at-least-once): consumers deduplicate by the event id.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, bindparam, select, update

from worker.db.base import new_id
from worker.db.bulk import copy_rows
from worker.db.session import UnitOfWork
from worker.kernel import task_names
from worker.kernel.clock import isoformat
from worker.outbox.models import Event

log = logging.getLogger(__name__)

RELAY_TASK = task_names.EVENTS_RELAY
Publish = Callable[[dict[str, Any]], None]


def record(
    uow: UnitOfWork, type_: str, account_id: str | None, data: dict[str, Any], at: datetime
) -> Event:
    """Add an event to the outbox of the current transaction; relayed after commit."""
    event = Event(
        id=new_id("evt"),
        type=type_,
        account_id=account_id,
        occurred_at=at,
        data=data,
        published_at=None,
        publish_attempts=0,
    )
    uow.session.add(event)
    uow.enqueue(RELAY_TASK)
    return event


def record_many(
    uow: UnitOfWork, items: list[tuple[str, str | None, dict[str, Any]]], at: datetime
) -> None:
    """`record` for many events at once (`(type, account_id, data)` each), in one INSERT:
    a statement import writes two per transfer."""
    if not items:
        return
    rows = [
        {
            "id": new_id("evt"),
            "type": type_,
            "account_id": account_id,
            "occurred_at": at,
            "data": data,
            "published_at": None,
            "publish_attempts": 0,
        }
        for type_, account_id, data in items
    ]
    copy_rows(uow.session, cast(Table, Event.__table__), rows)  # new ids: COPY
    uow.enqueue(RELAY_TASK)


def as_message(event: Any) -> dict[str, Any]:
    """The published shape (CONTRACT.md): {id, type, account_id, occurred_at, data}.

    `event`: an Event, or a row with those columns."""
    return {
        "id": event.id,
        "type": event.type,
        "account_id": event.account_id,
        "occurred_at": isoformat(event.occurred_at),
        "data": event.data,
    }


# Plain rows, not ORM objects, and one UPDATE per batch: the relay runs once per charge's
# worth of events, and loading and flushing Event objects was most of its database cost.
_UNPUBLISHED = (
    select(Event.id, Event.type, Event.account_id, Event.occurred_at, Event.data)
    .where(Event.published_at.is_(None))
    .order_by(Event.occurred_at, Event.id)
    .limit(bindparam("limit"))
    .with_for_update(skip_locked=True)
)


def _mark(uow: UnitOfWork, ids: list[str], now: datetime | None) -> None:
    """Count an attempt for each; `now` also marks them published."""
    if not ids:
        return
    values: dict[str, Any] = {"publish_attempts": Event.publish_attempts + 1}
    if now is not None:
        values["published_at"] = now
    uow.session.execute(
        update(Event).where(Event.id.in_(ids)).values(**values),
        execution_options={"synchronize_session": False},
    )


def relay(
    uow: UnitOfWork,
    publish: Publish,
    now: datetime,
    batch_size: int = 200,
    room: Callable[[], int | None] = lambda: None,
) -> int:
    """Publish every unpublished event, oldest first; safe to run concurrently (SKIP LOCKED).

    The rows stay locked until their batch commits; a publish that fails stops the relay
    with the marks of what did go out kept (and its own attempt counted).

    `room()` is asked before each batch how many more messages the events queue may take
    (None: no bound); a batch never takes more, and at 0 the relay stops with the rest kept
    in the outbox (EVENTS_QUEUE_MAX). Returns the number of events published."""
    published = 0
    while True:
        free = room()
        limit = batch_size if free is None else min(batch_size, free)
        if limit <= 0:
            return published
        rows = uow.session.execute(_UNPUBLISHED, {"limit": limit}).all()
        if not rows:
            return published
        sent: list[str] = []
        failed: list[str] = []
        try:
            for row in rows:
                try:
                    publish(as_message(row))
                except Exception:
                    failed.append(row.id)
                    raise
                sent.append(row.id)
                log.info("event %s %s account=%s published", row.type, row.id, row.account_id)
        finally:
            # Keep the marks of what did go out, even when one publish failed.
            _mark(uow, sent, now)
            _mark(uow, failed, None)
            uow.commit()
        published += len(sent)
        if len(rows) < limit:
            return published


def has_unpublished(uow: UnitOfWork) -> bool:
    """Is any event waiting in the outbox? (One probe of ix_events_unpublished.)"""
    return (
        uow.session.execute(select(Event.id).where(Event.published_at.is_(None)).limit(1)).first()
        is not None
    )
