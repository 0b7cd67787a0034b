from __future__ import annotations

from worker.alerts import service as alerts
from worker.celery import app
from worker.kernel import task_names
from worker.kernel.clock import parse_as_of
from worker.task_base import DbTask


@app.task(name=task_names.ALERTS_SCAN, base=DbTask, bind=True)
def scan(self: DbTask, as_of: str | None = None) -> alerts.ScanResult:
    return alerts.scan(self.uow, parse_as_of(as_of))
