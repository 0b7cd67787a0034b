from __future__ import annotations

import uuid
from typing import Any

from worker.celery import app
from worker.clock import parse_as_of
from worker.services import charges
from worker.tasks.base import DbTask
from worker.tasks.base import task_key as _task_key


@app.task(name="balance.payments.top_up", base=DbTask, bind=True)
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
    result = charges.top_up(
        self.uow,
        account_id=account_id,
        amount=amount,
        idempotency_key=key,
        payment_method_id=payment_method_id,
    )
    if result["status"] == "not_attempted":
        # Soft failure (processor unavailable): the same key again is safe. Short
        # countdowns only, far below the broker's visibility timeout.
        if self.request.retries < charges.SOFT_RETRIES:
            raise self.retry(countdown=charges.soft_retry_delay(self.request.retries))
        result = charges.give_up(self.uow, result["charge_id"])
    return result


@app.task(name="balance.payments.sync_pending", base=DbTask, bind=True)
def sync_pending(self: DbTask, as_of: str | None = None) -> dict[str, Any]:
    return charges.sync_pending(self.uow, parse_as_of(as_of))
