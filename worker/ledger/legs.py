"""Balanced system transactions of more than two legs (bank transfers: money received,
unapplied funds, suspense, bank fees), beside `ledger.post` (customer balances) and
`ledger.transfer_system` (two system accounts); and both kinds for many at once
(`post_legs_many`, `credit_many`: a statement import's chunk, in a fixed number of
statements).

Sign convention as everywhere in the book: what the platform owes is positive (a customer's
balance, a customer's unapplied funds, suspense), what it holds or spent is negative (money
received at the bank, bank fees). Every transaction sums to zero (`balancectl audit`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, cast

from sqlalchemy import Table, insert, select
from sqlalchemy.dialects import postgresql, sqlite

from worker.db.base import new_id
from worker.db.bulk import among, copy_rows
from worker.db.session import UnitOfWork
from worker.ledger import hooks
from worker.ledger.models import Account, LedgerAccount, LedgerTransaction, Posting
from worker.ledger.service import (
    _apply_depletion_rule,
    _rearm_alert,
    check_fits,
    system_account_id,
)

_TXN = cast(Table, LedgerTransaction.__table__)
_POSTINGS = cast(Table, Posting.__table__)
_ACCOUNTS = cast(Table, LedgerAccount.__table__)


@dataclass(frozen=True)
class Legs:
    """One system transaction for `post_legs_many`: `legs` as for `post_legs`."""

    kind: str
    reference: str
    currency: str
    legs: Sequence[tuple[str, Decimal]]
    description: str | None


def _kept(kind: str, reference: str, legs: Sequence[tuple[str, Decimal]]) -> list[Any]:
    kept = [(name, amount) for name, amount in legs if amount != 0]
    if sum((amount for _, amount in kept), Decimal(0)) != 0:
        raise ValueError(f"{kind} {reference}: legs do not balance: {kept}")
    return kept


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
    kept = _kept(kind, reference, legs)
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


def _insert_rows(
    uow: UnitOfWork, txns: list[dict[str, Any]], postings: list[dict[str, Any]]
) -> None:
    """Transactions, then their postings, by COPY (worker/db/bulk.py: new ids only)."""
    copy_rows(uow.session, _TXN, txns)
    copy_rows(uow.session, _POSTINGS, postings)


def _ledger_ids(uow: UnitOfWork, codes: set[str], now: datetime) -> dict[str, int]:
    """Ids of system ledger accounts by code (`bank_in:EUR`), the missing ones created
    (race-safe: INSERT ... ON CONFLICT DO NOTHING, then read): two statements at most."""
    session = uow.session
    if not codes:
        return {}
    connection = session.connection()
    query = select(_ACCOUNTS.c.code, _ACCOUNTS.c.id).where(
        among(session, _ACCOUNTS.c.code, sorted(codes))
    )
    found: dict[str, int] = {code: id_ for code, id_ in connection.execute(query)}
    missing = sorted(codes - found.keys())
    if missing:
        dialect = session.get_bind().dialect.name
        make = postgresql.insert if dialect == "postgresql" else sqlite.insert
        connection.execute(
            make(_ACCOUNTS).on_conflict_do_nothing(),
            [
                {"code": code, "currency": code.rsplit(":", 1)[1], "created_at": now}
                for code in missing
            ],
        )
        found = {code: id_ for code, id_ in connection.execute(query)}
    return found


def post_legs_many(uow: UnitOfWork, items: Sequence[Legs], now: datetime) -> list[str | None]:
    """`post_legs` for many system transactions in a fixed number of statements (a statement
    import's chunk): each balanced on its own, once per (kind, reference).

    Returns the transaction ids in the order of `items` (None: nothing to post, or already
    posted). Raises ValueError when one does not sum to zero (a bug, never input), before
    anything is written. Keep a call under ~5,000 legs (one INSERT holds them all). The
    caller holds the locks of the rows the money belongs to."""
    kept = [_kept(item.kind, item.reference, item.legs) for item in items]
    session = uow.session
    if session.new or session.dirty:
        session.flush()  # Core statements below: pending ORM rows go first
    connection = session.connection()
    wanted = {(item.kind, item.reference) for item, legs in zip(items, kept, strict=True) if legs}
    done: set[tuple[str, str]] = set()
    if wanted:
        references = sorted({reference for _, reference in wanted})
        done = {
            (kind, reference)
            for kind, reference in connection.execute(
                select(LedgerTransaction.kind, LedgerTransaction.reference).where(
                    LedgerTransaction.account_id.is_(None),
                    among(session, LedgerTransaction.reference, references),
                )
            )
            if (kind, reference) in wanted
        }
    codes = {
        f"{name}:{item.currency}"
        for item, legs in zip(items, kept, strict=True)
        for name, _ in legs
    }
    ids = _ledger_ids(uow, codes, now)
    ids_out: list[str | None] = []
    txns: list[dict[str, Any]] = []
    postings: list[dict[str, Any]] = []
    for item, legs in zip(items, kept, strict=True):
        key = (item.kind, item.reference)
        if not legs or key in done:
            ids_out.append(None)
            continue
        done.add(key)  # the same (kind, reference) twice in one call: posted once
        txn_id = new_id("txn")
        ids_out.append(txn_id)
        txns.append(
            {
                "id": txn_id,
                "account_id": None,
                "kind": item.kind,
                "reference": item.reference,
                "amount": sum((amount for _, amount in legs if amount > 0), Decimal(0)),
                "currency": item.currency,
                "balance_after": None,
                "description": item.description,
                "created_at": now,
            }
        )
        postings.extend(
            {
                "transaction_id": txn_id,
                "ledger_account_id": ids[f"{name}:{item.currency}"],
                "amount": amount,
            }
            for name, amount in legs
        )
    if txns:
        _insert_rows(uow, txns, postings)
    return ids_out


@dataclass(frozen=True)
class Credit:
    """One customer credit for `credit_many` (as `ledger.post` with a positive amount)."""

    account: Account
    kind: str
    reference: str
    amount: Decimal
    counter: str  # the system account name, without its currency
    description: str | None


def credit_many(
    uow: UnitOfWork, credits: Sequence[Credit], now: datetime
) -> list[tuple[str, Decimal]]:
    """`ledger.post` for many credits (amount > 0), in order, in a fixed number of
    statements: each a balanced pair of postings, the cached balance updated, the depletion
    rule (a depleted account reactivated), the alert re-armed and the credit hooks run, as
    `post` does. Returns `(transaction id, balance after)` per credit.

    Raises ValidationError (amount) when a balance would pass MAX_AMOUNT, ValueError for a
    non-positive amount (a bug); the caller holds the accounts' locks and rolls back on any
    error (the accounts in memory have moved)."""
    if not credits:
        return []
    session = uow.session
    if session.new or session.dirty:
        session.flush()
    connection = session.connection()
    customer_ids = {
        account_id: ledger_id
        for account_id, ledger_id in connection.execute(
            select(_ACCOUNTS.c.account_id, _ACCOUNTS.c.id).where(
                among(session, _ACCOUNTS.c.account_id, sorted({c.account.id for c in credits}))
            )
        )
    }
    counters = _ledger_ids(uow, {f"{c.counter}:{c.account.currency}" for c in credits}, now)
    out: list[tuple[str, Decimal]] = []
    txns: list[dict[str, Any]] = []
    postings: list[dict[str, Any]] = []
    for credit in credits:
        account = credit.account
        if credit.amount <= 0:
            raise ValueError(f"{credit.kind} {credit.reference}: a credit must be positive")
        check_fits(account, credit.amount)
        if account.id not in customer_ids:
            raise RuntimeError(f"account {account.id} has no ledger account")
        txn = LedgerTransaction(
            id=new_id("txn"),
            account_id=account.id,
            kind=credit.kind,
            reference=credit.reference,
            amount=credit.amount,
            currency=account.currency,
            balance_after=account.balance + credit.amount,
            description=credit.description,
            created_at=now,
        )
        txns.append({column.key: getattr(txn, column.key) for column in _TXN.columns})
        postings.append(
            {
                "transaction_id": txn.id,
                "ledger_account_id": customer_ids[account.id],
                "amount": credit.amount,
            }
        )
        postings.append(
            {
                "transaction_id": txn.id,
                "ledger_account_id": counters[f"{credit.counter}:{account.currency}"],
                "amount": -credit.amount,
            }
        )
        account.balance = account.balance + credit.amount
        account.updated_at = now
        # The rest of `post`, its very own functions (same package, not copies), on a
        # transaction object that is never added to the session (its row goes in below).
        _apply_depletion_rule(uow, account, txn, now)
        _rearm_alert(account, txn)
        hooks.after_credit(uow, account, txn, now)
        out.append((txn.id, account.balance))
    _insert_rows(uow, txns, postings)
    return out
