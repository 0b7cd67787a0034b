"""The outboxes' tasks: relay events to other services, send queued mails."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from config import get_settings
from worker import events_bound
from worker.celery import app
from worker.db import embedded_broker
from worker.kernel import task_names
from worker.kernel.clock import now, parse_as_of
from worker.outbox import events, mail, retention
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
    """Publish the outbox's events while the events queue holds fewer than
    `EVENTS_QUEUE_MAX` messages (worker/tasks/events_bound.py): `{published, paused,
    queue_length, queue_max}`."""
    settings = get_settings()
    bound = events_bound.EventsQueueBound(
        queue=settings.events_queue,
        maximum=settings.events_queue_max,
        measure=lambda: events_bound.queue_length(app, settings.events_queue),
        broker=settings.effective_broker_url.partition(":")[0],
    )
    with _publisher() as publish:
        published = events.relay(self.uow, publish, now(), room=bound.room)
    held_back = bound.paused and events.has_unpublished(self.uow)
    events_bound.close_run(bound, held_back, events_bound.episode_for(app, settings))
    return bound.result(published)


@app.task(name=task_names.MAIL_SEND_PENDING, base=DbTask, bind=True)
def send_pending(self: DbTask, as_of: str | None = None) -> dict[str, Any]:
    """Send the mails due as of `as_of` (default now): `{sent, retried, failed}`."""
    settings = get_settings()
    return mail.send_pending(self.uow, mail.transport_for(settings), settings, parse_as_of(as_of))


@app.task(name=task_names.OUTBOX_PURGE, base=DbTask, bind=True)
def purge(self: DbTask, as_of: str | None = None) -> dict[str, Any]:
    """Delete published events and finished mails past their retention as of `as_of`
    (default now), and in embedded mode the broker's delivered messages:
    `{events, mails_sent, mails_failed, broker_messages, more}`.

    A run spends at most half of `TASK_SOFT_TIME_LIMIT`; `more` says rows were left for the
    next run (hourly)."""
    settings = get_settings()
    budget = settings.task_soft_time_limit_seconds / 2
    result = retention.purge(
        self.uow,
        parse_as_of(as_of),
        retention.Retention.from_settings(settings),
        budget_seconds=budget * 0.8,
        # Where LogTransport writes (mails sent before an SMTP_HOST was set are there too).
        mail_folder=settings.balance_home.resolve() / "mail",
    )
    deleted, more = embedded_broker.purge_delivered(
        settings.effective_broker_url, budget_seconds=budget * 0.2
    )
    result["broker_messages"] = deleted
    result["more"] = result["more"] or more
    return result
