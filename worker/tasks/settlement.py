from __future__ import annotations

from typing import Any

from worker.celery import app
from worker.clock import parse_as_of
from worker.services import settlement
from worker.tasks.base import DbTask


@app.task(name="balance.settlement.roll_forward", base=DbTask, bind=True)
def roll_forward(self: DbTask, as_of: str | None = None) -> dict[str, Any]:
    return settlement.roll_forward(self.uow, parse_as_of(as_of))
