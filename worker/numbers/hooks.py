"""The numbers' balance hooks, installed in the ledger by worker/wiring.py.

Both run inside `ledger.post` with the account row locked, and cost nothing for an account
without numbers: `accounts.next_fee_at` (loaded with the row) is None for it.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from config import get_settings
from worker.db.session import UnitOfWork
from worker.kernel import task_names
from worker.ledger.models import Account, LedgerTransaction
from worker.numbers import service as numbers
from worker.numbers.models import CancelReason


def on_credit(uow: UnitOfWork, account: Account, txn: LedgerTransaction, now: datetime) -> None:
    """Any credit (top-up, auto-reload, bank transfer, adjustment): an active account's
    suspended numbers are restored at once, and unpaid fees are collected right after
    commit (seed 003: a failed balance payment is retried when funds arrive, not on a timer)."""
    if account.next_fee_at is None:
        return
    if account.status == "active":
        numbers.restore_numbers(uow, account, now)
    if account.next_fee_at <= now:
        uow.enqueue(task_names.FEES_COLLECT_ACCOUNT, account.id)


def on_resume(uow: UnitOfWork, account: Account, now: datetime) -> None:
    """An operator resumed the account and it is active: numbers a depletion suspended are
    restored (a credit during the operator's suspension could not: the account was not
    active), and fees due are collected right after commit."""
    if account.next_fee_at is None:
        return
    numbers.restore_numbers(uow, account, now)
    if account.next_fee_at <= now:
        uow.enqueue(task_names.FEES_COLLECT_ACCOUNT, account.id)


def on_depletion(
    uow: UnitOfWork, account: Account, txn: LedgerTransaction, now: datetime
) -> dict[str, Any] | None:
    """A debit depleted the account: its numbers are suspended now and cancelled after
    NUMBER_CANCEL_AFTER_DEPLETION seconds of depletion (by the collect job; at once when 0,
    seeds 000/001: "at zero ... virtual numbers are cancelled"). Returns the depletion
    mail's fields: how many numbers, and when they will be (or were) cancelled."""
    if account.next_fee_at is None:
        return None
    suspended = numbers.suspend_numbers(uow, account, now)
    if not suspended:
        return None
    seconds = get_settings().number_cancel_after_depletion_seconds
    if seconds == 0:
        # The depletion mail says they were cancelled: no second mail.
        numbers.cancel_numbers(uow, account, suspended, CancelReason.DEPLETED, now, mail=False)
        numbers.refresh_next_fee(uow.session, account)
    return {"numbers": len(suspended), "numbers_cancel_at": now + timedelta(seconds=seconds)}
