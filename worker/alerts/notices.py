"""The low-balance alert's mail (one per fired alert)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from worker.db.session import UnitOfWork
from worker.ledger import notices
from worker.ledger.models import Account
from worker.outbox import templates as mail_templates
from worker.outbox.models import Mail


def low_balance(
    uow: UnitOfWork,
    account: Account,
    *,
    threshold: Decimal,
    alert_id: str,
    checked_at: datetime,
    days_left: int | None = None,
    daily_spend: Decimal | None = None,
) -> Mail | None:
    """One mail per fired alert (`alert_id` is the `balance.low` event's id); `days_left` /
    `daily_spend`: the runway the mail states (None: no spend in the last 7 days)."""
    rendered = notices.render(
        account,
        "balance.low",
        lambda: mail_templates.render_low_balance(
            **notices.about(account),
            threshold=threshold,
            checked_at=checked_at,
            auto_reload_enabled=account.auto_reload_enabled,
            days_left=days_left,
            daily_spend=daily_spend,
        ),
    )
    return notices.queue(
        uow,
        account,
        kind="balance.low",
        dedupe_key=f"balance.low:{alert_id}",
        rendered=rendered,
        now=checked_at,
    )
