"""Matching an incoming transfer (seed 002, Stripe's automatic reconciliation, "自動消し込み"):
which account it is for, then which of that account's open pro-formas it pays.

1. The account: an ISO 11649 reference in the memo (check digits verified: a typo matches
   nobody), else an invoice number in the memo. None, or a currency other than the
   account's: suspense (worker/bank/receiving.py).
2. The money has joined the account's unapplied funds.
3. The invoices named in the memo are paid, as far as the funds go;
4. else the oldest open invoice of exactly the transfer's amount;
5. else open invoices oldest first, each one the funds fully cover.
6. Nothing paid and an open invoice short by at most BANK_TRANSFER_TOLERANCE (and by less
   than what arrived): it is paid, the difference booked to `bank_fees`.
7. What is left stays unapplied and pays the oldest open invoice it fully covers.
8. Nothing paid while an invoice is open: the customer is mailed the amount still due.

The one-transfer path (`receive`) and the statement path (`receive_many`, a chunk at a
time) both run `match`: the rules exist once.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from config import get_settings
from worker.bank.booking import Applied, pay
from worker.db.session import UnitOfWork
from worker.invoices import mails as invoice_mails
from worker.invoices.models import Invoice, InvoiceStatus
from worker.kernel import bank_settings
from worker.ledger.models import Account


class Payer(Protocol):
    """Pays one open pro-forma from unapplied funds: `booking.pay` (through the charge
    engine), or a statement chunk's bulk payer (worker/bank/settling.py)."""

    def __call__(
        self,
        uow: UnitOfWork,
        account: Account,
        invoice: Invoice,
        *,
        used: Decimal,
        reference: str,
        method: str,
        now: datetime,
    ) -> Applied: ...


_INVOICE_NUMBER = re.compile(r"\b(PF|INV)[\s-]?(\d{4})[\s-]?(\d{6})\b")


def invoice_numbers_in(text: str) -> list[str]:
    """Invoice numbers named in a memo, normalised (`pf 2026 000012` -> `PF-2026-000012`)."""
    found: list[str] = []
    for series, year, seq in _INVOICE_NUMBER.findall(text.upper()):
        number = f"{series}-{year}-{seq}"
        if number not in found:
            found.append(number)
    return found


def no_account_reason(valid: Sequence[str], invalid: Sequence[str]) -> str:
    """Why a memo found no account: a reference whose check digits fail (a typo), a valid
    one nobody has, or none at all."""
    if invalid:
        return "invalid_reference"
    if valid:
        return "unknown_reference"
    return "no_reference"


@dataclass
class Identified:
    account: Account | None
    named: list[Invoice] = field(default_factory=list)  # invoices of that account named
    reason: str | None = None  # why no account


def identify(session: Session, memo: str | None, currency: str) -> Identified:
    """The account a memo names (by its RF reference, else an invoice number) and the
    invoices it names; `reason` says why none was found."""
    text = memo or ""
    valid, invalid = bank_settings.creditor_references_in(text)
    account = None
    if valid:
        account = session.scalars(
            select(Account).where(Account.bank_reference.in_(valid)).limit(1)
        ).first()
    numbers = invoice_numbers_in(text)
    named: list[Invoice] = []
    if numbers:
        rows = {
            inv.number: inv
            for inv in session.scalars(select(Invoice).where(Invoice.number.in_(numbers)))
        }
        named = [rows[n] for n in numbers if n in rows]
    if account is None and named:
        account = session.get(Account, named[0].account_id)
    if account is None:
        return Identified(None, [], no_account_reason(valid, invalid))
    mine = [inv for inv in named if inv.account_id == account.id]
    if currency != account.currency:
        return Identified(account, mine, "currency_mismatch")
    return Identified(account, mine, None)


def open_invoices(session: Session, account_id: str, currency: str) -> list[Invoice]:
    """The account's open pro-formas, oldest first, locked (the account lock is held)."""
    return list(
        session.scalars(
            select(Invoice)
            .where(
                Invoice.account_id == account_id,
                Invoice.currency == currency,
                Invoice.status == InvoiceStatus.OPEN,
            )
            .order_by(Invoice.created_at, Invoice.id)
            .with_for_update()
        )
    )


