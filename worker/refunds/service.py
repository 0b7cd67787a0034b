"""Refunds, exactly once (issue 14; seed 002: `pending`, then `succeeded`, or `failed` with
`refund.failed` and the money returned another way).

1. `begin` locks the charge, checks what is left to refund and the balance, then commits
   a refund row with a unique idempotency key and, in the same transaction, takes the
   amount from the customer's balance (ledger move to `refunds_payable`): money being
   refunded can never be spent as well. Only then is the PSP called, with that key.
2. `apply` records the PSP's answer under the refund's row lock: a success pays the
   refund out of what the PSP owes us (`refunds_payable` -> `psp_available:PSP`) and
   issues a credit note; a decline puts the amount back on the balance. Each in one
   transaction with the status.
3. An answer lost on the way (`unknown`) is resolved by the janitor (worker/refunds/janitor.py)
   looking the refund up by its key: never by refunding again.

A bank-transfer charge has no PSP to refund through: its refund waits in
`requires_details` for the account the customer names (worker/refunds/bank.py).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import bindparam, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from config import get_settings
from worker.accounts import service as accounts
from worker.charges import engine
from worker.charges.models import Charge
from worker.charges.states import Purpose
from worker.db.base import new_id
from worker.db.session import UnitOfWork
from worker.kernel import clock, validation
from worker.kernel.clock import isoformat
from worker.kernel.errors import (
    IdempotencyConflict,
    InsufficientFunds,
    NotFound,
    NothingToRefund,
    NotRefundable,
    ValidationError,
)
from worker.kernel.money import format_amount, to_minor_units
from worker.ledger import service as ledger
from worker.ledger.models import Account
from worker.outbox import events
from worker.psp.base import Outcome, RefundRequest, RefundResult
from worker.refunds import documents
from worker.refunds.models import HOLDING, TERMINAL, Refund, RefundStatus
from worker.settlement import paid_out

log = logging.getLogger(__name__)

PAYABLE = "refunds_payable"  # what the platform owes customers whose refund is under way
PAID_FROM = "psp_available"  # a PSP pays a refund out of what it holds for us (seed 004)
KIND = "refund"  # customer transaction: the balance taken at creation
KIND_RETURNED = "refund_returned"  # customer transaction: a failed refund's money put back
KIND_PAID = paid_out.REFUND_PAID_KIND  # system transaction: the PSP (or bank) paid it out
BANK_TRANSFER = "bank_transfer"
# Issue 14: a refund of an auto-reload charge holds auto-reload this long, so the refund
# that takes the balance under the threshold does not charge the card again at once.
RELOAD_HOLD = timedelta(seconds=60)
RETRY_LOOKUP = timedelta(minutes=1)


def view(refund: Refund, balance: Decimal | None = None) -> dict[str, Any]:
    """The shape `balancectl refund` / `refunds` print (CONTRACT.md, "Refunds")."""
    cur = refund.currency
    shown: dict[str, Any] = {
        "refund_id": refund.id,
        "id": refund.id,
        "charge_id": refund.charge_id,
        "account_id": refund.account_id,
        "amount": format_amount(refund.amount, cur),
        "currency": cur,
        "status": refund.status,
        "psp": refund.psp,
        "reason": refund.reason,
        "psp_reference": refund.psp_reference,
        "failure_code": refund.failure_code,
        "failure_text": refund.failure_text,
        "iban": _masked(refund.iban),
        "holder": refund.holder,
        "credit_note_id": refund.credit_note_id,
        "needs_attention": refund.needs_attention,
        "created_at": isoformat(refund.created_at),
        "completed_at": isoformat(refund.completed_at) if refund.completed_at else None,
    }
    if balance is not None:
        shown["balance"] = format_amount(balance, cur)
    return shown


def _masked(iban: str | None) -> str | None:
    """Only the last four characters of a stored IBAN are ever printed."""
    return None if iban is None else f"{iban[:2]}{'*' * (len(iban) - 6)}{iban[-4:]}"


def result_of(session: Session, refund: Refund) -> dict[str, Any]:
    """The refund and the account's balance now (what the command and the task return)."""
    account = accounts.get(session, refund.account_id)
    session.refresh(account)
    return view(refund, account.balance)


