"""Virtual numbers: renting (the first month paid from the balance at once), listing,
cancelling, and the state changes the collect job and the balance hooks share.

Lock order, everywhere: the account row first (ledger.lock_account), then its numbers. The
collect job, a credit, a depletion and a cancellation therefore never deadlock each other,
and every change of a number happens under its account's lock.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

import phonenumbers
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from config import get_settings
from worker.db.base import new_id
from worker.db.session import UnitOfWork
from worker.kernel import validation
from worker.kernel.clock import isoformat
from worker.kernel.errors import (
    AccountSuspended,
    InsufficientFunds,
    NotFound,
    NumberUnavailable,
    ValidationError,
)
from worker.kernel.money import format_amount, parse_amount
from worker.ledger import service as ledger
from worker.ledger.models import Account, LedgerTransaction
from worker.numbers import notices
from worker.numbers.models import CancelReason, Number, NumberStatus
from worker.numbers.periods import add_months, period_end, period_start
from worker.outbox import events

KIND = "number_fee"  # ledger transactions of monthly fees
NUMBER_FEES = "number_fees"  # their counter-account (revenue), one per currency
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_LIVE = Number.status != NumberStatus.CANCELLED


def parse_msisdn(value: object, country: str, field: str = "msisdn") -> str:
    """An MSISDN in any format `country`'s numbering plan accepts, as E.164 (`+447700900123`).

    Validated with `phonenumbers` (Google's libphonenumber metadata): a number that is not
    valid, or valid only for another country, is refused naming `field`."""
    if not isinstance(value, str) or not value.strip():
        raise ValidationError(field, "is required")
    raw = value.strip()
    if len(raw) > 40 or _CONTROL.search(raw):
        raise ValidationError(field, "is not a phone number (too long or control characters)")
    try:
        parsed = phonenumbers.parse(raw, country)
    except phonenumbers.NumberParseException:
        raise ValidationError(field, f"is not a phone number for {country}") from None
    if not phonenumbers.is_valid_number(parsed):
        raise ValidationError(field, f"is not a valid number in {country}'s numbering plan")
    if not phonenumbers.is_valid_number_for_region(parsed, country):
        found = phonenumbers.region_code_for_number(parsed) or "another country"
        raise ValidationError(field, f"is a number of {found}, not of {country}")
    e164: str = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
    return e164


def view(number: Number) -> dict[str, Any]:
    """What `balancectl numbers` prints (CONTRACT.md): `next_renewal` a UTC date."""
    live = number.status != NumberStatus.CANCELLED
    return {
        "id": number.id,
        "account_id": number.account_id,
        "msisdn": number.msisdn,
        "country": number.country,
        "status": number.status,
        "monthly_fee": format_amount(number.monthly_fee, number.currency),
        "currency": number.currency,
        "next_renewal": number.next_renewal_at.date().isoformat() if live else None,
        "next_renewal_at": isoformat(number.next_renewal_at) if live else None,
        "periods_paid": number.periods_paid,
        "rented_at": isoformat(number.anchor_at),
        "suspended_at": isoformat(number.suspended_at) if number.suspended_at else None,
        "cancelled_at": isoformat(number.cancelled_at) if number.cancelled_at else None,
        "cancel_reason": number.cancel_reason,
    }


def live_numbers(session: Session, account_ids: list[str]) -> dict[str, list[Number]]:
    """The accounts' numbers that are not cancelled, locked, by renewal; the caller holds
    the accounts' locks (account first, then numbers)."""
    found: dict[str, list[Number]] = {a: [] for a in account_ids}
    rows = session.scalars(
        select(Number)
        .where(Number.account_id.in_(account_ids), _LIVE)
        .order_by(Number.account_id, Number.next_renewal_at, Number.id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    for number in rows:
        found[number.account_id].append(number)
    return found


def refresh_next_fee(session: Session, account: Account) -> None:
    """accounts.next_fee_at = the earliest renewal of the account's live numbers (or None)."""
    account.next_fee_at = session.scalar(
        select(func.min(Number.next_renewal_at)).where(Number.account_id == account.id, _LIVE)
    )


# --- renting, listing, cancelling -----------------------------------------------------------


def rent(
    uow: UnitOfWork,
    *,
    account_id: object,
    msisdn: object,
    country: object,
    monthly_fee: object,
    now: datetime,
) -> dict[str, Any]:
    """Rent `msisdn` for the account and pay its first month from the balance at once.

    `monthly_fee`: decimal string in the account currency. Refused, with nothing written:
    `invalid` (bad MSISDN, country or fee), `not_found`, `account_suspended` (operator
    suspension), `insufficient_funds` (the balance cannot pay the first month, or the
    account is depleted), `number_unavailable` (the number is held by an account).
    Returns the number's view plus `transaction_id` and `balance`."""
    ctry = validation.country(country)
    e164 = parse_msisdn(msisdn, ctry)
    fee = parse_amount(monthly_fee, "monthly_fee")
    session = uow.session
    account = ledger.lock_account(session, account_id)
    if account.status == "suspended" and account.suspension_reason == "admin":
        raise AccountSuspended("account_id", "the account is suspended by an operator")
    if account.status == "suspended":
        raise InsufficientFunds("monthly_fee", "the account is depleted: top up first")
    if account.balance - fee < 0:
        raise InsufficientFunds(
            "monthly_fee",
            f"the first month ({format_amount(fee, account.currency)} {account.currency}) "
            f"is more than the balance {format_amount(account.balance, account.currency)}",
        )
    holder = session.scalar(select(Number.account_id).where(Number.msisdn == e164, _LIVE))
    if holder is not None:
        mine = " by this account" if holder == account.id else ""
        raise NumberUnavailable("msisdn", f"{e164} is already rented{mine}")
    number = Number(
        id=new_id("num"),
        account_id=account.id,
        msisdn=e164,
        country=ctry,
        monthly_fee=fee,
        currency=account.currency,
        status=NumberStatus.ACTIVE,
        anchor_at=now,
        periods_paid=0,
        next_renewal_at=now,
        failed_period=None,
        created_at=now,
        updated_at=now,
    )
    try:
        with session.begin_nested():  # two accounts renting it at once: one wins
            session.add(number)
    except IntegrityError:
        raise NumberUnavailable("msisdn", f"{e164} is already rented") from None
    events.record(
        uow,
        "number.rented",
        account.id,
        {"number_id": number.id, "msisdn": e164, "country": ctry},
        now,
    )
    # Set before paying: the depletion hook (a first month that empties the balance) looks
    # at it to find the account's numbers.
    if account.next_fee_at is None or account.next_fee_at > now:
        account.next_fee_at = now
    txn = pay(uow, account, number, now)
    assert txn is not None  # funds were checked under the lock
    refresh_next_fee(session, account)
    return {
        **view(number),
        "transaction_id": txn.id,
        "balance": format_amount(account.balance, account.currency),
    }


def list_numbers(session: Session, account_id: object) -> list[dict[str, Any]]:
    """The account's numbers, cancelled ones too, oldest first."""
    if not isinstance(account_id, str) or not account_id.strip():
        raise ValidationError("account_id", "is required")
    if session.get(Account, account_id.strip()) is None:
        raise NotFound("account_id", f"no account {account_id.strip()[:60]!r}")
    rows = session.scalars(
        select(Number)
        .where(Number.account_id == account_id.strip())
        .order_by(Number.created_at, Number.id)
    )
    return [view(n) for n in rows]


def cancel(uow: UnitOfWork, *, number_id: object, now: datetime) -> dict[str, Any]:
    """The customer gives the number up: cancelled now, nothing refunded; a repeat returns
    the cancelled number. Raises `invalid` / `not_found`."""
    ref = validation.reference(number_id, "number_id")
    session = uow.session
    owner = session.scalar(select(Number.account_id).where(Number.id == ref))
    if owner is None:
        raise NotFound("number_id", f"no number {ref[:60]!r}")
    account = ledger.lock_account(session, owner)  # account first, then the number
    number = session.scalars(
        select(Number)
        .where(Number.id == ref)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).one()
    if number.status != NumberStatus.CANCELLED:
        cancel_numbers(uow, account, [number], CancelReason.CUSTOMER, now, mail=False)
        refresh_next_fee(session, account)
    return view(number)


# --- what the collect job and the balance hooks share ---------------------------------------


def pay(
    uow: UnitOfWork, account: Account, number: Number, now: datetime
) -> LedgerTransaction | None:
    """Pay the number's first unpaid period from the balance (seed 003: pay with balance), or
    None when the balance cannot: never below zero. One ledger transaction per (number,
    period): its reference `<number id>:<period>` is unique per account and kind."""
    period = number.periods_paid
    fee = number.monthly_fee
    if account.balance - fee < 0:
        return None
    before = account.balance
    start, end = period_start(number.anchor_at, period), period_end(number.anchor_at, period)
    txn = ledger.post(
        uow,
        account,
        kind=KIND,
        reference=f"{number.id}:{period}",
        amount=-fee,
        counter=NUMBER_FEES,
        description=f"monthly fee {number.msisdn} {start.date()} - {end.date()}",
        now=now,
    )
    number.periods_paid = period + 1
    number.next_renewal_at = add_months(number.anchor_at, period + 1)
    number.failed_period = None
    number.updated_at = now
    events.record(
        uow,
        "fee.paid",
        account.id,
        {
            "number_id": number.id,
            "msisdn": number.msisdn,
            "period": period,
            "period_start": isoformat(start),
            "period_end": isoformat(end),
            "amount": format_amount(fee, number.currency),
            "currency": number.currency,
            "balance": format_amount(account.balance, account.currency),
            "transaction_id": txn.id,
        },
        now,
    )
    ledger.reload_if_crossed(uow, account, before)  # a fee is a debit like any other
    return txn


def report_failures(
    uow: UnitOfWork, account: Account, failed: list[tuple[Number, int]], now: datetime
) -> int:
    """`fee.payment_failed` and one mail, once per (number, period); returns how many were new."""
    grace = timedelta(days=get_settings().number_grace_days)
    new = [(n, p) for n, p in failed if n.failed_period != p]
    for number, period in new:
        number.failed_period = period
        number.updated_at = now
        events.record(
            uow,
            "fee.payment_failed",
            account.id,
            {
                "number_id": number.id,
                "msisdn": number.msisdn,
                "period": period,
                "amount": format_amount(number.monthly_fee, number.currency),
                "currency": number.currency,
                "balance": format_amount(account.balance, account.currency),
                "due_at": isoformat(number.next_renewal_at),
                "cancel_at": isoformat(number.next_renewal_at + grace),
                "code": "insufficient_funds",
            },
            now,
        )
    if new:
        cancel_at = min(n.next_renewal_at for n, _ in new) + grace
        notices.fee_payment_failed(uow, account, new, cancel_at=cancel_at, now=now)
    return len(new)


def cancel_numbers(
    uow: UnitOfWork,
    account: Account,
    numbers: Iterable[Number],
    reason: CancelReason,
    now: datetime,
    *,
    mail: bool = True,
) -> list[Number]:
    """Cancel each (`number.cancelled`); one mail for them all unless `mail` is False.
    The caller refreshes accounts.next_fee_at."""
    done: list[Number] = []
    for number in numbers:
        if number.status == NumberStatus.CANCELLED:
            continue
        number.status = NumberStatus.CANCELLED
        number.cancelled_at = now
        number.cancel_reason = reason
        number.updated_at = now
        events.record(
            uow,
            "number.cancelled",
            account.id,
            {
                "number_id": number.id,
                "msisdn": number.msisdn,
                "reason": str(reason),
                "periods_paid": number.periods_paid,
            },
            now,
        )
        done.append(number)
    if done and mail:
        notices.numbers_cancelled(uow, account, done, reason=str(reason), now=now)
    return done


def suspend_numbers(uow: UnitOfWork, account: Account, now: datetime) -> list[Number]:
    """The account was depleted: its active numbers are `suspended` (`number.suspended`)."""
    cancel_at = now + timedelta(seconds=get_settings().number_cancel_after_depletion_seconds)
    numbers = list(
        uow.session.scalars(
            select(Number)
            .where(Number.account_id == account.id, Number.status == NumberStatus.ACTIVE)
            .order_by(Number.id)
            .with_for_update()
        )
    )
    for number in numbers:
        number.status = NumberStatus.SUSPENDED
        number.suspended_at = now
        number.updated_at = now
        events.record(
            uow,
            "number.suspended",
            account.id,
            {
                "number_id": number.id,
                "msisdn": number.msisdn,
                "reason": "depleted",
                "cancel_at": isoformat(cancel_at),
            },
            now,
        )
    return numbers


def restore_numbers(
    uow: UnitOfWork, account: Account, now: datetime, numbers: Iterable[Number] | None = None
) -> list[Number]:
    """The account is active again: its suspended numbers are `active` (`number.restored`).
    `numbers`: the account's live numbers when the caller has them loaded (else one query)."""
    if numbers is None:
        numbers = uow.session.scalars(
            select(Number)
            .where(Number.account_id == account.id, Number.status == NumberStatus.SUSPENDED)
            .with_for_update()
        )
    restored = [n for n in numbers if n.status == NumberStatus.SUSPENDED]
    for number in restored:
        number.status = NumberStatus.ACTIVE
        number.suspended_at = None
        number.updated_at = now
        events.record(
            uow,
            "number.restored",
            account.id,
            {"number_id": number.id, "msisdn": number.msisdn},
            now,
        )
    return restored
