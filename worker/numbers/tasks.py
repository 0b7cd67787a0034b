from __future__ import annotations

from typing import Any

from config import get_settings
from worker.celery import app
from worker.kernel import task_names
from worker.kernel.clock import isoformat, parse_as_of
from worker.numbers import collect as fees
from worker.task_base import DbTask


@app.task(name=task_names.FEES_COLLECT, base=DbTask, bind=True)
def collect(self: DbTask, as_of: str | None = None) -> dict[str, Any]:
    """Renew every number due as of `as_of` (ISO-8601 with offset, default now); returns
    `due, paid, failed, cancelled` (numbers) and `restored, accounts, errors, handed_on`.
    Stops between batches after half the soft time limit and hands the rest on."""
    budget = get_settings().task_soft_time_limit_seconds / 2
    return fees.collect(self.uow, parse_as_of(as_of), budget_seconds=budget)


@app.task(name=task_names.FEES_COLLECT_ACCOUNT, base=DbTask, bind=True)
def collect_account(self: DbTask, account_id: str, as_of: str | None = None) -> dict[str, Any]:
    """One account's fees now (enqueued after commit by any credit to an account with fees
    due); the same counts as `collect`."""
    moment = parse_as_of(as_of)
    counts = fees.collect_account(self.uow, account_id, moment)
    return {
        "account_id": account_id,
        "as_of": isoformat(moment),
        **{name: counts[name] for name in fees.COUNTS},
    }
