"""Low-balance alerts: the hourly scan, one email per crossing.

An alert is `armed` until the scan finds the balance below the threshold; then it fires
once (a `balance.low` event and a mail, committed with the state `sent`) and stays quiet
however many scans follow. The credit that lifts the balance back to the threshold
re-arms it (worker/ledger/service.py); the scan re-arms any it finds recovered as a safety net.

Concurrency: the scan locks due rows (FOR UPDATE, in id order) and PostgreSQL re-checks
`alert_state = 'armed'` after waiting for a lock, so two scans at the same moment, or a
redelivered scan, fire each alert once. Batches commit on their own, so a large crossing
does not hold thousands of account locks while mails are rendered.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any, TypedDict

from sqlalchemy import func, select, update

from config import get_settings
from worker.accounts import runway as runways
from worker.accounts import service as accounts
from worker.alerts import notices
from worker.db.session import UnitOfWork
from worker.kernel import validation
from worker.kernel.clock import isoformat
from worker.kernel.errors import NeverRuns, ValidationError
from worker.kernel.money import format_amount, parse_amount
from worker.ledger import service as ledger
from worker.ledger.models import Account
from worker.outbox import events
from worker.outbox.models import Mail

log = logging.getLogger(__name__)

KIND = "balance.low"


# --- settings -----------------------------------------------------------------------------


def configure(
    uow: UnitOfWork,
    *,
    account_id: object,
    threshold: object,
    emails: object = None,
    now: datetime,
) -> dict[str, Any]:
    """Turn alerts on; `emails` (when given) replace the invoice-and-alert addresses.

    Everything is checked before anything is written. Turning alerts on or changing the
    threshold re-arms the alert, so a balance already below it is reported by the next scan.

    `threshold`: a positive decimal string in the account currency, up to 6 decimals (balances
    are sub-cent), above `DEPLETION_FLOOR` (NeverRuns otherwise: the alert could only fire
    once the account is suspended). Any higher threshold can fire: the balance can always
    fall below it.
    """
    account = ledger.lock_account(uow.session, account_id)
    limit = parse_amount(threshold, "threshold")
    floor = get_settings().depletion_floor
    if limit <= floor:
        # The balance is below such a threshold only once the account is depleted (API
        # stopped), and the depletion notice goes out then: the alert could never warn first.
        raise NeverRuns(
            "threshold",
            f"must be above DEPLETION_FLOOR ({format_amount(floor, account.currency)} "
            f"{account.currency}): at or below it the account is already suspended and gets "
            "the depletion notice, so this alert could never warn before that",
        )
    addresses = validation.emails(emails) if emails else list(account.emails)
    if not addresses:
        raise ValidationError(
            "email", "the account has no invoice-and-alert address; give at least one --email"
        )
    if not account.alerts_enabled or account.alert_threshold != limit:
        # A new threshold is a new question; changing only the addresses must not
        # repeat the mail for a crossing already reported.
        account.alert_state = "armed"
    account.alerts_enabled = True
    account.alert_threshold = limit
    account.emails = addresses
    account.updated_at = now
    events.record(
        uow,
        "alerts.enabled",
        account.id,
        {"threshold": format_amount(limit, account.currency), "emails": len(addresses)},
        now,
    )
    return accounts.view(account)


def turn_off(uow: UnitOfWork, *, account_id: object, now: datetime) -> dict[str, Any]:
    account = ledger.lock_account(uow.session, account_id)
    if account.alerts_enabled:
        account.alerts_enabled = False
        account.alert_state = "armed"
        account.updated_at = now
        events.record(uow, "alerts.disabled", account.id, {}, now)
    return accounts.view(account)


# --- the scan ------------------------------------------------------------------------------


def due_query(limit: int) -> Any:
    """Armed accounts below their threshold: the partial index ix_accounts_alert_due."""
    return (
        select(Account)
        .where(
            Account.alerts_enabled,
            Account.alert_state == "armed",
            Account.balance < Account.alert_threshold,
        )
        .order_by(Account.id)
        .limit(limit)
        .with_for_update()
        .execution_options(populate_existing=True)
    )


def runway_text(days_left: int | None) -> str | None:
    """The runway in words for the event (the mail words it in the account's locale)."""
    if days_left is None:
        return None
    if days_left == 0:
        return "less than a day left at your current spend"
    return f"about {days_left} day{'' if days_left == 1 else 's'} left at your current spend"


def _fire(uow: UnitOfWork, account: Account, as_of: datetime) -> None:
    threshold = account.alert_threshold
    assert threshold is not None  # the query's condition
    account.alert_state = "sent"
    account.alert_sent_at = as_of
    data = {
        "balance": format_amount(account.balance, account.currency),
        "threshold": format_amount(threshold, account.currency),
        "currency": account.currency,
        "checked_at": isoformat(as_of),
        "emails": len(account.emails),
    }
    # The runway at the scan's moment (issue 18): the event and the mail say how long the
    # balance lasts at the last 7 days' spend, "about 3 days left at your current spend".
    runway = runways.compute(uow.session, account, as_of)
    data["runway"] = {
        **runway.view(account.currency),
        "text": runway_text(runway.days_left),
    }
    event = events.record(uow, KIND, account.id, data, as_of)
    queued = notices.low_balance(
        uow,
        account,
        threshold=threshold,
        alert_id=event.id,
        checked_at=as_of,
        days_left=runway.days_left,
        daily_spend=runway.daily_spend if runway.days_left is not None else None,
    )
    log.warning(
        "low balance: account %s at %s %s, below %s (%s)",
        account.id,
        data["balance"],
        account.currency,
        data["threshold"],
        "mail queued" if queued is not None else "no address to mail",
    )


def _rearm_recovered(uow: UnitOfWork) -> int:
    """Alerts whose balance is back at or above the threshold (ix_accounts_alert_rearm)."""
    result = uow.session.execute(
        update(Account)
        .where(Account.alert_state == "sent", Account.balance >= Account.alert_threshold)
        .values(alert_state="armed")
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)


def undelivered(uow: UnitOfWork, before: datetime) -> int:
    """Low-balance mails of earlier scans still waiting for the mail server (ix_mail_due)."""
    return int(
        uow.session.scalar(
            select(func.count())
            .select_from(Mail)
            .where(Mail.status == "pending", Mail.kind == KIND, Mail.created_at < before)
        )
        or 0
    )


class ScanResult(TypedDict):
    """What an alert scan did: alerts fired, re-armed, and fired ones whose mail waits."""

    as_of: str
    checked: int
    alerted: int
    rearmed: int
    undelivered: int


def scan(uow: UnitOfWork, as_of: datetime) -> ScanResult:
    """Fire every armed alert whose balance is below its threshold; re-arm recovered ones.

    `checked` counts the accounts the scan acted on (fired or re-armed), found by two
    index-backed queries, never by loading accounts into Python to filter them.
    """
    batch = get_settings().alert_batch_size
    alerted = 0
    while True:
        due = list(uow.session.scalars(due_query(batch)))
        if not due:
            break
        for account in due:
            _fire(uow, account, as_of)
        alerted += len(due)
        uow.commit()  # release this batch's row locks; its mails go out after commit
    rearmed = _rearm_recovered(uow)
    uow.commit()
    waiting = undelivered(uow, as_of)
    if waiting:
        log.warning("%d low-balance mails of earlier scans are not delivered yet", waiting)
    return {
        "as_of": isoformat(as_of),
        "checked": alerted + rearmed,
        "alerted": alerted,
        "rearmed": rearmed,
        "undelivered": waiting,
    }
