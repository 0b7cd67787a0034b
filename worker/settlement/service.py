"""Settlement: when the platform's money at a PSP becomes available (seed 004).

The customer's balance is credited when a charge succeeds; what this module moves is
only the platform's receivable at the PSP, from `psp_pending:PSP` to `psp_available:PSP`.

- `schedule()` runs once, when a charge succeeds, in that transaction: it computes
  `available_on` from the merchant account's country x method timing (data, not code:
  worker/data/settlement_timing.toml + SETTLEMENT_TIMING_FILE) and stores it with the
  instant it begins (`settles_at`, the start of that date in the merchant's timezone).
  Money that is available at once (a bank transfer, received) is settled on the spot.
- `roll_forward()` moves every settlement whose instant has come, one ledger transfer
  each, in batches (FOR UPDATE SKIP LOCKED: two runs at once share the work, neither
  repeats it; the transfer is also unique per charge in the ledger). After downtime one
  run catches up everything due.
- `report()` shows pending and available per merchant account (PSP x currency), the
  reserve (minimum balance) that is not available for payout, and the next dates.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from datetime import UTC, date, datetime, time
from decimal import Decimal
from functools import lru_cache
from typing import Any, TypedDict
from zoneinfo import ZoneInfo

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from config import get_settings
from worker.charges.engine import Recorded
from worker.charges.models import Charge
from worker.charges.states import ChargeStatus
from worker.db.session import UnitOfWork
from worker.kernel.clock import isoformat
from worker.kernel.money import format_amount
from worker.ledger import service as ledger
from worker.ledger.models import Account
from worker.outbox import events
from worker.settlement import paid_out, timing

log = logging.getLogger(__name__)

PENDING = "psp_pending"  # the counter-account a successful charge credits the customer against
AVAILABLE = "psp_available"
KIND = "settlement"
NEXT_DATES = 5


# --- configuration ---------------------------------------------------------------------------


def timing_table() -> timing.TimingTable:
    path = get_settings().settlement_timing_file
    return timing.cached_timing(str(path) if path is not None else None)


@lru_cache(maxsize=4)
def _merchants(raw: str) -> dict[tuple[str, str], timing.MerchantAccount]:
    return {(m.psp, m.currency): m for m in timing.parse_merchant_accounts(raw or "[]")}


def merchant_for(psp: str, currency: str) -> timing.MerchantAccount:
    """The configured merchant account for (psp, currency), else the default one."""
    settings = get_settings()
    found = _merchants(settings.psp_merchant_accounts_json).get((psp, currency))
    if found is not None:
        return found
    return timing.MerchantAccount(
        psp=psp,
        currency=currency,
        country=settings.psp_merchant_country.strip().upper(),
        timezone=settings.psp_merchant_timezone,
    )


def merchant_accounts() -> list[timing.MerchantAccount]:
    return list(_merchants(get_settings().psp_merchant_accounts_json).values())


def method_of(charge: Charge) -> str:
    """Timing method: cards and PayPal use the country row; a bank transfer is available
    when received."""
    return "bank_transfer" if charge.psp == "bank_transfer" else "card"


# --- when a charge succeeds ------------------------------------------------------------------


def _plan(charge: Charge, country: str, succeeded_at: datetime) -> tuple[date, str, datetime]:
    """(available_on, rule, the instant it begins) for a charge that succeeded then."""
    merchant = merchant_for(charge.psp, charge.currency)
    planned = timing.available_on(
        timing_table(),
        merchant,
        method=method_of(charge),
        customer_country=country,
        succeeded_at=succeeded_at,
    )
    zone = ZoneInfo(merchant.timezone)
    starts = datetime.combine(planned.available_on, time(0), tzinfo=zone).astimezone(UTC)
    return planned.available_on, planned.rule[:120], starts


def schedule(
    uow: UnitOfWork,
    charge: Charge,
    account: Account,
    now: datetime,
    *,
    succeeded_at: datetime | None = None,
) -> None:
    """Compute and store when the charge's money becomes available (once), counting from
    `succeeded_at` (when the PSP took the money; default `now`)."""
    if charge.settlement_status is not None:
        return
    charge.settlement_status = "pending"
    try:
        charge.available_on, charge.settlement_rule, charge.settles_at = _plan(
            charge, account.country, succeeded_at or now
        )
    except Exception as exc:
        # Never let settlement stop a customer's credit: the charge stays pending with no
        # date (the report counts it; each roll-forward tries again) and an operator is told.
        log.exception("charge %s: settlement date not computed", charge.id)
        events.record(
            uow,
            "settlement.unscheduled",
            charge.account_id,
            {"charge_id": charge.id, "psp": charge.psp, "reason": str(exc)[:300]},
            now,
        )
        return
    if charge.settles_at is not None and charge.settles_at <= now:
        # Available on receipt (bank transfer): no need to wait for a run.
        charge.settles_at = now
        settle(uow, charge, now)


def on_charge_outcome(uow: UnitOfWork, charge: Charge, recorded: Recorded) -> None:
    """The charge engine's hook (installed by worker/wiring.py): a success is dated for
    settlement from when the PSP took the money."""
    if recorded.credited is not None and charge.status == ChargeStatus.SUCCEEDED:
        schedule(uow, charge, recorded.credited, recorded.now, succeeded_at=recorded.succeeded_at)


def reschedule_unscheduled(uow: UnitOfWork, limit: int) -> int:
    """Give a date to pending settlements that have none (configuration fixed since, or
    charges from before settlement existed), counting from when each charge succeeded."""
    rows = uow.session.execute(
        select(Charge, Account.country)
        .join(Account, Account.id == Charge.account_id)
        .where(Charge.settlement_status == "pending", Charge.settles_at.is_(None))
        .order_by(Charge.id)
        .limit(limit)
        .with_for_update(of=Charge, skip_locked=True)
    ).all()
    done = 0
    for charge, country in rows:
        try:
            charge.available_on, charge.settlement_rule, charge.settles_at = _plan(
                charge, country, charge.completed_at or charge.updated_at
            )
        except Exception as exc:
            log.warning("charge %s: settlement date still not computable: %s", charge.id, exc)
            continue
        done += 1
    return done


def settle(uow: UnitOfWork, charge: Charge, as_of: datetime) -> bool:
    """Move one charge's money from pending to available; the caller holds its row lock."""
    if charge.settlement_status != "pending":
        return False
    posted = ledger.transfer_system(
        uow,
        kind=KIND,
        reference=charge.id,
        amount=charge.amount,
        currency=charge.currency,
        from_account=f"{PENDING}:{charge.psp}",
        to_account=f"{AVAILABLE}:{charge.psp}",
        description=f"settlement of {charge.id} ({charge.settlement_rule or 'no rule'})",
        now=as_of,
    )
    charge.settlement_status = "available"
    charge.settled_at = as_of
    if posted is None:  # the ledger already has it: only the status was behind
        log.error("charge %s: settlement was already posted; status repaired", charge.id)
        return False
    events.record(uow, "funds.available", None, available_data(charge), as_of)
    return True


