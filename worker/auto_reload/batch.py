"""Sending auto-reloads: a batch of accounts in chunks, each charge under its lease.

A batch plans a chunk in one transaction (worker/auto_reload/plan.py), then sends each
charge to the PSP and records its answer in a transaction of its own (the charge engine's
`apply`, whose hooks run the failure policy). Chunks are paced by the PSP so queued
interactive work never waits long behind a sweep's backlog.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from sqlalchemy.exc import OperationalError

from config import get_settings
from worker.auto_reload import plan
from worker.auto_reload.plan import Planned, clock_for, result_of
from worker.charges import engine as charges
from worker.db.session import UnitOfWork
from worker.kernel import clock, task_names, validation
from worker.kernel.clock import isoformat
from worker.kernel.errors import DomainError, ValidationError
from worker.psp.registry import get_adapter

log = logging.getLogger(__name__)

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
    stops: Stops = (),
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

    `stops`: exceptions that must end the whole batch rather than one account (the task
    passes Celery's soft time limit); a lost database connection always does.
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
                task_names.AUTO_RELOAD_RELOAD_BATCH,
                remaining,
                as_of=isoformat(as_of) if as_of is not None else None,
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
        for account_id, outcome in reload_chunk(uow, chunk, as_of, pace, stops).items():
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


def reload_chunk(
    uow: UnitOfWork, chunk: list[str], as_of: datetime | None, pace: _Pace, stops: Stops = ()
) -> dict[str, dict[str, Any] | Exception]:
    """The chunk together; if planning it failed, each account alone, so one account's
    problem never stops the others."""
    try:
        return _reload_together(uow, chunk, as_of, pace, stops)
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
            outcomes[account_id] = _isolated(
                uow, partial(_reload_alone, uow, account_id, as_of), stops
            )
        finally:  # alone, the whole reload counts as the PSP's pace (the safe side)
            pace.psp_seconds += time.monotonic() - started
    return outcomes


def _reload_alone(uow: UnitOfWork, account_id: str, as_of: datetime | None) -> dict[str, Any]:
    result = reload(uow, account_id, as_of)
    uow.commit()
    return result


Stops = tuple[type[BaseException], ...]


def _isolated(
    uow: UnitOfWork, work: Callable[[], dict[str, Any]], stops: Stops
) -> dict[str, Any] | Exception:
    """One account's work: its result, or (rolled back) the exception that ended it.

    A lost database connection, or one of `stops`, ends the whole batch: it is raised."""
    stopping: Stops = (OperationalError, *stops)
    try:
        return work()
    except stopping:
        uow.rollback()
        raise
    except Exception as exc:
        uow.rollback()
        return exc


class _PlanningFailed(Exception):
    """Planning a chunk together failed before its commit (nothing of it was written)."""


def reload(uow: UnitOfWork, account_id: object, as_of: datetime | None = None) -> dict[str, Any]:
    """Charge one reload for this account if every guard passes: a chunk of one.

    Guards are judged as of `as_of` (the sweep's moment: replays and tests) or the clock.
    Returns the charge's view, or `status: skipped` with a reason. Raises ValidationError
    for a malformed id, NotFound for an unknown one."""
    if not isinstance(account_id, str) or not account_id.strip():
        raise ValidationError("account_id", "is required")
    wanted = account_id.strip()
    sends, outcomes = plan.plan_chunk(uow, [wanted], as_of)  # commits: the row before the PSP
    if sends:
        return send(uow, sends[0], clock_for(as_of))
    outcome = outcomes[wanted]
    if isinstance(outcome, Exception):
        raise outcome
    return outcome


def send(
    uow: UnitOfWork,
    planned: Planned,
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
    return result_of(charge)


class LeaseLost(RuntimeError):
    """A planned charge waited so long behind the others of its chunk that the janitor may
    have closed it: it is not sent (the janitor and the next sweep take it from there)."""


def _lease_holds(uow: UnitOfWork, planned: Planned) -> bool:
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
    uow: UnitOfWork, account_ids: list[str], as_of: datetime | None, pace: _Pace, stops: Stops
) -> dict[str, dict[str, Any] | Exception]:
    """Reload several accounts: their guards and charge rows in one transaction (the accounts
    locked in id order, their reloads and payment methods read in one statement each), then
    each PSP call and its answer in a transaction of its own.

    What an account's reload returned, or the exception that ended it. An exception while
    planning rolls the shared transaction back and raises: the caller then reloads the
    accounts one at a time.
    """
    stopping: Stops = (OperationalError, *stops)
    try:
        planned, outcomes = plan.plan_chunk(uow, account_ids, as_of)
    except stopping:
        uow.rollback()
        raise
    except Exception as exc:
        uow.rollback()
        raise _PlanningFailed from exc
    now_fn = clock_for(as_of)
    for step in planned:
        outcomes[step.account_id] = _isolated(uow, partial(send, uow, step, now_fn, pace), stops)
    return outcomes
