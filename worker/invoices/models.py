"""Invoices and their number counters.

An invoice documents one payment. `kind`:

- `proforma` (`PF-YYYY-NNNNNN`): a bank-transfer payment's request for money, `open` until
  the money arrives (`paid`) or it is `void`ed;
- `final` (`INV-YYYY-NNNNNN`): the invoice of a received payment, `issued` with its number;
  a card payment's final invoice is `pending` (no number, not downloadable) until the PSP
  settles it or CARD_INVOICE_MAX_DELAY has passed;
- `credit_note` (`CN-YYYY-NNNNNN`, the refunds issue): `corrects` names the final invoice.

An issued invoice never changes (its issuer and customer are copied into it); numbers are
gap-free per series and year (worker/invoices/numbering.py).
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from sqlalchemy import CheckConstraint, ForeignKey, Index, Integer, String, text
from sqlalchemy.orm import Mapped, mapped_column

from worker.db.base import Base, JsonType, sql_in


class InvoiceKind(StrEnum):
    PROFORMA = "proforma"
    FINAL = "final"
    CREDIT_NOTE = "credit_note"


class InvoiceStatus(StrEnum):
    PENDING = "pending"  # final, not yet numbered (card: until settled or 72 h)
    OPEN = "open"  # pro-forma awaiting money
    PAID = "paid"  # pro-forma whose money arrived
    ISSUED = "issued"  # final or credit note, numbered, never changes again
    VOID = "void"  # pro-forma cancelled


class Series(StrEnum):
    """Number prefixes, one gap-free sequence per series and year."""

    PROFORMA = "PF"
    FINAL = "INV"
    CREDIT_NOTE = "CN"


SERIES_OF = {
    InvoiceKind.PROFORMA: Series.PROFORMA,
    InvoiceKind.FINAL: Series.FINAL,
    InvoiceKind.CREDIT_NOTE: Series.CREDIT_NOTE,
}

# Open pro-formas of an account, oldest first: what an incoming transfer is matched against.
_OPEN = f"status = '{InvoiceStatus.OPEN}'"
_PENDING = f"status = '{InvoiceStatus.PENDING}'"
_ONE_PER_CHARGE = f"kind <> '{InvoiceKind.CREDIT_NOTE}'"


class Invoice(Base):
    __tablename__ = "invoices"
    __table_args__ = (
        CheckConstraint(sql_in("kind", InvoiceKind), name="ck_invoices_kind"),
        CheckConstraint(sql_in("status", InvoiceStatus), name="ck_invoices_status"),
        CheckConstraint("amount > 0", name="ck_invoices_amount_positive"),
        CheckConstraint(
            "(number IS NULL) = (status = 'pending')", name="ck_invoices_numbered_unless_pending"
        ),
        # One pro-forma and one final per charge (a charge may have several credit notes:
        # one per partial refund).
        Index(
            "uq_invoices_charge_kind",
            "charge_id",
            "kind",
            unique=True,
            postgresql_where=text(_ONE_PER_CHARGE),
            sqlite_where=text(_ONE_PER_CHARGE),
        ),
        Index(
            "ix_invoices_open",
            "account_id",
            "currency",
            "created_at",
            postgresql_where=text(_OPEN),
            sqlite_where=text(_OPEN),
        ),
        Index(
            "ix_invoices_pending_due",
            "due_at",
            postgresql_where=text(_PENDING),
            sqlite_where=text(_PENDING),
        ),
        Index("ix_invoices_account_created", "account_id", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"))
    charge_id: Mapped[str | None] = mapped_column(ForeignKey("charges.id"))
    kind: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    number: Mapped[str | None] = mapped_column(String(32), unique=True)
    amount: Mapped[Decimal]
    currency: Mapped[str] = mapped_column(String(3))
    # card, paypal, wechat_pay, bank_transfer, out_of_band, unapplied_funds
    method: Mapped[str] = mapped_column(String(32))
    proforma_id: Mapped[str | None] = mapped_column(String(40))  # a final's pro-forma
    corrects: Mapped[str | None] = mapped_column(String(40))  # a credit note's final invoice
    payment_reference: Mapped[str | None] = mapped_column(String(200))
    locale: Mapped[str] = mapped_column(String(8))
    # Copied when the invoice is made: an issued invoice never changes, even if the
    # account's company or the issuer setting does later.
    issuer: Mapped[dict[str, Any]] = mapped_column(JsonType)
    customer: Mapped[dict[str, Any]] = mapped_column(JsonType)
    instructions: Mapped[dict[str, Any] | None] = mapped_column(JsonType)
    due_at: Mapped[datetime | None]  # a pending card invoice is issued by then at the latest
    # When `issue_due` last asked the PSP whether this pending card invoice's payment settled.
    settlement_checked_at: Mapped[datetime | None]
    issued_at: Mapped[datetime | None]
    paid_at: Mapped[datetime | None]
    voided_at: Mapped[datetime | None]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class InvoiceCounter(Base):
    """The last number taken in a series and year; its row lock serialises issuers."""

    __tablename__ = "invoice_counters"

    series: Mapped[str] = mapped_column(String(8), primary_key=True)
    year: Mapped[int] = mapped_column(Integer, primary_key=True)
    last: Mapped[int] = mapped_column(Integer)