def available_data(charge: Charge) -> dict[str, Any]:
    """The data of `funds.available` for a settled charge."""
    return {
        "charge_id": charge.id,
        "account_id": charge.account_id,
        "psp": charge.psp,
        "amount": format_amount(charge.amount, charge.currency),
        "currency": charge.currency,
        "available_on": charge.available_on.isoformat() if charge.available_on else None,
        "rule": charge.settlement_rule,
    }


def plan(charge: Charge, country: str, succeeded_at: datetime) -> tuple[date, str, datetime]:
    """(available_on, rule, the instant it begins) of a charge that succeeded then, as
    `schedule` computes it (for a payer that records many successes at once); raises
    when the timing data cannot date it."""
    return _plan(charge, country, succeeded_at)


# --- the roll-forward -----------------------------------------------------------------------


def due_query(as_of: datetime, limit: int) -> Any:
    """Pending settlements whose instant has come (the partial index ix_charges_settlement_due)."""
    return (
        select(Charge)
        .where(Charge.settlement_status == "pending", Charge.settles_at <= as_of)
        .order_by(Charge.settles_at, Charge.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
        .execution_options(populate_existing=True)
    )


class SettledAmount(TypedDict):
    psp: str
    currency: str
    amount: str  # decimal string


class RollForwardResult(TypedDict):
    """What a roll-forward moved: settlements made available, per PSP and currency."""

    as_of: str
    settled: int
    rescheduled: int
    amounts: list[SettledAmount]


def roll_forward(uow: UnitOfWork, as_of: datetime) -> RollForwardResult:
    """Settle everything due by `as_of`, one committed batch at a time."""
    batch = get_settings().settlement_batch_size
    rescheduled = reschedule_unscheduled(uow, batch)
    uow.commit()
    settled = 0
    totals: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    while True:
        due = list(uow.session.scalars(due_query(as_of, batch)))
        if not due:
            break
        for charge in due:
            if settle(uow, charge, as_of):
                settled += 1
                totals[(charge.psp, charge.currency)] += charge.amount
        uow.commit()  # release this batch's locks; its events relay after commit
    if settled:
        log.info("settlement as of %s: %d settlements available", isoformat(as_of), settled)
    return {
        "as_of": isoformat(as_of),
        "settled": settled,
        "rescheduled": rescheduled,
        "amounts": [
            {"psp": psp, "currency": cur, "amount": format_amount(amount, cur)}
            for (psp, cur), amount in sorted(totals.items())
        ],
    }


# --- the report -----------------------------------------------------------------------------


def report(session: Session, as_of: datetime) -> dict[str, Any]:
    """Pending and available per merchant account as of `as_of`, with the reserve and the
    next dates. Computed from the settlement records; `ledger` shows what the roll-forward
    has booked so far (`overdue` counts settlements due but not yet rolled forward)."""
    is_available = Charge.settles_at <= as_of
    rows = session.execute(
        select(
            Charge.psp,
            Charge.currency,
            func.coalesce(func.sum(case((is_available, Charge.amount), else_=0)), 0),
            func.coalesce(
                func.sum(
                    case(
                        (Charge.settles_at > as_of, Charge.amount),
                        (Charge.settles_at.is_(None), Charge.amount),
                        else_=0,
                    )
                ),
                0,
            ),
            func.count().filter(Charge.settlement_status == "pending", is_available),
            func.count().filter(Charge.settles_at.is_(None)),
        )
        .where(Charge.settlement_status.is_not(None), Charge.completed_at <= as_of)
        .group_by(Charge.psp, Charge.currency)
    ).all()
    upcoming: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for psp, cur, day, amount, count in session.execute(
        select(
            Charge.psp, Charge.currency, Charge.available_on, func.sum(Charge.amount), func.count()
        )
        .where(
            Charge.settlement_status.is_not(None),
            Charge.completed_at <= as_of,
            Charge.settles_at > as_of,
        )
        .group_by(Charge.psp, Charge.currency, Charge.available_on)
        .order_by(Charge.available_on)
    ):
        if len(upcoming[(psp, cur)]) < NEXT_DATES:
            upcoming[(psp, cur)].append(
                {
                    "date": day.isoformat() if day is not None else None,
                    "amount": format_amount(amount, cur),
                    "charges": count,
                }
            )
    booked = ledger.system_balances(session, "psp_")
    refunds = paid_out.refunded(session, as_of)
    figures = {
        (psp, cur): (Decimal(avail), Decimal(pend), int(overdue), int(unscheduled))
        for psp, cur, avail, pend, overdue, unscheduled in rows
    }
    keys = sorted(set(figures) | set(refunds) | {(m.psp, m.currency) for m in merchant_accounts()})
    accounts_out = []
    for psp, cur in keys:
        available, pending, overdue, unscheduled = figures.get(
            (psp, cur), (Decimal(0), Decimal(0), 0, 0)
        )
        # Refunds paid come out of the available funds (issue 14); the reserve is kept
        # from what is left, and nothing is payable while refunds took it below zero.
        refunded_here = refunds.get((psp, cur), Decimal(0))
        available -= refunded_here
        merchant = merchant_for(psp, cur)
        reserve = merchant.minimum_balance
        reserved = max(min(available, reserve), Decimal(0))
        accounts_out.append(
            {
                "psp": psp,
                "currency": cur,
                "country": merchant.country,
                "timezone": merchant.timezone,
                "pending": format_amount(pending, cur),
                "available": format_amount(available, cur),
                "refunded": format_amount(refunded_here, cur),
                "negative": available < 0,
                "minimum_balance": format_amount(reserve, cur),
                "reserved": format_amount(reserved, cur),
                "payable": format_amount(max(available - reserved, Decimal(0)), cur),
                "overdue": overdue,
                "unscheduled": unscheduled,
                "next": upcoming.get((psp, cur), []),
                "ledger": {
                    "pending": format_amount(
                        -booked.get((f"{PENDING}:{psp}:{cur}", cur), Decimal(0)), cur
                    ),
                    "available": format_amount(
                        -booked.get((f"{AVAILABLE}:{psp}:{cur}", cur), Decimal(0)), cur
                    ),
                },
            }
        )
    return {"as_of": isoformat(as_of), "merchant_accounts": accounts_out}
