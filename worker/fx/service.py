"""Rates in, rates out: import the ECB's file, and the rate in force at a moment.

The rule (issue 18): the rate used is the latest at or before the moment shown, with its
date; older than `STALE_AFTER` (7 days) it is flagged `stale`. The ECB quotes every
currency per 1 EUR, so EUR -> USD is the USD rate itself and any other pair is the cross
(quote per EUR / base per EUR). Without any stored rate, `USD_DISPLAY_RATES` (the
hand-typed setting this replaces) still answers for USD, undated.

Display only: the balance is always held and charged in the account currency.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, localcontext
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from config import get_settings
from worker.db.session import UnitOfWork
from worker.fx import ecb
from worker.fx.models import FxRate
from worker.kernel.errors import ValidationError
from worker.kernel.money import ROUNDING, exponent, format_amount, to_minor_units

STALE_AFTER = timedelta(days=7)
# A cross rate (neither side EUR) is a quotient: kept to this many significant digits,
# twice what the ECB prints, so the one rounding that matters is to the display's cents.
CROSS_DIGITS = 12
SOURCE_ECB = "ECB"
SOURCE_SETTING = "USD_DISPLAY_RATES"
_CHUNK = 1000


@dataclass(frozen=True)
class DisplayRate:
    """Units of `quote` for 1 unit of `base`, as of `rate_date` (None: the setting's
    undated rate); `stale` when `rate_date` is more than 7 days before the moment shown."""

    base: str
    quote: str
    rate: Decimal
    rate_date: date | None
    source: str
    stale: bool

    def as_dict(self) -> dict[str, Any]:
        return {
            "rate": f"{self.rate:f}",
            "rate_date": self.rate_date.isoformat() if self.rate_date else None,
            "rate_stale": self.stale,
            "rate_source": self.source,
        }


def day_of(moment: datetime) -> date:
    """The UTC day of an aware moment: a rate of that day or earlier is in force then."""
    return moment.astimezone(UTC).date()


def import_rates(uow: UnitOfWork, data: bytes, *, now: datetime) -> dict[str, Any]:
    """Store every rate of an ECB file (worker/fx/ecb.py: XML or CSV, daily or history).

    `data`: the file's bytes. Idempotent: a day already stored is overwritten with the
    file's figure. Returns `{dates, rates, first, last}` (days and rates in the file, the
    first and last day `YYYY-MM-DD`). Raises ValidationError naming `file`, `date`,
    `currency` or `rate` and stores nothing when any part of the file is bad (`date`: also a
    day after tomorrow, UTC, of `now`)."""
    parsed = ecb.parse(data)
    # The ECB publishes today's rates (tomorrow's date can be today somewhere): a later day
    # is a typo, and stored it would be "the latest rate" for every display until then.
    latest = day_of(now) + timedelta(days=1)
    future = max(parsed)
    if future > latest:
        raise ValidationError("date", f"{future} is in the future (after {latest})")
    rows = [
        {
            "currency": code,
            "rate_date": day,
            "rate": rate,
            "source": SOURCE_ECB,
            "imported_at": now,
        }
        for day, by_currency in parsed.items()
        for code, rate in by_currency.items()
    ]
    session = uow.session
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    for start in range(0, len(rows), _CHUNK):
        statement = insert(FxRate).values(rows[start : start + _CHUNK])
        statement = statement.on_conflict_do_update(
            index_elements=[FxRate.currency, FxRate.rate_date],
            set_={
                "rate": statement.excluded.rate,
                "source": statement.excluded.source,
                "imported_at": statement.excluded.imported_at,
            },
        )
        session.execute(statement)
    days = sorted(parsed)
    return {
        "dates": len(days),
        "rates": len(rows),
        "first": days[0].isoformat(),
        "last": days[-1].isoformat(),
    }


def _per_eur(session: Session, currency: str, day: date) -> tuple[Decimal, date] | None:
    if currency == "EUR":
        return Decimal(1), date.max
    row = session.execute(
        select(FxRate.rate, FxRate.rate_date)
        .where(FxRate.currency == currency, FxRate.rate_date <= day)
        .order_by(FxRate.rate_date.desc())
        .limit(1)
    ).first()
    return None if row is None else (row[0], row[1])


def cross(base_per_eur: Decimal, quote_per_eur: Decimal) -> Decimal:
    """Units of quote for 1 unit of base; exact when base is EUR (a divisor of 1)."""
    if base_per_eur == 1:
        return quote_per_eur
    with localcontext() as ctx:
        ctx.prec = CROSS_DIGITS
        ctx.rounding = ROUNDING
        return (quote_per_eur / base_per_eur).normalize()


def rate_at(session: Session, base: str, quote: str, moment: datetime) -> DisplayRate | None:
    """The rate in force at `moment` (aware) for showing `base` amounts in `quote`.

    The latest stored rate at or before the moment's UTC day (for a cross, the older of the
    two sides' days); else USD_DISPLAY_RATES for `quote` USD (undated, never stale); else
    None (the caller shows the account currency only)."""
    day = day_of(moment)
    if base == quote:
        return DisplayRate(base, quote, Decimal(1), day, SOURCE_ECB, False)
    b, q = _per_eur(session, base, day), _per_eur(session, quote, day)
    if b is not None and q is not None:
        rate_date = min(b[1], q[1])
        return DisplayRate(
            base, quote, cross(b[0], q[0]), rate_date, SOURCE_ECB, day - rate_date > STALE_AFTER
        )
    if quote == "USD":
        fallback = get_settings().usd_display_rates.get(base)
        if fallback is not None:
            return DisplayRate(base, quote, fallback, None, SOURCE_SETTING, False)
    return None


def convert(amount: Decimal, rate: Decimal, currency: str) -> Decimal:
    """`amount` x `rate` in `currency`'s minor unit, rounded once, half-even (display only).

    The product is exact (enough precision for every digit); `to_minor_units` is the one
    rounding, as for the mails' USD equivalent (worker/outbox/templates.py)."""
    with localcontext() as ctx:
        ctx.prec = max(ctx.prec, len(amount.as_tuple().digits) + len(rate.as_tuple().digits) + 2)
        minor = to_minor_units(amount * rate, currency)
    return Decimal(minor).scaleb(-exponent(currency))


