"""Auto-reload's customer mails: turned off after declines; failing (PSP unavailable);
paused until the cardholder authenticates (requires_action)."""

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


def auto_reload_failing(
    uow: UnitOfWork,
    account: Account,
    *,
    charge_id: str,
    reload_amount: Decimal,
    failures: int,
    reason: str,
    next_attempt_at: datetime,
    now: datetime,
) -> Mail | None:
    """Once per streak of reload charges exhausted by soft failures: keyed by the charge
    that completed the streak's `AUTO_RELOAD_FAILING_AFTER`-th failure."""
    rendered = notices.render(
        account,
        "auto_reload.failing",
        lambda: mail_templates.render_auto_reload_failing(
            **notices.about(account),
            reload_amount=reload_amount,
            failures=failures,
            reason=reason,
            next_attempt_at=next_attempt_at,
            occurred_at=now,
        ),
    )
    return notices.queue(
        uow,
        account,
        kind="auto_reload.failing",
        dedupe_key=f"auto_reload_failing:{charge_id}",
        rendered=rendered,
        now=now,
    )


def auto_reload_action_required(
    uow: UnitOfWork,
    account: Account,
    *,
    charge_id: str,
    reload_amount: Decimal,
    reason: str,
    now: datetime,
) -> Mail | None:
    """Once per reload charge that ended `requires_action`: auto-reload is paused until the
    customer adds their card again (a fresh nonce, authenticated) as the default."""
    rendered = notices.render(
        account,
        "auto_reload.action_required",
        lambda: mail_templates.render_auto_reload_action_required(
            **notices.about(account),
            reload_amount=reload_amount,
            reason=reason,
            occurred_at=now,
        ),
    )
    return notices.queue(
        uow,
        account,
        kind="auto_reload.action_required",
        dedupe_key=f"auto_reload_action_required:{charge_id}",
        rendered=rendered,
        now=now,
    )
