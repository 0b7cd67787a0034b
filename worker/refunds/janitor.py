"""The refunds janitor: a refund whose answer was lost (`pending` past its lease, or
answered `unknown`) is resolved by looking it up at the PSP (or the bank payout service)
by its refund key, never by refunding again (`balance.refunds.sync`, beat
`refunds-sync` every PAYMENT_SYNC_INTERVAL).

Per refund, as the charges' janitor: claim it in a short transaction and COMMIT, ask with
no connection and no lock held, then apply the answer under a fresh row lock.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import TypedDict

from sqlalchemy import or_, select

from config import get_settings
from worker.charges import engine as charges
from worker.db.session import UnitOfWork
from worker.kernel import clock
from worker.kernel.money import format_amount
from worker.outbox import events
from worker.psp.base import LooksUpRefunds, Outcome, RefundResult
from worker.psp.errors import TransportError
from worker.psp.registry import get_adapter
from worker.refunds import service
from worker.refunds.models import Refund, RefundStatus

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Claim:
    refund_id: str
    idempotency_key: str
    psp: str
    payout: bool  # a bank-transfer refund: asked of the payout service, not the PSP


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
    claim = Claim(refund.id, refund.idempotency_key, refund.psp, refund.iban is not None)
    refund.sync_attempts += 1
    step = charges.SYNC_SCHEDULE[min(refund.sync_attempts, len(charges.SYNC_SCHEDULE)) - 1]
    refund.next_attempt_at = max(now, real) + step
    uow.commit()
    return claim


def _ask(claim: Claim) -> RefundResult | None:
    """The PSP's (or payout service's) record of the refund by its key. Raises
    TransportError when it cannot be asked, LookupError when it cannot look refunds up."""
    if claim.payout:
        from worker.refunds import bank

        return bank.payout_adapter().lookup(claim.idempotency_key)
    adapter = get_adapter(claim.psp)
    if not isinstance(adapter, LooksUpRefunds):
        raise LookupError(f"{claim.psp} cannot look refunds up: an operator must check")
    return adapter.lookup_refund(claim.idempotency_key)


def _attention(uow: UnitOfWork, refund: Refund, now: datetime, why: str) -> None:
    refund.updated_at = now
    if refund.sync_attempts >= get_settings().payment_sync_attention_after and not (
        refund.needs_attention
    ):
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
        log.error("refund %s needs attention: %s", refund.id, why)


def sync_one(uow: UnitOfWork, claim: Claim, now: datetime) -> bool:
    """Resolve one claimed refund by look-up; True when it reached a final state."""
    try:
        found = _ask(claim)
    except (TransportError, LookupError) as exc:
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


def sync_pending(uow: UnitOfWork, now: datetime, batch_size: int = 100) -> SyncResult:
    """Look up every due refund, one at a time (claim, ask, apply). Safe to run twice or
    concurrently: a claim is taken under SKIP LOCKED and moves the refund's next look-up."""
    checked = resolved = 0
    seen: set[str] = set()
    while checked < batch_size:
        claim = claim_next(uow, now, seen)
        if claim is None:
            break
        seen.add(claim.refund_id)
        checked += 1
        try:
            if sync_one(uow, claim, now):
                resolved += 1
            uow.commit()
        except Exception:  # isolate it: the claim already backed it off
            uow.rollback()
            log.exception("refund sync failed for %s", claim.refund_id)
    uow.commit()
    return {"checked": checked, "resolved": resolved}


def look_up_now(uow: UnitOfWork, refund_id: str, now: datetime) -> None:
    """A repeated request for a refund still `pending`: ask once what became of it (never
    refund again); nothing known yet leaves it for the janitor. Commits."""
    refund = service.get(uow.session, refund_id)
    claim = Claim(refund.id, refund.idempotency_key, refund.psp, refund.iban is not None)
    uow.commit()
    try:
        found = _ask(claim)
    except (TransportError, LookupError):
        return
    if found is not None and found.outcome in (Outcome.SUCCEEDED, Outcome.DECLINED):
        service.apply(uow, refund_id, found, now)
        uow.commit()
