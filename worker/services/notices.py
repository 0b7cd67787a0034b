"""Customer notices: the mails an account's invoice-and-alert addresses get.

Each is queued in the mail outbox inside the transaction that made the fact true (the
alert firing, the debit that depleted the account, the decline that turned auto-reload
off), so a notice exists exactly when its fact was committed, and is sent once.
Bodies come from the Jinja2 templates in the account's locale (services/mail_templates).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import Any

from config import get_settings
from worker import clock
from worker.db.models import Account, Mail
from worker.db.session import UnitOfWork
from worker.money import format_amount
from worker.services import mail, mail_templates

log = logging.getLogger(__name__)


def _usd_rate(account: Account) -> Decimal | None:
    if account.display_currency != "USD" or account.currency == "USD":
        return None
    rate = get_settings().usd_display_rates.get(account.currency)
    if rate is None:
        log.warning(
            "account %s shows USD but USD_DISPLAY_RATES has no %s rate: mail shows %s only",
            account.id,
            account.currency,
            account.currency,
        )
    return rate


def _render(
    account: Account, kind: str, build: Callable[[], mail_templates.RenderedMail]
) -> mail_templates.RenderedMail:
    """The template's mail; if rendering fails, a plain fallback, so a template bug never
    rolls back the fact the mail reports (a debit, an alert)."""
    try:
        return build()
    except Exception:
        log.exception(
            "mail %s for account %s: template failed, sending the fallback", kind, account.id
        )
        text = (
            f"Account {account.name} ({account.id}): {kind}.\n"
            f"Balance: {format_amount(account.balance, account.currency)} {account.currency}.\n"
        )
        return mail_templates.RenderedMail(subject=f"{kind}: {account.name}", text=text, html="")


def _about(account: Account) -> dict[str, Any]:
    """What every notice shows: who, the balance, and in which language and currency."""
    return {
        "locale": account.locale,
        "account_name": account.name,
        "account_id": account.id,
        "balance": account.balance,
        "currency": account.currency,
        "display_currency": account.display_currency,
        "usd_rate": _usd_rate(account),
        "top_up_url": get_settings().top_up_url,
    }


def _outbox_time(moment: datetime) -> datetime:
    """A replayed job (`as_of` in the future) must not delay its mail until then."""
    return min(moment, clock.now())


def _queue(
    uow: UnitOfWork,
    account: Account,
    *,
    kind: str,
    dedupe_key: str,
    rendered: mail_templates.RenderedMail,
    now: datetime,
) -> Mail | None:
    return mail.queue(
        uow,
        dedupe_key=dedupe_key,
        kind=kind,
        account_id=account.id,
        recipients=list(account.emails),
        subject=rendered.subject,
        text_body=rendered.text,
        html_body=rendered.html or None,
        now=_outbox_time(now),
    )


def low_balance(
    uow: UnitOfWork, account: Account, *, threshold: Decimal, alert_id: str, checked_at: datetime
) -> Mail | None:
    """One mail per fired alert (`alert_id` is the `balance.low` event's id)."""
    rendered = _render(
        account,
        "balance.low",
        lambda: mail_templates.render_low_balance(
            **_about(account),
            threshold=threshold,
            checked_at=checked_at,
            auto_reload_enabled=account.auto_reload_enabled,
        ),
    )
    return _queue(
        uow,
        account,
        kind="balance.low",
        dedupe_key=f"balance.low:{alert_id}",
        rendered=rendered,
        now=checked_at,
    )


def depleted(
    uow: UnitOfWork, account: Account, *, transaction_id: str, floor: Decimal, now: datetime
) -> Mail | None:
    """Once per depletion: keyed by the transaction that depleted the account."""
    rendered = _render(
        account,
        "account.depleted",
        lambda: mail_templates.render_depleted(
            **_about(account),
            floor=floor,
            occurred_at=now,
        ),
    )
    return _queue(
        uow,
        account,
        kind="account.depleted",
        dedupe_key=f"account.depleted:{transaction_id}",
        rendered=rendered,
        now=now,
    )


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
    rendered = _render(
        account,
        "auto_reload.disabled",
        lambda: mail_templates.render_auto_reload_disabled(
            **_about(account),
            reload_amount=reload_amount,
            declines=declines,
            reason=reason,
            occurred_at=now,
        ),
    )
    return _queue(
        uow,
        account,
        kind="auto_reload.disabled",
        dedupe_key=f"auto_reload_disabled:{charge_id}",
        rendered=rendered,
        now=now,
    )
