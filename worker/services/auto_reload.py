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
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import partial
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded
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
from worker.psp.base import ChargeRequest
from worker.psp.registry import get_adapter
from worker.services import (
    accounts,
    charges,
    events,
    ledger,
    notices,
    payment_methods,
    usage,
    validation,
)

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


PLAN_CHUNK = 20  # accounts planned in one transaction (their rows locked together)
FIRST_CHUNK = 4  # until the PSP's pace is known, so the first chunk fits a short budget


def reload_batch(
    uow: UnitOfWork,
    account_ids: list[str],
    as_of: datetime | None = None,
    *,
    budget_seconds: float,
    slice_seconds: float | None = None,
    others_waiting: Callable[[], bool] = lambda: False,
    monotonic: Callable[[], float] = time.monotonic,
) -> dict[str, Any]:
    """One reload per account: up to `PLAN_CHUNK` accounts planned in one transaction, then
    each charge sent and recorded in its own (`_reload_together`).

    An account's failure is rolled back, logged and counted; the others go on (its next
    chance is the next sweep, or the janitor for a charge already sent). A lost database
    connection stops the batch and is raised, so the task retries it: accounts already
    reloaded are then skipped under their lock.

    Between chunks the batch hands the rest on in a new message (after commit) when
    `others_waiting()` says interactive work (a debit, an on-debit reload) is queued for a
    worker thread, or once `budget_seconds` have passed. A chunk is sized to take about
    `slice_seconds` at the PSP's pace so far (the slowest chunk's seconds per account; the
    first is `FIRST_CHUNK` accounts), and never more than half a charge lease or the budget
    left: queued interactive work waits for a thread about one slice, not for the backlog
    (with a 300 ms PSP, a batch of 40 run to the end held its thread 12 s), while a batch
    nobody waits behind keeps its chunks and its message. The pace is the PSP's, not the
    wall clock's: under load wall time per account grows with the load itself.
    """
    if not isinstance(account_ids, list | tuple) or not all(
        isinstance(i, str) for i in account_ids
    ):
        raise ValidationError("account_ids", "must be a list of account ids")
    for account_id in account_ids:
        validation.refuse_control(account_id, "account_ids")
    slice_seconds = budget_seconds if slice_seconds is None else slice_seconds
    started = monotonic()
    remaining = list(dict.fromkeys(account_ids))  # each account once, in the order sent
    counts: dict[str, int] = {"accounts": len(remaining), "errors": 0, "handed_on": 0}
    per_account = 0.0  # the PSP's seconds per account, the slowest chunk's average so far
    pace = _Pace()
    while remaining:
        spent = monotonic() - started
        if len(remaining) < counts["accounts"] and (spent >= budget_seconds or others_waiting()):
            uow.enqueue(
                RELOAD_BATCH_TASK, remaining, as_of=isoformat(as_of) if as_of is not None else None
            )
            counts["handed_on"] = len(remaining)
            break
        size = FIRST_CHUNK
        if per_account > 0:  # a slice, within the budget left and half a charge lease
            fits = min(
                slice_seconds, budget_seconds - spent, get_settings().charge_lease_seconds / 2
            )
            size = max(1, min(PLAN_CHUNK, int(fits / per_account)))
        chunk, remaining = remaining[:size], remaining[size:]
        psp_before = pace.psp_seconds
        for account_id, outcome in _reload_chunk(uow, chunk, as_of, pace).items():
            if isinstance(outcome, Exception):
                counts["errors"] += 1
                if isinstance(outcome, DomainError):  # e.g. an account removed since the sweep
                    log.warning("auto-reload of %s refused: %s", account_id, outcome)
                else:
                    log.error(
                        "auto-reload of %s failed; the next sweep tries again",
                        account_id,
                        exc_info=outcome,
                    )
            else:
                counts[outcome["status"]] = counts.get(outcome["status"], 0) + 1
        per_account = max(per_account, (pace.psp_seconds - psp_before) / len(chunk))
    uow.commit()
    return counts


@dataclass
class _Pace:
    """Seconds spent waiting for the PSP (a batch sizes its chunks by it)."""

    psp_seconds: float = 0.0


