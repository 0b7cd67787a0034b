"""Planning auto-reloads: every guard under the account's row lock, and the charge to send.

Guard clauses encode what others paid for (DESIGN.md §7, lago's threshold top-up):
- one reload in flight per account (a partial unique index; counted under the row lock);
- one charge lands the balance above the threshold: n x amount, smallest n >= 1;
- back-off after a decline or a reload exhausted by soft failures; caps per day and month.
A chunk of accounts is planned in one transaction (`plan_chunk`); one account's plan is a
`Plan`: skip, send an existing charge again, or insert a new charge row.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import bindparam, func, select
from sqlalchemy.orm import Session

from config import get_settings
from worker.charges import engine as charges
from worker.charges.models import Charge
from worker.charges.states import COUNTED, IN_FLIGHT, Purpose
from worker.db.session import UnitOfWork
from worker.kernel import clock
from worker.kernel.clock import isoformat
from worker.kernel.errors import NotFound
from worker.kernel.money import format_amount
from worker.ledger.models import Account
from worker.numbers import lookahead  # issue 15: fees due soon count against the balance
from worker.outbox import events
from worker.payment_methods.models import PaymentMethod
from worker.psp.base import ChargeRequest

# The code of a soft-failed reload closed because settings or the balance changed before its
# retry: our decision, so the failure policy does not count it.
SUPERSEDED = "superseded"
ZERO = Decimal(0)


def reload_amount(balance: Decimal, threshold: Decimal, amount: Decimal) -> Decimal:
    """n x amount with the smallest n >= 1 such that balance + n x amount > threshold."""
    n = max(int((threshold - balance) // amount) + 1, 1)
    while balance + n * amount <= threshold:  # exact Decimal: at most one more step
        n += 1
    return n * amount


def _day_start(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def _month_start(moment: datetime) -> datetime:
    return _day_start(moment).replace(day=1)


def _next_month(moment: datetime) -> datetime:
    start = _month_start(moment)
    return (start + timedelta(days=32)).replace(day=1)


@dataclass(frozen=True)
class Skip:
    """No charge: why (`view`: what the reload returns, `status: skipped` and a reason)."""

    view: dict[str, Any]


def skip(account: Account, reason: str, **extra: Any) -> Skip:
    return Skip(
        {
            "account_id": account.id,
            "status": "skipped",
            "reason": reason,
            "balance": format_amount(account.balance, account.currency),
            **extra,
        }
    )


def _capped(
    uow: UnitOfWork, account: Account, period: str, until: datetime, limit: str, now: datetime
) -> Skip:
    """Nothing is charged; one event per period (capped_until keeps the sweep away)."""
    account.auto_reload_capped_until = until
    events.record(
        uow,
        "auto_reload.capped",
        account.id,
        {
            "period": period,
            "limit": limit,
            "until": isoformat(until),
            "balance": format_amount(account.balance, account.currency),
            "threshold": format_amount(
                account.auto_reload_threshold or Decimal(0), account.currency
            ),
        },
        now,
    )
    return skip(account, f"capped_{period}")


_COUNTED = Charge.status.in_(COUNTED)
# Per account: its reloads that are open, and what the caps count (built once). Read after
# the accounts are locked, so it sees every reload committed before the lock was granted.
_RELOADS_SO_FAR = (
    select(
        Charge.account_id,
        func.count().filter(Charge.status.in_(IN_FLIGHT)),
        func.count().filter(_COUNTED, Charge.created_at >= bindparam("day")),
        func.coalesce(
            func.sum(Charge.amount).filter(_COUNTED, Charge.created_at >= bindparam("month")),
            Decimal(0),
        ),
        func.count(),
    )
    .where(
        Charge.account_id.in_(bindparam("ids", expanding=True)),
        Charge.purpose == Purpose.AUTO_RELOAD,
    )
    .group_by(Charge.account_id)
)
_LOCK_ACCOUNTS = (
    select(Account)
    .where(Account.id.in_(bindparam("ids", expanding=True)))
    .order_by(Account.id)  # one order for every locker: batches never deadlock each other
    .with_for_update()
    .execution_options(populate_existing=True)
)
_METHODS = select(PaymentMethod).where(PaymentMethod.id.in_(bindparam("ids", expanding=True)))


@dataclass(frozen=True)
class SoFar:
    """An account's auto-reload charges: open now, counted today and this month, ever."""

    open: int = 0
    today: int = 0
    month: Decimal = Decimal(0)
    earlier: int = 0


