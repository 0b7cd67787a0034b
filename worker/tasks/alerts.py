from __future__ import annotations

from typing import Any

from worker.celery import app
from worker.clock import parse_as_of
from worker.services import alerts
from worker.tasks.base import DbTask


@app.task(name="balance.alerts.scan", base=DbTask, bind=True)
def scan(self: DbTask, as_of: str | None = None) -> dict[str, Any]:
    return alerts.scan(self.uow, parse_as_of(as_of))
