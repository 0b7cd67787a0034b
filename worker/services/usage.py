"""Usage debits: the platform spending a balance, idempotent by (account, reference)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from worker.db.models import Account, LedgerTransaction
from worker.db.session import UnitOfWork
from worker.errors import InsufficientFunds, ReferenceConflict
from worker.money import format_amount, parse_amount
from worker.services import ledger, validation

KIND = "usage_debit"
RELOAD_NOW_TASK = "balance.auto_reload.reload_now"


def _result(account: Account, txn: LedgerTransaction, duplicate: bool) -> dict[str, Any]:
    return {
        "account_id": account.id,
        "amount": format_amount(-txn.amount, txn.currency),
        "balance": format_amount(ledger.balance_after(txn), txn.currency),
        "currency": txn.currency,
        "transaction_id": txn.id,
        "status": account.status,
        "duplicate": duplicate,
    }


def reload_if_crossed(uow: UnitOfWork, account: Account, before: Decimal) -> None:
    """The debit that takes the balance below the auto-reload threshold reloads at once
    (after commit, on the urgent queue); already below, the sweep is the safety net."""
    threshold = account.auto_reload_threshold
    if (
        account.auto_reload_enabled
        and threshold is not None
        and before >= threshold > account.balance
    ):
        uow.enqueue(RELOAD_NOW_TASK, account.id)


def debit(
    uow: UnitOfWork,
    *,
    account_id: object,
    amount: object,
    reference: object,
    description: object = None,
    now: datetime,
) -> dict[str, Any]:
    """Debit once per reference; a repeat returns the first result with duplicate=True.

    All input is checked before the row lock is taken; nothing is written on refusal.
    """
    value = parse_amount(amount, "amount")
    ref = validation.reference(reference)
    memo = validation.text(description, "description", max_length=500, required=False)
    account = ledger.lock_account(uow.session, account_id)

    first = ledger.find_transaction(uow.session, account.id, KIND, ref)
    if first is not None:
        if first.amount != -value:
            raise ReferenceConflict(
                "reference",
                f"{ref!r} was already used for a debit of "
                f"{format_amount(-first.amount, first.currency)}, not "
                f"{format_amount(value, account.currency)}",
            )
        return _result(account, first, duplicate=True)

    if account.balance - value < 0:
        raise InsufficientFunds(
            "amount",
            f"debit of {format_amount(value, account.currency)} would take the balance "
            f"{format_amount(account.balance, account.currency)} {account.currency} below zero",
        )
    before = account.balance
    txn = ledger.post(
        uow,
        account,
        kind=KIND,
        reference=ref,
        amount=-value,
        counter=ledger.USAGE_REVENUE,
        description=memo,
        now=now,
    )
    reload_if_crossed(uow, account, before)
    return _result(account, txn, duplicate=False)
