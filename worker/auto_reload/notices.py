"""The mail sent when auto-reload turns itself off after declines."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from worker.db.session import UnitOfWork
from worker.ledger import notices
from worker.ledger.models import Account
from worker.outbox import templates as mail_templates
from worker.outbox.models import Mail


def auto_reload_disabled(
    uow: UnitOfWork,
    account: Account,
    *,
    charge_id: str,
    reload_amount: Decimal,
    declines: int,
    reason: str,
    now: datetime,
) -> Mail | None:
    rendered = notices.render(
        account,
        "auto_reload.disabled",
        lambda: mail_templates.render_auto_reload_disabled(
            **notices.about(account),
            reload_amount=reload_amount,
            declines=declines,
            reason=reason,
            occurred_at=now,
        ),
    )
    return notices.queue(
        uow,
        account,
        kind="auto_reload.disabled",
        dedupe_key=f"auto_reload_disabled:{charge_id}",
        rendered=rendered,
        now=now,
    )
