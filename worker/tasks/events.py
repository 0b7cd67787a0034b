from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from config import get_settings
from worker.celery import app
from worker.clock import now
from worker.services import events
from worker.tasks import events_bound
from worker.tasks.base import DbTask


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


@app.task(name="balance.events.relay", base=DbTask, bind=True)
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
