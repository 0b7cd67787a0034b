"""Incoming bank transfers and their matching to invoices (seed 002, Stripe's automatic
reconciliation, "自動消し込み"), into a spendable prepaid balance.

0. The transfer is recorded once per bank reference (a unique row; a repeat returns the
   first result with `duplicate: true`).
1. The account: an ISO 11649 reference in the memo (check digits verified: a typo matches
   nobody), else an invoice number in the memo. None, or a currency other than the
   account's: **suspense** (`unmatched`, `bank_transfer.unmatched`) until `bank assign`.
2. The money becomes the account's **unapplied funds** (its own ledger account).
3. The invoices named in the memo are paid, as far as the funds go;
4. else the **oldest open invoice of exactly the transfer's amount**;
5. else open invoices **oldest first**, each one the funds fully cover.
6. Nothing paid and an open invoice short by at most BANK_TRANSFER_TOLERANCE (and by less
   than what arrived): it is paid, the balance credited the invoiced amount, the
   difference booked to `bank_fees`.
7. What is left stays unapplied and pays the oldest open invoice it fully covers whenever
   one exists or is created; `bank credit` moves it to the balance.
8. Nothing paid while an invoice is open: the customer is mailed the amount still due.

Paying an invoice runs the charge engine's `apply` (balance credited, a depleted account
reactivated, settlement and invoices hooks: final invoice issued and mailed,
`invoice.paid`) in the transfer's transaction, with the ledger legs of the money:
received `bank_in` -> `unapplied:<account>` (or `suspense`) -> the payment (+ `bank_fees`).
Lock order everywhere: the account, then its invoices and charges.
"""

from __future__ import annotations

import logging
import re
import uuid
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from config import get_settings
from worker.accounts import service as accounts
from worker.bank.models import BankTransfer, TransferStatus
from worker.charges import engine
from worker.charges.engine import Recorded
from worker.charges.models import Charge
from worker.db.base import new_id
from worker.db.session import UnitOfWork
from worker.invoices import mails as invoice_mails
from worker.invoices import service as invoices
from worker.invoices.models import Invoice, InvoiceKind, InvoiceStatus
from worker.kernel import bank_settings, validation
from worker.kernel.clock import isoformat
from worker.kernel.errors import (
    CurrencyMismatch,
    IdempotencyConflict,
    InsufficientFunds,
    NotFound,
    TransferState,
    ValidationError,
)
from worker.kernel.money import format_amount, parse_amount
from worker.ledger import service as ledger
from worker.ledger.legs import post_legs
from worker.ledger.models import Account
from worker.outbox import events

log = logging.getLogger(__name__)

BANK_IN = "bank_in"  # money received at our bank, not yet part of a payment
SUSPENSE = "suspense"  # received, no account found
BANK_FEES = "bank_fees"  # underpayments accepted within the tolerance (an expense)
MEMO_MAX = 1000
_INVOICE_NUMBER = re.compile(r"\b(PF|INV)[\s-]?(\d{4})[\s-]?(\d{6})\b")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


def unapplied_code(account_id: str) -> str:
    """The ledger account name of an account's unapplied funds (`unapplied:<id>:<cur>`)."""
    return f"unapplied:{account_id}"


# --- input -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Incoming:
    """One transfer as the bank reports it, checked."""

    amount: Decimal
    currency: str
    bank_reference: str
    memo: str | None
    value_date: date | None
    booking_date: date | None = None


def _date(value: object, field_name: str) -> date | None:
    if value is None or value == "":
        return None
    if isinstance(value, date):
        return value
    if not isinstance(value, str):
        raise ValidationError(field_name, "must be a date YYYY-MM-DD")
    try:
        return date.fromisoformat(value.strip())
    except ValueError:
        raise ValidationError(field_name, f"is not a date YYYY-MM-DD: {value[:20]!r}") from None


def check(
    *,
    amount: object,
    currency: object,
    bank_reference: object,
    memo: object = None,
    value_date: object = None,
    booking_date: object = None,
) -> Incoming:
    """Validate one transfer (each error names its field); nothing is written."""
    ref = validation.reference(bank_reference, "bank_reference")
    cur = validation.currency(currency)
    value = engine.chargeable_amount(amount, cur)
    if value <= 0:
        raise ValidationError("amount", "must be positive (money in)")
    text = None
    if memo is not None:
        if not isinstance(memo, str):
            raise ValidationError("memo", "must be a string")
        # Free text from a payer: card numbers redacted, line breaks folded.
        text = validation.text(_CONTROL.sub(" ", memo), "memo", max_length=MEMO_MAX, required=False)
    return Incoming(
        amount=value,
        currency=cur,
        bank_reference=ref,
        memo=text,
        value_date=_date(value_date, "value_date"),
        booking_date=_date(booking_date, "booking_date"),
    )


