"""Refunds: one row per refund, committed with a unique idempotency key before any PSP or
bank is called (the charges' exactly-once pattern, worker/charges/engine.py)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from enum import StrEnum

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Index, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from worker.db.base import Base, sql_in


class RefundStatus(StrEnum):
    """`pending`: with the PSP/bank, or its answer unknown (the janitor looks it up);
    `requires_details`: a bank-transfer refund waiting for the account to pay it to;
    `succeeded` and `failed` are terminal (seed 002: a failed refund's money goes back)."""

    PENDING = "pending"
    REQUIRES_DETAILS = "requires_details"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


TERMINAL = frozenset({RefundStatus.SUCCEEDED, RefundStatus.FAILED})
# Counted against what a charge has left to refund: everything not failed.
HOLDING = (RefundStatus.PENDING, RefundStatus.REQUIRES_DETAILS, RefundStatus.SUCCEEDED)
_UNRESOLVED = f"status = '{RefundStatus.PENDING}'"


class Refund(Base):
    __tablename__ = "refunds"
    __table_args__ = (
        CheckConstraint(sql_in("status", RefundStatus), name="ck_refunds_status"),
        CheckConstraint("amount > 0", name="ck_refunds_amount_positive"),
        Index("ix_refunds_charge", "charge_id"),
        Index("ix_refunds_account_created", "account_id", "created_at"),
        Index(
            "ix_refunds_unresolved",
            "next_attempt_at",
            postgresql_where=text(_UNRESOLVED),
            sqlite_where=text(_UNRESOLVED),
        ),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"))
    charge_id: Mapped[str] = mapped_column(ForeignKey("charges.id"))
    psp: Mapped[str] = mapped_column(String(32))
    amount: Mapped[Decimal]
    currency: Mapped[str] = mapped_column(String(3))
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    idempotency_key: Mapped[str] = mapped_column(String(200), unique=True)
    status: Mapped[str] = mapped_column(String(20))
    reason: Mapped[str | None] = mapped_column(Text)
    psp_reference: Mapped[str | None] = mapped_column(String(120))
    failure_code: Mapped[str | None] = mapped_column(String(64))
    failure_text: Mapped[str | None] = mapped_column(String(300))
    # Bank-transfer refunds: where the customer asked for the money (IBAN validated).
    iban: Mapped[str | None] = mapped_column(String(34))
    holder: Mapped[str | None] = mapped_column(String(140))
    sync_attempts: Mapped[int] = mapped_column(default=0)
    lease_until: Mapped[datetime | None]
    next_attempt_at: Mapped[datetime | None]
    needs_attention: Mapped[bool] = mapped_column(default=False)
    transaction_id: Mapped[str | None] = mapped_column(String(40))
    credit_note_id: Mapped[str | None] = mapped_column(String(40))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    completed_at: Mapped[datetime | None]