def _reload_chunk(
    uow: UnitOfWork, chunk: list[str], as_of: datetime | None, pace: _Pace
) -> dict[str, dict[str, Any] | Exception]:
    """The chunk together; if planning it failed, each account alone, so one account's
    problem never stops the others."""
    try:
        return _reload_together(uow, chunk, as_of, pace)
    except _PlanningFailed as exc:
        log.warning(
            "auto-reload: planning %d accounts together failed (%s: %s); one at a time",
            len(chunk),
            type(exc.__cause__).__name__,
            exc.__cause__,
        )
    outcomes: dict[str, dict[str, Any] | Exception] = {}
    for account_id in chunk:
        started = time.monotonic()
        try:
            outcomes[account_id] = _isolated(uow, partial(_reload_alone, uow, account_id, as_of))
        finally:  # alone, the whole reload counts as the PSP's pace (the safe side)
            pace.psp_seconds += time.monotonic() - started
    return outcomes


def _reload_alone(uow: UnitOfWork, account_id: str, as_of: datetime | None) -> dict[str, Any]:
    result = reload(uow, account_id, as_of)
    uow.commit()
    return result


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
# Per account: its reloads that are open, and what the caps count (built once). Read after
# the accounts are locked, so it sees every reload committed before the lock was granted.
_RELOADS_SO_FAR = (
    select(
        Charge.account_id,
        func.count().filter(Charge.status.in_(OPEN)),
        func.count().filter(_COUNTED, Charge.created_at >= bindparam("day")),
        func.coalesce(
            func.sum(Charge.amount).filter(_COUNTED, Charge.created_at >= bindparam("month")),
            Decimal(0),
        ),
        func.count(),
    )
    .where(Charge.account_id.in_(bindparam("ids", expanding=True)), Charge.purpose == PURPOSE)
    .group_by(Charge.account_id)
)
_LOCK_ACCOUNTS = (
    select(Account)
    .where(Account.id.in_(bindparam("ids", expanding=True)))
    .order_by(Account.id)  # one order for every locker: batches never deadlock each other
    .with_for_update()
    .execution_options(populate_existing=True)
)
_METHODS = select(PaymentMethod).where(PaymentMethod.id.in_(bindparam("ids", expanding=True)))


@dataclass(frozen=True)
class SoFar:
    """An account's auto-reload charges: open now, counted today and this month, ever."""

    open: int = 0
    today: int = 0
    month: Decimal = Decimal(0)
    earlier: int = 0


def _reloads_so_far(session: Session, account_ids: list[str], now: datetime) -> dict[str, SoFar]:
    rows = session.execute(
        _RELOADS_SO_FAR, {"ids": account_ids, "day": _day_start(now), "month": _month_start(now)}
    )
    return {row[0]: SoFar(*row[1:]) for row in rows}


def _open_charge(session: Session, account_id: str) -> Charge | None:
    return session.scalars(
        select(Charge).where(
            Charge.account_id == account_id, Charge.purpose == PURPOSE, Charge.status.in_(OPEN)
        )
    ).one_or_none()


@dataclass(frozen=True)
class _NewCharge:
    """A new reload's charge row, inserted with the rest of its batch in one statement."""

    account: Account
    method: PaymentMethod
    row: dict[str, Any]


@dataclass(frozen=True)
class _Planned:
    """A charge committed (or re-armed) under the account lock, to send after COMMIT.

    Plain values, no ORM object: after another account's rollback, touching an expired
    object would reload it and hold a connection open through the PSP call."""

    charge_id: str
    account_id: str
    psp: str
    lease_until: datetime | None
    request: ChargeRequest | None
    view: dict[str, Any]  # what to return when there is nothing to send


def _planned(session: Session, charge: Charge, must_call: bool) -> _Planned:
    return _Planned(
        charge.id,
        charge.account_id,
        charge.psp,
        charge.lease_until,
        charges.request_for(session, charge) if must_call else None,
        _result(charge),
    )


def _result(charge: Charge) -> dict[str, Any]:
    """What a reload returns for its charge."""
    return {"account_id": charge.account_id, **charges.view(charge), "charge_id": charge.id}


# Exceptions that stop a whole batch (the task retries it, or the time limit ends it); any
# other exception ends only the account it came from.
_STOPS_THE_BATCH = (OperationalError, SoftTimeLimitExceeded)


