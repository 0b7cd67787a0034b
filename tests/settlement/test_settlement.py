"""Settlement through its services and the CLI: available_on computed once at success,
the roll-forward (idempotent, concurrent, after downtime), the report with its reserve.

Time is passed in (`now_fn`, `as_of`); nothing sleeps.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from config import SettingsError, get_settings, reset_settings
from tests.concurrency import at_once
from worker.accounts import service as accounts
from worker.charges import engine as charges
from worker.charges import janitor
from worker.charges import top_up as top_ups
from worker.charges.models import Charge
from worker.db.session import unit_of_work
from worker.ledger import service as ledger
from worker.ledger.models import LedgerTransaction
from worker.outbox.models import Event
from worker.payment_methods import service as payment_methods
from worker.psp.base import ChargeResult, Outcome
from worker.settlement import service as settlement

pytestmark = pytest.mark.integration  # real PostgreSQL and Redis, tables emptied first


US_NY = {"psp": "braintree", "currency": "EUR", "country": "US", "timezone": "America/New_York"}


@pytest.fixture
def merchants(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., None]]:
    """Configure the PSP merchant accounts as an operator would (environment)."""

    def apply(*entries: dict[str, Any], **env: str) -> None:
        monkeypatch.setenv("PSP_MERCHANT_ACCOUNTS", json.dumps(list(entries)))
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        reset_settings()
        get_settings()

    reset_settings()
    yield apply
    monkeypatch.undo()
    reset_settings()


def _account(country: str = "US", psp: str = "braintree", tag: str = "") -> tuple[str, str]:
    with unit_of_work() as uow:
        account_id: str = accounts.create(
            uow, name="Settle Co", country=country, now=datetime(2026, 1, 1, tzinfo=UTC)
        )["id"]
    nonce = f"fake-valid-visa-nonce:{account_id}{tag}" if psp == "braintree" else None
    with unit_of_work() as uow:
        method = payment_methods.add(
            uow, account_id=account_id, psp=psp, nonce=nonce, now=datetime(2026, 1, 1, tzinfo=UTC)
        )
    return account_id, method["id"]


def _charge(
    account_id: str, amount: str, at: datetime, key: str | None = None, method: str | None = None
) -> dict[str, Any]:
    with unit_of_work() as uow:
        return top_ups.top_up(
            uow,
            account_id=account_id,
            amount=amount,
            idempotency_key=key or f"k-{account_id}-{at.isoformat()}-{amount}",
            payment_method_id=method,
            now_fn=lambda: at,
        )


def _row(charge_id: str) -> Charge:
    with unit_of_work() as uow:
        charge = uow.session.get(Charge, charge_id)
        assert charge is not None
        return charge


def _roll(as_of: datetime) -> dict[str, Any]:
    with unit_of_work() as uow:
        return settlement.roll_forward(uow, as_of)


def _report(as_of: datetime) -> dict[str, Any]:
    with unit_of_work() as uow:
        return settlement.report(uow.session, as_of)


def _settlement_txns(charge_id: str | None = None) -> list[LedgerTransaction]:
    with unit_of_work() as uow:
        query = select(LedgerTransaction).where(LedgerTransaction.kind == "settlement")
        if charge_id is not None:
            query = query.where(LedgerTransaction.reference == charge_id)
        return list(uow.session.scalars(query))


def _system(code: str, currency: str = "EUR") -> Decimal:
    with unit_of_work() as uow:
        return ledger.system_balances(uow.session, code).get((f"{code}:{currency}", currency), 0)


def _audit_ok() -> bool:
    with unit_of_work() as uow:
        return bool(ledger.audit(uow.session)["ok"])


# --- available_on is computed once, when the charge succeeds -----------------------------------


def test_us_card_on_christmas_eve_is_available_the_next_tuesday(
    merchants: Callable[..., None],
) -> None:
    merchants(US_NY)
    account_id, _ = _account()
    at = datetime(2026, 12, 24, 15, 0, tzinfo=UTC)  # Thursday, 10:00 in New York
    result = _charge(account_id, "25.00", at)
    assert result["status"] == "succeeded"
    assert result["balance"] == "25.00"  # the customer is credited at once
    assert result["available_on"] == "2026-12-29"  # Fri 25th is Christmas: Mon, Tue
    assert result["settlement_status"] == "pending"
    charge = _row(result["charge_id"])
    assert charge.settlement_rule == "US 2 business days"
    # The date begins at midnight in New York, 05:00 UTC.
    assert charge.settles_at == datetime(2026, 12, 29, 5, 0, tzinfo=UTC)
    with unit_of_work() as uow:
        [listed] = charges.list_for(uow.session, account_id)
    assert listed["available_on"] == "2026-12-29"
    assert listed["settlement_status"] == "pending"


def test_the_merchant_timezone_decides_the_local_date(merchants: Callable[..., None]) -> None:
    merchants({**US_NY, "timezone": "America/Los_Angeles"})
    account_id, _ = _account()
    # 02:00 UTC on Thursday the 24th is still Wednesday the 23rd in Los Angeles:
    # day 0 Wed, +1 Thu 24th, (Fri 25th Christmas), +2 Mon 28th.
    result = _charge(account_id, "10.00", datetime(2026, 12, 24, 2, 0, tzinfo=UTC))
    assert result["available_on"] == "2026-12-28"


def test_first_payout_timing_until_the_first_payout_has_happened(
    merchants: Callable[..., None],
) -> None:
    gb = {"psp": "braintree", "currency": "EUR", "country": "GB", "timezone": "Europe/London"}
    merchants({**gb, "first_payout_done": False})
    account_id, _ = _account("GB")
    monday = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
    assert _charge(account_id, "10.00", monday)["available_on"] == "2026-03-09"  # 7 calendar
    merchants({**gb, "first_payout_done": True})
    assert _charge(account_id, "11.00", monday)["available_on"] == "2026-03-05"  # 3 business


def test_japan_pays_out_weekly_on_the_chosen_day(merchants: Callable[..., None]) -> None:
    merchants(
        {
            "psp": "braintree",
            "currency": "EUR",
            "country": "JP",
            "timezone": "Asia/Tokyo",
            "payout_weekday": "friday",
        }
    )
    account_id, _ = _account("JP")
    # Monday 2026-11-16 (JST): 4 business days later is Fri 20th -> paid out that Friday.
    result = _charge(account_id, "10.00", datetime(2026, 11, 16, 1, 0, tzinfo=UTC))
    assert result["available_on"] == "2026-11-20"
    # Tuesday 17th: +4 business days is Mon 23rd... a holiday (Labour Thanksgiving Day),
    # so Tue 24th: the first Friday on or after it is the 27th.
    result = _charge(account_id, "11.00", datetime(2026, 11, 17, 1, 0, tzinfo=UTC))
    assert result["available_on"] == "2026-11-27"


def test_a_bank_transfer_is_available_when_it_is_received(merchants: Callable[..., None]) -> None:
    merchants()
    account_id, bank = _account("GB", psp="bank_transfer")  # never a default: named
    sent_at = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
    pending = _charge(account_id, "100.00", sent_at, key="pf-1", method=bank)
    assert pending["status"] == "pending"
    assert pending["available_on"] is None
    received = datetime(2026, 3, 6, 14, 0, tzinfo=UTC)
    with unit_of_work() as uow:  # what reconciliation reports when the money arrives
        charge = charges.apply(
            uow,
            pending["charge_id"],
            ChargeResult(Outcome.SUCCEEDED, pending["psp_reference"], None, None),
            received,
        )
        charge_id = charge.id
    row = _row(charge_id)
    assert row.available_on == date(2026, 3, 6)
    assert row.settlement_status == "available"
    assert row.settled_at == received
    assert len(_settlement_txns(charge_id)) == 1
    assert _roll(received + timedelta(days=30))["settled"] == 0


def test_available_on_is_computed_once_and_a_config_change_does_not_move_it(
    merchants: Callable[..., None],
) -> None:
    merchants(US_NY)
    account_id, _ = _account()
    at = datetime(2026, 12, 24, 15, 0, tzinfo=UTC)
    result = _charge(account_id, "25.00", at, key="once")
    merchants({**US_NY, "country": "BR"})  # 30 calendar days now
    again = _charge(account_id, "25.00", at, key="once")  # a repeat of the same top-up
    assert again["charge_id"] == result["charge_id"]
    assert again["available_on"] == "2026-12-29"


def test_a_settlement_date_that_cannot_be_computed_never_blocks_the_credit(
    merchants: Callable[..., None],
) -> None:
    merchants(US_NY)
    account_id, _ = _account("US")
    with unit_of_work() as uow:  # a customer country the timing rules cannot place
        accounts.get(uow.session, account_id).country = "ZZ"
    result = _charge(account_id, "5.00", datetime(2026, 12, 1, 12, tzinfo=UTC))
    assert result["status"] == "succeeded"
    assert result["balance"] == "5.00"
    assert result["settlement_status"] == "pending"
    assert result["available_on"] is None
    with unit_of_work() as uow:
        [event] = uow.session.scalars(select(Event).where(Event.type == "settlement.unscheduled"))
    assert event.data["charge_id"] == result["charge_id"]
    report = _report(datetime(2027, 1, 1, tzinfo=UTC))
    [figures] = report["merchant_accounts"]
    assert figures["unscheduled"] == 1
    assert figures["pending"] == "5.00"

    # Once the cause is fixed, the next roll-forward dates it from when it succeeded
    # (Tue 2026-12-01 + 2 business days) and settles it when due.
    with unit_of_work() as uow:
        accounts.get(uow.session, account_id).country = "US"
    rolled = _roll(datetime(2026, 12, 2, tzinfo=UTC))
    assert (rolled["rescheduled"], rolled["settled"]) == (1, 0)
    assert _row(result["charge_id"]).available_on == date(2026, 12, 3)
    assert _roll(datetime(2026, 12, 3, 12, tzinfo=UTC))["settled"] == 1


# --- the roll-forward ------------------------------------------------------------------------


def test_roll_forward_moves_due_money_once_as_a_balanced_ledger_transfer(
    merchants: Callable[..., None],
) -> None:
    merchants(US_NY)
    account_id, _ = _account()
    result = _charge(account_id, "25.00", datetime(2026, 12, 24, 15, 0, tzinfo=UTC))
    charge_id = result["charge_id"]
    assert _system("psp_pending:braintree") == Decimal("-25.00")

    # 04:59 UTC on the 29th is still the 28th in New York: not yet.
    assert _roll(datetime(2026, 12, 29, 4, 59, tzinfo=UTC))["settled"] == 0
    assert _row(charge_id).settlement_status == "pending"

    at = datetime(2026, 12, 29, 5, 0, tzinfo=UTC)
    rolled = _roll(at)
    assert rolled["settled"] == 1
    assert rolled["amounts"] == [{"psp": "braintree", "currency": "EUR", "amount": "25.00"}]
    row = _row(charge_id)
    assert row.settlement_status == "available"
    assert row.settled_at == at
    [txn] = _settlement_txns(charge_id)
    assert txn.account_id is None and txn.balance_after is None
    assert _system("psp_pending:braintree") == Decimal("0")
    assert _system("psp_available:braintree") == Decimal("-25.00")
    with unit_of_work() as uow:
        [event] = uow.session.scalars(select(Event).where(Event.type == "funds.available"))
        assert accounts.get(uow.session, account_id).balance == Decimal("25.00")  # untouched
    assert event.data["charge_id"] == charge_id
    assert event.data["amount"] == "25.00"
    assert event.data["available_on"] == "2026-12-29"
    assert _audit_ok()

    assert _roll(at)["settled"] == 0  # redelivered: nothing more
    assert _roll(at + timedelta(days=3))["settled"] == 0
    assert len(_settlement_txns(charge_id)) == 1


def test_two_roll_forwards_at_once_settle_each_charge_once(merchants: Callable[..., None]) -> None:
    merchants(US_NY, SETTLEMENT_BATCH_SIZE="7")
    ids = []
    for i in range(30):
        account_id, _ = _account(tag=str(i))
        ids.append(_charge(account_id, "3.00", datetime(2026, 12, 1, 15, tzinfo=UTC))["charge_id"])
    results = at_once(lambda: _roll(datetime(2026, 12, 10, tzinfo=UTC)), 2)
    assert sum(r["settled"] for r in results) == 30
    txns = _settlement_txns()
    assert sorted(t.reference for t in txns) == sorted(ids)
    assert _system("psp_available:braintree") == Decimal("-90.00")
    assert _audit_ok()


def test_one_run_after_a_week_of_downtime_catches_up_everything_due(
    merchants: Callable[..., None],
) -> None:
    merchants(US_NY)
    account_id, _ = _account()
    start = datetime(2026, 12, 1, 15, 0, tzinfo=UTC)  # Tuesday
    made = {
        _charge(account_id, f"{i + 1}.00", start + timedelta(days=i))["charge_id"]: i
        for i in range(10)
    }
    # Down from Dec 1 to Dec 9 (no roll-forward ran). Business days: Tue 1 -> Thu 3,
    # Wed 2 -> Fri 4, Thu 3 -> Mon 7, Fri 4 -> Tue 8, Sat 5/Sun 6/Mon 7 -> Wed 9, ...
    back = datetime(2026, 12, 9, 12, 0, tzinfo=UTC)
    rolled = _roll(back)
    available_on = {cid: _row(cid).available_on for cid in made}
    assert sorted(d.isoformat() for d in available_on.values() if d is not None) == [
        "2026-12-03",
        "2026-12-04",
        "2026-12-07",
        "2026-12-08",
        "2026-12-09",
        "2026-12-09",
        "2026-12-09",
        "2026-12-10",
        "2026-12-11",
        "2026-12-14",
    ]
    due = {cid for cid, day in available_on.items() if day is not None and day <= date(2026, 12, 9)}
    assert rolled["settled"] == len(due) == 7
    for charge_id in made:
        expected = "available" if charge_id in due else "pending"
        assert _row(charge_id).settlement_status == expected
    assert _roll(back)["settled"] == 0


# --- the report --------------------------------------------------------------------------------


def test_report_shows_pending_available_reserve_and_next_dates(
    merchants: Callable[..., None],
) -> None:
    merchants({**US_NY, "minimum_balance": "30.00"})
    account_id, _ = _account()
    _charge(account_id, "25.00", datetime(2026, 12, 24, 15, 0, tzinfo=UTC))  # -> Dec 29
    _charge(account_id, "10.00", datetime(2026, 12, 28, 15, 0, tzinfo=UTC))  # -> Dec 30
    _charge(account_id, "40.00", datetime(2026, 12, 30, 15, 0, tzinfo=UTC))  # -> Jan 4 (Jan 1)

    before = _report(datetime(2026, 12, 28, tzinfo=UTC))
    [figures] = before["merchant_accounts"]
    assert (figures["psp"], figures["currency"], figures["country"]) == ("braintree", "EUR", "US")
    assert figures["pending"] == "25.00"  # the others had not happened yet
    assert figures["available"] == "0.00"

    on_new_year = _report(datetime(2027, 1, 1, 12, tzinfo=UTC))
    [figures] = on_new_year["merchant_accounts"]
    assert figures["available"] == "35.00"
    assert figures["pending"] == "40.00"
    assert figures["minimum_balance"] == "30.00"
    assert figures["reserved"] == "30.00"
    assert figures["payable"] == "5.00"
    assert figures["next"] == [{"date": "2027-01-04", "amount": "40.00", "charges": 1}]
    assert figures["overdue"] == 2  # due, but no roll-forward has run yet
    assert figures["ledger"] == {"pending": "75.00", "available": "0.00"}

    _roll(datetime(2027, 1, 1, 12, tzinfo=UTC))
    [figures] = _report(datetime(2027, 1, 1, 12, tzinfo=UTC))["merchant_accounts"]
    assert figures["overdue"] == 0
    assert figures["ledger"] == {"pending": "40.00", "available": "35.00"}


def test_a_reserve_larger_than_what_is_available_leaves_nothing_payable(
    merchants: Callable[..., None],
) -> None:
    merchants({**US_NY, "minimum_balance": "100.00"})
    account_id, _ = _account()
    _charge(account_id, "25.00", datetime(2026, 12, 1, 15, tzinfo=UTC))
    [figures] = _report(datetime(2026, 12, 20, tzinfo=UTC))["merchant_accounts"]
    assert (figures["available"], figures["reserved"], figures["payable"]) == (
        "25.00",
        "25.00",
        "0.00",
    )


# --- configuration ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "name"),
    [
        ({"PSP_MERCHANT_ACCOUNTS": "not json"}, "PSP_MERCHANT_ACCOUNTS"),
        (
            {"PSP_MERCHANT_ACCOUNTS": json.dumps([{**US_NY, "minimum_balance": 10.5}])},
            "PSP_MERCHANT_ACCOUNTS",
        ),
        (
            {"PSP_MERCHANT_ACCOUNTS": json.dumps([{**US_NY, "country": "ZA"}])},
            "PSP_MERCHANT_ACCOUNTS",
        ),
        ({"PSP_MERCHANT_COUNTRY": "ZA"}, "PSP_MERCHANT_COUNTRY"),
        ({"SETTLEMENT_TIMING_FILE": "/nonexistent/timing.toml"}, "SETTLEMENT_TIMING_FILE"),
    ],
)
def test_bad_settlement_configuration_stops_start_up_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], name: str
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    reset_settings()
    try:
        with pytest.raises(SettingsError) as err:
            get_settings()
        assert str(err.value).startswith(f"{name}: ")
    finally:
        monkeypatch.undo()
        reset_settings()


def test_an_operator_file_adds_a_country(merchants: Callable[..., None], tmp_path: Path) -> None:
    extra = tmp_path / "timing.toml"
    extra.write_text(
        '[countries.ZA]\nname = "South Africa"\ndefault = { days = 3, unit = "business" }\n',
        encoding="utf-8",
    )
    merchants(
        {"psp": "braintree", "currency": "EUR", "country": "ZA", "timezone": "Africa/Johannesburg"},
        SETTLEMENT_TIMING_FILE=str(extra),
    )
    account_id, _ = _account("ZA")
    # Monday 2026-03-02 + 3 business days = Thursday the 5th.
    result = _charge(account_id, "10.00", datetime(2026, 3, 2, 10, tzinfo=UTC))
    assert result["available_on"] == "2026-03-05"
    assert _row(result["charge_id"]).settlement_rule == "ZA 3 business days"


def test_report_and_charges_through_the_cli(merchants: Callable[..., None]) -> None:
    from tests.cli.test_cli import ok_json

    merchants(US_NY, PSP_MERCHANT_COUNTRY="GB")
    account_id, _ = _account()
    _charge(account_id, "25.00", datetime(2026, 12, 24, 15, 0, tzinfo=UTC))
    listed = ok_json("charges", account_id)
    assert [(c["available_on"], c["settlement_status"]) for c in listed] == [
        ("2026-12-29", "pending")
    ]
    report = ok_json("settlement", "report", "--as-of", "2026-12-30T00:00:00+00:00")
    [figures] = report["merchant_accounts"]
    assert figures["available"] == "25.00"
    rolled = ok_json("jobs", "run", "settlement", "--as-of", "2026-12-30T00:00:00+00:00")
    assert rolled["settled"] == 1
    assert ok_json("charges", account_id)[0]["settlement_status"] == "available"


def test_roll_forward_query_is_backed_by_the_partial_index() -> None:
    from sqlalchemy import text

    with unit_of_work() as uow:
        uow.session.execute(text("SET LOCAL enable_seqscan = off"))
        compiled = settlement.due_query(datetime(2026, 1, 1, tzinfo=UTC), 500).compile(
            dialect=uow.session.get_bind().dialect, compile_kwargs={"literal_binds": True}
        )
        plan = "\n".join(r[0] for r in uow.session.execute(text(f"EXPLAIN {compiled}")))
    assert "ix_charges_settlement_due" in plan, plan


def test_a_charge_resolved_late_settles_from_when_the_psp_took_the_money(
    merchants: Callable[..., None], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Succeeded remotely, timed out locally, resolved by the janitor three days later:
    available_on counts from the PSP's processing time, not from the janitor's run."""
    from worker.kernel.clock import now
    from worker.psp.registry import get_adapter
    from worker.settlement import timing

    merchants(US_NY, PSP_STUB_TIMEOUT_AMOUNTS="77.00")
    account_id, _ = _account()
    with unit_of_work() as uow:
        result = top_ups.top_up(
            uow, account_id=account_id, amount="77.00", idempotency_key="late-1"
        )
    assert result["status"] == "unknown"
    remote = get_adapter("braintree").lookup("late-1")
    assert remote is not None and remote.processed_at is not None

    three_days_later = now() + timedelta(days=3)
    with unit_of_work() as uow:
        assert janitor.sync_pending(uow, three_days_later)["resolved"] == 1
    row = _row(result["charge_id"])
    assert row.status == "succeeded"
    expected = timing.available_on(
        settlement.timing_table(),
        settlement.merchant_for("braintree", "EUR"),
        method="card",
        customer_country="US",
        succeeded_at=remote.processed_at,
    ).available_on
    from_janitor = timing.available_on(
        settlement.timing_table(),
        settlement.merchant_for("braintree", "EUR"),
        method="card",
        customer_country="US",
        succeeded_at=three_days_later,
    ).available_on
    assert expected != from_janitor
    assert row.available_on == expected


