"""Receiving incoming bank transfers: one at a time (`receive`: the task, `bank receive`,
`bank simulate`, and a statement chunk the bulk path hands back).

0. The transfer is recorded once per bank reference (a unique row; a repeat returns the
   first result with `duplicate: true`, and with another amount or currency is refused).
1. The account is identified (worker/bank/matching.py); none, or a currency other than
   the account's: **suspense** (`unmatched`, `bank_transfer.unmatched`) until `bank assign`.
2. The money becomes the account's **unapplied funds** (its own ledger account), then
   `matching.match` pays invoices from it (rules 3-8).

A statement chunk is received in bulk by worker/bank/bulk.py, with the same rules.
Lock order everywhere: the account, then its invoices and charges.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any, cast

from sqlalchemy import Table, select, text
from sqlalchemy.dialects import sqlite
from sqlalchemy.orm import Session

from worker.accounts import service as accounts
from worker.bank import matching
from worker.bank.booking import BANK_IN, Applied, receipt_legs, suspense_legs
from worker.bank.incoming import Incoming, check
from worker.bank.models import BankTransfer, TransferStatus
from worker.db.base import new_id
from worker.db.session import UnitOfWork
from worker.invoices.models import Invoice
from worker.kernel.clock import isoformat
from worker.kernel.errors import IdempotencyConflict
from worker.kernel.money import format_amount
from worker.ledger import service as ledger
from worker.ledger.legs import post_legs
from worker.ledger.models import Account
from worker.outbox import events

_RECEIVED_FIELDS = (
    "transfer_id",
    "status",
    "amount",
    "currency",
    "bank_reference",
    "applied",
    "unapplied",
    "reason",
)


# --- one transfer --------------------------------------------------------------------------------


@dataclass
class Outcome:
    """What a receipt decided for one transfer (a BankTransfer row's outcome fields)."""

    id: str
    bank_reference: str
    amount: Decimal
    currency: str
    value_date: date | None
    received_at: datetime
    status: str = TransferStatus.UNMATCHED
    reason: str | None = None
    account_id: str | None = None


def view_of(
    transfer: BankTransfer | Outcome, account: Account | None, applied: list[Applied]
) -> dict[str, Any]:
    cur = transfer.currency
    return {
        "transfer_id": transfer.id,
        "duplicate": False,
        "status": transfer.status,
        "account_id": transfer.account_id,
        "amount": format_amount(transfer.amount, cur),
        "currency": cur,
        "bank_reference": transfer.bank_reference,
        "applied": [a.view(cur) for a in applied],
        "unapplied": format_amount(account.unapplied, account.currency)
        if account is not None
        else format_amount(Decimal(0), cur),
        "suspense": format_amount(transfer.amount, cur)
        if transfer.status == TransferStatus.UNMATCHED
        else format_amount(Decimal(0), cur),
        "reason": transfer.reason,
        "value_date": transfer.value_date.isoformat() if transfer.value_date else None,
        "received_at": isoformat(transfer.received_at),
    }


_TRANSFERS = cast(Table, BankTransfer.__table__)


def insert_new(session: Session, rows: list[dict[str, Any]]) -> set[str]:
    """INSERT ... ON CONFLICT (bank_reference) DO NOTHING RETURNING for `rows`, in their
    order, in one statement: the bank references that were new. A row a concurrent
    transaction has inserted and not committed yet waits for it (then is not new)."""
    if not rows:
        return set()
    if session.get_bind().dialect.name == "postgresql":
        # The rows as one JSON parameter: a VALUES list of 14 placeholders a row is parsed
        # anew by psycopg on every call (most of a chunk's client time, measured).
        return set(session.connection().execute(_INSERT_JSON, {"rows": _as_json(rows)}).scalars())
    statement = (
        sqlite.insert(_TRANSFERS)
        .on_conflict_do_nothing(index_elements=[_TRANSFERS.c.bank_reference])
        .returning(_TRANSFERS.c.bank_reference)
    )
    return set(session.connection().execute(statement, rows).scalars())


_INSERT_JSON = text(
    "INSERT INTO bank_transfers (id, bank_reference, amount, currency, memo, value_date,"
    " booking_date, source, status, reason, account_id, result, received_at, assigned_at)"
    " SELECT v.id, v.bank_reference, v.amount, v.currency, v.memo, v.value_date,"
    " v.booking_date, v.source, v.status, NULL, NULL, '{}'::jsonb, v.received_at, NULL"
    " FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS v(id text,"
    " bank_reference text, amount numeric, currency text, memo text, value_date date,"
    " booking_date date, source text, status text, received_at timestamptz, n int)"
    " ORDER BY v.n"  # the file's order: two importers of one file wait, never deadlock
    " ON CONFLICT (bank_reference) DO NOTHING RETURNING bank_reference"
)


def _as_json(rows: list[dict[str, Any]]) -> str:
    """The new rows for `_INSERT_JSON`: amounts as decimal strings (exact), dates ISO."""
    return json.dumps(
        [
            {
                "id": row["id"],
                "bank_reference": row["bank_reference"],
                "amount": str(row["amount"]),
                "currency": row["currency"],
                "memo": row["memo"],
                "value_date": row["value_date"].isoformat() if row["value_date"] else None,
                "booking_date": row["booking_date"].isoformat() if row["booking_date"] else None,
                "source": row["source"],
                "status": row["status"],
                "received_at": row["received_at"].isoformat(),
                "n": n,
            }
            for n, row in enumerate(rows)
        ]
    )


def new_row(incoming: Incoming, source: str, now: datetime) -> dict[str, Any]:
    return {
        "id": new_id("btr"),
        "bank_reference": incoming.bank_reference,
        "amount": incoming.amount,
        "currency": incoming.currency,
        "memo": incoming.memo,
        "value_date": incoming.value_date,
        "booking_date": incoming.booking_date,
        "source": source,
        "status": TransferStatus.UNMATCHED,
        "reason": None,
        "account_id": None,
        "result": {},
        "received_at": now,
        "assigned_at": None,
    }


def _insert(
    session: Session, incoming: Incoming, source: str, now: datetime
) -> BankTransfer | None:
    """The new transfer row, or None when its bank reference is known (a concurrent copy
    waits here for the first to commit, then finds it)."""
    row = new_row(incoming, source, now)
    if not insert_new(session, [row]):
        return None
    return session.get(BankTransfer, row["id"])


def repeat(
    incoming: Incoming, first_id: str, amount: Decimal, currency: str, result: dict[str, Any]
) -> dict[str, Any]:
    """The answer to a bank reference seen before: the first result, or IdempotencyConflict
    when the amount or currency differ."""
    if amount != incoming.amount or currency != incoming.currency:
        raise IdempotencyConflict(
            "bank_reference",
            f"{incoming.bank_reference!r} was already received for "
            f"{format_amount(amount, currency)} {currency}",
        )
    return {**result, "transfer_id": first_id, "duplicate": True}


def _duplicate(session: Session, incoming: Incoming) -> dict[str, Any]:
    first = session.scalars(
        select(BankTransfer).where(BankTransfer.bank_reference == incoming.bank_reference)
    ).one()
    return repeat(incoming, first.id, first.amount, first.currency, first.result)


def received_fields(view: dict[str, Any]) -> dict[str, Any]:
    return {k: view[k] for k in _RECEIVED_FIELDS}


def unmatched_fields(
    transfer: BankTransfer | Outcome, memo: str | None, reason: str
) -> dict[str, Any]:
    return {
        "transfer_id": transfer.id,
        "amount": format_amount(transfer.amount, transfer.currency),
        "currency": transfer.currency,
        "bank_reference": transfer.bank_reference,
        "memo": memo,
        "reason": reason,
    }


def _to_suspense(uow: UnitOfWork, transfer: BankTransfer, reason: str, now: datetime) -> None:
    transfer.status = TransferStatus.UNMATCHED
    transfer.reason = reason
    transfer.account_id = None
    legs = suspense_legs(
        transfer.id, transfer.bank_reference, transfer.amount, transfer.currency, reason
    )
    post_legs(
        uow,
        kind=legs.kind,
        reference=legs.reference,
        currency=legs.currency,
        legs=legs.legs,
        description=legs.description,
        now=now,
    )
    events.record(
        uow, "bank_transfer.unmatched", None, unmatched_fields(transfer, transfer.memo, reason), now
    )


def status_after(applied: list[Applied], account: Account) -> str:
    if not applied:
        return TransferStatus.UNAPPLIED
    if account.unapplied > 0:
        return TransferStatus.PARTIAL
    return TransferStatus.MATCHED


def to_account(
    uow: UnitOfWork,
    transfer: BankTransfer,
    account_id: str,
    named: list[Invoice],
    *,
    source_leg: str,
    kind: str,
    now: datetime,
) -> tuple[Account, list[Applied]]:
    """The transfer's money joins the account's unapplied funds (from `source_leg`), then
    the rules pay what they can; the account is locked here."""
    account = ledger.lock_account(uow.session, account_id)
    legs = receipt_legs(
        transfer.id,
        transfer.bank_reference,
        transfer.amount,
        transfer.currency,
        account.id,
        source_leg=source_leg,
        kind=kind,
    )
    post_legs(
        uow,
        kind=legs.kind,
        reference=legs.reference,
        currency=legs.currency,
        legs=legs.legs,
        description=legs.description,
        now=now,
    )
    account.unapplied += transfer.amount
    account.updated_at = now
    transfer.account_id = account.id
    transfer.reason = None
    applied = matching.match(
        uow,
        account,
        transfer_id=transfer.id,
        bank_reference=transfer.bank_reference,
        amount=transfer.amount,
        named_ids=[inv.id for inv in named],
        now=now,
    )
    transfer.status = status_after(applied, account)
    return account, applied


def receive(uow: UnitOfWork, incoming: Incoming, *, source: str, now: datetime) -> dict[str, Any]:
    """Record one incoming transfer and match it (rules above), in the caller's transaction.

    Returns `{transfer_id, duplicate, status, account_id, applied: [{invoice_id, number,
    amount, fee, ...}], unapplied, ...}` (CONTRACT.md, `bank receive`); `unapplied` is the
    account's unapplied funds after it. A bank reference seen before returns the first
    result with `duplicate: true` and moves nothing; with another amount or currency it is
    refused (IdempotencyConflict)."""
    session = uow.session
    transfer = _insert(session, incoming, source, now)
    if transfer is None:
        return _duplicate(session, incoming)
    found = matching.identify(session, incoming.memo, incoming.currency)
    account: Account | None = None
    applied: list[Applied] = []
    if found.account is None or found.reason is not None:
        _to_suspense(uow, transfer, found.reason or "no_reference", now)
    else:
        account, applied = to_account(
            uow,
            transfer,
            found.account.id,
            found.named,
            source_leg=BANK_IN,
            kind="bank_receipt",
            now=now,
        )
    view = view_of(transfer, account, applied)
    transfer.result = view
    events.record(uow, "bank_transfer.received", transfer.account_id, received_fields(view), now)
    return view


def receive_one(uow: UnitOfWork, *, source: str, now: datetime, **fields: object) -> dict[str, Any]:
    """`balance.bank.transfer_received` / `bank receive`: check, then receive."""
    return receive(uow, check(**fields), source=source, now=now)


def simulate(
    uow: UnitOfWork, account_id: object, amount: object, memo: object, now: datetime
) -> dict[str, Any]:
    """Sandbox (seed 002, "支払いのテスト"): a transfer to the account with a made-up bank
    reference; the memo defaults to the account's own reference."""
    account = accounts.get(uow.session, account_id)
    text_ = memo if memo is not None else account.bank_reference
    return receive_one(
        uow,
        source="simulate",
        now=now,
        amount=amount,
        currency=account.currency,
        bank_reference=f"SIM-{uuid.uuid4().hex[:20].upper()}",
        memo=text_,
        value_date=now.date().isoformat(),
    )
