"""SQLAlchemy 2 typed models.

The ledger is double-entry: a LedgerTransaction holds Postings that sum to zero per
currency. A customer's balance is the sum of the postings on its ledger account;
`Account.balance` caches it and is only ever changed in the same DB transaction as
the postings (see services/ledger.py). System ledger accounts (usage revenue,
adjustments, PSP receivables) keep no cached balance, so they are never a lock hot spot.
"""

from __future__ import annotations

import itertools
import time
import uuid
from datetime import date, datetime
from decimal import Decimal
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    Date,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from worker.db.types import Money, UtcDateTime

JsonType = JSON().with_variant(JSONB(), "postgresql")


_sequence = itertools.count()


def new_id(prefix: str) -> str:
    """Unique and time-ordered within a process (nanoseconds, a counter, randomness), so
    rows written in one transaction (events) sort in the order they were made."""
    return f"{prefix}_{time.time_ns():016x}{next(_sequence) % 0x10000:04x}{uuid.uuid4().hex[:6]}"


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {Decimal: Money(), datetime: UtcDateTime()}


class Account(Base):
    __tablename__ = "accounts"
    __table_args__ = (
        # The auto-reload sweep reads only this (small) partial index: enabled and below
        # the threshold. Balance updates move rows in and out of it.
        Index(
            "ix_accounts_auto_reload_due",
            "id",
            postgresql_where=text("auto_reload_enabled AND balance < auto_reload_threshold"),
            sqlite_where=text("auto_reload_enabled AND balance < auto_reload_threshold"),
        ),
        # The hourly alert scan reads only these: armed and below the threshold (to fire),
        # sent and back at or above it (to re-arm when no credit did).
        Index(
            "ix_accounts_alert_due",
            "id",
            postgresql_where=text(
                "alerts_enabled AND alert_state = 'armed' AND balance < alert_threshold"
            ),
            sqlite_where=text(
                "alerts_enabled AND alert_state = 'armed' AND balance < alert_threshold"
            ),
        ),
        Index(
            "ix_accounts_alert_rearm",
            "id",
            postgresql_where=text("alert_state = 'sent' AND balance >= alert_threshold"),
            sqlite_where=text("alert_state = 'sent' AND balance >= alert_threshold"),
        ),
        CheckConstraint("status IN ('active', 'suspended')", name="ck_accounts_status"),
        CheckConstraint("alert_state IN ('armed', 'sent')", name="ck_accounts_alert_state"),
        CheckConstraint(
            "suspension_reason IS NULL OR suspension_reason IN ('depleted', 'admin')",
            name="ck_accounts_suspension_reason",
        ),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    currency: Mapped[str] = mapped_column(String(3))
    country: Mapped[str] = mapped_column(String(2))
    status: Mapped[str] = mapped_column(String(16), default="active")
    suspension_reason: Mapped[str | None] = mapped_column(String(16))
    emails: Mapped[list[str]] = mapped_column(JsonType, default=list)
    locale: Mapped[str] = mapped_column(String(8), default="en")
    display_currency: Mapped[str] = mapped_column(String(3))
    balance: Mapped[Decimal] = mapped_column(default=Decimal("0"))
    # Auto-reload and alert settings (configured by their own issues' commands).
    auto_reload_enabled: Mapped[bool] = mapped_column(default=False)
    auto_reload_threshold: Mapped[Decimal | None]
    auto_reload_amount: Mapped[Decimal | None]
    auto_reload_method_id: Mapped[str | None] = mapped_column(String(40))
    # Failure policy state: back-off after a hard decline, declines in a row, caps.
    auto_reload_backoff_until: Mapped[datetime | None]
    auto_reload_declines: Mapped[int] = mapped_column(default=0)
    auto_reload_capped_until: Mapped[datetime | None]
    alerts_enabled: Mapped[bool] = mapped_column(default=False)
    alert_threshold: Mapped[Decimal | None]
    # One alert per crossing: `armed` -> `sent` when it fires; armed again once the balance
    # is back at or above the threshold (by the credit that lifts it, or by the scan).
    alert_state: Mapped[str] = mapped_column(String(8), default="armed", server_default="armed")
    alert_sent_at: Mapped[datetime | None]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]

    ledger_account: Mapped[LedgerAccount] = relationship(
        back_populates="account", uselist=False, lazy="raise"
    )


class LedgerAccount(Base):
    """A bucket of money: one per customer account, plus system accounts per currency."""

    __tablename__ = "ledger_accounts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    code: Mapped[str] = mapped_column(String(120), unique=True)
    currency: Mapped[str] = mapped_column(String(3))
    account_id: Mapped[str | None] = mapped_column(
        ForeignKey("accounts.id"), unique=True, default=None
    )
    created_at: Mapped[datetime]

    account: Mapped[Account | None] = relationship(back_populates="ledger_account", lazy="raise")