def list_for(session: Session, account_id: object) -> list[dict[str, Any]]:
    """The account's refunds, oldest first, each with the balance now. Raises NotFound
    naming `account_id`."""
    account = accounts.get(session, account_id)
    rows = session.scalars(
        select(Refund).where(Refund.account_id == account.id).order_by(Refund.created_at, Refund.id)
    )
    return [view(r, account.balance) for r in rows]  # "same fields" (CONTRACT.md)


def get(session: Session, refund_id: object) -> Refund:
    """The refund `refund_id`; raises NotFound / ValidationError naming `refund_id`."""
    key = validation.identifier(refund_id, "refund_id")
    refund = session.get(Refund, key)
    if refund is None:
        raise NotFound("refund_id", f"no refund {key[:60]!r}")
    return refund


_LOCK = (
    select(Refund)
    .where(Refund.id == bindparam("id"))
    .with_for_update()
    .execution_options(populate_existing=True)
)


def lock(session: Session, refund_id: str) -> Refund:
    """The refund row, locked for this transaction (re-read)."""
    return session.scalars(_LOCK, {"id": refund_id}).one()


def _by_key(session: Session, key: str) -> Refund | None:
    return session.scalars(select(Refund).where(Refund.idempotency_key == key)).one_or_none()


def refunded_so_far(session: Session, charge_id: str) -> Decimal:
    """What the charge's refunds hold: succeeded, under way or waiting for details."""
    total = session.scalar(
        select(func.coalesce(func.sum(Refund.amount), 0)).where(
            Refund.charge_id == charge_id, Refund.status.in_(HOLDING)
        )
    )
    return Decimal(total or 0)


def _insert_if_absent(session: Session, values: dict[str, Any]) -> Refund | None:
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    statement = (
        insert(Refund)
        .values(**values)
        .on_conflict_do_nothing(index_elements=["idempotency_key"])
        .returning(Refund)
    )
    return session.scalars(statement).one_or_none()


def lease_from_now() -> datetime:
    """As a charge's lease: on the real clock, guarding a PSP call in flight."""
    return clock.now() + timedelta(seconds=get_settings().charge_lease_seconds)


def _check_repeat(existing: Refund, charge_id: str, amount: object) -> None:
    """A repeat of a key must name the same charge (and amount, when it names one)."""
    same_amount = amount is None or (
        engine.chargeable_amount(amount, existing.currency) == existing.amount
    )
    if existing.charge_id != charge_id or not same_amount:
        raise IdempotencyConflict(
            "idempotency_key",
            f"{existing.idempotency_key!r} was already used for a refund of "
            f"{format_amount(existing.amount, existing.currency)} {existing.currency} "
            f"of charge {existing.charge_id}",
        )


GENERATED_KEYS = ("task-", "cli-")  # keys made for a caller that gave none


def caller_key(key: object) -> object:
    """A caller's own idempotency key, refused (ValidationError naming `idempotency_key`)
    when it starts like the keys made for callers that gave none (`task-<message id>`,
    `cli-<random>`): such a key could land on someone else's refund."""
    if isinstance(key, str) and key.strip().startswith(GENERATED_KEYS):
        raise ValidationError("idempotency_key", "this prefix is reserved for generated keys")
    return key


