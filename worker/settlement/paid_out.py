"""Refunds paid out of a PSP's available funds (issue 14), as settlement sees them.

The refunds domain books each paid refund as a system transaction of kind `refund_paid`
onto `psp_available:PSP` (worker/refunds/service.py); settlement reads those postings from
the ledger and imports nothing of refunds (it sits below them).
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from worker.charges.models import Charge
from worker.ledger.models import LedgerAccount, LedgerTransaction, Posting

AVAILABLE = "psp_available"

REFUND_PAID_KIND = "refund_paid"


def refunded(session: Session, as_of: datetime) -> dict[tuple[str, str], Decimal]:
    """Refunds paid out of each PSP's available funds by `as_of`, per (psp, currency)."""
    rows = session.execute(
        select(LedgerAccount.code, LedgerAccount.currency, func.sum(Posting.amount))
        .join(Posting, Posting.ledger_account_id == LedgerAccount.id)
        .join(LedgerTransaction, LedgerTransaction.id == Posting.transaction_id)
        .where(
            LedgerTransaction.kind == REFUND_PAID_KIND,
            LedgerTransaction.created_at <= as_of,
            LedgerAccount.code.like(f"{AVAILABLE}:%"),
        )
        .group_by(LedgerAccount.code, LedgerAccount.currency)
    ).all()
    out: dict[tuple[str, str], Decimal] = {}
    for code, cur, amount in rows:
        psp = code.split(":")[1]
        out[(psp, cur)] = Decimal(amount or 0)
    return out


def available_at(session: Session, psp: str, currency: str, as_of: datetime) -> Decimal:
    """What `psp` holds for us, available in `currency` as of `as_of`, less refunds paid
    (negative when refunds took more than was available)."""
    settled = session.scalar(
        select(func.coalesce(func.sum(Charge.amount), 0)).where(
            Charge.psp == psp,
            Charge.currency == currency,
            Charge.settlement_status.is_not(None),
            Charge.completed_at <= as_of,
            Charge.settles_at <= as_of,
        )
    )
    return Decimal(settled or 0) - refunded(session, as_of).get((psp, currency), Decimal(0))
