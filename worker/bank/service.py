"""Incoming bank transfers and their matching to invoices (seed 002, Stripe's automatic
reconciliation, "自動消し込み"), into a spendable prepaid balance: the bank area's facade.

The rules live in worker/bank/matching.py (which account, which invoices), the ledger legs
and paying one invoice in worker/bank/booking.py, recording transfers (one, or a statement
chunk in bulk) in worker/bank/receiving.py; this module re-exports them and holds the
operators' commands (`bank unmatched`, `assign`, `credit`), the charge engine's hook and
the unapplied-funds audit.

Paying an invoice runs the charge engine's `apply` (balance credited, a depleted account
reactivated, settlement and invoices hooks: final invoice issued and mailed,
`invoice.paid`) in the transfer's transaction, with the ledger legs of the money:
received `bank_in` -> `unapplied:<account>` (or `suspense`) -> the payment (+ `bank_fees`).
Lock order everywhere: the account, then its invoices and charges.
"""

from __future__ import annotations

import logging
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from worker.accounts import service as accounts
from worker.bank.booking import BANK_FEES as BANK_FEES
from worker.bank.booking import BANK_IN as BANK_IN
from worker.bank.booking import SUSPENSE as SUSPENSE
from worker.bank.booking import Applied as Applied
from worker.bank.booking import unapplied_code as unapplied_code
from worker.bank.incoming import MEMO_MAX as MEMO_MAX
from worker.bank.incoming import Incoming as Incoming
from worker.bank.incoming import check as check
from worker.bank.matching import Identified as Identified
from worker.bank.matching import auto_apply as auto_apply
from worker.bank.matching import identify as identify
from worker.bank.matching import invoice_numbers_in as invoice_numbers_in
from worker.bank.matching import tolerance as tolerance
from worker.bank.models import BankTransfer, TransferStatus
from worker.bank.receiving import receive as receive
from worker.bank.receiving import receive_one as receive_one
from worker.bank.receiving import simulate as simulate
from worker.bank.receiving import to_account, view_of
from worker.charges import engine
from worker.charges.engine import Recorded
from worker.charges.models import Charge
from worker.db.base import new_id
from worker.db.session import UnitOfWork
from worker.invoices import service as invoices
from worker.invoices.models import InvoiceKind, InvoiceStatus
from worker.kernel.clock import isoformat
from worker.kernel.errors import (
    CurrencyMismatch,
    InsufficientFunds,
    NotFound,
    TransferState,
    ValidationError,
)
from worker.kernel.money import format_amount, parse_amount
from worker.ledger import service as ledger
from worker.ledger.models import Account
from worker.outbox import events

log = logging.getLogger(__name__)


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
    locked, applied = to_account(
        uow, transfer, account.id, named, source_leg=SUSPENSE, kind="bank_assign", now=now
    )
    transfer.assigned_at = now
    view = view_of(transfer, locked, applied)
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
