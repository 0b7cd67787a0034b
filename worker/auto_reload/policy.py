"""Auto-reload's failure policy: what each charge outcome means for the account.

| outcome | policy |
|---|---|
| succeeded (any charge) | back-off, declines and soft streak end; bursts are flagged |
| declined (auto-reload) | back-off; N in a row turn auto-reload off, the customer is told |
| not attempted (auto-reload) | the same charge is retried after 1, 2, 4 ... min, then fails |
| failed uncharged (reload) | back-off 1 h, x2 per one in a row, <= 24 h; 3rd: mail once |
| requires action (auto-reload) | paused, no retries; customer mailed; a new default resumes |

A reload ends `failed` uncharged when its soft retries are used up, or when the PSP's answer
never came and the janitor finds no record of it after the lease (`not_received`): both come
through the engine's close hook (`after_close`). Not counted: a charge our own worker never
got through (still `processing`), a retry superseded by new settings.

Soft failures never count toward the decline rule: a PSP-wide outage makes every account's
reload fail softly at once, and must not turn auto-reload off for all of them. Why they
back off at all: without it every sweep opened a new charge (seen: 6 charges and
21 PSP attempts in 2 hours, about 250 attempts a day, for ever, with nobody told).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import func, select

from config import get_settings
from worker.auto_reload import notices
from worker.auto_reload.plan import SUPERSEDED
from worker.charges import engine as charges
from worker.charges.engine import Recorded
from worker.charges.models import Charge
from worker.charges.states import ChargeStatus, Purpose
from worker.db.session import UnitOfWork
from worker.kernel.clock import isoformat
from worker.kernel.money import format_amount
from worker.ledger import service as ledger
from worker.ledger.models import Account
from worker.outbox import events

log = logging.getLogger(__name__)


def after_outcome(uow: UnitOfWork, charge: Charge, recorded: Recorded) -> None:
    """The charge engine's hook (installed by worker/wiring.py), for every recorded outcome
    of every charge: back-off, disable after N declines, soft retries and their streak,
    burst warning.

    `recorded.credited`: the account a success credited; `recorded.locked`: the charge's
    account if `apply` holds its lock already."""
    settings = get_settings()
    account, locked, now = recorded.credited, recorded.locked, recorded.now
    if charge.status == "succeeded":
        if account is None:
            return
        account.auto_reload_backoff_until = None  # any success ends the back-off
        account.auto_reload_declines = 0
        account.auto_reload_soft_failures = 0  # ... and the soft-failure streak
        account.auto_reload_failing_at = None
        if charge.purpose == Purpose.AUTO_RELOAD:
            _burst_check(uow, account, charge, now)
        return
    if charge.purpose != Purpose.AUTO_RELOAD:
        return
    if charge.status == "requires_action":
        account = account or locked or ledger.lock_account(uow.session, charge.account_id)
        action_required(uow, account, charge, now)
    elif charge.status == "declined":
        account = account or locked or ledger.lock_account(uow.session, charge.account_id)
        account.auto_reload_declines += 1
        account.auto_reload_backoff_until = now + timedelta(
            seconds=settings.auto_reload_backoff_seconds
        )
        if (
            account.auto_reload_declines >= settings.auto_reload_disable_after
            and account.auto_reload_enabled
        ):
            _disable_after_declines(uow, account, charge, now)
    elif charge.status == "not_attempted":
        if charge.attempts > settings.auto_reload_soft_retries:
            charges.fail(
                uow,
                charge,
                charge.decline_code or "not_attempted",
                charge.decline_text or "the PSP did not process the charge",
                now,
            )
            # after_close (the engine's close hook, run by `fail`) counts it in the streak
        else:
            delay = min(
                60 * 2 ** (charge.attempts - 1), settings.auto_reload_soft_retry_max_seconds
            )
            charge.next_attempt_at = now + timedelta(seconds=delay)


def after_close(uow: UnitOfWork, charge: Charge, was: str, now: datetime) -> None:
    """The charge engine's close hook (installed by worker/wiring.py), for every charge we
    close as `failed` without a PSP answer saying so (`was`: its status before).

    An auto-reload charge counts in the account's streak (`soft_exhausted`) when the PSP was
    asked and did not charge: its soft retries used up (`was` not_attempted), or an answer
    that never came and no record at the PSP after the lease (`was` unknown, `not_received`).
    Not counted: a charge still `processing` (our worker died or lost its database before or
    during the call: the next sweep reloads at once, as before), and a retry superseded by
    new settings or a new balance (our own decision)."""
    if charge.purpose != Purpose.AUTO_RELOAD or charge.decline_code == SUPERSEDED:
        return
    if was not in (ChargeStatus.NOT_ATTEMPTED, ChargeStatus.UNKNOWN):
        return
    account = ledger.lock_account(uow.session, charge.account_id)  # after the charge's lock
    soft_exhausted(uow, account, charge, now)


def action_required(uow: UnitOfWork, account: Account, charge: Charge, now: datetime) -> None:
    """A reload charge ended `requires_action` (3-D Secure / SCA: Braintree 2099, PayPal
    payer action; issue 17): the card cannot be charged without the cardholder, so retrying
    it would only fail again. Auto-reload is paused (`auto_reload_action_required_at`: the
    sweep skips the account, nothing is retried), `auto_reload.action_required` is written
    and the customer is mailed, in the account's locale, to authenticate with a fresh nonce
    (`balancectl methods add ID --psp ... --nonce ... --default`). Adding that new default
    method resumes it (worker/payment_methods/service.py). Not a decline: the decline count
    and the back-off are untouched. Once per pause: a second answer changes nothing.

    `account` is the charge's, locked."""
    if account.auto_reload_action_required_at is not None:
        return
    account.auto_reload_action_required_at = now
    account.updated_at = now
    events.record(
        uow,
        "auto_reload.action_required",
        account.id,
        {
            "charge_id": charge.id,
            "payment_method_id": charge.payment_method_id,
            "amount": format_amount(charge.amount, charge.currency),
            "currency": charge.currency,
            "code": charge.decline_code,
            "text": charge.decline_text,
        },
        now,
    )
    log.warning(
        "auto-reload of %s paused: charge %s needs the cardholder (%s)",
        account.id,
        charge.id,
        charge.decline_code,
    )
    notices.auto_reload_action_required(
        uow,
        account,
        charge_id=charge.id,
        reload_amount=charge.amount,
        reason=charge.decline_text or charge.decline_code or "requires_action",
        now=now,
    )