def begin(
    uow: UnitOfWork,
    *,
    charge_id: object,
    amount: object = None,
    reason: object = None,
    idempotency_key: object,
    now: datetime,
) -> tuple[Refund, bool]:
    """The refund row for this key, and whether this caller must call the PSP.

    `amount`: a decimal string in the charge's currency, whole minor units; None refunds
    what is left. Raises (nothing written): NotFound (`charge_id`), NotRefundable (the
    charge did not succeed), NothingToRefund (all of it refunded or under way),
    ValidationError (`amount` beyond what is left, bad key or reason), InsufficientFunds
    (`amount` above the current balance: the prepaid money is what is refunded),
    IdempotencyConflict (the key names another refund). Does not commit."""
    session = uow.session
    key = validation.reference(idempotency_key, "idempotency_key")
    cid = validation.identifier(charge_id, "charge_id")
    note = validation.text(reason, "reason", max_length=500, required=False)
    if session.get(Charge, cid) is None:
        raise NotFound("charge_id", f"no charge {cid[:60]!r}")
    # The charge's row lock serialises every refund of it (and the charge engine takes the
    # charge before the account too): what is left is read and taken under it.
    charge = engine.lock(session, cid)
    existing = _by_key(session, key)
    if existing is not None:
        _check_repeat(existing, charge.id, amount)
        return existing, False
    if charge.status != "succeeded":
        raise NotRefundable("charge_id", f"charge {charge.id} is {charge.status}, not succeeded")
    left = charge.amount - refunded_so_far(session, charge.id)
    if left <= 0:
        raise NothingToRefund(
            "charge_id", f"charge {charge.id} is refunded in full (or being refunded)"
        )
    value = left if amount is None else engine.chargeable_amount(amount, charge.currency)
    if value > left:
        raise ValidationError(
            "amount",
            f"at most {format_amount(left, charge.currency)} {charge.currency} is left to "
            f"refund on charge {charge.id}, got {format_amount(value, charge.currency)}",
        )
    account = ledger.lock_account(session, charge.account_id)
    if value > account.balance:
        raise InsufficientFunds(
            "amount",
            f"the balance is {format_amount(account.balance, account.currency)} "
            f"{account.currency}: a refund of {format_amount(value, charge.currency)} is "
            "more than is left of the prepaid money",
        )
    bank = charge.psp == BANK_TRANSFER
    lease = None if bank else lease_from_now()
    created = _insert_if_absent(
        session,
        {
            "id": new_id("rf"),
            "account_id": charge.account_id,
            "charge_id": charge.id,
            "psp": charge.psp,
            "amount": value,
            "currency": charge.currency,
            "amount_minor": to_minor_units(value, charge.currency),
            "idempotency_key": key,
            "status": RefundStatus.REQUIRES_DETAILS if bank else RefundStatus.PENDING,
            "reason": note,
            "sync_attempts": 0,
            "lease_until": lease,
            "next_attempt_at": lease,
            "needs_attention": False,
            "created_at": now,
            "updated_at": now,
        },
    )
    if created is None:  # another charge's refund holds the key (this charge is locked)
        found = _by_key(session, key)
        assert found is not None
        _check_repeat(found, charge.id, amount)
        return found, False
    txn = ledger.post(
        uow,
        account,
        kind=KIND,
        reference=created.id,
        amount=-value,
        counter=PAYABLE,
        description=f"refund of {charge.id}",
        now=now,
    )
    created.transaction_id = txn.id
    if charge.purpose == Purpose.AUTO_RELOAD:
        _hold_auto_reload(account, now)
    if bank:
        documents.requires_details(uow, account, created, now)
    return created, not bank


def _hold_auto_reload(account: Account, now: datetime) -> None:
    """Issue 14 (README "Refunds"): refunding an auto-reload charge never re-triggers one by
    itself; the account's auto-reload back-off is held RELOAD_HOLD past the refund, never
    shortened. (A refund never enqueues a reload either, unlike a usage debit.)"""
    until = now + RELOAD_HOLD
    current = account.auto_reload_backoff_until
    if account.auto_reload_enabled and (current is None or current < until):
        account.auto_reload_backoff_until = until


def request_for(refund: Refund, charge: Charge) -> RefundRequest:
    """What the adapter is asked: our refund key, the PSP's charge reference, minor units."""
    return RefundRequest(
        idempotency_key=refund.idempotency_key,
        charge_reference=charge.psp_reference or "",
        amount_minor=refund.amount_minor,
        currency=refund.currency,
    )


