"""The ledger side of incoming bank transfers: the system accounts money passes through and
paying one open pro-forma from an account's unapplied funds.

Legs (sign convention of worker/ledger/legs.py): received `bank_in` -> `unapplied:<account>`
(or `suspense`) -> the payment (+ `bank_fees` for a shortfall accepted within the tolerance).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from worker.db.session import UnitOfWork
from worker.invoices import service as invoices
from worker.invoices.models import Invoice
from worker.kernel.money import format_amount
from worker.ledger.legs import Legs, post_legs
from worker.ledger.models import Account

BANK_IN = "bank_in"  # money received at our bank, not yet part of a payment
SUSPENSE = "suspense"  # received, no account found
BANK_FEES = "bank_fees"  # underpayments accepted within the tolerance (an expense)


def unapplied_code(account_id: str) -> str:
    """The ledger account name of an account's unapplied funds (`unapplied:<id>:<cur>`)."""
    return f"unapplied:{account_id}"


def suspense_legs(
    transfer_id: str, bank_reference: str, amount: Decimal, currency: str, reason: str
) -> Legs:
    """The receipt of a transfer no account was found for: `bank_in` -> `suspense`."""
    return Legs(
        kind="bank_receipt",
        reference=transfer_id,
        currency=currency,
        legs=((BANK_IN, -amount), (SUSPENSE, amount)),
        description=f"transfer {bank_reference}: no account ({reason})",
    )


def receipt_legs(
    transfer_id: str,
    bank_reference: str,
    amount: Decimal,
    currency: str,
    account_id: str,
    *,
    source_leg: str = BANK_IN,
    kind: str = "bank_receipt",
) -> Legs:
    """The receipt of a transfer into an account's unapplied funds (from `bank_in`, or from
    `suspense` when an operator assigns it)."""
    return Legs(
        kind=kind,
        reference=transfer_id,
        currency=currency,
        legs=((source_leg, -amount), (unapplied_code(account_id), amount)),
        description=f"transfer {bank_reference} received for {account_id}",
    )


@dataclass
class Applied:
    """One pro-forma paid from unapplied funds (a line of a receipt's `applied`)."""

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


def pay(
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
    its amount, if any, is the accepted shortfall), in the caller's transaction: the charge
    engine records the payment (balance credited, final invoice issued and mailed,
    `invoice.paid`), then the money leaves the unapplied funds."""
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