@pytest.mark.parametrize(
    ("processed_at", "expected"),
    [
        (datetime(2026, 3, 4, 10, 0), date(2026, 3, 4)),  # naive: read as UTC
        (datetime(2030, 1, 1, tzinfo=UTC), date(2026, 3, 6)),  # in the future: now
        (datetime(2020, 1, 1, tzinfo=UTC), date(2026, 3, 2)),  # before the charge: its creation
    ],
)
def test_a_psp_processing_time_is_sanitised_never_blocking_the_credit(
    merchants: Callable[..., None], processed_at: datetime, expected: date
) -> None:
    merchants()
    account_id, bank = _account("GB", psp="bank_transfer")  # never a default: named
    sent_at = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
    pending = _charge(account_id, "100.00", sent_at, key="pf-processed", method=bank)
    received = datetime(2026, 3, 6, 14, 0, tzinfo=UTC)
    with unit_of_work() as uow:
        charge = charges.apply(
            uow,
            pending["charge_id"],
            ChargeResult(Outcome.SUCCEEDED, "PF-1", None, None, processed_at=processed_at),
            received,
        )
        charge_id = charge.id
    row = _row(charge_id)
    assert row.status == "succeeded"
    assert row.available_on == expected
    with unit_of_work() as uow:
        assert accounts.get(uow.session, account_id).balance == Decimal("100.00")