def reloads_so_far(session: Session, account_ids: list[str], now: datetime) -> dict[str, SoFar]:
    rows = session.execute(
        _RELOADS_SO_FAR, {"ids": account_ids, "day": _day_start(now), "month": _month_start(now)}
    )
    return {row[0]: SoFar(*row[1:]) for row in rows}


def _open_charge(session: Session, account_id: str) -> Charge | None:
    return session.scalars(
        select(Charge).where(
            Charge.account_id == account_id,
            Charge.purpose == Purpose.AUTO_RELOAD,
            Charge.status.in_(IN_FLIGHT),
        )
    ).one_or_none()


@dataclass(frozen=True)
class NewCharge:
    """A new reload's charge row, inserted with the rest of its batch in one statement."""

    account: Account
    method: PaymentMethod
    row: dict[str, Any]


@dataclass(frozen=True)
class Planned:
    """A charge committed (or re-armed) under the account lock, to send after COMMIT.

    Plain values, no ORM object: after another account's rollback, touching an expired
    object would reload it and hold a connection open through the PSP call."""

    charge_id: str
    account_id: str
    psp: str
    lease_until: datetime | None
    request: ChargeRequest | None
    view: dict[str, Any]  # what to return when there is nothing to send


def to_send(session: Session, charge: Charge, must_call: bool) -> Planned:
    return Planned(
        charge.id,
        charge.account_id,
        charge.psp,
        charge.lease_until,
        charges.request_for(session, charge) if must_call else None,
        result_of(charge),
    )


def result_of(charge: Charge) -> dict[str, Any]:
    """What a reload returns for its charge."""
    return {"account_id": charge.account_id, **charges.view(charge), "charge_id": charge.id}


# Exceptions that stop a whole batch (the task retries it, or the time limit ends it); any
# other exception ends only the account it came from.
def clock_for(as_of: datetime | None) -> Callable[[], datetime]:
    return (lambda: as_of) if as_of is not None else clock.now


Plan = Skip | Planned | NewCharge


def plan_account(
    uow: UnitOfWork,
    account: Account,
    now: datetime,
    so_far: SoFar,
    methods: dict[str, PaymentMethod],
    fees_due: Decimal = Decimal(0),
) -> Plan:
    """Every guard for one account, under its row lock: a skip, a charge to send again (a
    soft failure whose retry is due), or a new charge row for the chunk to insert.

    `so_far`, `methods` and `fees_due` (issue 15: the number fees due by the next sweep,
    worker/numbers/lookahead.py) were read for the whole chunk after its locks were granted."""
    session = uow.session
    if not account.auto_reload_enabled:
        return skip(account, "disabled")
    threshold, amount = account.auto_reload_threshold, account.auto_reload_amount
    balance = account.balance - fees_due  # issue 15: what is left once due fees are paid
    if threshold is None or amount is None or balance >= threshold:
        return skip(account, "above_threshold")
    if account.status == "suspended" and account.suspension_reason == "admin":
        return skip(account, "suspended_by_operator")
    # Both back-offs (hard decline, soft failures used up) live in this one column.
    if account.auto_reload_backoff_until and account.auto_reload_backoff_until > now:
        return skip(account, "backoff", until=isoformat(account.auto_reload_backoff_until))
    if account.auto_reload_capped_until and account.auto_reload_capped_until > now:
        return skip(account, "capped")
    if account.auto_reload_action_required_at is not None:  # 3-D Secure: no retries
        return skip(account, "action_required")

    settings = get_settings()
    open_charge = _open_charge(session, account.id) if so_far.open else None
    if (
        open_charge is not None
        and open_charge.status == "not_attempted"
        and (
            open_charge.payment_method_id != account.auto_reload_method_id
            or open_charge.amount != reload_amount(balance, threshold, amount)
        )
    ):
        # Settings or balance changed since the soft failure: never retry the old card or
        # the old amount; that charge never reached the PSP, so closing it is safe.
        charges.fail(
            uow,
            charges.lock(session, open_charge.id),
            SUPERSEDED,
            "auto-reload settings or balance changed before the retry",
            now,
        )
        open_charge = None
        session.flush()  # count it as before, now closed
        so_far = reloads_so_far(session, [account.id], now).get(account.id, SoFar())
    if open_charge is not None:
        retry_due = open_charge.status == "not_attempted" and (
            open_charge.next_attempt_at is None or open_charge.next_attempt_at <= now
        )
        if not retry_due:
            return skip(account, "in_flight", charge_id=open_charge.id)
        charge, must_call = charges.begin(
            uow,
            account_id=account.id,
            amount=format_amount(open_charge.amount),
            idempotency_key=open_charge.idempotency_key,
            payment_method_id=open_charge.payment_method_id,
            purpose=Purpose.AUTO_RELOAD,
            now=now,
        )
        return to_send(session, charge, must_call)
    method = methods.get(account.auto_reload_method_id or "")
    if method is None or method.removed_at is not None:
        account.auto_reload_enabled = False
        events.record(
            uow, "auto_reload.disabled", account.id, {"reason": "payment_method_missing"}, now
        )
        return skip(account, "payment_method_missing")
    total = reload_amount(balance, threshold, amount)
    if so_far.today >= settings.auto_reload_max_per_day:
        return _capped(
            uow,
            account,
            "day",
            _day_start(now) + timedelta(days=1),
            str(settings.auto_reload_max_per_day),
            now,
        )
    if so_far.month + total > settings.auto_reload_max_amount_per_month:
        return _capped(
            uow,
            account,
            "month",
            _next_month(now),
            format_amount(settings.auto_reload_max_amount_per_month, account.currency),
            now,
        )
    row = charges.new_row(
        account,
        method,
        amount=format_amount(total),
        idempotency_key=f"auto_reload:{account.id}:{so_far.earlier + 1}",
        purpose=Purpose.AUTO_RELOAD,
        now=now,
    )
    return NewCharge(account, method, row)