def tolerance(currency: str) -> Decimal:
    """BANK_TRANSFER_TOLERANCE for `currency` (0 when none is set)."""
    return bank_settings.tolerances(get_settings().bank_transfer_tolerance_list).get(
        currency, Decimal(0)
    )


def _still_open(invoices: Sequence[Invoice]) -> list[Invoice]:
    return [inv for inv in invoices if inv.status == InvoiceStatus.OPEN]


def auto_apply(
    uow: UnitOfWork,
    account: Account,
    *,
    reference: str,
    method: str,
    now: datetime,
    known: Sequence[Invoice] | None = None,
    payer: Payer = pay,
) -> list[Applied]:
    """Rule 7: the unapplied funds pay every open invoice they fully cover, oldest first.
    The caller holds the account lock. `known`: the account's open invoices as the caller
    loaded and locked them, oldest first (those paid since are skipped); None: query.
    `payer`: how one is paid (default `booking.pay`)."""
    paid: list[Applied] = []
    if account.unapplied <= 0:
        return paid
    if known is None:
        candidates = open_invoices(uow.session, account.id, account.currency)
    else:
        candidates = _still_open(known)
    for invoice in candidates:
        if invoice.amount <= account.unapplied:
            paid.append(
                payer(
                    uow,
                    account,
                    invoice,
                    used=invoice.amount,
                    reference=reference,
                    method=method,
                    now=now,
                )
            )
    return paid


def match(
    uow: UnitOfWork,
    account: Account,
    *,
    transfer_id: str,
    bank_reference: str,
    amount: Decimal,
    named_ids: Sequence[str],
    now: datetime,
    known: Sequence[Invoice] | None = None,
    payer: Payer = pay,
) -> list[Applied]:
    """Rules 3-8 for `amount` that has just joined the account's unapplied funds (the
    caller holds the account lock). `named_ids`: the account's invoices the memo names;
    `known`, `payer`: as for `auto_apply`."""
    pay_kw: dict[str, Any] = {"reference": bank_reference, "method": "bank_transfer", "now": now}
    if known is None:
        open_now = open_invoices(uow.session, account.id, account.currency)
    else:
        open_now = _still_open(known)
    named_open = [inv for inv_id in named_ids for inv in open_now if inv.id == inv_id]
    paid: list[Applied] = []
    if named_open:  # 3: the invoices the memo names
        for invoice in named_open:
            if invoice.amount <= account.unapplied:
                paid.append(payer(uow, account, invoice, used=invoice.amount, **pay_kw))
    elif not named_ids:
        exact = next((inv for inv in open_now if inv.amount == amount), None)
        if exact is not None and exact.amount <= account.unapplied:  # 4: the same amount
            paid.append(payer(uow, account, exact, used=exact.amount, **pay_kw))
        else:  # 5: oldest first, as far as the money goes
            for invoice in open_now:
                if invoice.amount <= account.unapplied:
                    paid.append(payer(uow, account, invoice, used=invoice.amount, **pay_kw))
    still_open = _still_open(open_now)
    candidates = _still_open(named_open) or still_open
    if not paid and candidates and account.unapplied > 0:  # 6: within the tolerance
        allowed = tolerance(account.currency)
        # The shortfall must also be smaller than what arrived: 1 EUR never closes a 20 EUR
        # invoice, whatever the tolerance (the seed's case is bank charges, 20 of 100).
        funds = account.unapplied
        short = next((inv for inv in candidates if inv.amount - funds <= min(allowed, funds)), None)
        if short is not None:
            paid.append(payer(uow, account, short, used=account.unapplied, **pay_kw))
    # 7: leftovers cover older invoices
    paid.extend(auto_apply(uow, account, known=open_now, payer=payer, **pay_kw))
    if not paid and candidates:  # 8: tell the customer what is still due
        first = candidates[0]
        invoice_mails.still_due(
            uow,
            account,
            first,
            received=amount,
            still=first.amount - account.unapplied,
            transfer_id=transfer_id,
            now=now,
        )
    return paid