class LedgerTransaction(Base):
    """One money movement. Idempotent by (account, kind, reference).

    A customer transaction moves a customer balance (`account_id`, `balance_after` set).
    A system transaction moves money between system accounts only (settlement: PSP
    receivable pending -> available); it has no customer account, and is idempotent by
    (kind, reference) through its own partial unique index.
    """

    __tablename__ = "ledger_transactions"
    __table_args__ = (
        UniqueConstraint("account_id", "kind", "reference", name="uq_ledger_txn_reference"),
        Index(
            "uq_ledger_txn_system_reference",
            "kind",
            "reference",
            unique=True,
            postgresql_where=text("account_id IS NULL"),
            sqlite_where=text("account_id IS NULL"),
        ),
        Index("ix_ledger_txn_account_created", "account_id", "created_at"),
        CheckConstraint(
            "(account_id IS NULL) = (balance_after IS NULL)", name="ck_ledger_txn_system_shape"
        ),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    account_id: Mapped[str | None] = mapped_column(ForeignKey("accounts.id"))
    kind: Mapped[str] = mapped_column(String(32))
    reference: Mapped[str] = mapped_column(String(200))
    amount: Mapped[Decimal]  # signed, as seen by the customer balance (system: the amount moved)
    currency: Mapped[str] = mapped_column(String(3))
    balance_after: Mapped[Decimal | None]
    description: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]

    postings: Mapped[list[Posting]] = relationship(
        back_populates="transaction", lazy="raise", order_by="Posting.id"
    )


