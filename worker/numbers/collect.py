"""The renewal job (`balance.fees.collect`, beat hourly; `balancectl jobs run fees`).

Computed from the database, so a missed run is caught up by the next: one query over two
partial indexes finds the accounts with a renewal due (`ix_numbers_renewal_due`) or a
suspension past NUMBER_CANCEL_AFTER_DEPLETION (`ix_numbers_suspended`); they are settled in
batches of FEES_BATCH_SIZE, each batch one transaction. Accounts are locked
`FOR UPDATE SKIP LOCKED` (in id order), so concurrent runs share the work; an account locked
by someone else (a debit, another run) is retried with a waiting lock at the end of the run,
and re-checked under it. Each fee is paid once per (number, period) by construction (the
period is read under the lock; its ledger reference is unique).

Per number, under its account's lock:

| state | what happens |
|---|---|
| suspended, account depleted for NUMBER_CANCEL_AFTER_DEPLETION | cancelled (`depleted`), mail |
| suspended, account active again | restored (the credit hook normally did it already) |
| renewal due, balance covers the fee | paid (`fee.paid`); again while periods are due |
| renewal due, balance short | stays due; `fee.payment_failed` + mail once per period; |
|   | retried at every run and as soon as the balance is credited (the credit hook) |
| still unpaid NUMBER_GRACE_DAYS after its renewal | cancelled (`unpaid`), mail |
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, union
from sqlalchemy.exc import OperationalError

from config import get_settings
from worker.db.session import UnitOfWork
from worker.kernel import task_names
from worker.kernel.clock import isoformat
from worker.ledger import service as ledger
from worker.ledger.models import Account
from worker.numbers import service as numbers
from worker.numbers.models import CancelReason, Number, NumberStatus

log = logging.getLogger(__name__)

COUNTS = ("due", "paid", "failed", "cancelled", "restored")


def due_query(as_of: datetime, cutoff: datetime) -> Any:
    """Ids of accounts with a number to act on, in id order: a renewal due by `as_of`, or a
    number suspended at or before `cutoff` (as_of - NUMBER_CANCEL_AFTER_DEPLETION)."""
    renewals = select(Number.account_id).where(
        Number.status != NumberStatus.CANCELLED, Number.next_renewal_at <= as_of
    )
    depleted = select(Number.account_id).where(
        Number.status == NumberStatus.SUSPENDED, Number.suspended_at <= cutoff
    )
    found = union(renewals, depleted).subquery()
    return select(found.c.account_id).order_by(found.c.account_id)


def _lock_batch(uow: UnitOfWork, ids: list[str]) -> list[Account]:
    return list(
        uow.session.scalars(
            select(Account)
            .where(Account.id.in_(ids))
            .order_by(Account.id)
            .with_for_update(skip_locked=True)
            .execution_options(populate_existing=True)
        )
    )


def settle(uow: UnitOfWork, account: Account, live: list[Number], as_of: datetime) -> Counter[str]:
    """Act on one locked account's live numbers (the table in the module docstring).

    `live`: its numbers that are not cancelled, locked, by renewal moment."""
    settings = get_settings()
    grace = timedelta(days=settings.number_grace_days)
    cutoff = as_of - timedelta(seconds=settings.number_cancel_after_depletion_seconds)
    counts: Counter[str] = Counter()
    failed: list[tuple[Number, int]] = []
    unpaid: list[Number] = []
    stale: list[Number] = []
    if account.status == "active":
        counts["restored"] += len(numbers.restore_numbers(uow, account, as_of, live))
    for number in live:
        depleted = account.status == "suspended" and account.suspension_reason == "depleted"
        if number.status == NumberStatus.CANCELLED:  # a depletion in this run with cancel 0
            continue
        if (
            number.status == NumberStatus.SUSPENDED
            and depleted
            and number.suspended_at is not None
            and number.suspended_at <= cutoff
        ):
            counts["due"] += 1
            stale.append(number)
            continue
        if number.next_renewal_at > as_of:
            continue
        counts["due"] += 1
        while number.status != NumberStatus.CANCELLED and number.next_renewal_at <= as_of:
            period = number.periods_paid
            if numbers.pay(uow, account, number, as_of) is not None:
                counts["paid"] += 1
                continue
            if as_of >= number.next_renewal_at + grace:
                unpaid.append(number)
            else:
                failed.append((number, period))
                counts["failed"] += 1
            break
    counts["cancelled"] += len(
        numbers.cancel_numbers(uow, account, stale, CancelReason.DEPLETED, as_of)
    )
    counts["cancelled"] += len(
        numbers.cancel_numbers(uow, account, unpaid, CancelReason.UNPAID, as_of)
    )
    numbers.report_failures(uow, account, failed, as_of)
    upcoming = [n.next_renewal_at for n in live if n.status != NumberStatus.CANCELLED]
    account.next_fee_at = min(upcoming) if upcoming else None
    return counts


def collect(
    uow: UnitOfWork,
    as_of: datetime,
    *,
    budget_seconds: float | None = None,
    monotonic: Callable[[], float] = time.monotonic,
) -> dict[str, Any]:
    """Settle every account with something due as of `as_of`; safe to run twice, late, or
    concurrently. Returns `due, paid, failed, cancelled` (numbers) and more counts.

    A batch that fails (anything but a lost connection, which the task retries) is rolled
    back and its accounts settled one at a time, so one bad account never holds up the rest;
    each failure is logged and counted in `errors`. After `budget_seconds` (the task passes
    half its soft time limit) the run stops between batches and hands the rest on: the same
    job, same `as_of`, enqueued after commit (`handed_on`), which selects what is still due."""
    started = monotonic()
    settings = get_settings()
    cutoff = as_of - timedelta(seconds=settings.number_cancel_after_depletion_seconds)
    ids = list(uow.session.scalars(due_query(as_of, cutoff)))
    uow.commit()
    totals: Counter[str] = Counter()
    busy: list[str] = []
    size = settings.fees_batch_size
    handed_on = False
    for start in range(0, len(ids), size):
        if budget_seconds is not None and monotonic() - started > budget_seconds:
            uow.enqueue(task_names.FEES_COLLECT, as_of=isoformat(as_of))
            handed_on = True
            break
        chunk = ids[start : start + size]
        try:
            locked = _lock_batch(uow, chunk)
            held = {a.id for a in locked}
            live = numbers.live_numbers(uow.session, sorted(held))
            batch: Counter[str] = Counter()
            for account in locked:
                batch += settle(uow, account, live[account.id], as_of)
            uow.commit()
        except OperationalError:
            raise
        except Exception:
            log.exception("fees: a batch of %d accounts failed; one at a time", len(chunk))
            uow.rollback()
            busy.extend(chunk)
            continue
        totals += batch
        busy.extend(i for i in chunk if i not in held)
    for account_id in busy:  # locked by someone else, or in a failed batch: wait, re-check
        try:
            totals += collect_account(uow, account_id, as_of)
            uow.commit()
        except OperationalError:
            raise
        except Exception:
            log.exception("fees: account %s failed; the next run retries it", account_id)
            uow.rollback()
            totals["errors"] += 1
    result: dict[str, Any] = {"as_of": isoformat(as_of), "accounts": len(ids)}
    result.update({name: totals[name] for name in (*COUNTS, "errors")})
    result["handed_on"] = handed_on
    log.info("fees as of %s: %s", isoformat(as_of), result)
    return result


def collect_account(uow: UnitOfWork, account_id: str, as_of: datetime) -> Counter[str]:
    """Settle one account now, waiting for its lock (the credit hook's follow-up, and the
    job's accounts that were busy). The caller commits."""
    account = ledger.lock_account(uow.session, account_id)
    return settle(uow, account, numbers.live_numbers(uow.session, [account.id])[account.id], as_of)
