"""The charge engine: exactly-once charging.

1. `begin` commits a charge row with a unique idempotency key (status `processing`, a
   lease) *before* the PSP is called; the PSP gets that key.
2. The adapter answers with one of five outcomes; `apply` records it under the charge's
   row lock. Success credits the balance in the same DB transaction (ledger reference =
   charge id, unique), so a charge is credited at most once whoever applies it.
3. `sync_pending` (the janitor) resolves charges whose outcome is unknown, or whose
   worker vanished (lease expired), by *looking them up* at the PSP: never by charging.

Status only moves forward; succeeded, declined and failed are terminal.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import and_, bindparam, or_, select, true, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from config import get_settings
from worker import clock
from worker.clock import isoformat
from worker.db.models import Account, Charge, PaymentMethod, new_id
from worker.db.session import UnitOfWork
from worker.errors import IdempotencyConflict, NotFound, ValidationError
from worker.money import exponent, format_amount, parse_amount, to_minor_units
from worker.psp.base import ChargeRequest, ChargeResult, Outcome
from worker.psp.errors import TransportError
from worker.psp.registry import get_adapter
from worker.services import accounts, events, ledger, payment_methods, settlement, validation

log = logging.getLogger(__name__)

TERMINAL = frozenset({"succeeded", "declined", "failed"})
_ALLOWED: dict[str, frozenset[str]] = {
    "processing": frozenset(
        {"succeeded", "pending", "declined", "not_attempted", "unknown", "failed"}
    ),
    "unknown": frozenset({"succeeded", "pending", "declined", "failed"}),
    "pending": frozenset({"succeeded", "declined", "failed"}),
    "not_attempted": frozenset({"processing", "failed"}),
}
# Janitor look-up schedule: minutes, then hours, then daily.
SYNC_SCHEDULE = (
    [timedelta(minutes=m) for m in (1, 2, 5, 15, 30)]
    + [timedelta(hours=h) for h in (1, 3, 6, 12)]
    + [timedelta(days=1)]
)
RECEIVABLE = "psp_pending"  # counter-account: money the PSP owes us, not yet available
INTERNAL_KEYS = ("auto_reload:",)  # keys the system makes; callers may not use them


_STATUS_FOR = {
    Outcome.SUCCEEDED: "succeeded",
    Outcome.DECLINED: "declined",
    Outcome.PENDING: "pending",
    Outcome.NOT_ATTEMPTED: "not_attempted",
    Outcome.UNKNOWN: "unknown",
}


def _orphaned_success(uow: UnitOfWork, charge: Charge, result: ChargeResult, now: datetime) -> None:
    """The PSP took money for a charge we had already closed: never silent."""
    charge.needs_attention = True
    charge.updated_at = now
    events.record(
        uow,
        "charge.needs_attention",
        charge.account_id,
        {
            "charge_id": charge.id,
            "status": charge.status,
            "psp": charge.psp,
            "psp_reference": result.psp_reference,
            "reason": "succeeded_at_psp_after_close",
            "amount": format_amount(charge.amount, charge.currency),
            "currency": charge.currency,
        },
        now,
    )
    log.error(
        "charge %s is %s here but succeeded at %s (%s): needs attention",
        charge.id,
        charge.status,
        charge.psp,
        result.psp_reference,
    )


class IllegalTransition(RuntimeError):
    """A bug, never user input: terminal states never change."""


def _processed_at(charge: Charge, result: ChargeResult, now: datetime) -> datetime:
    """When the PSP took the money, if it said: naive read as UTC, and kept between the
    charge's creation and now, so a PSP's clock can never block or skew a credit."""
    moment = result.processed_at
    if moment is None:
        return now
    if moment.tzinfo is None or moment.utcoffset() is None:
        moment = moment.replace(tzinfo=UTC)
    return max(min(moment, now), min(charge.created_at, now))


def move(charge: Charge, status: str, now: datetime) -> None:
    if status == charge.status:
        return
    if status not in _ALLOWED.get(charge.status, frozenset()):
        raise IllegalTransition(f"charge {charge.id}: {charge.status} -> {status} is not allowed")
    charge.status = status
    charge.updated_at = now
    if status in TERMINAL:
        charge.completed_at = now
        charge.lease_until = None
        charge.next_attempt_at = None


def view(charge: Charge) -> dict[str, Any]:
    cur = charge.currency
    return {
        "id": charge.id,
        "account_id": charge.account_id,
        "amount": format_amount(charge.amount, cur),
        "currency": cur,
        "status": charge.status,
        "purpose": charge.purpose,
        "psp": charge.psp,
        "payment_method_id": charge.payment_method_id,
        "psp_reference": charge.psp_reference,
        "decline_code": charge.decline_code,
        "decline_text": charge.decline_text,
        "attempts": charge.attempts,
        "needs_attention": charge.needs_attention,
        "transaction_id": charge.transaction_id,
        "available_on": charge.available_on.isoformat() if charge.available_on else None,
        "settlement_status": charge.settlement_status,
        "created_at": isoformat(charge.created_at),
        "completed_at": isoformat(charge.completed_at) if charge.completed_at else None,
    }


def list_for(session: Session, account_id: str) -> list[dict[str, Any]]:
    accounts.get(session, account_id)
    rows = session.scalars(
        select(Charge).where(Charge.account_id == account_id).order_by(Charge.created_at, Charge.id)
    )
    return [view(c) for c in rows]


def chargeable_amount(value: object, currency: str, field: str = "amount") -> Decimal:
    """A positive amount in whole minor units of the currency (EUR cents, whole JPY)."""
    amount = parse_amount(value, field)
    exp = exponent(currency)
    if amount != amount.quantize(Decimal(1).scaleb(-exp)):
        raise ValidationError(
            field,
            f"{currency} is charged in whole minor units: at most {exp} "
            f"decimal place(s), got {format_amount(amount)}",
        )
    return amount


# Built once per dialect: the values come as parameters, so no statement is constructed
# (or cache-keyed) per charge.
_INSERT_IF_ABSENT = {
    name: insert(Charge)
    .on_conflict_do_nothing(index_elements=["idempotency_key"])
    .returning(Charge)
    for name, insert in (("postgresql", pg_insert), ("sqlite", sqlite_insert))
}


def _insert_if_absent(session: Session, values: dict[str, Any]) -> Charge | None:
    """The new charge (RETURNING the row: no second read), or None when the key exists."""
    return insert_if_absent(session, [values]).get(values["idempotency_key"])


def insert_if_absent(session: Session, rows: list[dict[str, Any]]) -> dict[str, Charge]:
    """New charges in one statement, by idempotency key; a key that exists is left out."""
    statement = _INSERT_IF_ABSENT[session.get_bind().dialect.name]
    return {charge.idempotency_key: charge for charge in session.scalars(statement, rows)}


def new_row(
    account: Account,
    method: PaymentMethod,
    *,
    amount: object,
    idempotency_key: object,
    purpose: str,
    now: datetime,
) -> dict[str, Any]:
    """The row of a charge on a payment method the caller has read, checked as `begin` does;
    for a caller that inserts it (alone or with others) with `insert_if_absent`."""
    key = validation.reference(idempotency_key, "idempotency_key")
    value = chargeable_amount(amount, account.currency)
    _check_method(account, method)
    ledger.check_fits(account, value)
    return _new_row(account, method, purpose, value, key, now)


def _check_method(account: Account, method: PaymentMethod) -> None:
    """The method is this account's, not removed, and its PSP still enabled."""
    if method.account_id != account.id or method.removed_at is not None:
        raise NotFound("payment_method_id", f"no payment method {method.id!r} on this account")
    get_adapter(method.psp, "payment_method_id")