# --- finding the account ----------------------------------------------------------------------


def invoice_numbers_in(text: str) -> list[str]:
    """Invoice numbers named in a memo, normalised (`pf 2026 000012` -> `PF-2026-000012`)."""
    found: list[str] = []
    for series, year, seq in _INVOICE_NUMBER.findall(text.upper()):
        number = f"{series}-{year}-{seq}"
        if number not in found:
            found.append(number)
    return found


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
        if invalid:
            reason = "invalid_reference"  # check digits failed: a typo
        elif valid:
            reason = "unknown_reference"
        else:
            reason = "no_reference"
        return Identified(None, [], reason)
    mine = [inv for inv in named if inv.account_id == account.id]
    if currency != account.currency:
        return Identified(account, mine, "currency_mismatch")
    return Identified(account, mine, None)


# --- paying invoices from unapplied funds -------------------------------------------------------


def _open_invoices(session: Session, account_id: str, currency: str) -> list[Invoice]:
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
    return bank_settings.tolerances(get_settings().bank_transfer_tolerance_list).get(
        currency, Decimal(0)
    )


@dataclass
class Applied:
    invoice_id: str
    number: str | None
    amount: Decimal  # unapplied funds used
    fee: Decimal  # the shortfall accepted within the tolerance
    final_invoice_id: str
    final_number: str | None

    def view(self, currency: str) -> dict[str, Any]:
        return {
            "invoice_id": self.invoice_id,
            "number": self.number,
            "amount": format_amount(self.amount, currency),
            "fee": format_amount(self.fee, currency),
            "final_invoice_id": self.final_invoice_id,
            "final_number": self.final_number,
        }


def _pay(
    uow: UnitOfWork,
    account: Account,
    invoice: Invoice,
    *,
    used: Decimal,
    reference: str,
    method: str,
    now: datetime,
) -> Applied:
    """Pay one open pro-forma with `used` of the account's unapplied funds (the rest of
    its amount, if any, is the accepted shortfall), in the caller's transaction."""
    fee = invoice.amount - used
    assert Decimal(0) <= fee and used <= account.unapplied
    final = invoices.pay_proforma(uow, invoice, method=method, reference=reference, now=now)
    post_legs(
        uow,
        kind="bank_apply",
        reference=invoice.id,
        currency=invoice.currency,
        legs=[
            (unapplied_code(account.id), -used),
            (BANK_FEES, -fee),
            (BANK_IN, invoice.amount),
        ],
        description=f"{invoice.number} paid from unapplied funds ({reference})",
        now=now,
    )
    account.unapplied -= used
    return Applied(invoice.id, invoice.number, used, fee, final.id, final.number)


