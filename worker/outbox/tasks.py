"""The outboxes' tasks: relay events to other services, send queued mails."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from config import get_settings
from worker.celery import app
from worker.kernel import task_names
from worker.kernel.clock import now, parse_as_of
from worker.outbox import events, mail
from worker.task_base import DbTask


@contextmanager
def _publisher() -> Iterator[events.Publish]:
    """Publish outbox rows as `EVENTS_TASK` messages on `EVENTS_QUEUE` (CONTRACT.md), through
    one producer for the whole relay.

    The message is Celery's own (the one `send_task` builds) with the event id as its task
    id, so a republished event is recognisable by either. No `task-sent` monitoring event is
    sent for it: these messages are for other services, not tasks this fleet runs, and that
    event cost more CPU than the message itself.
    """
    settings = get_settings()
    name, queue = settings.events_task, settings.events_queue
    with app.producer_or_acquire() as producer:

        def publish(message: dict[str, Any]) -> None:
            task_message = app.amqp.create_task_message(
                message["id"],
                name,
                [message],
                {},
                argsrepr=f"[{message['type']} {message['id']}]",
                kwargsrepr="{}",
                create_sent_event=False,
            )
            app.amqp.send_task_message(producer, name, task_message, queue=queue, retry=True)

        yield publish


@app.task(name=task_names.EVENTS_RELAY, base=DbTask, bind=True)
def relay(self: DbTask) -> dict[str, Any]:
    with _publisher() as publish:
        return {"published": events.relay(self.uow, publish, now())}


@app.task(name=task_names.MAIL_SEND_PENDING, base=DbTask, bind=True)
def send_pending(self: DbTask, as_of: str | None = None) -> dict[str, Any]:
    """Send the mails due as of `as_of` (default now): `{sent, retried, failed}`."""
    settings = get_settings()
    return mail.send_pending(self.uow, mail.transport_for(settings), settings, parse_as_of(as_of))
