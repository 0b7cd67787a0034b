"""Customer notices: the mails an account's invoice-and-alert addresses get.

This module holds what every notice shares (who, the balance, the locale, the fallback
when a template fails) and the ledger's own notice (depletion); alerts and auto-reload
keep theirs in their packages and build them with these helpers.

Each is queued in the mail outbox inside the transaction that made the fact true (the
alert firing, the debit that depleted the account, the decline that turned auto-reload
off), so a notice exists exactly when its fact was committed, and is sent once.
Bodies come from the Jinja2 templates in the account's locale (worker/outbox/templates.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy.orm import object_session

from config import get_settings
from worker.db.session import UnitOfWork
from worker.fx import service as fx
from worker.kernel import clock
from worker.kernel.money import format_amount
from worker.ledger.models import Account
from worker.outbox import mail
from worker.outbox import templates as mail_templates
from worker.outbox.models import Mail

log = logging.getLogger(__name__)


def _usd_rate(account: Account) -> Decimal | None:
    """The display-only USD rate a mail shows: the ECB rate in force now (worker/fx), else
    USD_DISPLAY_RATES, else none (the mail shows the account currency only)."""
    if account.display_currency != "USD" or account.currency == "USD":
        return None
    session = object_session(account)
    found = fx.rate_at(session, account.currency, "USD", clock.now()) if session else None
    rate = found.rate if found else get_settings().usd_display_rates.get(account.currency)
    if rate is None:
        log.warning(
            "account %s shows USD but no rate (fx import, FX_RATES_URL or USD_DISPLAY_RATES) "
            "has %s: mail shows %s only",
            account.id,
            account.currency,
            account.currency,
        )
    return rate


def render(
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


def about(account: Account) -> dict[str, Any]:
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


def queue(
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


def depleted(
    uow: UnitOfWork,
    account: Account,
    *,
    transaction_id: str,
    floor: Decimal,
    now: datetime,
    **extra: Any,
) -> Mail | None:
    """Once per depletion: keyed by the transaction that depleted the account.

    `extra`: fields the depletion hooks add (worker/ledger/hooks.py), e.g. `numbers` and
    `numbers_cancel_at` from the virtual numbers' hook."""
    rendered = render(
        account,
        "account.depleted",
        lambda: mail_templates.render_depleted(
            **about(account),
            floor=floor,
            occurred_at=now,
            **extra,
        ),
    )
    return queue(
        uow,
        account,
        kind="account.depleted",
        dedupe_key=f"account.depleted:{transaction_id}",
        rendered=rendered,
        now=now,
    )