def plan_chunk(
    uow: UnitOfWork, account_ids: list[str], as_of: datetime | None
) -> tuple[list[Planned], dict[str, dict[str, Any] | Exception]]:
    """Plan several accounts in one transaction and COMMIT: their rows locked in id order
    (one order for every locker: chunks never deadlock each other), their reloads and
    payment methods read in one statement each, every guard checked per account, the new
    charge rows inserted in one statement.

    Returns what to send (each charge row committed before its PSP call) and, per account
    that needs no PSP call, its outcome: a skip's view, or NotFound for an unknown id."""
    session = uow.session
    now = clock_for(as_of)()
    ids = sorted(set(account_ids))
    locked = list(session.scalars(_LOCK_ACCOUNTS, {"ids": ids}))
    so_far = reloads_so_far(session, [a.id for a in locked], now)
    wanted = sorted({a.auto_reload_method_id for a in locked if a.auto_reload_method_id})
    methods = {m.id: m for m in session.scalars(_METHODS, {"ids": wanted})} if wanted else {}
    # Issue 15: fees due by the next sweep, for the accounts that have any (one statement).
    horizon = now + timedelta(seconds=get_settings().auto_reload_interval_seconds)
    with_fees = [a.id for a in locked if a.next_fee_at is not None and a.next_fee_at <= horizon]
    fees = lookahead.fees_due(session, with_fees, horizon)
    outcomes: dict[str, dict[str, Any] | Exception] = {
        i: NotFound("account_id", f"no account {i[:60]!r}") for i in ids
    }
    sends: list[Planned] = []
    new: list[NewCharge] = []
    for account in locked:
        step = plan_account(
            uow, account, now, so_far.get(account.id, SoFar()), methods, fees.get(account.id, ZERO)
        )
        if isinstance(step, Planned):
            sends.append(step)
        elif isinstance(step, NewCharge):
            new.append(step)
        else:
            outcomes[account.id] = step.view
    inserted = charges.insert_if_absent(session, [n.row for n in new]) if new else {}
    for n in new:
        charge = inserted.get(n.row["idempotency_key"])
        must_call = True
        if charge is None:  # the key exists (it never should under the lock): check it
            charge, must_call = charges.begin(
                uow,
                account_id=n.account.id,
                amount=format_amount(n.row["amount"]),
                idempotency_key=n.row["idempotency_key"],
                payment_method_id=n.method.id,
                purpose=Purpose.AUTO_RELOAD,
                now=now,
            )
        sends.append(to_send(session, charge, must_call))
    uow.commit()  # every charge row exists before its PSP call
    return sends, outcomes
