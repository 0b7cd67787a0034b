"""Payment methods: PSP tokens for a card, a PayPal account or bank transfer."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import CheckConstraint, ForeignKey, Index, String, text
from sqlalchemy.orm import Mapped, mapped_column

from worker.db.base import Base, sql_in


class MethodType(StrEnum):
    CARD = "card"
    PAYPAL = "paypal"
    BANK_TRANSFER = "bank_transfer"
    WECHAT_PAY = "wechat_pay"  # a QR code per payment; only some countries (worker/psp/wechat_pay)


class PaymentMethod(Base):
    """A PSP token for a card, a PayPal account, or bank transfer; never a card number.

    A card or PayPal account (its PSP fingerprint) belongs to one account only: a partial
    unique index over methods that are not removed enforces it across accounts.
    """

    __tablename__ = "payment_methods"
    __table_args__ = (
        CheckConstraint(sql_in("type", MethodType), name="ck_pm_type"),
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
