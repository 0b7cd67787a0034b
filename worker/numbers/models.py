"""A virtual number rented by an account (worker/numbers/service.py keeps its life cycle)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from enum import StrEnum

from sqlalchemy import CheckConstraint, ForeignKey, Index, Integer, String, text
from sqlalchemy.orm import Mapped, mapped_column

from worker.db.base import Base, sql_in


class NumberStatus(StrEnum):
    ACTIVE = "active"
    SUSPENDED = "suspended"  # the account is depleted: cancelled unless a credit comes in time
    CANCELLED = "cancelled"


class CancelReason(StrEnum):
    CUSTOMER = "customer"  # `balancectl numbers cancel`
    UNPAID = "unpaid"  # the renewal stayed unpaid for NUMBER_GRACE_DAYS
    DEPLETED = "depleted"  # the account stayed depleted for NUMBER_CANCEL_AFTER_DEPLETION


LIVE = f"status <> '{NumberStatus.CANCELLED}'"
SUSPENDED = f"status = '{NumberStatus.SUSPENDED}'"


class Number(Base):
    """One MSISDN held by one account. Period n (0, 1, ...) runs from `anchor_at` + n months
    to + n+1 months; periods 0 .. periods_paid-1 are paid, `next_renewal_at` starts the
    first unpaid one. The fee of period n is the ledger transaction (number_fee,
    `<id>:<n>`), unique per account, so a period is never paid twice."""

    __tablename__ = "numbers"
    __table_args__ = (
        # A number belongs to one account at a time; a cancelled one may be rented again.
        Index(
            "uq_numbers_msisdn_live",
            "msisdn",
            unique=True,
            postgresql_where=text(LIVE),
            sqlite_where=text(LIVE),
        ),
        # The collect job's renewal query: live numbers by renewal moment (account id too,
        # so the due accounts come from the index alone).
        Index(
            "ix_numbers_renewal_due",
            "next_renewal_at",
            "account_id",
            postgresql_where=text(LIVE),
            sqlite_where=text(LIVE),
        ),
        # ... and its depletion query: suspended numbers by suspension moment.
        Index(
            "ix_numbers_suspended",
            "suspended_at",
            "account_id",
            postgresql_where=text(SUSPENDED),
            sqlite_where=text(SUSPENDED),
        ),
        Index("ix_numbers_account", "account_id"),
        CheckConstraint(sql_in("status", NumberStatus), name="ck_numbers_status"),
        CheckConstraint(
            "cancel_reason IS NULL OR " + sql_in("cancel_reason", CancelReason),
            name="ck_numbers_cancel_reason",
        ),
        CheckConstraint("monthly_fee > 0", name="ck_numbers_fee_positive"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"))
    msisdn: Mapped[str] = mapped_column(String(20))  # E.164
    country: Mapped[str] = mapped_column(String(2))
    monthly_fee: Mapped[Decimal]
    currency: Mapped[str] = mapped_column(String(3))
    status: Mapped[str] = mapped_column(String(16))
    anchor_at: Mapped[datetime]
    periods_paid: Mapped[int] = mapped_column(Integer)
    next_renewal_at: Mapped[datetime]
    # The unpaid period whose failure was reported (event + mail): once per period.
    failed_period: Mapped[int | None] = mapped_column(Integer)
    suspended_at: Mapped[datetime | None]
    cancelled_at: Mapped[datetime | None]
    cancel_reason: Mapped[str | None] = mapped_column(String(16))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