def soft_backoff(failures: int) -> timedelta:
    """The back-off after the `failures`-th reload charge in a row exhausted by soft
    failures: `AUTO_RELOAD_SOFT_BACKOFF` (1 h), doubled per further one, at most
    `AUTO_RELOAD_SOFT_BACKOFF_MAX` (24 h). `failures` >= 1."""
    settings = get_settings()
    base, cap = (
        settings.auto_reload_soft_backoff_seconds,
        settings.auto_reload_soft_backoff_max_seconds,
    )
    # Doubling stops at the cap: the exponent is bounded, however long the streak.
    steps = min(max(failures, 1) - 1, cap.bit_length())
    return timedelta(seconds=min(base * 2**steps, cap))


def soft_exhausted(uow: UnitOfWork, account: Account, charge: Charge, now: datetime) -> None:
    """A reload charge ended `failed` without being charged (its soft retries used up, or
    no record at the PSP after its lease): the streak grows, the account backs off
    (`soft_backoff`), and the `AUTO_RELOAD_FAILING_AFTER`-th in a row writes
    `auto_reload.failing` and mails the customer, once per streak.

    Auto-reload stays on and the decline count is untouched: a PSP-wide outage must not
    turn auto-reload off for every account. `account` is the charge's, locked."""
    settings = get_settings()
    account.auto_reload_soft_failures += 1
    failures = account.auto_reload_soft_failures
    until = now + soft_backoff(failures)
    current = account.auto_reload_backoff_until
    account.auto_reload_backoff_until = until if current is None else max(current, until)
    log.warning(
        "auto-reload of %s: charge %s failed uncharged (%s; %d in a row); backing off until %s",
        account.id,
        charge.id,
        charge.decline_code,
        failures,
        account.auto_reload_backoff_until.isoformat(),
    )
    if (
        failures < settings.auto_reload_failing_after
        or account.auto_reload_failing_at is not None  # told already in this streak
        or not account.auto_reload_enabled  # turned off meanwhile: nothing will try again
    ):
        return
    account.auto_reload_failing_at = now
    events.record(
        uow,
        "auto_reload.failing",
        account.id,
        {
            "failures": failures,
            "charge_id": charge.id,
            "amount": format_amount(charge.amount, charge.currency),
            "code": charge.decline_code,
            "text": charge.decline_text,
            "backoff_until": isoformat(account.auto_reload_backoff_until),
        },
        now,
    )
    notices.auto_reload_failing(
        uow,
        account,
        charge_id=charge.id,
        reload_amount=charge.amount,
        failures=failures,
        reason=charge.decline_text or charge.decline_code or "not_attempted",
        next_attempt_at=account.auto_reload_backoff_until,
        now=now,
    )


