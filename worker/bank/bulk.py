"""Receiving a bank statement chunk in bulk (`bank import`): `receive` of
worker/bank/receiving.py for many transfers, in a fixed number of statements.

One multi-row INSERT ... ON CONFLICT (bank_reference) DO NOTHING RETURNING records the new
transfers (a concurrent import of the same lines waits on the first's rows, then finds
them: money moves once); the accounts and the named invoices are found in one query each,
the accounts locked in one (id order: two importers never deadlock on each other) and
their open invoices in one; the rules (worker/bank/matching.py, the same code `receive`
runs) are applied in Python in statement order, so an account met many times sees its own
earlier transfers; then the ledger legs, the transfers' outcomes and the events are
written in bulk. Invoices are paid in bulk too (worker/bank/settling.py: what the charge
engine and its hooks write, numbers of the final invoices as one gap-free block), except
for an account that needs more than that, paid through the engine (`booking.pay`).
Lock order as everywhere: the account, then its invoices and charges.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, cast

from sqlalchemy import Table, bindparam, select, text, update
from sqlalchemy.orm import Session

from worker.bank import matching
from worker.bank.booking import Applied, pay, receipt_legs, suspense_legs
from worker.bank.incoming import Incoming
from worker.bank.models import BankTransfer
from worker.bank.receiving import (
    Outcome,
    insert_new,
    new_row,
    received_fields,
    repeat,
    status_after,
    unmatched_fields,
    view_of,
)
from worker.bank.settling import BulkPayer
from worker.db.bulk import among
from worker.db.session import UnitOfWork
from worker.invoices.models import Invoice, InvoiceStatus
from worker.kernel import bank_settings
from worker.kernel.errors import DomainError
from worker.ledger.legs import Legs, post_legs_many
from worker.ledger.models import Account
from worker.outbox import events

# --- a statement chunk ---------------------------------------------------------------------------


class Redo(Exception):
    """A chunk met an error only the one-line-at-a-time path can place on its line (a
    payment the charge engine refused): the caller rolls the chunk back and redoes it so."""


@dataclass(frozen=True)
class _Memo:
    valid: list[str]
    invalid: list[str]
    numbers: list[str]


def _memo(incoming: Incoming) -> _Memo:
    text_ = incoming.memo or ""
    valid, invalid = bank_settings.creditor_references_in(text_)
    return _Memo(valid, invalid, matching.invoice_numbers_in(text_))


def _lookups(
    session: Session, memos: Sequence[_Memo]
) -> tuple[dict[str, str], dict[str, tuple[str, str]]]:
    """Accounts by RF reference and invoices by number (`(id, account_id)`), one query each."""
    refs = sorted({ref for m in memos for ref in m.valid})
    numbers = sorted({n for m in memos for n in m.numbers})
    by_ref: dict[str, str] = {}
    if refs:
        by_ref = {
            ref: acc_id
            for ref, acc_id in session.execute(
                select(Account.bank_reference, Account.id).where(
                    among(session, Account.bank_reference, refs)
                )
            )
            if ref is not None
        }
    by_number: dict[str, tuple[str, str]] = {}
    if numbers:
        by_number = {
            number: (inv_id, acc_id)
            for number, inv_id, acc_id in session.execute(
                select(Invoice.number, Invoice.id, Invoice.account_id).where(
                    among(session, Invoice.number, numbers)
                )
            )
            if number is not None
        }
    return by_ref, by_number


def _lock_accounts(
    session: Session, ids: set[str]
) -> tuple[dict[str, Account], dict[str, list[Invoice]]]:
    """The accounts locked in id order, and each one's open invoices in its currency,
    oldest first, locked: two statements."""
    if not ids:
        return {}, {}
    locked = {
        acc.id: acc
        for acc in session.scalars(
            select(Account)
            .where(among(session, Account.id, sorted(ids)))
            .order_by(Account.id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
    }
    open_by: dict[str, list[Invoice]] = {acc_id: [] for acc_id in locked}
    for inv in session.scalars(
        select(Invoice)
        .where(
            among(session, Invoice.account_id, sorted(locked)), Invoice.status == InvoiceStatus.OPEN
        )
        .order_by(Invoice.account_id, Invoice.created_at, Invoice.id)
        .with_for_update()
    ):
        if inv.currency == locked[inv.account_id].currency:
            open_by[inv.account_id].append(inv)
    return locked, open_by


def _store_outcomes(session: Session, rows: list[dict[str, Any]]) -> None:
    """Each new transfer's status, reason, account and result: one UPDATE."""
    if not rows:
        return
    if session.get_bind().dialect.name == "postgresql":
        session.connection().execute(
            text(
                "UPDATE bank_transfers AS t SET status = v.status, reason = v.reason,"
                " account_id = v.account_id, result = v.result"
                " FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS v(id text, status text,"
                " reason text, account_id text, result jsonb) WHERE t.id = v.id"
            ),
            {"rows": json.dumps(rows)},
        )
        return
    table = cast(Table, BankTransfer.__table__)
    session.connection().execute(
        update(table)
        .where(table.c.id == bindparam("b_id"))
        .values(
            status=bindparam("status"),
            reason=bindparam("reason"),
            account_id=bindparam("account_id"),
            result=bindparam("result"),
        ),
        [{**row, "b_id": row["id"]} for row in rows],
    )


