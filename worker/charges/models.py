"""Charges: one attempt to take money through a PSP, committed before the PSP is called."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

from sqlalchemy import BigInteger, CheckConstraint, Date, ForeignKey, Index, String, text
from sqlalchemy.orm import Mapped, mapped_column

from worker.charges.states import (
    IN_FLIGHT,
    SYNCED,
    ChargeStatus,
    Purpose,
    SettlementStatus,
)
from worker.db.base import Base, sql_in

# At most one automatic reload in flight per account; the janitor's unresolved charges.
_RELOAD_IN_FLIGHT = f"purpose = '{Purpose.AUTO_RELOAD}' AND " + sql_in("status", IN_FLIGHT)
_UNRESOLVED = sql_in("status", SYNCED)


class Charge(Base):
    """One attempt to take money through a PSP. Committed before the PSP is called.

    Status only moves forward (worker/charges/states.py holds the allowed moves); succeeded,
    declined and failed are terminal.
    """

    __tablename__ = "charges"
    __table_args__ = (
        CheckConstraint(sql_in("status", ChargeStatus), name="ck_charges_status"),
        CheckConstraint("amount > 0", name="ck_charges_amount_positive"),
        Index("ix_charges_account_created", "account_id", "created_at"),
        # At most one automatic reload in flight per account, enforced by the database.
        Index(
            "uq_charges_auto_reload_in_flight",
            "account_id",
            unique=True,
            postgresql_where=text(_RELOAD_IN_FLIGHT),
            sqlite_where=text(_RELOAD_IN_FLIGHT),
        ),
        # The settlement roll-forward reads only pending settlements, by the instant they
        # become available (the start of available_on in the merchant account's timezone).
        Index(
            "ix_charges_settlement_due",
            "settles_at",
            postgresql_where=text(f"settlement_status = '{SettlementStatus.PENDING}'"),
            sqlite_where=text(f"settlement_status = '{SettlementStatus.PENDING}'"),
        ),
        CheckConstraint(
            "settlement_status IS NULL OR " + sql_in("settlement_status", SettlementStatus),
            name="ck_charges_settlement_status",
        ),
        Index(
            "ix_charges_unresolved",
            "status",
            "next_attempt_at",
            postgresql_where=text(_UNRESOLVED),
            sqlite_where=text(_UNRESOLVED),
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
    # Settlement (worker/settlement/service.py): computed once when the charge succeeds.
    available_on: Mapped[date | None] = mapped_column(Date)
    settlement_status: Mapped[str | None] = mapped_column(String(16))
    settles_at: Mapped[datetime | None]
    settlement_rule: Mapped[str | None] = mapped_column(String(120))
    settled_at: Mapped[datetime | None]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    completed_at: Mapped[datetime | None]