def _by_key(session: Session, key: str) -> Charge | None:
    return session.scalars(select(Charge).where(Charge.idempotency_key == key)).one_or_none()


def begin(
    uow: UnitOfWork,
    *,
    account_id: object,
    amount: object,
    idempotency_key: object,
    payment_method_id: object = None,
    purpose: str = "top_up",
    now: datetime,
    method: PaymentMethod | None = None,
) -> tuple[Charge, bool]:
    """The charge row for this key, and whether this caller must call the PSP.

    Re-using a key with another account or amount is refused; a key whose charge was
    `not_attempted` is re-armed (safe: the PSP never processed it).

    `method`: a caller that has just made a key it knows to be new (auto-reload, under the
    account lock) passes the active payment method it checked; the row is then inserted
    straight away (one statement), and only a conflict falls back to reading the key.
    """
    session = uow.session
    key = validation.reference(idempotency_key, "idempotency_key")
    account = accounts.get(session, account_id)
    value = chargeable_amount(amount, account.currency)

    def conflict_check(existing: Charge) -> None:
        if (
            existing.account_id != account.id
            or existing.amount != value
            or existing.purpose != purpose
        ):
            raise IdempotencyConflict(
                "idempotency_key",
                f"{key!r} was already used for {format_amount(existing.amount, existing.currency)}"
                f" {existing.currency} on account {existing.account_id}",
            )

    if method is not None:
        _check_method(account, method)  # key and amount were checked above
        ledger.check_fits(account, value)  # a credit that could not be stored: not charged
        created = _insert_if_absent(session, _new_row(account, method, purpose, value, key, now))
        if created is not None:
            return created, True
    existing = _by_key(session, key)
    if existing is None:
        if payment_method_id is None:
            method = payment_methods.default_for(session, account.id)
            if method is None:
                raise NotFound(
                    "payment_method_id", "the account has no default payment method; add one first"
                )
        else:
            method = payment_methods.get_active(
                session, account.id, payment_method_id, "payment_method_id"
            )
        get_adapter(method.psp, "payment_method_id")  # still enabled?
        ledger.check_fits(account, value)  # a credit that could not be stored: not charged
        created = _insert_if_absent(session, _new_row(account, method, purpose, value, key, now))
        if created is not None:
            conflict_check(created)
            return created, True
        existing = _by_key(session, key)  # a concurrent caller inserted it first
        assert existing is not None
        conflict_check(existing)
        return existing, False
    conflict_check(existing)
    if existing.status == "not_attempted":
        locked = lock(session, existing.id)
        if locked.status == "not_attempted":
            move(locked, "processing", now)
            locked.attempts += 1
            locked.lease_until = _lease_from_now()
            locked.next_attempt_at = locked.lease_until
            return locked, True
    return existing, False