def _sequence(charge: Charge) -> int | None:
    """n of an auto-reload key `auto_reload:ACCOUNT:n` (the n-th reload of the account)."""
    prefix = f"{Purpose.AUTO_RELOAD}:{charge.account_id}:"
    key = charge.idempotency_key
    if key.startswith(prefix) and key[len(prefix) :].isdigit():
        return int(key[len(prefix) :])
    return None


def _burst_check(uow: UnitOfWork, account: Account, charge: Charge, now: datetime) -> None:
    settings = get_settings()
    # The n-th reload of an account is made only when no earlier one is open, and no later
    # one can start while this one is open: at most n reloads have succeeded, so with
    # n below the burst count there is nothing to count.
    sequence = _sequence(charge)
    if sequence is not None and sequence < settings.auto_reload_burst_count:
        return
    since = now - timedelta(seconds=settings.auto_reload_burst_window_seconds)
    recent = (
        uow.session.scalar(
            select(func.count())
            .select_from(Charge)
            .where(
                Charge.account_id == account.id,
                Charge.purpose == Purpose.AUTO_RELOAD,
                Charge.status == "succeeded",
                Charge.completed_at >= since,
            )
        )
        or 0
    )
    if recent == settings.auto_reload_burst_count:
        events.record(
            uow,
            "auto_reload.burst",
            account.id,
            {
                "reloads": recent,
                "window_seconds": settings.auto_reload_burst_window_seconds,
                "balance": format_amount(account.balance, account.currency),
            },
            now,
        )
        log.warning(
            "auto-reload burst: %d reloads within %ds for %s",
            recent,
            settings.auto_reload_burst_window_seconds,
            account.id,
        )


def _disable_after_declines(
    uow: UnitOfWork, account: Account, charge: Charge, now: datetime
) -> None:
    account.auto_reload_enabled = False
    account.updated_at = now
    data = {
        "reason": "declined",
        "declines": account.auto_reload_declines,
        "decline_code": charge.decline_code,
        "decline_text": charge.decline_text,
        "charge_id": charge.id,
    }
    events.record(uow, "auto_reload.disabled", account.id, data, now)
    notices.auto_reload_disabled(
        uow,
        account,
        charge_id=charge.id,
        reload_amount=charge.amount,
        declines=account.auto_reload_declines,
        reason=charge.decline_text or charge.decline_code or "declined",
        now=now,
    )
