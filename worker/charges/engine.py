"""The charge engine: exactly-once charging.

1. `begin` commits a charge row with a unique idempotency key (status `processing`, a
   lease) *before* the PSP is called; the PSP gets that key.
2. The adapter answers with one of six outcomes; `apply` records it under the charge's
   row lock. Success credits the balance in the same DB transaction (ledger reference =
   charge id, unique), so a charge is credited at most once whoever applies it.
3. The janitor (worker/charges/janitor.py) resolves charges whose outcome is unknown, or
   whose worker vanished (lease expired), by *looking them up* at the PSP: never by
   charging. Top-ups are in worker/charges/top_up.py.

Status only moves forward (worker/charges/states.py); succeeded, declined and failed are
terminal. The domains that react to outcomes hand `apply` their hooks (see below).

Longer than 400 lines on purpose: creating a charge (`begin`), recording an answer
(`apply`) and closing one (`fail`) are one state machine over one row, read together.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Protocol

from sqlalchemy import bindparam, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from config import get_settings
from worker.accounts import service as accounts
from worker.charges.models import Charge
from worker.charges.states import ALLOWED, TERMINAL, ChargeStatus
from worker.db.base import new_id
from worker.db.session import UnitOfWork
from worker.kernel import clock, listing, validation
from worker.kernel.clock import isoformat
from worker.kernel.errors import IdempotencyConflict, NotFound, ValidationError
from worker.kernel.money import exponent, format_amount, parse_amount, to_minor_units
from worker.ledger import service as ledger
from worker.ledger.models import Account
from worker.outbox import events
from worker.payment_methods import service as payment_methods
from worker.payment_methods.models import PaymentMethod
from worker.psp.base import ChargeRequest, ChargeResult, Outcome
from worker.psp.registry import get_adapter

log = logging.getLogger(__name__)

# Janitor look-up schedule: minutes, then hours, then daily.
SYNC_SCHEDULE = (
    [timedelta(minutes=m) for m in (1, 2, 5, 15, 30)]
    + [timedelta(hours=h) for h in (1, 3, 6, 12)]
    + [timedelta(days=1)]
)
RECEIVABLE = "psp_pending"  # counter-account: money the PSP owes us, not yet available
INTERNAL_KEYS = ("auto_reload:",)  # keys the system makes; callers may not use them


_STATUS_FOR = {
    Outcome.SUCCEEDED: ChargeStatus.SUCCEEDED,
    Outcome.DECLINED: ChargeStatus.DECLINED,
    Outcome.PENDING: ChargeStatus.PENDING,
    Outcome.NOT_ATTEMPTED: ChargeStatus.NOT_ATTEMPTED,
    Outcome.UNKNOWN: ChargeStatus.UNKNOWN,
    Outcome.REQUIRES_ACTION: ChargeStatus.REQUIRES_ACTION,
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
    if status not in ALLOWED.get(charge.status, frozenset()):
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


def list_for(
    session: Session,
    account_id: str,
    limit: object = None,
    since: object = None,
    until: object = None,
) -> list[dict[str, Any]]:
    """The account's charges, oldest first. `limit`: keep the newest N (still oldest
    first); `since` (inclusive) / `until` (exclusive) on `created_at`, ISO-8601 with offset
    (worker/kernel/listing.py; ValidationError naming the field)."""
    span = listing.window(limit, since, until)
    accounts.get(session, account_id)
    query = select(Charge).where(Charge.account_id == account_id)
    if span.since is not None:
        query = query.where(Charge.created_at >= span.since)
    if span.until is not None:
        query = query.where(Charge.created_at < span.until)
    if span.limit is not None:
        newest = query.order_by(Charge.created_at.desc(), Charge.id.desc()).limit(span.limit)
        return [view(c) for c in reversed(session.scalars(newest).all())]
    return [view(c) for c in session.scalars(query.order_by(Charge.created_at, Charge.id))]


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
    _check_adapter(account, method)


def _check_adapter(account: Account, method: PaymentMethod) -> None:
    """The method's PSP is still enabled and still serves the account's country: a country
    changed after the method was added (`accounts update --country`) must not let a WeChat
    Pay method charge an account outside AU, CN, HK, ID, MY, NZ, PH, TW (seeds 000/001).
    Raises ValidationError naming `country`, nothing written."""
    adapter = get_adapter(method.psp, "payment_method_id")
    allowed = getattr(adapter, "allowed_countries", None)
    if allowed is not None and account.country not in allowed:
        raise ValidationError(
            "country",
            f"{method.psp} is only available for accounts in {', '.join(sorted(allowed))}; "
            f"this account's country is {account.country}",
        )


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
                    "payment_method_id",
                    "the account has no default card or PayPal account: name the method "
                    "(--method) or make one the default (balancectl methods set-default)",
                )
        else:
            method = payment_methods.get_active(
                session, account.id, payment_method_id, "payment_method_id"
            )
        _check_adapter(account, method)  # still enabled, still for this country?
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
        # An auto-reload is made without the customer: a PSP that knows stored credentials
        # flags it merchant-initiated, which SCA exempts where the first use was authenticated.
        merchant_initiated=charge.purpose == "auto_reload",
    )


# --- what the domains above the engine do with a recorded outcome ---------------------------


@dataclass(frozen=True)
class Recorded:
    """A PSP answer as `apply` recorded it, for the hooks.

    `credited`: the account a success credited (locked); `locked`: the charge's account if
    `apply` locked it; `succeeded_at`: when the PSP took the money (settlement counts from
    it); `now`: the moment of the recording (the job's `as_of`)."""

    result: ChargeResult
    credited: Account | None
    locked: Account | None
    succeeded_at: datetime
    now: datetime


class OutcomeHook(Protocol):
    def __call__(self, uow: UnitOfWork, charge: Charge, recorded: Recorded) -> None: ...


# The engine sits below the domains that react to its outcomes (settlement dates a success,
# auto-reload's failure policy judges every outcome), so they hand it their hooks: the
# engine imports none of them. `worker/wiring.py` installs them; `apply` refuses to record
# anything without every required hook, so a missing one can never be silent.
REQUIRED_HOOKS = ("settlement", "auto_reload")
_hooks: dict[str, OutcomeHook] = {}


def install_hook(name: str, hook: OutcomeHook) -> None:
    """Register (or replace) the hook `name`; hooks run in REQUIRED_HOOKS order, then any
    others in the order installed, inside `apply`'s transaction."""
    _hooks[name] = hook


def installed_hooks() -> list[str]:
    """The names of the installed outcome hooks (a bulk payer checks it knows them all)."""
    return list(_hooks)


def _hooks_in_order() -> list[OutcomeHook]:
    missing = [name for name in REQUIRED_HOOKS if name not in _hooks]
    if missing:
        raise RuntimeError(
            f"charge outcome hooks not installed: {', '.join(missing)} (import worker.wiring)"
        )
    rest = [hook for name, hook in _hooks.items() if name not in REQUIRED_HOOKS]
    return [_hooks[name] for name in REQUIRED_HOOKS] + rest


class ViewExtra(Protocol):
    def __call__(self, session: Session, charge: Charge) -> dict[str, Any]: ...


# What a top-up prints beside its charge, from the domains above (invoices: the pro-forma
# and the payment instructions); installed by worker/wiring.py like the hooks.
_view_extras: dict[str, ViewExtra] = {}


def install_view_extra(name: str, extra: ViewExtra) -> None:
    """Register (or replace) a provider of extra fields for a top-up's result."""
    _view_extras[name] = extra


def view_extras(session: Session, charge: Charge) -> dict[str, Any]:
    """The extra fields every installed provider gives for `charge` (none: {})."""
    merged: dict[str, Any] = {}
    for extra in _view_extras.values():
        merged.update(extra(session, charge))
    return merged


class CloseHook(Protocol):
    def __call__(self, uow: UnitOfWork, charge: Charge, was: str, now: datetime) -> None: ...


# `fail` closes a charge on our side, with no PSP answer saying so (soft retries used up, no
# record at the PSP after the lease, settings changed before a retry): auto-reload's policy
# counts the reloads that end this way, so that no such path repeats for ever unseen.
REQUIRED_CLOSE_HOOKS = ("auto_reload",)
_close_hooks: dict[str, CloseHook] = {}


def install_close_hook(name: str, hook: CloseHook) -> None:
    """Register (or replace) the close hook `name`: run by `fail`, in its transaction, after
    the charge is `failed` (its `decline_code` says why; `was`: its status before)."""
    _close_hooks[name] = hook


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
    if target != charge.status and target not in ALLOWED.get(charge.status, frozenset()):
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
    elif result.outcome is Outcome.REQUIRES_ACTION:
        # Nothing was taken and the same method will not be charged without the cardholder:
        # terminal. Auto-reload's hook pauses the account's reloads and mails the customer.
        move(charge, "requires_action", now)
        charge.decline_code, charge.decline_text = result.code, result.text
        events.record(
            uow,
            "charge.requires_action",
            charge.account_id,
            {**data, "code": result.code, "text": result.text},
            now,
        )
    elif result.outcome is Outcome.PENDING:
        first = charge.status != "pending"
        move(charge, "pending", now)
        charge.lease_until = None
        # The janitor looks a pending charge up when the PSP completes it (a card still
        # authorizing, a WeChat Pay QR code the payer has not paid yet); a bank transfer is
        # completed by reconciliation, never by a look-up.
        adapter = get_adapter(charge.psp)
        polls = adapter.on_demand or bool(getattr(adapter, "polls_pending", False))
        charge.next_attempt_at = now + SYNC_SCHEDULE[0] if polls else None
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
    recorded = Recorded(
        result=result,
        credited=account if result.outcome is Outcome.SUCCEEDED else None,
        locked=locked,
        succeeded_at=_processed_at(charge, result, now),
        now=now,
    )
    for hook in _hooks_in_order():
        hook(uow, charge, recorded)
    return charge


def fail(uow: UnitOfWork, charge: Charge, code: str, text: str, now: datetime) -> None:
    """Close `charge` as `failed` on our side (`code`, `text`: why), with its event, then
    run the close hooks. The caller holds the charge's row lock."""
    missing = [name for name in REQUIRED_CLOSE_HOOKS if name not in _close_hooks]
    if missing:
        raise RuntimeError(
            f"charge close hooks not installed: {', '.join(missing)} (import worker.wiring)"
        )
    was = charge.status
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
    for hook in list(_close_hooks.values()):
        hook(uow, charge, was, now)
