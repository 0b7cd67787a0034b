"""Auto-reload: charge the saved card or PayPal account when the balance is below the
threshold. The six-minute sweep is the safety net; a debit that crosses the threshold
triggers the account's reload at once.

Guard clauses encode what others paid for (DESIGN.md §7, lago's threshold top-up):
- one reload in flight per account (a partial unique index; counted under the row lock);
- one charge lands the balance above the threshold: n x amount, smallest n >= 1;
- a hard decline starts a back-off; N declines in a row turn auto-reload off and tell
  the customer; caps per day and per month; a burst of reloads is flagged.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import and_, bindparam, exists, func, or_, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from config import get_settings
from worker import clock
from worker.clock import isoformat
from worker.db.models import Account, Charge, PaymentMethod
from worker.db.session import UnitOfWork
from worker.errors import DomainError, NotFound, ValidationError
from worker.money import format_amount, parse_amount
from worker.psp.registry import get_adapter
from worker.services import accounts, charges, events, ledger, notices, payment_methods, usage

log = logging.getLogger(__name__)

RELOAD_TASK = "balance.auto_reload.reload"
RELOAD_BATCH_TASK = "balance.auto_reload.reload_batch"  # the sweep's reloads, a batch a message
RELOAD_NOW_TASK = usage.RELOAD_NOW_TASK  # on-debit: routed to the urgent queue
PURPOSE = "auto_reload"
OPEN = ("processing", "unknown", "pending", "not_attempted")
COUNTED = ("processing", "unknown", "pending", "not_attempted", "succeeded")


# --- settings -----------------------------------------------------------------------------


def configure(
    uow: UnitOfWork,
    *,
    account_id: object,
    threshold: object,
    amount: object,
    method_id: object = None,
    now: datetime,
) -> dict[str, Any]:
    """Turn auto-reload on. Checks everything before writing anything."""
    account = ledger.lock_account(uow.session, account_id)
    limit = parse_amount(threshold, "threshold", allow_zero=True)
    value = charges.chargeable_amount(amount, account.currency, "amount")
    if method_id is None:
        method = payment_methods.default_for(uow.session, account.id)
        if method is None:
            raise NotFound(
                "method", "the account has no payment method; add a card or PayPal account first"
            )
    else:
        method = payment_methods.get_active(uow.session, account.id, method_id, "method")
    if method.type == "bank_transfer" or not get_adapter(method.psp, "method").on_demand:
        raise ValidationError("method", "auto-reload is not available for bank transfer")
    account.auto_reload_enabled = True
    account.auto_reload_threshold = limit
    account.auto_reload_amount = value
    account.auto_reload_method_id = method.id
    account.auto_reload_declines = 0
    account.auto_reload_backoff_until = None
    account.auto_reload_capped_until = None
    account.updated_at = now
    events.record(
        uow,
        "auto_reload.enabled",
        account.id,
        {
            "threshold": format_amount(limit, account.currency),
            "amount": format_amount(value, account.currency),
            "payment_method_id": method.id,
        },
        now,
    )
    if account.balance < limit:  # already below: do not wait for the sweep
        uow.enqueue(RELOAD_NOW_TASK, account.id)
    return accounts.view(account)


def turn_off(
    uow: UnitOfWork, *, account_id: object, now: datetime, reason: str = "customer"
) -> dict[str, Any]:
    account = ledger.lock_account(uow.session, account_id)
    if account.auto_reload_enabled:
        account.auto_reload_enabled = False
        account.updated_at = now
        events.record(uow, "auto_reload.disabled", account.id, {"reason": reason}, now)
    return accounts.view(account)


# --- the sweep ------------------------------------------------------------------------------


def due_query(as_of: datetime) -> Any:
    """Due accounts in one index-backed query (the partial index ix_accounts_auto_reload_due).

    A depleted account is the main case for a reload and is never skipped; only an
    operator's suspension stops automatic charging.
    """
    in_flight = exists().where(
        Charge.account_id == Account.id,
        Charge.purpose == PURPOSE,
        or_(
            Charge.status.in_(("processing", "unknown", "pending")),
            and_(Charge.status == "not_attempted", Charge.next_attempt_at > as_of),
        ),
    )
    return select(Account.id).where(
        Account.auto_reload_enabled,
        Account.balance < Account.auto_reload_threshold,
        or_(Account.suspension_reason.is_(None), Account.suspension_reason != "admin"),
        or_(
            Account.auto_reload_backoff_until.is_(None), Account.auto_reload_backoff_until <= as_of
        ),
        or_(Account.auto_reload_capped_until.is_(None), Account.auto_reload_capped_until <= as_of),
        ~in_flight,
    )


def sweep(uow: UnitOfWork, as_of: datetime) -> dict[str, int]:
    """Enqueue one reload per due account, after commit, `AUTO_RELOAD_BATCH_SIZE` accounts
    to a message. Safe to run twice: each reload is guarded under the account's row lock.

    Why batches: a Celery message costs about as much CPU as the reload it carries; one
    message per account halved the fleet's charge rate. Each account still gets its own
    reload, in its own transactions (`reload_batch`)."""
    ids = list(uow.session.scalars(due_query(as_of)))
    size = get_settings().auto_reload_batch_size
    for start in range(0, len(ids), size):
        uow.enqueue(RELOAD_BATCH_TASK, ids[start : start + size], as_of=isoformat(as_of))
    log.info("auto-reload sweep as of %s: %d due", isoformat(as_of), len(ids))
    return {"due": len(ids), "queued": len(ids)}


def reload_batch(
    uow: UnitOfWork,
    account_ids: list[str],
    as_of: datetime | None = None,
    *,
    budget_seconds: float,
    monotonic: Callable[[], float] = time.monotonic,
) -> dict[str, Any]:
    """One reload per account, one after another, each in its own transactions.

    An account's failure is rolled back, logged and counted; the others go on (its next
    chance is the next sweep, or the janitor for a charge already sent). A lost database
    connection stops the batch and is raised, so the task retries it: accounts already
    reloaded are then skipped under their lock. Once `budget_seconds` have passed (a slow
    PSP), the rest is handed on in a new message after commit, so no run nears the task
    time limit or the broker's visibility timeout.
    """
    if not isinstance(account_ids, list | tuple) or not all(
        isinstance(i, str) for i in account_ids
    ):
        raise ValidationError("account_ids", "must be a list of account ids")
    started = monotonic()
    counts: dict[str, int] = {"accounts": len(account_ids), "failed": 0, "handed_on": 0}
    for index, account_id in enumerate(account_ids):
        if index and monotonic() - started >= budget_seconds:
            rest = list(account_ids[index:])
            uow.enqueue(
                RELOAD_BATCH_TASK, rest, as_of=isoformat(as_of) if as_of is not None else None
            )
            counts["handed_on"] = len(rest)
            break
        try:
            status = reload(uow, account_id, as_of)["status"]
            uow.commit()
        except OperationalError:
            uow.rollback()
            raise
        except DomainError as exc:  # e.g. an account removed since the sweep: no traceback
            uow.rollback()
            log.warning("auto-reload of %s refused: %s", account_id, exc)
            counts["failed"] += 1
            continue
        except Exception:
            uow.rollback()
            log.exception("auto-reload of %s failed; the next sweep tries again", account_id)
            counts["failed"] += 1
            continue
        counts[status] = counts.get(status, 0) + 1
    uow.commit()
    return counts


# --- one reload ------------------------------------------------------------------------------


def reload_amount(balance: Decimal, threshold: Decimal, amount: Decimal) -> Decimal:
    """n x amount with the smallest n >= 1 such that balance + n x amount > threshold."""
    n = max(int((threshold - balance) // amount) + 1, 1)
    while balance + n * amount <= threshold:  # exact Decimal: at most one more step
        n += 1
    return n * amount


def _day_start(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def _month_start(moment: datetime) -> datetime:
    return _day_start(moment).replace(day=1)


def _next_month(moment: datetime) -> datetime:
    start = _month_start(moment)
    return (start + timedelta(days=32)).replace(day=1)


def _skip(account: Account, reason: str, **extra: Any) -> dict[str, Any]:
    return {
        "account_id": account.id,
        "status": "skipped",
        "reason": reason,
        "balance": format_amount(account.balance, account.currency),
        **extra,
    }


def _capped(
    uow: UnitOfWork, account: Account, period: str, until: datetime, limit: str, now: datetime
) -> dict[str, Any]:
    """Nothing is charged; one event per period (capped_until keeps the sweep away)."""
    account.auto_reload_capped_until = until
    events.record(
        uow,
        "auto_reload.capped",
        account.id,
        {
            "period": period,
            "limit": limit,
            "until": isoformat(until),
            "balance": format_amount(account.balance, account.currency),
            "threshold": format_amount(
                account.auto_reload_threshold or Decimal(0), account.currency
            ),
        },
        now,
    )
    return _skip(account, f"capped_{period}")


_COUNTED = Charge.status.in_(COUNTED)
# This account's reloads: how many are open, and what the caps count (built once).
_RELOADS_SO_FAR = select(
    func.count().filter(Charge.status.in_(OPEN)),
    func.count().filter(_COUNTED, Charge.created_at >= bindparam("day")),
    func.coalesce(
        func.sum(Charge.amount).filter(_COUNTED, Charge.created_at >= bindparam("month")),
        Decimal(0),
    ),
    func.count(),
).where(Charge.account_id == bindparam("account_id"), Charge.purpose == PURPOSE)


def _open_charge(session: Session, account_id: str) -> Charge | None:
    return session.scalars(
        select(Charge).where(
            Charge.account_id == account_id, Charge.purpose == PURPOSE, Charge.status.in_(OPEN)
        )
    ).one_or_none()


def reload(uow: UnitOfWork, account_id: object, as_of: datetime | None = None) -> dict[str, Any]:
    """Charge one reload for this account if every guard passes.

    Guards are judged as of `as_of` (the sweep's moment: replays and tests) or the clock.
    """
    now_fn: Callable[[], datetime] = (lambda: as_of) if as_of is not None else clock.now
    now = now_fn()
    session = uow.session
    account = ledger.lock_account(session, account_id)
    if not account.auto_reload_enabled:
        return _skip(account, "disabled")
    threshold, amount = account.auto_reload_threshold, account.auto_reload_amount
    if threshold is None or amount is None or account.balance >= threshold:
        return _skip(account, "above_threshold")
    if account.status == "suspended" and account.suspension_reason == "admin":
        return _skip(account, "suspended_by_operator")
    if account.auto_reload_backoff_until and account.auto_reload_backoff_until > now:
        return _skip(account, "backoff", until=isoformat(account.auto_reload_backoff_until))
    if account.auto_reload_capped_until and account.auto_reload_capped_until > now:
        return _skip(account, "capped")

    # One read of this account's reloads: the open one (if any), and what the caps count.
    settings = get_settings()
    open_count, today, month, earlier = session.execute(
        _RELOADS_SO_FAR,
        {"account_id": account.id, "day": _day_start(now), "month": _month_start(now)},
    ).one()
    open_charge = _open_charge(session, account.id) if open_count else None
    if (
        open_charge is not None
        and open_charge.status == "not_attempted"
        and (
            open_charge.payment_method_id != account.auto_reload_method_id
            or open_charge.amount != reload_amount(account.balance, threshold, amount)
        )
    ):
        # Settings or balance changed since the soft failure: never retry the old card or
        # the old amount; that charge never reached the PSP, so closing it is safe.
        charges.fail(
            uow,
            charges.lock(session, open_charge.id),
            "superseded",
            "auto-reload settings or balance changed before the retry",
            now,
        )
        open_charge = None
    if open_charge is not None:
        retry_due = open_charge.status == "not_attempted" and (
            open_charge.next_attempt_at is None or open_charge.next_attempt_at <= now
        )
        if not retry_due:
            return _skip(account, "in_flight", charge_id=open_charge.id)
        charge, must_call = charges.begin(
            uow,
            account_id=account.id,
            amount=format_amount(open_charge.amount),
            idempotency_key=open_charge.idempotency_key,
            payment_method_id=open_charge.payment_method_id,
            purpose=PURPOSE,
            now=now,
        )
    else:
        method = session.get(PaymentMethod, account.auto_reload_method_id or "")
        if method is None or method.removed_at is not None:
            account.auto_reload_enabled = False
            events.record(
                uow, "auto_reload.disabled", account.id, {"reason": "payment_method_missing"}, now
            )
            return _skip(account, "payment_method_missing")
        total = reload_amount(account.balance, threshold, amount)
        if open_count:  # the open charge was just closed as superseded: count it as before
            _, today, month, earlier = session.execute(
                _RELOADS_SO_FAR,
                {"account_id": account.id, "day": _day_start(now), "month": _month_start(now)},
            ).one()
        if today >= settings.auto_reload_max_per_day:
            return _capped(
                uow,
                account,
                "day",
                _day_start(now) + timedelta(days=1),
                str(settings.auto_reload_max_per_day),
                now,
            )
        if month + total > settings.auto_reload_max_amount_per_month:
            return _capped(
                uow,
                account,
                "month",
                _next_month(now),
                format_amount(settings.auto_reload_max_amount_per_month, account.currency),
                now,
            )
        sequence = earlier + 1
        charge, must_call = charges.begin(
            uow,
            account_id=account.id,
            amount=format_amount(total),
            idempotency_key=f"auto_reload:{account.id}:{sequence}",
            payment_method_id=method.id,
            purpose=PURPOSE,
            now=now,
            method=method,  # a new key under the account lock: insert it straight away
        )
    request = charges.request_for(session, charge) if must_call else None
    uow.commit()  # the charge row exists before the PSP is called; no connection is held
    if request is not None:
        result = get_adapter(charge.psp).charge(request)
        charge = charges.apply(uow, charge.id, result, now_fn())
        uow.commit()
    return {"account_id": charge.account_id, **charges.view(charge), "charge_id": charge.id}


# --- what an outcome means for the policy (called by charges.apply) ---------------------------


def after_outcome(uow: UnitOfWork, charge: Charge, account: Account | None, now: datetime) -> None:
    """Back-off, disable after N declines, soft retries, burst warning."""
    settings = get_settings()
    if charge.status == "succeeded":
        if account is None:
            return
        account.auto_reload_backoff_until = None  # any success ends the back-off
        account.auto_reload_declines = 0
        if charge.purpose == PURPOSE:
            _burst_check(uow, account, charge, now)
        return
    if charge.purpose != PURPOSE:
        return
    if charge.status == "declined":
        account = account or ledger.lock_account(uow.session, charge.account_id)
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
        else:
            delay = min(
                60 * 2 ** (charge.attempts - 1), settings.auto_reload_soft_retry_max_seconds
            )
            charge.next_attempt_at = now + timedelta(seconds=delay)


def _sequence(charge: Charge) -> int | None:
    """n of an auto-reload key `auto_reload:ACCOUNT:n` (the n-th reload of the account)."""
    prefix = f"{PURPOSE}:{charge.account_id}:"
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
                Charge.purpose == PURPOSE,
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
