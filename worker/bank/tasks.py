"""Thin tasks of the bank area: one incoming transfer (a bank's webhook calls it)."""

from __future__ import annotations

from typing import Any

from worker.bank import service as bank
from worker.celery import app
from worker.kernel import clock, task_names
from worker.task_base import DbTask


@app.task(name=task_names.BANK_TRANSFER_RECEIVED, base=DbTask, bind=True)
def transfer_received(
    self: DbTask,
    amount: str,
    currency: str,
    bank_reference: str,
    memo: str | None = None,
    value_date: str | None = None,
) -> dict[str, Any]:
    """Record and match one incoming transfer (worker/bank/service.py). `amount`: a decimal
    string in `currency`, positive; `bank_reference`: the bank's own id of the transfer (a
    repeat returns the first result with `duplicate: true`); `value_date`: YYYY-MM-DD.
    Returns `{transfer_id, duplicate, status, account_id, applied, unapplied}`; raises
    ValidationError naming the field for bad input."""
    return bank.receive_one(
        self.uow,
        source="api",
        now=clock.now(),
        amount=amount,
        currency=currency,
        bank_reference=bank_reference,
        memo=memo,
        value_date=value_date,
    )