def auto_apply(
    uow: UnitOfWork, account: Account, *, reference: str, method: str, now: datetime
) -> list[Applied]:
    """Rule 7: the unapplied funds pay every open invoice they fully cover, oldest first.
    The caller holds the account lock."""
    paid: list[Applied] = []
    if account.unapplied <= 0:
        return paid
    for invoice in _open_invoices(uow.session, account.id, account.currency):
        if invoice.amount <= account.unapplied:
            paid.append(
                _pay(
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


def _match(
    uow: UnitOfWork,
    account: Account,
    transfer: BankTransfer,
    named: list[Invoice],
    now: datetime,
) -> list[Applied]:
    """Rules 3-8 for money that has just joined the account's unapplied funds."""
    session = uow.session
    ref = transfer.bank_reference
    pay_kw: dict[str, Any] = {"reference": ref, "method": "bank_transfer", "now": now}
    open_now = _open_invoices(session, account.id, account.currency)
    named_ids = [inv.id for inv in named]
    named_open = [inv for inv_id in named_ids for inv in open_now if inv.id == inv_id]
    paid: list[Applied] = []
    if named_open:  # 3: the invoices the memo names
        for invoice in named_open:
            if invoice.amount <= account.unapplied:
                paid.append(_pay(uow, account, invoice, used=invoice.amount, **pay_kw))
    elif not named:
        exact = next((inv for inv in open_now if inv.amount == transfer.amount), None)
        if exact is not None and exact.amount <= account.unapplied:  # 4: the same amount
            paid.append(_pay(uow, account, exact, used=exact.amount, **pay_kw))
        else:  # 5: oldest first, as far as the money goes
            for invoice in open_now:
                if invoice.amount <= account.unapplied:
                    paid.append(_pay(uow, account, invoice, used=invoice.amount, **pay_kw))
    still_open = [inv for inv in open_now if inv.status == InvoiceStatus.OPEN]
    candidates = [inv for inv in named_open if inv.status == InvoiceStatus.OPEN] or still_open
    if not paid and candidates and account.unapplied > 0:  # 6: within the tolerance
        allowed = tolerance(account.currency)
        # The shortfall must also be smaller than what arrived: 1 EUR never closes a 20 EUR
        # invoice, whatever the tolerance (the seed's case is bank charges, 20 of 100).
        funds = account.unapplied
        short = next((inv for inv in candidates if inv.amount - funds <= min(allowed, funds)), None)
        if short is not None:
            paid.append(_pay(uow, account, short, used=account.unapplied, **pay_kw))
    paid.extend(auto_apply(uow, account, **pay_kw))  # 7: leftovers cover older invoices
    if not paid and candidates:  # 8: tell the customer what is still due
        first = candidates[0]
        invoice_mails.still_due(
            uow,
            account,
            first,
            received=transfer.amount,
            still=first.amount - account.unapplied,
            transfer_id=transfer.id,
            now=now,
        )
    return paid


# --- receiving ----------------------------------------------------------------------------------


def _view(
    transfer: BankTransfer, account: Account | None, applied: list[Applied]
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


def _insert(
    session: Session, incoming: Incoming, source: str, now: datetime
) -> BankTransfer | None:
    """The new transfer row, or None when its bank reference is known (a concurrent copy
    waits here for the first to commit, then finds it)."""
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    row_id = session.execute(
        insert(BankTransfer)
        .values(
            id=new_id("btr"),
            bank_reference=incoming.bank_reference,
            amount=incoming.amount,
            currency=incoming.currency,
            memo=incoming.memo,
            value_date=incoming.value_date,
            booking_date=incoming.booking_date,
            source=source,
            status=TransferStatus.UNMATCHED,
            reason=None,
            account_id=None,
            result={},
            received_at=now,
            assigned_at=None,
        )
        .on_conflict_do_nothing(index_elements=[BankTransfer.bank_reference])
        .returning(BankTransfer.id)
    ).scalar_one_or_none()
    return None if row_id is None else session.get(BankTransfer, row_id)


def _duplicate(session: Session, incoming: Incoming) -> dict[str, Any]:
    first = session.scalars(
        select(BankTransfer).where(BankTransfer.bank_reference == incoming.bank_reference)
    ).one()
    if first.amount != incoming.amount or first.currency != incoming.currency:
        raise IdempotencyConflict(
            "bank_reference",
            f"{incoming.bank_reference!r} was already received for "
            f"{format_amount(first.amount, first.currency)} {first.currency}",
        )
    return {**first.result, "transfer_id": first.id, "duplicate": True}


def _received_event(
    uow: UnitOfWork, transfer: BankTransfer, view: dict[str, Any], now: datetime
) -> None:
    events.record(
        uow,
        "bank_transfer.received",
        transfer.account_id,
        {
            k: view[k]
            for k in (
                "transfer_id",
                "status",
                "amount",
                "currency",
                "bank_reference",
                "applied",
                "unapplied",
                "reason",
            )
        },
        now,
    )


def _to_suspense(uow: UnitOfWork, transfer: BankTransfer, reason: str, now: datetime) -> None:
    transfer.status = TransferStatus.UNMATCHED
    transfer.reason = reason
    transfer.account_id = None
    post_legs(
        uow,
        kind="bank_receipt",
        reference=transfer.id,
        currency=transfer.currency,
        legs=[(BANK_IN, -transfer.amount), (SUSPENSE, transfer.amount)],
        description=f"transfer {transfer.bank_reference}: no account ({reason})",
        now=now,
    )
    events.record(
        uow,
        "bank_transfer.unmatched",
        None,
        {
            "transfer_id": transfer.id,
            "amount": format_amount(transfer.amount, transfer.currency),
            "currency": transfer.currency,
            "bank_reference": transfer.bank_reference,
            "memo": transfer.memo,
            "reason": reason,
        },
        now,
    )


def _to_account(
    uow: UnitOfWork,
    transfer: BankTransfer,
    account_id: str,
    named: list[Invoice],
    *,
    source_leg: str,
    kind: str,
    now: datetime,
) -> tuple[Account, list[Applied]]:
    account = ledger.lock_account(uow.session, account_id)
    post_legs(
        uow,
        kind=kind,
        reference=transfer.id,
        currency=transfer.currency,
        legs=[(source_leg, -transfer.amount), (unapplied_code(account.id), transfer.amount)],
        description=f"transfer {transfer.bank_reference} received for {account.id}",
        now=now,
    )
    account.unapplied += transfer.amount
    account.updated_at = now
    transfer.account_id = account.id
    transfer.reason = None
    applied = _match(uow, account, transfer, named, now)
    if not applied:
        transfer.status = TransferStatus.UNAPPLIED
    elif account.unapplied > 0:
        transfer.status = TransferStatus.PARTIAL
    else:
        transfer.status = TransferStatus.MATCHED
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
    found = identify(session, incoming.memo, incoming.currency)
    account: Account | None = None
    applied: list[Applied] = []
    if found.account is None or found.reason is not None:
        _to_suspense(uow, transfer, found.reason or "no_reference", now)
    else:
        account, applied = _to_account(
            uow,
            transfer,
            found.account.id,
            found.named,
            source_leg=BANK_IN,
            kind="bank_receipt",
            now=now,
        )
    view = _view(transfer, account, applied)
    transfer.result = view
    _received_event(uow, transfer, view, now)
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
    text = memo if memo is not None else account.bank_reference
    return receive_one(
        uow,
        source="simulate",
        now=now,
        amount=amount,
        currency=account.currency,
        bank_reference=f"SIM-{uuid.uuid4().hex[:20].upper()}",
        memo=text,
        value_date=now.date().isoformat(),
    )


# --- operators ----------------------------------------------------------------------------------


def unmatched(session: Session) -> list[dict[str, Any]]:
    """Transfers no account could be found for, oldest first (`bank unmatched`)."""
    rows = session.scalars(
        select(BankTransfer)
        .where(BankTransfer.status == TransferStatus.UNMATCHED)
        .order_by(BankTransfer.received_at, BankTransfer.id)
    )
    return [
        {
            "transfer_id": t.id,
            "amount": format_amount(t.amount, t.currency),
            "currency": t.currency,
            "bank_reference": t.bank_reference,
            "memo": t.memo,
            "reason": t.reason,
            "value_date": t.value_date.isoformat() if t.value_date else None,
            "received_at": isoformat(t.received_at),
        }
        for t in rows
    ]


def assign(
    uow: UnitOfWork, transfer_id: object, account_id: object, now: datetime
) -> dict[str, Any]:
    """`bank assign TRANSFER_ID ACCOUNT_ID`: an unmatched transfer's money leaves suspense
    for the account's unapplied funds and is matched as if its memo had named the account."""
    if not isinstance(transfer_id, str) or not transfer_id.strip():
        raise ValidationError("transfer_id", "is required")
    account = accounts.get(uow.session, account_id)
    ledger.lock_account(uow.session, account.id)  # account first, then the transfer
    transfer = uow.session.scalars(
        select(BankTransfer)
        .where(BankTransfer.id == transfer_id.strip())
        .with_for_update()
        .execution_options(populate_existing=True)
    ).one_or_none()
    if transfer is None:
        raise NotFound("transfer_id", f"no bank transfer {transfer_id.strip()[:60]!r}")
    if transfer.status != TransferStatus.UNMATCHED:
        raise TransferState(
            "transfer_id",
            f"the transfer is {transfer.status} (to {transfer.account_id}), not unmatched",
        )
    if transfer.currency != account.currency:
        raise CurrencyMismatch(
            "account_id",
            f"the transfer is in {transfer.currency}, the account in {account.currency} "
            "(no currency conversion)",
        )
    named = [
        inv
        for inv in identify(uow.session, transfer.memo, transfer.currency).named
        if inv.account_id == account.id
    ]
    locked, applied = _to_account(
        uow, transfer, account.id, named, source_leg=SUSPENSE, kind="bank_assign", now=now
    )
    transfer.assigned_at = now
    view = _view(transfer, locked, applied)
    transfer.result = view
    events.record(
        uow,
        "bank_transfer.assigned",
        locked.id,
        {
            "transfer_id": transfer.id,
            "status": transfer.status,
            "amount": view["amount"],
            "currency": transfer.currency,
            "applied": view["applied"],
        },
        now,
    )
    return view


def credit(uow: UnitOfWork, account_id: object, amount: object, now: datetime) -> dict[str, Any]:
    """`bank credit ID [AMOUNT]`: move unapplied funds (all, or AMOUNT) to the balance, with
    a final invoice for that payment (method `unapplied_funds`)."""
    account = ledger.lock_account(uow.session, account_id)
    value = account.unapplied if amount is None else parse_amount(amount, "amount")
    if amount is not None:
        value = engine.chargeable_amount(amount, account.currency)
    if value <= 0 or value > account.unapplied:
        raise InsufficientFunds(
            "amount",
            f"the account has {format_amount(account.unapplied, account.currency)} "
            f"{account.currency} of unapplied funds",
        )
    reference = new_id("ucr")
    txn = ledger.post(
        uow,
        account,
        kind="unapplied_credit",
        reference=reference,
        amount=value,
        counter=unapplied_code(account.id),
        description="unapplied bank transfer funds moved to the balance",
        now=now,
    )
    account.unapplied -= value
    final = invoices.issue_final(
        uow,
        account,
        charge=None,
        amount=value,
        currency=account.currency,
        method="unapplied_funds",
        now=now,
        reference=reference,
    )
    events.record(
        uow,
        "bank_transfer.credited",
        account.id,
        {
            "amount": format_amount(value, account.currency),
            "currency": account.currency,
            "transaction_id": txn.id,
            "invoice_id": final.id,
        },
        now,
    )
    return {
        "account_id": account.id,
        "credited": format_amount(value, account.currency),
        "currency": account.currency,
        "balance": format_amount(account.balance, account.currency),
        "unapplied": format_amount(account.unapplied, account.currency),
        "transaction_id": txn.id,
        "invoice": invoices.short_view(final),
    }


def on_charge_outcome(uow: UnitOfWork, charge: Charge, recorded: Recorded) -> None:
    """The charge engine's hook (after the invoices hook): a new pro-forma is paid at once
    from unapplied funds that fully cover it (rule 7, "whenever one is created")."""
    if charge.status != "pending" or charge.psp != invoices.BANK_TRANSFER:
        return
    proforma = invoices.of_charge(uow.session, charge.id, InvoiceKind.PROFORMA)
    if proforma is None or proforma.status != InvoiceStatus.OPEN:
        return
    if accounts.get(uow.session, charge.account_id).unapplied < proforma.amount:
        return  # the common case: no lock taken
    account = ledger.lock_account(uow.session, charge.account_id)
    if account.unapplied >= proforma.amount:
        auto_apply(
            uow,
            account,
            reference=f"unapplied funds of {account.id}",
            method="unapplied_funds",
            now=recorded.now,
        )


def audit_unapplied(session: Session) -> list[dict[str, str]]:
    """Accounts whose cached unapplied funds differ from their ledger account (empty: all
    agree); `bank audit` and the benchmark print it beside `balancectl audit`."""
    from sqlalchemy import func

    from worker.ledger.models import LedgerAccount, Posting

    sums = dict(
        session.execute(
            select(LedgerAccount.code, func.coalesce(func.sum(Posting.amount), 0))
            .join(Posting, Posting.ledger_account_id == LedgerAccount.id)
            .where(LedgerAccount.code.like("unapplied:%"))
            .group_by(LedgerAccount.code)
        ).all()
    )
    bad = []
    for account_id, currency, cached in session.execute(
        select(Account.id, Account.currency, Account.unapplied)
    ):
        held = Decimal(sums.get(f"{unapplied_code(account_id)}:{currency}", 0))
        if held != cached:
            bad.append(
                {
                    "account_id": account_id,
                    "cached": format_amount(cached),
                    "ledger": format_amount(held),
                }
            )
    return bad