def _isolated(uow: UnitOfWork, work: Callable[[], dict[str, Any]]) -> dict[str, Any] | Exception:
    """One account's work: its result, or (rolled back) the exception that ended it."""
    try:
        return work()
    except _STOPS_THE_BATCH:
        uow.rollback()
        raise
    except Exception as exc:
        uow.rollback()
        return exc


class _PlanningFailed(Exception):
    """Planning a chunk together failed before its commit (nothing of it was written)."""


def reload(uow: UnitOfWork, account_id: object, as_of: datetime | None = None) -> dict[str, Any]:
    """Charge one reload for this account if every guard passes.

    Guards are judged as of `as_of` (the sweep's moment: replays and tests) or the clock.
    """
    now_fn = _clock(as_of)
    now = now_fn()
    account = ledger.lock_account(uow.session, account_id)
    planned = _plan(uow, account, now, None, None)
    if isinstance(planned, dict):
        return planned
    if not isinstance(planned, _Planned):  # alone, `_plan` inserts the row itself
        raise RuntimeError("auto-reload: a lone reload was planned as a batch row")
    uow.commit()  # the charge row exists before the PSP is called; no connection is held
    return _send(uow, planned, now_fn)


def _clock(as_of: datetime | None) -> Callable[[], datetime]:
    return (lambda: as_of) if as_of is not None else clock.now


def _plan(
    uow: UnitOfWork,
    account: Account,
    now: datetime,
    so_far: SoFar | None,
    methods: dict[str, PaymentMethod] | None,
) -> dict[str, Any] | _Planned | _NewCharge:
    """Every guard, under the account's row lock; a skip, or the charge to send.

    `so_far` and `methods` come read in advance for a batch of locked accounts (read after
    the locks were granted), and a new charge is then returned as a row for the batch to
    insert; None reads them for this account alone and inserts the row.
    """
    session = uow.session
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

    settings = get_settings()
    if so_far is None:
        so_far = _reloads_so_far(session, [account.id], now).get(account.id, SoFar())
    open_charge = _open_charge(session, account.id) if so_far.open else None
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
        session.flush()  # count it as before, now closed
        so_far = _reloads_so_far(session, [account.id], now).get(account.id, SoFar())
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
        method_id = account.auto_reload_method_id or ""
        method = (
            methods.get(method_id) if methods is not None else session.get(PaymentMethod, method_id)
        )
        if method is None or method.removed_at is not None:
            account.auto_reload_enabled = False
            events.record(
                uow, "auto_reload.disabled", account.id, {"reason": "payment_method_missing"}, now
            )
            return _skip(account, "payment_method_missing")
        total = reload_amount(account.balance, threshold, amount)
        if so_far.today >= settings.auto_reload_max_per_day:
            return _capped(
                uow,
                account,
                "day",
                _day_start(now) + timedelta(days=1),
                str(settings.auto_reload_max_per_day),
                now,
            )
        if so_far.month + total > settings.auto_reload_max_amount_per_month:
            return _capped(
                uow,
                account,
                "month",
                _next_month(now),
                format_amount(settings.auto_reload_max_amount_per_month, account.currency),
                now,
            )
        key = f"auto_reload:{account.id}:{so_far.earlier + 1}"
        if methods is not None:  # a batch: its new rows go in together
            row = charges.new_row(
                account,
                method,
                amount=format_amount(total),
                idempotency_key=key,
                purpose=PURPOSE,
                now=now,
            )
            return _NewCharge(account, method, row)
        charge, must_call = charges.begin(
            uow,
            account_id=account.id,
            amount=format_amount(total),
            idempotency_key=key,
            payment_method_id=method.id,
            purpose=PURPOSE,
            now=now,
            method=method,  # a new key under the account lock: insert it straight away
        )
    return _planned(session, charge, must_call)


def _send(
    uow: UnitOfWork,
    planned: _Planned,
    now_fn: Callable[[], datetime],
    pace: _Pace | None = None,
) -> dict[str, Any]:
    """Call the PSP (no transaction open) and record its answer."""
    if planned.request is None:
        return planned.view
    if not _lease_holds(uow, planned):
        raise LeaseLost(f"charge {planned.charge_id}: its lease ran out before it was sent")
    started = time.monotonic()
    try:
        result = get_adapter(planned.psp).charge(planned.request)
    finally:
        if pace is not None:
            pace.psp_seconds += time.monotonic() - started
    charge = charges.apply(uow, planned.charge_id, result, now_fn())
    uow.commit()
    return _result(charge)


