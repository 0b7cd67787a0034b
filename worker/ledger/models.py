"""The ledger's models: customer accounts and the double-entry book.

The ledger is double-entry: a LedgerTransaction holds Postings that sum to zero per
currency. A customer's balance is the sum of the postings on its ledger account;
`Account.balance` caches it and is only ever changed in the same DB transaction as
the postings (see worker/ledger/service.py). System ledger accounts (usage revenue,
adjustments, PSP receivables) keep no cached balance, so they are never a lock hot spot.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from enum import StrEnum

from sqlalchemy import (
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from worker.db.base import Base, JsonType, sql_in


class AccountStatus(StrEnum):
    ACTIVE = "active"
    SUSPENDED = "suspended"


class SuspensionReason(StrEnum):
    """Why an account is suspended: money lifts `depleted`, only an operator lifts `admin`."""

    DEPLETED = "depleted"
    ADMIN = "admin"


class AlertState(StrEnum):
    """One low-balance alert per crossing: `armed` until it fires, then `sent`."""

    ARMED = "armed"
    SENT = "sent"


# The alert scan's partial indexes (armed and below: fire; sent and recovered: re-arm).
_ALERT_DUE = f"alerts_enabled AND alert_state = '{AlertState.ARMED}' AND balance < alert_threshold"
_ALERT_REARM = f"alert_state = '{AlertState.SENT}' AND balance >= alert_threshold"
_FEE_LOOKAHEAD = "auto_reload_enabled AND next_fee_at IS NOT NULL"


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
            postgresql_where=text(_ALERT_DUE),
            sqlite_where=text(_ALERT_DUE),
        ),
        Index(
            "ix_accounts_alert_rearm",
            "id",
            postgresql_where=text(_ALERT_REARM),
            sqlite_where=text(_ALERT_REARM),
        ),
        Index("uq_accounts_bank_reference", "bank_reference", unique=True),
        # The auto-reload look-ahead (worker/numbers/lookahead.py): accounts with a fee due soon.
        Index(
            "ix_accounts_fee_lookahead",
            "next_fee_at",
            postgresql_where=text(_FEE_LOOKAHEAD),
            sqlite_where=text(_FEE_LOOKAHEAD),
        ),
        CheckConstraint(sql_in("status", AccountStatus), name="ck_accounts_status"),
        CheckConstraint(sql_in("alert_state", AlertState), name="ck_accounts_alert_state"),
        CheckConstraint(
            "suspension_reason IS NULL OR " + sql_in("suspension_reason", SuspensionReason),
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
    # Reload charges exhausted by soft failures (PSP unavailable) in a row, and when that
    # streak was reported to the customer (once per streak; a success ends both).
    auto_reload_soft_failures: Mapped[int] = mapped_column(default=0)
    auto_reload_failing_at: Mapped[datetime | None]
    # Set when a reload charge ended requires_action (3-D Secure): auto-reload is paused, no
    # retries, until the customer adds a new default method (worker/payment_methods).
    auto_reload_action_required_at: Mapped[datetime | None]
    alerts_enabled: Mapped[bool] = mapped_column(default=False)
    alert_threshold: Mapped[Decimal | None]
    # One alert per crossing: `armed` -> `sent` when it fires; armed again once the balance
    # is back at or above the threshold (by the credit that lifts it, or by the scan).
    alert_state: Mapped[str] = mapped_column(String(8), default="armed", server_default="armed")
    alert_sent_at: Mapped[datetime | None]
    # Invoices and bank transfers (worker/invoices, worker/bank): who the invoices name,
    # where they go, the account's own ISO 11649 payment reference, and the money received
    # by bank transfer not yet applied to an invoice (cached; its ledger account is
    # `unapplied:<id>:<currency>`, changed only with it).
    company: Mapped[str | None] = mapped_column(String(200))
    finance_email: Mapped[str | None] = mapped_column(String(254))
    bank_reference: Mapped[str | None] = mapped_column(String(35))
    unapplied: Mapped[Decimal] = mapped_column(default=Decimal("0"), server_default="0")
    # Virtual numbers (worker/numbers): the earliest renewal among the account's numbers
    # that are not cancelled, None without any. Kept by that package under this row's lock;
    # read by the credit hook (no query for an account without numbers) and the
    # auto-reload look-ahead (ix_accounts_fee_lookahead).
    next_fee_at: Mapped[datetime | None]
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