def receive_many(
    uow: UnitOfWork, items: Sequence[Incoming], *, source: str, now: datetime
) -> list[dict[str, Any] | DomainError]:
    """`receive` for a statement chunk, in the caller's transaction and in a fixed number
    of statements (see the module doc; an account the bulk payer cannot take pays its
    invoices through the charge engine, one at a time).

    Returns, per item in order, its `receive` result or the DomainError that refused it
    (a repeated bank reference with another amount or currency: nothing written for it).
    Raises Redo when a payment fails in a way only one-at-a-time can report."""
    session = uow.session
    out: list[dict[str, Any] | DomainError | None] = [None] * len(items)
    first: dict[str, int] = {}
    for i, incoming in enumerate(items):
        first.setdefault(incoming.bank_reference, i)
    rows = {i: new_row(items[i], source, now) for i in first.values()}
    inserted = insert_new(session, list(rows.values()))
    # What a repeated bank reference is compared with: (id, amount, currency, result).
    seen: dict[str, tuple[str, Decimal, str, dict[str, Any]]] = {}
    old = [items[i].bank_reference for i in rows if items[i].bank_reference not in inserted]
    if old:
        for t_id, ref, amount, currency, result in session.execute(
            select(
                BankTransfer.id,
                BankTransfer.bank_reference,
                BankTransfer.amount,
                BankTransfer.currency,
                BankTransfer.result,
            ).where(among(session, BankTransfer.bank_reference, old))
        ):
            seen[ref] = (t_id, amount, currency, result)
    new = [i for i in rows if items[i].bank_reference in inserted]
    memos = {i: _memo(items[i]) for i in new}
    by_ref, by_number = _lookups(session, list(memos.values()))
    found: dict[int, tuple[str | None, list[tuple[str, str]]]] = {}
    for i, memo in memos.items():
        account_id = next((by_ref[r] for r in memo.valid if r in by_ref), None)
        named = [by_number[n] for n in memo.numbers if n in by_number]
        if account_id is None and named:
            account_id = named[0][1]
        found[i] = (account_id, named)
    locked, open_by = _lock_accounts(session, {a for a, _ in found.values() if a is not None})
    bulk_payer = BulkPayer(uow, locked, open_by, now)
    legs: list[Legs] = []
    stored: list[dict[str, Any]] = []
    notes: list[tuple[str, str | None, dict[str, Any]]] = []
    for i in new:
        incoming, row = items[i], rows[i]
        outcome = Outcome(
            id=row["id"],
            bank_reference=incoming.bank_reference,
            amount=incoming.amount,
            currency=incoming.currency,
            value_date=incoming.value_date,
            received_at=now,
        )
        account_id, named = found[i]
        account = locked.get(account_id) if account_id is not None else None
        applied: list[Applied] = []
        if account is None or account.currency != incoming.currency:
            memo = memos[i]
            reason = (
                "currency_mismatch"
                if account is not None
                else matching.no_account_reason(memo.valid, memo.invalid)
            )
            outcome.reason = reason
            legs.append(
                suspense_legs(
                    outcome.id, outcome.bank_reference, outcome.amount, outcome.currency, reason
                )
            )
            notes.append(
                ("bank_transfer.unmatched", None, unmatched_fields(outcome, incoming.memo, reason))
            )
            account = None
        else:
            legs.append(
                receipt_legs(
                    outcome.id, outcome.bank_reference, outcome.amount, outcome.currency, account.id
                )
            )
            account.unapplied += incoming.amount
            account.updated_at = now
            outcome.account_id = account.id
            try:
                applied = matching.match(
                    uow,
                    account,
                    transfer_id=outcome.id,
                    bank_reference=outcome.bank_reference,
                    amount=outcome.amount,
                    named_ids=[inv_id for inv_id, acc_id in named if acc_id == account.id],
                    now=now,
                    known=open_by[account.id],
                    payer=bulk_payer.pay if bulk_payer.takes(account) else pay,
                )
            except DomainError as exc:
                raise Redo(str(exc)) from exc
            outcome.status = status_after(applied, account)
        view = view_of(outcome, account, applied)
        out[i] = view
        seen[incoming.bank_reference] = (outcome.id, outcome.amount, outcome.currency, view)
        stored.append(
            {
                "id": outcome.id,
                "status": outcome.status,
                "reason": outcome.reason,
                "account_id": outcome.account_id,
                "result": view,
            }
        )
        notes.append(("bank_transfer.received", outcome.account_id, received_fields(view)))
    try:
        numbers = bulk_payer.flush(uow)
    except DomainError as exc:
        raise Redo(str(exc)) from exc
    for item in stored:  # the final invoices' numbers, taken as one block by the flush
        for applied_view in item["result"]["applied"]:
            final_id = applied_view["final_invoice_id"]
            if final_id in numbers:
                applied_view["final_number"] = numbers[final_id]
    post_legs_many(uow, legs, now)
    _store_outcomes(session, stored)
    events.record_many(uow, notes, now)
    for i, incoming in enumerate(items):
        if out[i] is not None:
            continue
        t_id, amount, currency, result = seen[incoming.bank_reference]
        try:
            out[i] = repeat(incoming, t_id, amount, currency, result)
        except DomainError as exc:
            out[i] = exc
    return [o for o in out if o is not None]
