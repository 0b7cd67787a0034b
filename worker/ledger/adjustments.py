"""Manual adjustments by operators: goodwill credit, corrections, money before a PSP exists."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import TypedDict

from worker.db.session import UnitOfWork
from worker.kernel import validation
from worker.kernel.errors import InsufficientFunds, ReferenceConflict
from worker.kernel.money import format_amount, parse_amount
from worker.ledger import service as ledger
from worker.outbox import events

KIND = "adjustment"


class AdjustResult(TypedDict):
    """A manual credit or debit as `balance.ledger.adjust` returns it (amounts: strings)."""

    account_id: str
    amount: str
    balance: str
    currency: str
    transaction_id: str
    reason: str | None
    status: str
    duplicate: bool


def adjust(
    uow: UnitOfWork,
    *,
    account_id: object,
    amount: object,
    reason: object,
    reference: object = None,
    now: datetime,
) -> AdjustResult:
    """Credit (positive) or debit (negative) against the adjustments account; reason required.

    `reference` makes a redelivered request a no-op (the task passes its own id).
    """
    value = parse_amount(amount, "amount", allow_negative=True)
    why = validation.text(reason, "reason", max_length=500)
    ref = validation.reference(reference) if reference is not None else f"adj-{uuid.uuid4().hex}"
    account = ledger.lock_account(uow.session, account_id)

    first = ledger.find_transaction(uow.session, account.id, KIND, ref)
    if first is not None:
        if first.amount != value:
            raise ReferenceConflict("reference", f"{ref!r} was already used for another amount")
        txn, duplicate = first, True
    else:
        if account.balance + value < 0:
            raise InsufficientFunds(
                "amount",
                f"adjustment of {format_amount(value, account.currency)} would take the balance "
                f"{format_amount(account.balance, account.currency)} {account.currency} below zero",
            )
        before = account.balance
        txn = ledger.post(
            uow,
            account,
            kind=KIND,
            reference=ref,
            amount=value,
            counter=ledger.ADJUSTMENTS,
            description=why,
            now=now,
        )
        events.record(
            uow,
            "balance.adjusted",
            account.id,
            {
                "amount": format_amount(value, account.currency),
                "currency": account.currency,
                "balance": format_amount(ledger.balance_after(txn), account.currency),
                "reason": why,
                "transaction_id": txn.id,
            },
            now,
        )
        ledger.reload_if_crossed(uow, account, before)
        duplicate = False
    return {
        "account_id": account.id,
        "amount": format_amount(txn.amount, txn.currency),
        "balance": format_amount(ledger.balance_after(txn), txn.currency),
        "currency": txn.currency,
        "transaction_id": txn.id,
        "reason": txn.description,
        "status": account.status,
        "duplicate": duplicate,
    }