def _new_row(
    account: Account, method: PaymentMethod, purpose: str, value: Decimal, key: str, now: datetime
) -> dict[str, Any]:
    lease = _lease_from_now()
    return {
        "id": new_id("ch"),
        "account_id": account.id,
        "payment_method_id": method.id,
        "psp": method.psp,
        "purpose": purpose,
        "amount": value,
        "currency": account.currency,
        "amount_minor": to_minor_units(value, account.currency),
        "idempotency_key": key,
        "status": "processing",
        "attempts": 1,
        "sync_attempts": 0,
        "lease_until": lease,
        "next_attempt_at": lease,
        "needs_attention": False,
        "created_at": now,
        "updated_at": now,
    }


def _lease_from_now() -> datetime:
    """A lease guards a real PSP call in flight, so it runs on the real clock even when a
    job is replayed `as_of` an earlier moment (an expired lease would let the janitor fail
    a charge whose call is still under way)."""
    return clock.now() + timedelta(seconds=get_settings().charge_lease_seconds)


_LOCK = (
    select(Charge)
    .where(Charge.id == bindparam("id"))
    .with_for_update()
    .execution_options(populate_existing=True)
)


# The charge and its account in one statement, locked in that order (charge, then account:
# the order `apply` has always taken them in), both re-read.
_LOCK_WITH_ACCOUNT = (
    select(Charge, Account)
    .join(Account, Account.id == Charge.account_id)
    .where(Charge.id == bindparam("id"))
    .with_for_update()
    .execution_options(populate_existing=True)
)


