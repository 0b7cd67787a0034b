"""Thin tasks of refunds: one refund now (`balance.payments.refund`, CONTRACT.md "Refunds")
and the janitor (`balance.refunds.sync`, beat `refunds-sync`)."""

from __future__ import annotations

import uuid
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded

from worker.celery import app
from worker.kernel import task_names
from worker.kernel.clock import parse_as_of
from worker.refunds import janitor, service
from worker.refunds import refund as refunds
from worker.task_base import DbTask
from worker.task_base import task_key as _task_key


@app.task(name=task_names.PAYMENTS_REFUND, base=DbTask, bind=True)
def refund(
    self: DbTask,
    charge_id: str,
    amount: str | None = None,
    reason: str | None = None,
    idempotency_key: str | None = None,
) -> dict[str, Any]:
    """Refund `amount` (decimal string; None: what is left) of the succeeded charge
    `charge_id`. Returns `refund_id, charge_id, amount, currency, status, balance`.
    Without a caller key the message id serves, so a redelivered message makes one refund.
    Refusals: not_found, not_refundable, nothing_to_refund, insufficient_funds, invalid."""
    message_id = self.request.id or uuid.uuid4().hex
    key = (
        service.caller_key(idempotency_key)
        if idempotency_key is not None
        else _task_key(message_id)
    )
    return refunds.refund(
        self.uow, charge_id=charge_id, amount=amount, reason=reason, idempotency_key=key
    )


@app.task(name=task_names.REFUNDS_SYNC, base=DbTask, bind=True)
def sync(self: DbTask, as_of: str | None = None) -> janitor.JanitorResult:
    """Resolve refunds whose answer was lost, by look-up (`checked, resolved`), and bound
    bank-transfer refunds waiting for details as of `as_of` (ISO 8601, default now):
    `reminded` (one mail after REFUND_DETAILS_REMINDER_DAYS), `expired` (failed with
    `details_not_received` after REFUND_DETAILS_EXPIRE_DAYS, money back on the balance)."""
    return janitor.run(self.uow, parse_as_of(as_of), stops=(SoftTimeLimitExceeded,))
