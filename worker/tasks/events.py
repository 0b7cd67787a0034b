from __future__ import annotations

from typing import Any

from config import get_settings
from worker.celery import app
from worker.clock import now
from worker.services import events
from worker.tasks.base import DbTask


def _publish(message: dict[str, Any]) -> None:
    settings = get_settings()
    app.send_task(settings.events_task, args=[message], queue=settings.events_queue)


@app.task(name="balance.events.relay", base=DbTask, bind=True)
def relay(self: DbTask) -> dict[str, Any]:
    return {"published": events.relay(self.uow, _publish, now())}