def lock(session: Session, charge_id: str) -> Charge:
    return session.scalars(_LOCK, {"id": charge_id}).one()


def lock_with_account(session: Session, charge_id: str) -> tuple[Charge, Account]:
    charge, account = session.execute(_LOCK_WITH_ACCOUNT, {"id": charge_id}).one()
    return charge, account


def renew_lease(uow: UnitOfWork, charge_id: str, real_now: datetime) -> bool:
    """Renew the lease of a `processing` charge whose lease still holds (so no janitor can
    have claimed it); False when it ran out or the charge moved on. Does not commit."""
    lease = real_now + timedelta(seconds=get_settings().charge_lease_seconds)
    renewed = uow.session.execute(
        update(Charge)
        .where(Charge.id == charge_id, Charge.status == "processing", Charge.lease_until > real_now)
        .values(lease_until=lease, next_attempt_at=lease, updated_at=real_now)
        .returning(Charge.id)
        .execution_options(synchronize_session=False)
    ).first()
    return renewed is not None


def request_for(session: Session, charge: Charge) -> ChargeRequest:
    method = session.get(PaymentMethod, charge.payment_method_id)
    assert method is not None
    return ChargeRequest(
        idempotency_key=charge.idempotency_key,
        token=method.token or "",
        amount_minor=charge.amount_minor,
        currency=charge.currency,
        description=f"{charge.purpose} {charge.id}",
    )


def apply(uow: UnitOfWork, charge_id: str, result: ChargeResult, now: datetime) -> Charge:
    """Record a PSP answer under the charge's row lock; a resolved charge is left alone.

    A success locks the account with the charge, in the same statement (charge first, the
    order every caller takes them in)."""
    locked: Account | None = None
    if result.outcome is Outcome.SUCCEEDED:
        charge, locked = lock_with_account(uow.session, charge_id)
    else:
        charge = lock(uow.session, charge_id)
    if charge.status in TERMINAL:
        if result.outcome is Outcome.SUCCEEDED and charge.status != "succeeded":
            _orphaned_success(uow, charge, result, now)
        return charge
    target = _STATUS_FOR[result.outcome]
    if target != charge.status and target not in _ALLOWED.get(charge.status, frozenset()):
        log.info("charge %s: late %s answer ignored (already %s)", charge.id, target, charge.status)
        return charge
    # Set below, after the account lock and the ledger flush: one UPDATE of the charge.
    psp_reference = result.psp_reference or charge.psp_reference
    data = {
        "charge_id": charge.id,
        "amount": format_amount(charge.amount, charge.currency),
        "currency": charge.currency,
        "psp": charge.psp,
        "purpose": charge.purpose,
        "psp_reference": psp_reference,
    }
    account = None
    if result.outcome is not Outcome.SUCCEEDED:
        charge.psp_reference = psp_reference
    else:
        account = locked or ledger.lock_account(uow.session, charge.account_id)
        txn = ledger.post(
            uow,
            account,
            kind="charge",
            reference=charge.id,
            amount=charge.amount,
            counter=f"{RECEIVABLE}:{charge.psp}",
            description=f"{charge.purpose} via {charge.psp}",
            now=now,
        )
        charge.psp_reference = psp_reference
        move(charge, "succeeded", now)
        charge.transaction_id = txn.id
        settlement.schedule(
            uow, charge, account, now, succeeded_at=_processed_at(charge, result, now)
        )
        charge.decline_code = charge.decline_text = None
        events.record(
            uow,
            "charge.succeeded",
            charge.account_id,
            {
                **data,
                "balance": format_amount(account.balance, account.currency),
                "transaction_id": txn.id,
            },
            now,
        )
    if result.outcome is Outcome.DECLINED:
        move(charge, "declined", now)
        charge.decline_code, charge.decline_text = result.code, result.text
        events.record(
            uow,
            "charge.declined",
            charge.account_id,
            {**data, "decline_code": result.code, "decline_text": result.text},
            now,
        )
    elif result.outcome is Outcome.PENDING:
        first = charge.status != "pending"
        move(charge, "pending", now)
        charge.lease_until = None
        on_demand = get_adapter(charge.psp).on_demand
        charge.next_attempt_at = now + SYNC_SCHEDULE[0] if on_demand else None
        if first:
            events.record(uow, "charge.pending", charge.account_id, data, now)
    elif result.outcome is Outcome.NOT_ATTEMPTED:
        move(charge, "not_attempted", now)
        charge.decline_code, charge.decline_text = result.code, result.text
        charge.lease_until = charge.next_attempt_at = None
    elif result.outcome is Outcome.UNKNOWN:  # only a look-up may resolve it
        move(charge, "unknown", now)
        charge.decline_code, charge.decline_text = result.code, result.text
        charge.next_attempt_at = now + SYNC_SCHEDULE[0]
    from worker.services import auto_reload  # the policy reacts to every outcome

    credited = account if result.outcome is Outcome.SUCCEEDED else None
    auto_reload.after_outcome(uow, charge, credited, now, locked=locked)
    return charge


