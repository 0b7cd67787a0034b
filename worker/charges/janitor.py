"""The janitor: resolve charges whose outcome is unknown by asking the PSP, never by
charging again (`balance.payments.sync_pending`, beat every PAYMENT_SYNC_INTERVAL).

Per charge: claim it in a short transaction and COMMIT, ask the PSP holding no connection
and no lock, then apply the answer under a fresh row lock (engine.apply).
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypedDict

from sqlalchemy import and_, or_, select, true

from config import get_settings
from worker.charges import engine
from worker.charges.models import Charge
from worker.charges.states import SYNCED
from worker.db.session import UnitOfWork
from worker.kernel import claims, clock
from worker.kernel.money import format_amount
from worker.outbox import events
from worker.psp.base import Outcome
from worker.psp.errors import TransportError
from worker.psp.registry import get_adapter

log = logging.getLogger(__name__)


def _due(now: datetime) -> Any:
    """Unresolved and due. A `processing` charge is due once its worker's lease is over and
    no janitor has claimed it or backed it off (`next_attempt_at`, set with the lease)."""
    return or_(
        and_(
            Charge.status == "processing",
            Charge.lease_until <= now,
            or_(Charge.next_attempt_at.is_(None), Charge.next_attempt_at <= now),
        ),
        and_(Charge.status.in_(("unknown", "pending")), Charge.next_attempt_at <= now),
    )


_SYNCED = frozenset(SYNCED)  # the statuses the janitor resolves


def _backoff(sync_attempts: int) -> timedelta:
    return engine.SYNC_SCHEDULE[min(max(sync_attempts, 1) - 1, len(engine.SYNC_SCHEDULE) - 1)]


def _reschedule(uow: UnitOfWork, charge: Charge, now: datetime, why: str) -> None:
    """Back the charge off after a look-up that did not resolve it (already counted in
    `sync_attempts` by its claim); ask for attention once enough look-ups have failed."""
    charge.next_attempt_at = now + _backoff(charge.sync_attempts)
    charge.updated_at = now
    if charge.sync_attempts >= get_settings().payment_sync_attention_after:
        _flag_attention(uow, charge, now, why)


def _flag_attention(uow: UnitOfWork, charge: Charge, now: datetime, why: str) -> None:
    """Once per charge: an operator must look (an event and an error in the log)."""
    if not charge.needs_attention:
        charge.needs_attention = True
        events.record(
            uow,
            "charge.needs_attention",
            charge.account_id,
            {
                "charge_id": charge.id,
                "status": charge.status,
                "psp": charge.psp,
                "amount": format_amount(charge.amount, charge.currency),
                "currency": charge.currency,
                "sync_attempts": charge.sync_attempts,
                "reason": why,
            },
            now,
        )
        log.error(
            "charge %s needs attention after %d look-ups: %s", charge.id, charge.sync_attempts, why
        )


@dataclass(frozen=True)
class Claim:
    """What a look-up needs, read under the claim's row lock: plain values, no ORM object
    (touching one after COMMIT could lazy-load and check a connection out again)."""

    charge_id: str
    idempotency_key: str
    psp: str

    @property
    def row_id(self) -> str:
        return self.charge_id


def claim_next(uow: UnitOfWork, now: datetime, skip: Collection[str] = frozenset()) -> Claim | None:
    """Claim the next due charge in one short transaction, and COMMIT.

    The claim counts the look-up and moves `next_attempt_at` on by its back-off step (what a
    failed look-up would set), from the later of `now` and the real clock: a concurrent
    janitor, live or replaying, does not find it due and does not ask the PSP too. A janitor
    that dies after claiming leaves the charge backed off, as a failed look-up would."""
    charge = uow.session.scalars(
        select(Charge)
        .where(_due(now), Charge.id.not_in(skip) if skip else true())
        .order_by(Charge.next_attempt_at, Charge.id)
        .limit(1)
        .with_for_update(skip_locked=True)
        .execution_options(populate_existing=True)
    ).one_or_none()
    if charge is None:
        uow.commit()
        return None
    claim = Claim(charge.id, charge.idempotency_key, charge.psp)
    charge.sync_attempts += 1
    charge.next_attempt_at = max(now, clock.now()) + _backoff(charge.sync_attempts)
    if charge.sync_attempts > get_settings().payment_sync_attention_after:
        # Claimed again and again without a look-up ever coming back (a worker that dies
        # on it): raise attention here, as a failed look-up would have.
        _flag_attention(uow, charge, now, "look-ups never completed")
    uow.commit()
    return claim


def sync_one(uow: UnitOfWork, claim: Claim, now: datetime) -> bool:
    """Resolve one claimed charge by look-up. True when it reached a terminal state.

    The PSP is asked with no transaction open and no connection checked out; the answer is
    applied in a new transaction under the charge's row lock. Does not commit."""
    adapter = get_adapter(claim.psp)
    try:
        found = adapter.lookup(claim.idempotency_key)
    except TransportError as exc:
        charge = engine.lock(uow.session, claim.charge_id)
        if charge.status in _SYNCED:
            _reschedule(uow, charge, now, f"look-up failed: {exc}")
        return False
    charge = engine.lock(uow.session, claim.charge_id)
    if charge.status not in _SYNCED:  # resolved (or handed back) while the PSP was asked
        if found is not None and found.outcome is Outcome.SUCCEEDED:
            engine.apply(uow, charge.id, found, now)  # flags money taken for a charge closed here
        return False
    if found is None:
        # Leases run on the real clock: a replay `as_of` a future moment must never declare
        # a call still in flight lost.
        lease_over = charge.lease_until is None or charge.lease_until <= min(now, clock.now())
        if charge.status in ("processing", "unknown") and lease_over:
            # The PSP never received it and our request can no longer land: not charged.
            engine.fail(uow, charge, "not_received", "the PSP has no record of this charge", now)
            return True
        _reschedule(uow, charge, now, "no record at the PSP yet")
        return False
    if found.outcome in (Outcome.UNKNOWN, Outcome.PENDING, Outcome.NOT_ATTEMPTED):
        if found.outcome is Outcome.PENDING and charge.status != "pending":
            engine.apply(uow, charge.id, found, now)
        _reschedule(uow, charge, now, f"still {found.outcome.value} at the PSP")
        return False
    engine.apply(uow, charge.id, found, now)
    return True


