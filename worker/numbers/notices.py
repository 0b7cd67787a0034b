"""The numbers' customer mails, built with the shared notice helpers (worker/ledger/notices.py)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from worker.db.session import UnitOfWork
from worker.ledger import notices
from worker.ledger.models import Account
from worker.numbers.models import Number
from worker.outbox import templates as mail_templates
from worker.outbox.models import Mail


def fee_payment_failed(
    uow: UnitOfWork,
    account: Account,
    failed: list[tuple[Number, int]],
    *,
    cancel_at: datetime,
    now: datetime,
) -> Mail | None:
    """One mail for the renewals of one run that could not be paid. Keyed by the first
    (number, period): each is reported once, so a set is never mailed twice."""
    lines = [
        mail_templates.NumberLine(n.msisdn, n.monthly_fee, n.next_renewal_at) for n, _ in failed
    ]
    total = sum((n.monthly_fee for n, _ in failed), Decimal(0))
    rendered = notices.render(
        account,
        "fee.payment_failed",
        lambda: mail_templates.render_fee_payment_failed(
            **notices.about(account), numbers=lines, total=total, cancel_at=cancel_at
        ),
    )
    first, period = min((n.id, p) for n, p in failed)
    return notices.queue(
        uow,
        account,
        kind="fee.payment_failed",
        dedupe_key=f"fee.payment_failed:{first}:{period}",
        rendered=rendered,
        now=now,
    )


def numbers_cancelled(
    uow: UnitOfWork, account: Account, cancelled: list[Number], *, reason: str, now: datetime
) -> Mail | None:
    """One mail for the numbers one run cancelled for `reason` (unpaid / depleted); keyed by
    the first number's id (a number is cancelled once)."""
    lines = [
        mail_templates.NumberLine(n.msisdn, n.monthly_fee, n.cancelled_at or now) for n in cancelled
    ]
    rendered = notices.render(
        account,
        "number.cancelled",
        lambda: mail_templates.render_numbers_cancelled(
            **notices.about(account), numbers=lines, reason=reason
        ),
    )
    return notices.queue(
        uow,
        account,
        kind="number.cancelled",
        dedupe_key=f"number.cancelled:{min(n.id for n in cancelled)}",
        rendered=rendered,
        now=now,
    )
