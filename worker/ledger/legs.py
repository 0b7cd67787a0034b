"""Balanced system transactions of more than two legs (bank transfers: money received,
unapplied funds, suspense, bank fees), beside `ledger.post` (customer balances) and
`ledger.transfer_system` (two system accounts).

Sign convention as everywhere in the book: what the platform owes is positive (a customer's
balance, a customer's unapplied funds, suspense), what it holds or spent is negative (money
received at the bank, bank fees). Every transaction sums to zero (`balancectl audit`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import cast

from sqlalchemy import Table, insert, select

from worker.db.base import new_id
from worker.db.session import UnitOfWork
from worker.ledger.models import LedgerTransaction, Posting
from worker.ledger.service import system_account_id

_TXN = cast(Table, LedgerTransaction.__table__)
_POSTINGS = cast(Table, Posting.__table__)


def post_legs(
    uow: UnitOfWork,
    *,
    kind: str,
    reference: str,
    currency: str,
    legs: Sequence[tuple[str, Decimal]],
    description: str | None,
    now: datetime,
) -> str | None:
    """Write one system transaction with these legs (`(account name, signed amount)`, the
    name without its currency: `unapplied:acc_1`, `bank_in`); once per (kind, reference).

    Returns the transaction id, or None when (kind, reference) was already posted. Raises
    ValueError when the legs do not sum to zero (a bug, never input). Zero legs are left
    out. The caller holds the lock of the row the money belongs to."""
    kept = [(name, amount) for name, amount in legs if amount != 0]
    if sum((amount for _, amount in kept), Decimal(0)) != 0:
        raise ValueError(f"{kind} {reference}: legs do not balance: {kept}")
    if not kept:
        return None
    session = uow.session
    done = session.scalar(
        select(LedgerTransaction.id).where(
            LedgerTransaction.account_id.is_(None),
            LedgerTransaction.kind == kind,
            LedgerTransaction.reference == reference,
        )
    )
    if done is not None:
        return None
    txn_id = new_id("txn")
    moved = sum((amount for _, amount in kept if amount > 0), Decimal(0))
    ids = [system_account_id(session, name, currency, now) for name, _ in kept]
    connection = session.connection()
    connection.execute(
        insert(_TXN).values(
            id=txn_id,
            account_id=None,
            kind=kind,
            reference=reference,
            amount=moved,
            currency=currency,
            balance_after=None,
            description=description,
            created_at=now,
        )
    )
    connection.execute(
        insert(_POSTINGS),
        [
            {"transaction_id": txn_id, "ledger_account_id": ledger_id, "amount": amount}
            for ledger_id, (_, amount) in zip(ids, kept, strict=True)
        ],
    )
    return txn_id
