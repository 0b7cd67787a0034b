"""Fees due soon, for the auto-reload sweep (which sits above this package).

A renewal that would fail is a reason to reload: the sweep treats an account as due when
its balance minus the fees due within the next sweep interval is below its threshold, so an
auto-reload customer's renewal never fails for lack of a reload.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import ColumnElement, and_, func, select
from sqlalchemy.orm import Session

from worker.ledger.models import Account
from worker.numbers.models import Number, NumberStatus


def _due_by(until: datetime) -> Any:
    return and_(Number.status != NumberStatus.CANCELLED, Number.next_renewal_at <= until)


def short_of_fees(until: datetime) -> ColumnElement[bool]:
    """True for an account with a fee due by `until` whose balance minus the fees due by
    then is below its auto-reload threshold. Backed by ix_accounts_fee_lookahead
    (`auto_reload_enabled AND next_fee_at IS NOT NULL`), then one index probe per candidate."""
    fees = (
        select(func.coalesce(func.sum(Number.monthly_fee), Decimal(0)))
        .where(Number.account_id == Account.id, _due_by(until))
        .scalar_subquery()
    )
    return and_(
        Account.next_fee_at <= until, Account.balance - fees < Account.auto_reload_threshold
    )


def fees_due(session: Session, account_ids: list[str], until: datetime) -> dict[str, Decimal]:
    """Per account, the fees of its live numbers due by `until` (accounts with none absent)."""
    if not account_ids:
        return {}
    rows = session.execute(
        select(Number.account_id, func.sum(Number.monthly_fee))
        .where(Number.account_id.in_(account_ids), _due_by(until))
        .group_by(Number.account_id)
    )
    return {account_id: total for account_id, total in rows}