class Posting(Base):
    """One leg of a transaction; signed so a ledger account's balance is the sum of its legs."""

    __tablename__ = "postings"
    __table_args__ = (
        Index("ix_postings_ledger_account", "ledger_account_id"),
        Index("ix_postings_transaction", "transaction_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    transaction_id: Mapped[str] = mapped_column(ForeignKey("ledger_transactions.id"))
    ledger_account_id: Mapped[int] = mapped_column(ForeignKey("ledger_accounts.id"))
    amount: Mapped[Decimal]

    transaction: Mapped[LedgerTransaction] = relationship(back_populates="postings", lazy="raise")
    ledger_account: Mapped[LedgerAccount] = relationship(lazy="joined")


class Event(Base):
    """Transactional outbox: written with the change, relayed after commit."""

    __tablename__ = "events"
    __table_args__ = (
        Index(
            "ix_events_unpublished",
            "occurred_at",
            postgresql_where=text("published_at IS NULL"),
            sqlite_where=text("published_at IS NULL"),
        ),
        Index("ix_events_account", "account_id", "occurred_at"),
        # Retention: published events in publishing order (worker/services/retention.py).
        Index(
            "ix_events_published",
            "published_at",
            postgresql_where=text("published_at IS NOT NULL"),
            sqlite_where=text("published_at IS NOT NULL"),
        ),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    type: Mapped[str] = mapped_column(String(64))
    account_id: Mapped[str | None] = mapped_column(String(40))
    occurred_at: Mapped[datetime]
    data: Mapped[dict[str, Any]] = mapped_column(JsonType)
    published_at: Mapped[datetime | None]
    publish_attempts: Mapped[int] = mapped_column(default=0)


class Mail(Base):
    """Mail outbox: written with the fact it reports; sent (once) by the mail task."""

    __tablename__ = "mail_outbox"
    __table_args__ = (
        CheckConstraint("status IN ('pending', 'sent', 'failed')", name="ck_mail_status"),
        Index(
            "ix_mail_due",
            "next_attempt_at",
            postgresql_where=text("status = 'pending'"),
            sqlite_where=text("status = 'pending'"),
        ),
        # Retention: sent mails by when they went out, failed ones by when they were written.
        Index(
            "ix_mail_sent",
            "sent_at",
            postgresql_where=text("status = 'sent'"),
            sqlite_where=text("status = 'sent'"),
        ),
        Index(
            "ix_mail_failed",
            "created_at",
            postgresql_where=text("status = 'failed'"),
            sqlite_where=text("status = 'failed'"),
        ),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    dedupe_key: Mapped[str] = mapped_column(String(200), unique=True)
    account_id: Mapped[str | None] = mapped_column(String(40))
    kind: Mapped[str] = mapped_column(String(64))
    recipients: Mapped[list[str]] = mapped_column(JsonType)
    subject: Mapped[str] = mapped_column(String(300))
    text_body: Mapped[str] = mapped_column(Text)
    html_body: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime]
    last_error: Mapped[str | None] = mapped_column(Text)
    transport: Mapped[str | None] = mapped_column(String(16))
    created_at: Mapped[datetime]
    sent_at: Mapped[datetime | None]


class PaymentMethod(Base):
    """A PSP token for a card, a PayPal account, or bank transfer; never a card number.

    A card or PayPal account (its PSP fingerprint) belongs to one account only: a partial
    unique index over methods that are not removed enforces it across accounts.
    """

    __tablename__ = "payment_methods"
    __table_args__ = (
        CheckConstraint("type IN ('card', 'paypal', 'bank_transfer')", name="ck_pm_type"),
        Index(
            "uq_payment_methods_fingerprint",
            "fingerprint",
            unique=True,
            postgresql_where=text("removed_at IS NULL AND fingerprint IS NOT NULL"),
            sqlite_where=text("removed_at IS NULL AND fingerprint IS NOT NULL"),
        ),
        Index(
            "uq_payment_methods_default",
            "account_id",
            unique=True,
            postgresql_where=text("is_default AND removed_at IS NULL"),
            sqlite_where=text("is_default AND removed_at IS NULL"),
        ),
        Index("ix_payment_methods_account", "account_id"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"))
    psp: Mapped[str] = mapped_column(String(32))
    type: Mapped[str] = mapped_column(String(16))
    token: Mapped[str | None] = mapped_column(String(120))
    fingerprint: Mapped[str | None] = mapped_column(String(80))
    display: Mapped[str] = mapped_column(String(120))
    brand: Mapped[str | None] = mapped_column(String(32))
    last4: Mapped[str | None] = mapped_column(String(4))
    expiry: Mapped[str | None] = mapped_column(String(7))
    payer_email: Mapped[str | None] = mapped_column(String(254))
    is_default: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime]
    removed_at: Mapped[datetime | None]


class Charge(Base):
    """One attempt to take money through a PSP. Committed before the PSP is called.

    Status only moves forward (services/charges.py holds the allowed moves); succeeded,
    declined and failed are terminal.
    """

    __tablename__ = "charges"
    __table_args__ = (
        CheckConstraint(
            "status IN ('processing', 'pending', 'unknown', 'not_attempted', "
            "'succeeded', 'declined', 'failed')",
            name="ck_charges_status",
        ),
        CheckConstraint("amount > 0", name="ck_charges_amount_positive"),
        Index("ix_charges_account_created", "account_id", "created_at"),
        # At most one automatic reload in flight per account, enforced by the database.
        Index(
            "uq_charges_auto_reload_in_flight",
            "account_id",
            unique=True,
            postgresql_where=text(
                "purpose = 'auto_reload' AND status IN "
                "('processing', 'unknown', 'pending', 'not_attempted')"
            ),
            sqlite_where=text(
                "purpose = 'auto_reload' AND status IN "
                "('processing', 'unknown', 'pending', 'not_attempted')"
            ),
        ),
        # The settlement roll-forward reads only pending settlements, by the instant they
        # become available (the start of available_on in the merchant account's timezone).
        Index(
            "ix_charges_settlement_due",
            "settles_at",
            postgresql_where=text("settlement_status = 'pending'"),
            sqlite_where=text("settlement_status = 'pending'"),
        ),
        CheckConstraint(
            "settlement_status IS NULL OR settlement_status IN ('pending', 'available')",
            name="ck_charges_settlement_status",
        ),
        Index(
            "ix_charges_unresolved",
            "status",
            "next_attempt_at",
            postgresql_where=text("status IN ('processing', 'unknown', 'pending')"),
            sqlite_where=text("status IN ('processing', 'unknown', 'pending')"),
        ),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"))
    payment_method_id: Mapped[str] = mapped_column(ForeignKey("payment_methods.id"))
    psp: Mapped[str] = mapped_column(String(32))
    purpose: Mapped[str] = mapped_column(String(32))
    amount: Mapped[Decimal]
    currency: Mapped[str] = mapped_column(String(3))
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    idempotency_key: Mapped[str] = mapped_column(String(200), unique=True)
    status: Mapped[str] = mapped_column(String(16))
    psp_reference: Mapped[str | None] = mapped_column(String(120))
    decline_code: Mapped[str | None] = mapped_column(String(64))
    decline_text: Mapped[str | None] = mapped_column(String(300))
    attempts: Mapped[int] = mapped_column(default=0)
    sync_attempts: Mapped[int] = mapped_column(default=0)
    lease_until: Mapped[datetime | None]
    next_attempt_at: Mapped[datetime | None]
    needs_attention: Mapped[bool] = mapped_column(default=False)
    transaction_id: Mapped[str | None] = mapped_column(String(40))
    # Settlement (services/settlement.py): computed once when the charge succeeds.
    available_on: Mapped[date | None] = mapped_column(Date)
    settlement_status: Mapped[str | None] = mapped_column(String(16))
    settles_at: Mapped[datetime | None]
    settlement_rule: Mapped[str | None] = mapped_column(String(120))
    settled_at: Mapped[datetime | None]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    completed_at: Mapped[datetime | None]