class LeaseLost(RuntimeError):
    """A planned charge waited so long behind the others of its chunk that the janitor may
    have closed it: it is not sent (the janitor and the next sweep take it from there)."""


def _lease_holds(uow: UnitOfWork, planned: _Planned) -> bool:
    """True when the charge's lease has at least half its length left, or was renewed.

    A chunk's charges are committed together and sent one after another; behind a slow PSP
    the last could near the end of its lease, after which the janitor may look it up, find
    nothing and close it, and money taken then would never be credited. Renewing happens
    only while the lease still holds and the charge is still `processing`."""
    lease = get_settings().charge_lease_seconds
    real_now = clock.now()
    if planned.lease_until is None or planned.lease_until - real_now > timedelta(seconds=lease / 2):
        return True
    renewed = charges.renew_lease(uow, planned.charge_id, real_now)
    uow.commit()
    return renewed


def _reload_together(
    uow: UnitOfWork, account_ids: list[str], as_of: datetime | None, pace: _Pace
) -> dict[str, dict[str, Any] | Exception]:
    """Reload several accounts: their guards and charge rows in one transaction (the accounts
    locked in id order, their reloads and payment methods read in one statement each), then
    each PSP call and its answer in a transaction of its own.

    What an account's reload returned, or the exception that ended it. An exception while
    planning rolls the shared transaction back and raises: the caller then reloads the
    accounts one at a time.
    """
    try:
        planned, outcomes = _plan_together(uow, account_ids, as_of)
    except _STOPS_THE_BATCH:
        uow.rollback()
        raise
    except Exception as exc:
        uow.rollback()
        raise _PlanningFailed from exc
    now_fn = _clock(as_of)
    for step in planned:
        outcomes[step.account_id] = _isolated(uow, partial(_send, uow, step, now_fn, pace))
    return outcomes


def _plan_together(
    uow: UnitOfWork, account_ids: list[str], as_of: datetime | None
) -> tuple[list[_Planned], dict[str, dict[str, Any] | Exception]]:
    """The chunk's guards and charge rows, committed: what to send, and the outcomes known."""
    session = uow.session
    now = _clock(as_of)()
    ids = sorted(set(account_ids))
    locked = list(session.scalars(_LOCK_ACCOUNTS, {"ids": ids}))
    so_far = _reloads_so_far(session, [a.id for a in locked], now)
    wanted = sorted({a.auto_reload_method_id for a in locked if a.auto_reload_method_id})
    methods = {m.id: m for m in session.scalars(_METHODS, {"ids": wanted})} if wanted else {}
    outcomes: dict[str, dict[str, Any] | Exception] = {
        i: NotFound("account_id", f"no account {i[:60]!r}") for i in ids
    }
    planned: list[_Planned] = []
    new: list[_NewCharge] = []
    for account in locked:
        step = _plan(uow, account, now, so_far.get(account.id, SoFar()), methods)
        if isinstance(step, _Planned):
            planned.append(step)
        elif isinstance(step, _NewCharge):
            new.append(step)
        else:
            outcomes[account.id] = step
    inserted = charges.insert_if_absent(session, [n.row for n in new]) if new else {}
    for n in new:
        charge = inserted.get(n.row["idempotency_key"])
        must_call = True
        if charge is None:  # the key exists (it never should under the lock): check it
            charge, must_call = charges.begin(
                uow,
                account_id=n.account.id,
                amount=format_amount(n.row["amount"]),
                idempotency_key=n.row["idempotency_key"],
                payment_method_id=n.method.id,
                purpose=PURPOSE,
                now=now,
            )
        planned.append(_planned(session, charge, must_call))
    uow.commit()  # every charge row exists before its PSP call
    return planned, outcomes


# --- what an outcome means for the policy (called by charges.apply) ---------------------------


def after_outcome(
    uow: UnitOfWork,
    charge: Charge,
    account: Account | None,
    now: datetime,
    locked: Account | None = None,
) -> None:
    """Back-off, disable after N declines, soft retries, burst warning.

    `account`: the account a success credited; `locked`: the charge's account if the caller
    holds its lock already."""
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
