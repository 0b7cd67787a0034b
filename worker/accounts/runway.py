"""Runway: how long the balance lasts at the account's current spend (issue 18).

Spend is the account's usage debits (`usage_debit` ledger transactions, net of nothing:
usage is never credited back) over the trailing `WINDOW` before the moment asked about.
Monthly number fees are left out on purpose: one fee inside a 7-day window would read as
a daily rate four times too high. No system in this field shows a runway; the figure is an
estimate for people (`accounts show`, the low-balance mail and `balance.low`), never used
to move money, so it is the one place an amount is rounded for display (half-even, to the
currency's minor units).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_FLOOR, Decimal
from typing import TYPE_CHECKING, Any, Protocol

from worker.kernel.clock import isoformat
from worker.kernel.money import ROUNDING, exponent, format_amount

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

WINDOW = timedelta(days=7)
USAGE_KIND = "usage_debit"  # worker/usage/service.py KIND (usage sits above this package)


@dataclass(frozen=True)
class Runway:
    """`daily_spend`: the window's usage / 7 (account currency, minor units); `days_left`:
    whole days the balance lasts at that rate (floor; 0 at or below zero), None without
    spend in the window."""

    daily_spend: Decimal
    days_left: int | None
    spend: Decimal
    since: datetime
    until: datetime

    def view(self, currency: str) -> dict[str, Any]:
        """The `runway` object of `accounts show` (CONTRACT.md Operator basics)."""
        return {
            "daily_spend": format_amount(self.daily_spend, currency),
            "days_left": self.days_left,
            "window_days": WINDOW.days,
            "spend": format_amount(self.spend, currency),
            "since": isoformat(self.since),
        }


class _Spending(Protocol):
    """What a runway needs of an account: an `Account`, or the embedded read's row
    (worker/accounts/embedded.py)."""

    @property
    def id(self) -> str: ...
    @property
    def currency(self) -> str: ...
    @property
    def balance(self) -> Decimal: ...


def usage_between(session: Session, account_id: str, since: datetime, until: datetime) -> Decimal:
    """Usage debited in [since, until), a positive Decimal (ix_ledger_txn_account_created)."""
    # Imported here: the embedded `accounts show` computes its runway from its own SQLite
    # read (`from_spend`) and never imports SQLAlchemy (fast CLI, issue 18).
    from sqlalchemy import func, select

    from worker.ledger.models import LedgerTransaction

    total = session.scalar(
        select(func.sum(LedgerTransaction.amount)).where(
            LedgerTransaction.account_id == account_id,
            LedgerTransaction.created_at >= since,
            LedgerTransaction.created_at < until,
            LedgerTransaction.kind == USAGE_KIND,
        )
    )
    return -total if total is not None else Decimal(0)


def compute(session: Session, account: _Spending, as_of: datetime) -> Runway:
    """The runway of `account` at `as_of` from its usage in the 7 days before.

    `days_left` = floor(balance / daily_spend), computed from the exact window total (so
    rounding the displayed daily figure never changes it); 0 when the balance is at or
    below zero; None when nothing was spent in the window."""
    since = as_of - WINDOW
    return from_spend(account, usage_between(session, account.id, since, as_of), as_of)


def from_spend(account: _Spending, spend: Decimal, as_of: datetime) -> Runway:
    """The runway from `spend`, the usage debited in [as_of - WINDOW, as_of) (`compute`)."""
    since = as_of - WINDOW
    quantum = Decimal(1).scaleb(-exponent(account.currency))
    daily = (spend / WINDOW.days).quantize(quantum, rounding=ROUNDING)
    days: int | None = None
    if spend > 0:
        balance = max(account.balance, Decimal(0))
        days = int((balance * WINDOW.days / spend).to_integral_value(rounding=ROUND_FLOOR))
    return Runway(daily_spend=daily, days_left=days, spend=spend, since=since, until=as_of)