ABANDONED_AFTER = timedelta(minutes=30)


def _abandoned(now: datetime) -> Any:
    return and_(
        Charge.status == "not_attempted",
        Charge.purpose != "auto_reload",
        Charge.updated_at <= now - ABANDONED_AFTER,
    )


def close_abandoned(
    uow: UnitOfWork, now: datetime, batch_size: int = 100, stops: claims.Stops = ()
) -> int:
    """A top-up left `not_attempted` (its retries lost, or a soft failure from the CLI) never
    reached the PSP: after a while it is closed as failed, so nothing stays open for ever.
    Auto-reload retries its own soft failures.

    One charge per transaction, committed: the due ids are read, then each is locked under
    SKIP LOCKED, checked again and closed. One that raises is rolled back and logged at
    ERROR with its traceback, and the others go on (it is due again next run). One of
    `stops` is rolled back and raised. Returns the charges closed."""
    ids = uow.session.scalars(
        select(Charge.id).where(_abandoned(now)).order_by(Charge.updated_at).limit(batch_size)
    ).all()
    uow.commit()
    closed = 0
    for charge_id in ids:
        try:
            charge = uow.session.scalars(
                select(Charge)
                .where(Charge.id == charge_id, _abandoned(now))
                .with_for_update(skip_locked=True)
                .execution_options(populate_existing=True)
            ).one_or_none()
            if charge is None:  # closed, taken or changed meanwhile
                uow.commit()
                continue
            engine.fail(
                uow,
                charge,
                charge.decline_code or "not_attempted",
                charge.decline_text or "the PSP did not process the charge",
                now,
            )
            uow.commit()
        except stops:
            uow.rollback()
            raise
        except Exception:
            uow.rollback()
            log.exception("could not close abandoned charge %s", charge_id)
        else:
            closed += 1
    return closed


class SyncResult(TypedDict):
    """What a janitor run did: charges looked up, and those that reached a final state."""

    checked: int
    resolved: int


def sync_pending(
    uow: UnitOfWork, now: datetime, batch_size: int = 100, stops: claims.Stops = ()
) -> SyncResult:
    """The janitor: look up every unresolved charge that is due, one at a time.

    Per charge: claim it (short transaction, COMMIT), ask the PSP holding no connection and
    no lock, then apply the answer in a second short transaction under a fresh row lock
    (worker/kernel/claims.py). A charge whose look-up raises is backed off and counts
    towards attention. A charge that cannot be closed or looked up is isolated; one of
    `stops` (the task's soft time limit) ends the run and is raised."""
    closed = close_abandoned(uow, now, stops=stops)

    def recover(claim: Claim, exc: Exception) -> None:
        again = engine.lock(uow.session, claim.charge_id)
        if again.status in _SYNCED:
            _reschedule(uow, again, now, claims.failure(exc))

    done = claims.drain(
        uow,
        claim_next=lambda seen: claim_next(uow, now, seen),
        resolve=lambda claim: sync_one(uow, claim, now),
        recover=recover,
        batch_size=batch_size,
        log=log,
        failed="payment sync failed for charge",
        stops=stops,
    )
    return {"checked": done.checked, "resolved": closed + done.resolved}
