"""The refunds janitor: a refund whose answer was lost (`pending` past its lease, or
answered `unknown`) is resolved by looking it up at the PSP (or the bank payout service)
by its refund key, never by refunding again (`balance.refunds.sync`, beat
`refunds-sync` every PAYMENT_SYNC_INTERVAL).

Per refund, as the charges' janitor: claim it in a short transaction and COMMIT, ask with
no connection and no lock held, then apply the answer under a fresh row lock.

It also bounds a bank-transfer refund waiting for the customer's account
(`requires_details`, `sweep_details`): one reminder after REFUND_DETAILS_REMINDER_DAYS, and
after REFUND_DETAILS_EXPIRE_DAYS it fails (`details_not_received`), the money goes back on
the balance and an operator is told (project rule: every failure path ends, has a bound and
someone who is told).
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypedDict

from sqlalchemy import and_, or_, select, true

from config import get_settings
from worker.accounts import service as accounts
from worker.charges import engine as charges
from worker.charges.models import Charge
from worker.db.session import UnitOfWork
from worker.kernel import claims, clock
from worker.kernel.money import format_amount
from worker.outbox import events
from worker.psp.base import LooksUpRefunds, Outcome, RefundResult
from worker.psp.errors import RefundLookUpUnsupported, TransportError
from worker.psp.registry import get_adapter
from worker.refunds import documents, service
from worker.refunds.models import Refund, RefundStatus

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Claim:
    refund_id: str
    idempotency_key: str
    psp: str
    payout: bool  # a bank-transfer refund: asked of the payout service, not the PSP
    charge_reference: str | None = None  # the charge's psp_reference (PayPal asks by it)

    @property
    def row_id(self) -> str:
        return self.refund_id


def _claim_of(uow: UnitOfWork, refund: Refund) -> Claim:
    charge = uow.session.get(Charge, refund.charge_id)
    reference = charge.psp_reference if charge is not None else None
    return Claim(refund.id, refund.idempotency_key, refund.psp, refund.iban is not None, reference)


def claim_next(uow: UnitOfWork, now: datetime, skip: set[str]) -> Claim | None:
    """Claim the next due refund (lease over, look-up due) and COMMIT: the claim moves its
    next look-up on, so a concurrent janitor does not ask too."""
    real = clock.now()
    refund = uow.session.scalars(
        select(Refund)
        .where(
            Refund.status == RefundStatus.PENDING,
            Refund.next_attempt_at <= now,
            # As the charges' janitor: due once the lease is over as of `now`; only failing
            # one the PSP has no record of waits for the real clock (sync_one).
            or_(Refund.lease_until.is_(None), Refund.lease_until <= now),
            Refund.id.not_in(skip) if skip else Refund.id.is_not(None),
        )
        .order_by(Refund.next_attempt_at, Refund.id)
        .limit(1)
        .with_for_update(skip_locked=True)
        .execution_options(populate_existing=True)
    ).one_or_none()
    if refund is None:
        uow.commit()
        return None
    claim = _claim_of(uow, refund)
    refund.sync_attempts += 1
    step = charges.SYNC_SCHEDULE[min(refund.sync_attempts, len(charges.SYNC_SCHEDULE)) - 1]
    refund.next_attempt_at = max(now, real) + step
    if refund.sync_attempts > get_settings().payment_sync_attention_after:
        # Claimed again and again without a look-up ever coming back (a worker that dies
        # on it, a look-up that raises): raise attention here, as a failed look-up would.
        _attention(uow, refund, now, "look-ups never completed")
    uow.commit()
    return claim


def _ask(claim: Claim) -> RefundResult | None:
    """The PSP's (or payout service's) record of the refund by its key. Raises
    TransportError when it cannot be asked, RefundLookUpUnsupported when it cannot look
    refunds up (any other exception is a failure of the look-up: claims.drain isolates it)."""
    if claim.payout:
        from worker.refunds import bank

        return bank.payout_adapter().lookup(claim.idempotency_key)
    adapter = get_adapter(claim.psp)
    if not isinstance(adapter, LooksUpRefunds):
        raise RefundLookUpUnsupported(f"{claim.psp} cannot look refunds up: an operator must check")
    return adapter.lookup_refund(claim.idempotency_key, claim.charge_reference)


def _flag(uow: UnitOfWork, refund: Refund, now: datetime, why: str) -> None:
    """Flag `refund` for an operator: `needs_attention` and its `refund.needs_attention`."""
    refund.needs_attention = True
    events.record(
        uow,
        "refund.needs_attention",
        refund.account_id,
        {
            "refund_id": refund.id,
            "psp": refund.psp,
            "amount": format_amount(refund.amount, refund.currency),
            "currency": refund.currency,
            "reason": why,
        },
        now,
    )


def _attention(uow: UnitOfWork, refund: Refund, now: datetime, why: str) -> None:
    refund.updated_at = now
    if refund.sync_attempts >= get_settings().payment_sync_attention_after and not (
        refund.needs_attention
    ):
        _flag(uow, refund, now, why)
        log.error("refund %s needs attention: %s", refund.id, why)


def sync_one(uow: UnitOfWork, claim: Claim, now: datetime) -> bool:
    """Resolve one claimed refund by look-up; True when it reached a final state."""
    try:
        found = _ask(claim)
    except (TransportError, RefundLookUpUnsupported) as exc:
        refund = service.lock(uow.session, claim.refund_id)
        if refund.status == RefundStatus.PENDING:
            _attention(uow, refund, now, f"look-up failed: {exc}"[:300])
        return False
    refund = service.lock(uow.session, claim.refund_id)
    if refund.status != RefundStatus.PENDING:
        return False
    if found is None:
        lease_over = refund.lease_until is None or refund.lease_until <= min(now, clock.now())
        if lease_over:
            # The PSP never received it and our request can no longer land: nothing was
            # refunded, so the money goes back on the balance.
            service.fail(uow, refund, "not_received", "the PSP has no record of this refund", now)
            return True
        return False
    if found.outcome in (Outcome.SUCCEEDED, Outcome.DECLINED):
        service.apply(uow, refund.id, found, now)
        return True
    _attention(uow, refund, now, f"still {found.outcome.value} at the PSP")
    return False


class SyncResult(TypedDict):
    """Refunds looked up, and those that reached a final state."""

    checked: int
    resolved: int


def sync_pending(
    uow: UnitOfWork, now: datetime, batch_size: int = 100, stops: claims.Stops = ()
) -> SyncResult:
    """Look up every due refund, one at a time (claim, ask, apply: worker/kernel/claims.py).
    Safe to run twice or concurrently: a claim is taken under SKIP LOCKED and moves the
    refund's next look-up. A refund whose look-up raises stays backed off by its claim and
    counts towards attention (PAYMENT_SYNC_ATTENTION_AFTER), as a charge's does. One of
    `stops` (the task's soft time limit) ends the run and is raised."""

    def recover(claim: Claim, exc: Exception) -> None:
        refund = service.lock(uow.session, claim.refund_id)
        if refund.status == RefundStatus.PENDING:
            _attention(uow, refund, now, claims.failure(exc))

    done = claims.drain(
        uow,
        claim_next=lambda seen: claim_next(uow, now, seen),
        resolve=lambda claim: sync_one(uow, claim, now),
        recover=recover,
        batch_size=batch_size,
        log=log,
        failed="refund sync failed for",
        stops=stops,
    )
    return {"checked": done.checked, "resolved": done.resolved}


def look_up_now(uow: UnitOfWork, refund_id: str, now: datetime) -> None:
    """A repeated request for a refund still `pending`: ask once what became of it (never
    refund again); nothing known yet leaves it for the janitor. Commits."""
    refund = service.get(uow.session, refund_id)
    claim = _claim_of(uow, refund)
    uow.commit()
    try:
        found = _ask(claim)
    except (TransportError, RefundLookUpUnsupported):
        return  # anything else is raised: the request fails, the janitor still looks it up
    if found is not None and found.outcome in (Outcome.SUCCEEDED, Outcome.DECLINED):
        service.apply(uow, refund_id, found, now)
        uow.commit()


class DetailsResult(TypedDict):
    """Refunds waiting for details reminded, and those failed for want of them."""

    reminded: int
    expired: int


class JanitorResult(SyncResult, DetailsResult):
    """What `balance.refunds.sync` did: look-ups, and the refunds waiting for details."""


DETAILS_NOT_RECEIVED = "details_not_received"


def _next_waiting(
    uow: UnitOfWork,
    remind_before: datetime,
    expire_before: datetime,
    seen: Collection[str] = frozenset(),
) -> Refund | None:
    """The next refund waiting for details that is due (to expire, or not yet reminded and
    due a reminder) and not in `seen` (this run's), locked under SKIP LOCKED: a concurrent
    janitor takes another one."""
    return uow.session.scalars(
        select(Refund)
        .where(
            Refund.status == RefundStatus.REQUIRES_DETAILS,
            or_(
                Refund.created_at <= expire_before,
                # next_attempt_at is unused while a refund waits for details: it is set to
                # when the refund expires once the reminder went out (NULL: not reminded).
                and_(Refund.next_attempt_at.is_(None), Refund.created_at <= remind_before),
            ),
            Refund.id.not_in(seen) if seen else true(),
        )
        .order_by(Refund.created_at, Refund.id)
        .limit(1)
        .with_for_update(skip_locked=True)
        .execution_options(populate_existing=True)
    ).one_or_none()


def _expire(uow: UnitOfWork, refund: Refund, days: int, now: datetime) -> None:
    """The customer never named an account: the refund fails, its money goes back on the
    balance (service.fail: `refund_returned`, `refund.failed`, in this transaction) and it
    is flagged for an operator, who must return the money another way (seed 002)."""
    service.fail(
        uow,
        refund,
        DETAILS_NOT_RECEIVED,
        f"no account to refund to was named within {days} days",
        now,
    )
    _flag(uow, refund, now, DETAILS_NOT_RECEIVED)
    log.warning(
        "refund %s of account %s (%s %s) failed: %s within %d days; the amount is back on "
        "the balance",
        refund.id,
        refund.account_id,
        format_amount(refund.amount, refund.currency),
        refund.currency,
        DETAILS_NOT_RECEIVED,
        days,
    )


def sweep_details(
    uow: UnitOfWork, now: datetime, batch_size: int = 100, stops: claims.Stops = ()
) -> DetailsResult:
    """Bound the bank-transfer refunds waiting for details (`requires_details`), by age as
    of `now`: one reminder mail (account's locale) after REFUND_DETAILS_REMINDER_DAYS;
    failed with `details_not_received` after REFUND_DETAILS_EXPIRE_DAYS (money back,
    `refund.failed`, `needs_attention`, a warning logged). One refund per transaction,
    committed; safe to run twice or concurrently (row locks, SKIP LOCKED; the reminder is
    marked on the row and its mail is deduplicated). A refund whose reminder or expiry
    raises is rolled back, logged at ERROR with its traceback and left for the next run;
    the others go on. One of `stops` is rolled back and raised."""
    settings = get_settings()
    remind_days, expire_days = (
        settings.refund_details_reminder_days,
        settings.refund_details_expire_days,
    )
    remind_before = now - timedelta(days=remind_days)
    expire_before = now - timedelta(days=expire_days)
    reminded = expired = 0
    seen: set[str] = set()
    for _ in range(batch_size):
        refund = _next_waiting(uow, remind_before, expire_before, seen)
        if refund is None:
            break
        refund_id = refund.id
        seen.add(refund_id)
        try:
            expires_at = refund.created_at + timedelta(days=expire_days)
            if refund.created_at <= expire_before:
                _expire(uow, refund, expire_days, now)
                expiring = True
            else:
                account = accounts.get(uow.session, refund.account_id)
                documents.details_reminder(uow, account, refund, expires_at, now)
                refund.next_attempt_at = expires_at
                refund.updated_at = now
                expiring = False
            uow.commit()
        except stops:
            uow.rollback()
            raise
        except Exception:
            uow.rollback()
            log.exception("could not remind or expire refund %s waiting for details", refund_id)
        else:
            if expiring:
                expired += 1
            else:
                reminded += 1
    uow.commit()
    return {"reminded": reminded, "expired": expired}


def run(uow: UnitOfWork, now: datetime, stops: claims.Stops = ()) -> JanitorResult:
    """`balance.refunds.sync`: the look-ups (`sync_pending`), then the refunds waiting for
    details (`sweep_details`). One of `stops` (the task's soft time limit) ends it at once."""
    try:
        synced = sync_pending(uow, now, stops=stops)
    except stops:
        raise
    except Exception:
        # The refunds waiting for details are bounded whatever became of the look-ups; the
        # look-ups' error is still the task's (logged, retried by the next beat tick).
        uow.rollback()
        sweep_details(uow, now, stops=stops)
        raise
    swept = sweep_details(uow, now, stops=stops)
    return {**synced, **swept}
