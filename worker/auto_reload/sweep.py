"""The auto-reload sweep (beat, every AUTO_RELOAD_INTERVAL): find due accounts with one
index-backed query and enqueue their reloads, a batch to a message, after commit."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any, TypedDict

from sqlalchemy import and_, exists, or_, select

from config import get_settings
from worker.charges.models import Charge
from worker.charges.states import Purpose
from worker.db.session import UnitOfWork
from worker.kernel import task_names
from worker.kernel.clock import isoformat
from worker.ledger.models import Account
from worker.numbers import lookahead  # issue 15: fees due soon count against the balance

log = logging.getLogger(__name__)


def fees_horizon(as_of: datetime) -> datetime:
    """Issue 15: fees due by the next sweep are reloaded for now (numbers' look-ahead)."""
    return as_of + timedelta(seconds=get_settings().auto_reload_interval_seconds)


def due_query(as_of: datetime) -> Any:
    """Due accounts in one index-backed query (the partial index ix_accounts_auto_reload_due).

    A depleted account is the main case for a reload and is never skipped; only an
    operator's suspension stops automatic charging. `auto_reload_backoff_until` holds both
    back-offs (after a hard decline, and after a reload exhausted by soft failures: see
    worker/auto_reload/policy.py), so an account backing off is never due; nor is one whose
    last reload needed the cardholder (`auto_reload_action_required_at`, until a new default).
    """
    in_flight = exists().where(
        Charge.account_id == Account.id,
        Charge.purpose == Purpose.AUTO_RELOAD,
        or_(
            Charge.status.in_(("processing", "unknown", "pending")),
            and_(Charge.status == "not_attempted", Charge.next_attempt_at > as_of),
        ),
    )
    return select(Account.id).where(
        Account.auto_reload_enabled,
        or_(  # issue 15: or short once the fees due within the next interval are paid
            Account.balance < Account.auto_reload_threshold,
            lookahead.short_of_fees(fees_horizon(as_of)),
        ),
        or_(Account.suspension_reason.is_(None), Account.suspension_reason != "admin"),
        or_(
            Account.auto_reload_backoff_until.is_(None), Account.auto_reload_backoff_until <= as_of
        ),
        or_(Account.auto_reload_capped_until.is_(None), Account.auto_reload_capped_until <= as_of),
        # Paused until the cardholder authenticates (issue 17, requires_action).
        Account.auto_reload_action_required_at.is_(None),
        ~in_flight,
    )


class SweepResult(TypedDict):
    """Accounts found due, and reloads enqueued for them (the same: one each)."""

    due: int
    queued: int


def sweep(uow: UnitOfWork, as_of: datetime) -> SweepResult:
    """Enqueue one reload per due account, after commit, `AUTO_RELOAD_BATCH_SIZE` accounts
    to a message. Safe to run twice: each reload is guarded under the account's row lock.

    Why batches: a Celery message costs about as much CPU as the reload it carries; one
    message per account halved the fleet's charge rate. Each account still gets its own
    reload, in its own transactions (`reload_batch`)."""
    ids = list(uow.session.scalars(due_query(as_of)))
    size = get_settings().auto_reload_batch_size
    for start in range(0, len(ids), size):
        uow.enqueue(
            task_names.AUTO_RELOAD_RELOAD_BATCH, ids[start : start + size], as_of=isoformat(as_of)
        )
    log.info("auto-reload sweep as of %s: %d due", isoformat(as_of), len(ids))
    return {"due": len(ids), "queued": len(ids)}