def apply(uow: UnitOfWork, refund_id: str, result: RefundResult, now: datetime) -> Refund:
    """Record a PSP (or bank payout) answer under the refund's row lock; a refund already
    resolved is left alone. Success: paid out of what the PSP owes us, credit note issued,
    `refund.succeeded`. Decline: the amount back on the balance, `refund.failed`. Anything
    else: still `pending`, for the janitor to look up. Does not commit."""
    refund = lock(uow.session, refund_id)
    if refund.status in TERMINAL or refund.status == RefundStatus.REQUIRES_DETAILS:
        return refund
    if result.outcome is Outcome.SUCCEEDED:
        succeed(uow, refund, result.psp_reference, now)
    elif result.outcome is Outcome.DECLINED:
        fail(uow, refund, result.code or "declined", result.text or "refund declined", now)
    else:  # unknown, pending, not attempted: only a look-up may resolve it
        refund.failure_code, refund.failure_text = result.code, (result.text or "")[:300] or None
        refund.lease_until = None  # the call came back: nothing of ours is in flight
        refund.next_attempt_at = now + RETRY_LOOKUP
        refund.updated_at = now
    return refund


def _data(refund: Refund, **extra: Any) -> dict[str, Any]:
    return {
        "refund_id": refund.id,
        "charge_id": refund.charge_id,
        "amount": format_amount(refund.amount, refund.currency),
        "currency": refund.currency,
        "psp": refund.psp,
        **extra,
    }


def _close(refund: Refund, status: RefundStatus, now: datetime) -> None:
    refund.status = status
    refund.completed_at = refund.updated_at = now
    refund.lease_until = refund.next_attempt_at = None


def succeed(uow: UnitOfWork, refund: Refund, reference: str | None, now: datetime) -> None:
    """The money reached the customer: `refunds_payable` is paid out of what the PSP holds
    for us, the credit note is issued. The caller holds the refund's row lock."""
    ledger.transfer_system(
        uow,
        kind=KIND_PAID,
        reference=refund.id,
        amount=refund.amount,
        currency=refund.currency,
        from_account=f"{PAID_FROM}:{refund.psp}",
        to_account=PAYABLE,
        description=f"refund {refund.id} paid out by {refund.psp}",
        now=now,
    )
    refund.psp_reference = reference or refund.psp_reference
    refund.failure_code = refund.failure_text = None
    _close(refund, RefundStatus.SUCCEEDED, now)
    account = accounts.get(uow.session, refund.account_id)
    charge = uow.session.get(Charge, refund.charge_id)
    assert charge is not None
    refund.credit_note_id = documents.credit_note(uow, account, charge, refund, now)
    events.record(
        uow,
        "refund.succeeded",
        refund.account_id,
        _data(refund, psp_reference=refund.psp_reference, credit_note_id=refund.credit_note_id),
        now,
    )
    documents.after_paid_out(uow, refund, now)


def fail(uow: UnitOfWork, refund: Refund, code: str, text: str, now: datetime) -> None:
    """The refund will not happen: its amount goes back on the balance in this transaction
    (seed 002: the money must reach the customer another way). The caller holds the
    refund's row lock."""
    account = ledger.lock_account(uow.session, refund.account_id)
    ledger.post(
        uow,
        account,
        kind=KIND_RETURNED,
        reference=refund.id,
        amount=refund.amount,
        counter=PAYABLE,
        description=f"refund {refund.id} failed: {code}",
        now=now,
    )
    refund.failure_code, refund.failure_text = code[:64], text[:300]
    _close(refund, RefundStatus.FAILED, now)
    events.record(
        uow,
        "refund.failed",
        refund.account_id,
        _data(
            refund,
            code=refund.failure_code,
            text=refund.failure_text,
            balance=format_amount(account.balance, account.currency),
        ),
        now,
    )
