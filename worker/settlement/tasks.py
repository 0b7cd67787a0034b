from __future__ import annotations

from worker.celery import app
from worker.kernel import task_names
from worker.kernel.clock import parse_as_of
from worker.settlement import service as settlement
from worker.task_base import DbTask


@app.task(name=task_names.SETTLEMENT_ROLL_FORWARD, base=DbTask, bind=True)
def roll_forward(self: DbTask, as_of: str | None = None) -> settlement.RollForwardResult:
    return settlement.roll_forward(self.uow, parse_as_of(as_of))
