"""The reference rates table: one row per (currency, day), units of `currency` per 1 EUR."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Date, Dialect, Numeric, String
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.types import TypeDecorator, TypeEngine

from worker.db.base import Base


class ExactRate(TypeDecorator[Decimal]):
    """NUMERIC(24,10) on PostgreSQL; the decimal text on SQLite, whose NUMERIC is a float.

    Not Money (6 places, micro-units on SQLite): the ECB quotes 5 or 6 significant digits
    at any magnitude (IDR 17487.21, GBP 0.84638), and a rate is never money."""

    impl = String(40)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(Numeric(24, 10, asdecimal=True))
        return dialect.type_descriptor(String(40))

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        if not isinstance(value, Decimal):
            raise TypeError(f"a rate must be Decimal, got {type(value).__name__}")
        return value if dialect.name == "postgresql" else f"{value:f}"

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        # NUMERIC(24,10) hands back ten places (1.0862000000): shown as the ECB prints it.
        text = f"{Decimal(str(value)):f}"
        if "." in text:
            text = text.rstrip("0").rstrip(".")
        return Decimal(text)


class FxRate(Base):
    """A euro foreign exchange reference rate as the ECB publishes it: `rate` units of
    `currency` for 1 EUR on `rate_date` (e.g. USD 1.0862). Re-importing a day overwrites it
    (the ECB corrects a published rate now and then)."""

    __tablename__ = "fx_rates"

    currency: Mapped[str] = mapped_column(String(3), primary_key=True)
    rate_date: Mapped[date] = mapped_column(Date, primary_key=True)
    rate: Mapped[Decimal] = mapped_column(ExactRate())
    source: Mapped[str] = mapped_column(String(16))
    imported_at: Mapped[datetime]