def display(
    session: Session, *, currency: str, shown_in: str, balance: Decimal, moment: datetime
) -> dict[str, Any] | None:
    """`accounts show`'s `display` (CONTRACT.md, Wave 2 details): `currency, balance, rate,
    rate_date, rate_stale` (+ `rate_source`), or None when `shown_in` is `currency`.

    Without any rate `balance`, `rate` and `rate_date` are null: the account currency is
    the only figure then, never a guess."""
    if shown_in == currency:
        return None
    found = rate_at(session, currency, shown_in, moment)
    if found is None:
        return {
            "currency": shown_in,
            "balance": None,
            "rate": None,
            "rate_date": None,
            "rate_stale": None,
            "rate_source": None,
        }
    return {
        "currency": shown_in,
        "balance": format_amount(convert(balance, found.rate, shown_in), shown_in),
        **found.as_dict(),
    }


class RateBook:
    """Every rate of one pair over a period, in memory, for an export's many rows.

    A few thousand days at most (the ECB history starts in 1999), so an export of a
    million rows asks the database once, not a million times."""

    def __init__(self, session: Session, base: str, quote: str, until: datetime) -> None:
        self.base, self.quote = base, quote
        self._fallback: DisplayRate | None = None
        days: dict[date, dict[str, Decimal]] = {}
        wanted = [c for c in (base, quote) if c != "EUR"]
        if wanted:
            for code, day, rate in session.execute(
                select(FxRate.currency, FxRate.rate_date, FxRate.rate)
                .where(FxRate.currency.in_(wanted), FxRate.rate_date <= day_of(until))
                .order_by(FxRate.rate_date)
            ):
                days.setdefault(day, {})[code] = rate
        # Walk the days carrying each side's latest rate forward: one entry per day with both.
        latest: dict[str, tuple[Decimal, date]] = {"EUR": (Decimal(1), date.max)}
        self._days: list[date] = []
        self._rates: list[tuple[Decimal, date]] = []
        for day in sorted(days):
            for code, rate in days[day].items():
                latest[code] = (rate, day)
            if base in latest and quote in latest:
                b, q = latest[base], latest[quote]
                self._days.append(day)
                self._rates.append((cross(b[0], q[0]), min(b[1], q[1])))
        if quote == "USD":
            fallback = get_settings().usd_display_rates.get(base)
            if fallback is not None:
                self._fallback = DisplayRate(base, quote, fallback, None, SOURCE_SETTING, False)

    def at(self, moment: datetime) -> DisplayRate | None:
        """As `rate_at`, from memory."""
        day = day_of(moment)
        i = bisect.bisect_right(self._days, day)
        if i == 0:
            return self._fallback
        rate, rate_date = self._rates[i - 1]
        return DisplayRate(
            self.base, self.quote, rate, rate_date, SOURCE_ECB, day - rate_date > STALE_AFTER
        )
