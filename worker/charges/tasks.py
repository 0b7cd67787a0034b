"""Thin tasks of the payments area: a top-up now, and the janitor."""

from __future__ import annotations

import uuid
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded

from worker.celery import app
from worker.charges import janitor
from worker.charges import top_up as top_ups
from worker.kernel import task_names
from worker.kernel.clock import parse_as_of
from worker.task_base import DbTask
from worker.task_base import task_key as _task_key


@app.task(name=task_names.PAYMENTS_TOP_UP, base=DbTask, bind=True)
def top_up(
    self: DbTask,
    account_id: str,
    amount: str,
    payment_method_id: str | None = None,
    idempotency_key: str | None = None,
) -> dict[str, Any]:
    # Without a caller key the message id serves: a redelivered message never charges twice.
    # Called directly (no message, so nothing can redeliver it) a new key serves, as in the CLI.
    message_id = self.request.id or uuid.uuid4().hex
    key = idempotency_key if idempotency_key is not None else _task_key(message_id)
    result = top_ups.top_up(
        self.uow,
        account_id=account_id,
        amount=amount,
        idempotency_key=key,
        payment_method_id=payment_method_id,
    )
    if result["status"] == "not_attempted":
        # Soft failure (processor unavailable): the same key again is safe. Short
        # countdowns only, far below the broker's visibility timeout.
        if self.request.retries < top_ups.SOFT_RETRIES:
            raise self.retry(countdown=top_ups.soft_retry_delay(self.request.retries))
        result = top_ups.give_up(self.uow, result["charge_id"])
    return result


@app.task(name=task_names.PAYMENTS_SYNC_PENDING, base=DbTask, bind=True)
def sync_pending(self: DbTask, as_of: str | None = None) -> janitor.SyncResult:
    return janitor.sync_pending(self.uow, parse_as_of(as_of), stops=(SoftTimeLimitExceeded,))