def fail(uow: UnitOfWork, charge: Charge, code: str, text: str, now: datetime) -> None:
    move(charge, "failed", now)
    charge.decline_code, charge.decline_text = code, text
    events.record(
        uow,
        "charge.failed",
        charge.account_id,
        {
            "charge_id": charge.id,
            "amount": format_amount(charge.amount, charge.currency),
            "currency": charge.currency,
            "psp": charge.psp,
            "purpose": charge.purpose,
            "code": code,
            "text": text,
        },
        now,
    )


def top_up(
    uow: UnitOfWork,
    *,
    account_id: object,
    amount: object,
    idempotency_key: object,
    payment_method_id: object = None,
    now_fn: Callable[[], datetime] = clock.now,
) -> dict[str, Any]:
    """One charge now. The charge row is committed before the PSP call."""
    if isinstance(idempotency_key, str) and idempotency_key.strip().startswith(INTERNAL_KEYS):
        raise ValidationError("idempotency_key", "this prefix is reserved for automatic charges")
    charge, must_call = begin(
        uow,
        account_id=account_id,
        amount=amount,
        idempotency_key=idempotency_key,
        payment_method_id=payment_method_id,
        now=now_fn(),
    )
    request = request_for(uow.session, charge) if must_call else None
    uow.commit()  # no DB connection is held while the PSP is called
    adapter = get_adapter(charge.psp)
    if request is not None:
        charge = apply(uow, charge.id, adapter.charge(request), now_fn())
        uow.commit()
    elif charge.status in ("processing", "unknown") and adapter.on_demand:
        # A repeat of a charge already in flight (retry, redelivery): ask the PSP what it
        # knows - never charge again. Nothing known yet: the janitor settles it later.
        try:
            found = adapter.lookup(charge.idempotency_key)
        except TransportError:
            found = None
        if found is not None and found.outcome in (Outcome.SUCCEEDED, Outcome.DECLINED):
            charge = apply(uow, charge.id, found, now_fn())
            uow.commit()
    account = accounts.get(uow.session, charge.account_id)
    uow.session.refresh(account)
    return {
        **view(charge),
        "charge_id": charge.id,
        "balance": format_amount(account.balance, account.currency),
    }


SOFT_RETRIES = 2


def soft_retry_delay(retries: int) -> int:
    """Seconds before re-trying a `not_attempted` charge: 5, 10, 20 ... capped at 60."""
    return int(min(5 * 2**retries, 60))


def give_up(
    uow: UnitOfWork, charge_id: str, now_fn: Callable[[], datetime] = clock.now
) -> dict[str, Any]:
    """A charge that stayed `not_attempted` after its retries ends `failed` (nothing charged)."""
    charge = lock(uow.session, charge_id)
    if charge.status == "not_attempted":
        fail(
            uow,
            charge,
            charge.decline_code or "not_attempted",
            charge.decline_text or "the PSP did not process the charge",
            now_fn(),
        )
    account = accounts.get(uow.session, charge.account_id)
    return {
        **view(charge),
        "charge_id": charge.id,
        "balance": format_amount(account.balance, account.currency),
    }


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


