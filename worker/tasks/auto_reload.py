from __future__ import annotations

from typing import Any

from config import get_settings
from worker.celery import app
from worker.clock import parse_as_of
from worker.services import auto_reload
from worker.tasks.base import DbTask


@app.task(name="balance.auto_reload.sweep", base=DbTask, bind=True)
def sweep(self: DbTask, as_of: str | None = None) -> dict[str, Any]:
    return auto_reload.sweep(self.uow, parse_as_of(as_of))


# Nothing reads a reload's return value (the charge row and its events are the record):
# no result is stored, which saves a Redis write and its serialisation per reload.
@app.task(name="balance.auto_reload.reload", base=DbTask, bind=True, ignore_result=True)
def reload(self: DbTask, account_id: str, as_of: str | None = None) -> dict[str, Any]:
    return auto_reload.reload(self.uow, account_id, parse_as_of(as_of) if as_of else None)


def _batch_budget() -> float:
    settings = get_settings()
    return min(settings.auto_reload_batch_seconds, settings.task_soft_time_limit_seconds / 2)


@app.task(name="balance.auto_reload.reload_batch", base=DbTask, bind=True, ignore_result=True)
def reload_batch(self: DbTask, account_ids: list[str], as_of: str | None = None) -> dict[str, Any]:
    """The sweep's reloads, a batch to a message; the rest is handed on after
    `AUTO_RELOAD_BATCH_SECONDS` (at most half the soft time limit)."""
    return auto_reload.reload_batch(
        self.uow,
        account_ids,
        parse_as_of(as_of) if as_of else None,
        budget_seconds=_batch_budget(),
    )


@app.task(name="balance.auto_reload.reload_now", base=DbTask, bind=True, ignore_result=True)
def reload_now(self: DbTask, account_id: str) -> dict[str, Any]:
    """The same reload, routed to the urgent queue for the debit that crossed the threshold."""
    return auto_reload.reload(self.uow, account_id)
