"""Transactional outbox for facts other services need, and the relay that publishes them.

An event row is written in the same DB transaction as the change it reports; the relay
publishes committed rows and marks them. A crash between publish and mark republishes
(at-least-once): consumers deduplicate by the event id.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import select

from worker.clock import isoformat
from worker.db.models import Event, new_id
from worker.db.session import UnitOfWork

log = logging.getLogger(__name__)

RELAY_TASK = "balance.events.relay"
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


def as_message(event: Event) -> dict[str, Any]:
    """The published shape (CONTRACT.md): {id, type, account_id, occurred_at, data}."""
    return {
        "id": event.id,
        "type": event.type,
        "account_id": event.account_id,
        "occurred_at": isoformat(event.occurred_at),
        "data": event.data,
    }


def relay(uow: UnitOfWork, publish: Publish, now: datetime, batch_size: int = 200) -> int:
    """Publish every unpublished event, oldest first; safe to run concurrently (SKIP LOCKED)."""
    published = 0
    while True:
        rows = uow.session.scalars(
            select(Event)
            .where(Event.published_at.is_(None))
            .order_by(Event.occurred_at, Event.id)
            .limit(batch_size)
            .with_for_update(skip_locked=True)
        ).all()
        if not rows:
            return published
        try:
            for event in rows:
                event.publish_attempts += 1
                publish(as_message(event))
                event.published_at = now
                published += 1
                log.info("event %s %s account=%s published", event.type, event.id, event.account_id)
        finally:
            # Keep the marks of what did go out, even when one publish failed.
            uow.commit()
        if len(rows) < batch_size:
            return published