_SYNCED = frozenset({"processing", "unknown", "pending"})  # the statuses the janitor resolves


def _backoff(sync_attempts: int) -> timedelta:
    return SYNC_SCHEDULE[min(max(sync_attempts, 1) - 1, len(SYNC_SCHEDULE) - 1)]


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
        charge = lock(uow.session, claim.charge_id)
        if charge.status in _SYNCED:
            _reschedule(uow, charge, now, f"look-up failed: {exc}")
        return False
    charge = lock(uow.session, claim.charge_id)
    if charge.status not in _SYNCED:  # resolved (or handed back) while the PSP was asked
        if found is not None and found.outcome is Outcome.SUCCEEDED:
            apply(uow, charge.id, found, now)  # flags money taken for a charge closed here
        return False
    if found is None:
        # Leases run on the real clock: a replay `as_of` a future moment must never declare
        # a call still in flight lost.
        lease_over = charge.lease_until is None or charge.lease_until <= min(now, clock.now())
        if charge.status in ("processing", "unknown") and lease_over:
            # The PSP never received it and our request can no longer land: not charged.
            fail(uow, charge, "not_received", "the PSP has no record of this charge", now)
            return True
        _reschedule(uow, charge, now, "no record at the PSP yet")
        return False
    if found.outcome in (Outcome.UNKNOWN, Outcome.PENDING, Outcome.NOT_ATTEMPTED):
        if found.outcome is Outcome.PENDING and charge.status != "pending":
            apply(uow, charge.id, found, now)
        _reschedule(uow, charge, now, f"still {found.outcome.value} at the PSP")
        return False
    apply(uow, charge.id, found, now)
    return True


ABANDONED_AFTER = timedelta(minutes=30)


def close_abandoned(uow: UnitOfWork, now: datetime, batch_size: int = 100) -> int:
    """A top-up left `not_attempted` (its retries lost, or a soft failure from the CLI) never
    reached the PSP: after a while it is closed as failed, so nothing stays open for ever.
    Auto-reload retries its own soft failures."""
    rows = uow.session.scalars(
        select(Charge)
        .where(
            Charge.status == "not_attempted",
            Charge.purpose != "auto_reload",
            Charge.updated_at <= now - ABANDONED_AFTER,
        )
        .order_by(Charge.updated_at)
        .limit(batch_size)
        .with_for_update(skip_locked=True)
    ).all()
    for charge in rows:
        fail(
            uow,
            charge,
            charge.decline_code or "not_attempted",
            charge.decline_text or "the PSP did not process the charge",
            now,
        )
    uow.commit()
    return len(rows)


def sync_pending(uow: UnitOfWork, now: datetime, batch_size: int = 100) -> dict[str, int]:
    """The janitor: look up every unresolved charge that is due, one at a time.

    Per charge: claim it (short transaction, COMMIT), ask the PSP holding no connection and
    no lock, then apply the answer in a second short transaction under a fresh row lock."""
    resolved = close_abandoned(uow, now)
    checked = 0
    seen: set[str] = set()
    while checked < batch_size:
        claim = claim_next(uow, now, seen)
        if claim is None:
            break
        seen.add(claim.charge_id)
        checked += 1
        try:
            if sync_one(uow, claim, now):
                resolved += 1
            uow.commit()
        except Exception as exc:  # isolate it: reschedule, count towards attention, go on
            uow.rollback()
            log.exception("payment sync failed for charge %s", claim.charge_id)
            again = lock(uow.session, claim.charge_id)
            if again.status in _SYNCED:
                why = f"sync error: {type(exc).__name__}: {exc}"[:300]
                _reschedule(uow, again, now, why)
            uow.commit()
    uow.commit()
    return {"checked": checked, "resolved": resolved}
