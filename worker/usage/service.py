"""Usage debits: the platform spending a balance, idempotent by (account, reference)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from worker.db.session import UnitOfWork
from worker.kernel import validation
from worker.kernel.errors import AccountSuspended, InsufficientFunds, ReferenceConflict
from worker.kernel.money import format_amount, parse_amount
from worker.ledger import service as ledger
from worker.ledger.models import Account, LedgerTransaction

KIND = "usage_debit"


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
    An account an operator suspended (`suspension_reason: admin`, worker/accounts/admin.py)
    is refused with AccountSuspended (`account_suspended`, field `account_id`); a repeat of
    a debit made before the suspension still returns its first result (the money moved then).
    """
    value = parse_amount(amount, "amount")
    ref = validation.reference(reference)
    memo = validation.text(description, "description", max_length=500, required=False)
    # The lock and the look-up in one round trip where the database allows (issue 16).
    account, first = ledger.lock_account_and_find(uow.session, account_id, KIND, ref)
    if first is not None:
        if first.amount != -value:
            raise ReferenceConflict(
                "reference",
                f"{ref!r} was already used for a debit of "
                f"{format_amount(-first.amount, first.currency)}, not "
                f"{format_amount(value, account.currency)}",
            )
        return _result(account, first, duplicate=True)
    if account.suspension_reason == "admin":
        raise AccountSuspended(
            "account_id", f"account {account.id} is suspended by an operator: no usage is debited"
        )

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
    ledger.reload_if_crossed(uow, account, before)
    return _result(account, txn, duplicate=False)
