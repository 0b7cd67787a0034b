"""Incoming bank transfers: one row per transfer the bank reports, unique by the bank's
own reference, so the same statement imported twice moves money once."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from sqlalchemy import CheckConstraint, Date, ForeignKey, Index, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from worker.db.base import Base, JsonType, sql_in


class TransferStatus(StrEnum):
    """CONTRACT.md: matched (all of it paid invoices), partial (some invoice paid, the rest
    unapplied), unapplied (account found, no invoice paid), unmatched (suspense)."""

    MATCHED = "matched"
    PARTIAL = "partial"
    UNAPPLIED = "unapplied"
    UNMATCHED = "unmatched"


_UNMATCHED = f"status = '{TransferStatus.UNMATCHED}'"


class BankTransfer(Base):
    __tablename__ = "bank_transfers"
    __table_args__ = (
        CheckConstraint(sql_in("status", TransferStatus), name="ck_bank_transfers_status"),
        CheckConstraint("amount > 0", name="ck_bank_transfers_amount_positive"),
        Index(
            "ix_bank_transfers_unmatched",
            "received_at",
            postgresql_where=text(_UNMATCHED),
            sqlite_where=text(_UNMATCHED),
        ),
        Index("ix_bank_transfers_account", "account_id", "received_at"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    bank_reference: Mapped[str] = mapped_column(String(200), unique=True)
    amount: Mapped[Decimal]
    currency: Mapped[str] = mapped_column(String(3))
    memo: Mapped[str | None] = mapped_column(Text)
    value_date: Mapped[date | None] = mapped_column(Date)
    booking_date: Mapped[date | None] = mapped_column(Date)
    source: Mapped[str] = mapped_column(String(16))  # api, cli, import, simulate
    status: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(String(64))  # why unmatched
    account_id: Mapped[str | None] = mapped_column(ForeignKey("accounts.id"))
    # What the receipt did (applied invoices, unapplied after): a duplicate returns it.
    result: Mapped[dict[str, Any]] = mapped_column(JsonType)
    received_at: Mapped[datetime]
    assigned_at: Mapped[datetime | None]
