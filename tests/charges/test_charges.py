"""The charge engine through its services (no broker): exactly-once charging."""

from __future__ import annotations

import threading
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
import time_machine
from sqlalchemy import func, select

from config import get_settings, reset_settings
from worker.accounts import service as accounts
from worker.charges import engine as charges
from worker.charges import janitor
from worker.charges import top_up as top_ups
from worker.charges.models import Charge
from worker.db.session import unit_of_work
from worker.kernel.clock import now
from worker.kernel.errors import IdempotencyConflict, NotFound, ValidationError
from worker.ledger import service as ledger
from worker.ledger.models import LedgerTransaction
from worker.outbox.models import Event
from worker.payment_methods import service as payment_methods
from worker.psp.base import ChargeResult, Outcome
from worker.psp.errors import TransportError
from worker.psp.registry import get_adapter

pytestmark = pytest.mark.integration  # real PostgreSQL and Redis, tables emptied first


def _account_with_card(
    nonce: str = "fake-valid-visa-nonce", psp: str = "braintree"
) -> tuple[str, str]:
    with unit_of_work() as uow:
        account_id = accounts.create(uow, name="Charges", now=now())["id"]
    with unit_of_work() as uow:
        method = payment_methods.add(uow, account_id=account_id, psp=psp, nonce=nonce, now=now())
    return account_id, method["id"]


def _top_up(account_id: str, amount: str, key: str, **kw: Any) -> dict[str, Any]:
    with unit_of_work() as uow:
        return top_ups.top_up(uow, account_id=account_id, amount=amount, idempotency_key=key, **kw)


def _count(model: Any, *where: Any) -> int:
    with unit_of_work() as uow:
        return int(uow.session.scalar(select(func.count()).select_from(model).where(*where)) or 0)


def _events(type_: str) -> list[Event]:
    with unit_of_work() as uow:
        return list(uow.session.scalars(select(Event).where(Event.type == type_)))


def _balance(account_id: str) -> Decimal:
    with unit_of_work() as uow:
        return accounts.get(uow.session, account_id).balance


def test_success_credits_once_with_balanced_ledger_and_event() -> None:
    account_id, _ = _account_with_card()
    result = _top_up(account_id, "25.00", "k-success")
    assert result["status"] == "succeeded"
    assert result["balance"] == "25.00"
    assert result["psp_reference"]
    assert _balance(account_id) == Decimal("25.00")
    [event] = _events("charge.succeeded")
    assert event.data["charge_id"] == result["charge_id"]
    with unit_of_work() as uow:
        [txn] = ledger.list_transactions(uow.session, account_id)
        assert {p["ledger_account"] for p in txn["postings"]} == {
            f"customer:{account_id}",
            "psp_pending:braintree:EUR",
        }
        assert ledger.audit(uow.session)["ok"]
    assert get_adapter("braintree").remote.count("k-success") == 1  # type: ignore[attr-defined]


def test_charge_row_is_committed_before_the_psp_is_called(monkeypatch: pytest.MonkeyPatch) -> None:
    account_id, _ = _account_with_card()
    seen: list[str] = []
    adapter_cls = type(get_adapter("braintree"))
    original = adapter_cls.charge

    def spy(self: Any, request: Any) -> ChargeResult:
        # A separate connection sees the committed row, with the key the PSP receives.
        with unit_of_work() as other:
            row = other.session.scalars(
                select(Charge).where(Charge.idempotency_key == request.idempotency_key)
            ).one()
            seen.append(row.status)
        return original(self, request)

    monkeypatch.setattr(adapter_cls, "charge", spy)
    _top_up(account_id, "10.00", "k-before")
    assert seen == ["processing"]


def test_decline_moves_no_money_and_records_the_code() -> None:
    account_id, _ = _account_with_card()
    result = _top_up(account_id, "2001.00", "k-decline")
    assert result["status"] == "declined"
    assert (result["decline_code"], result["decline_text"]) == ("2001", "Insufficient Funds")
    assert _balance(account_id) == Decimal("0")
    assert _count(LedgerTransaction) == 0
    [event] = _events("charge.declined")
    assert event.data["decline_code"] == "2001"


def test_gateway_rejected_is_a_hard_decline() -> None:
    account_id, _ = _account_with_card()
    result = _top_up(account_id, "5001.00", "k-gw")
    assert (result["status"], result["decline_code"]) == ("declined", "gateway_rejected")


def test_processor_unavailable_is_not_attempted_and_safe_to_retry_with_the_same_key() -> None:
    account_id, _ = _account_with_card()
    first = _top_up(account_id, "3000.50", "k-soft")
    assert (first["status"], first["decline_code"]) == ("not_attempted", "3000")
    assert get_adapter("braintree").remote.count("k-soft") == 0  # type: ignore[attr-defined]
    again = _top_up(account_id, "3000.50", "k-soft")
    assert again["charge_id"] == first["charge_id"]
    assert again["attempts"] == 2
    with unit_of_work() as uow:
        final = top_ups.give_up(uow, first["charge_id"])
    assert final["status"] == "failed"
    assert _balance(account_id) == Decimal("0")


def test_same_key_returns_the_same_charge_and_conflicts_are_refused() -> None:
    account_id, _ = _account_with_card()
    first = _top_up(account_id, "10.00", "k-idem")
    second = _top_up(account_id, "10.00", "k-idem")
    assert second["charge_id"] == first["charge_id"]
    assert _balance(account_id) == Decimal("10.00")
    with pytest.raises(IdempotencyConflict) as info:
        _top_up(account_id, "11.00", "k-idem")
    assert info.value.field == "idempotency_key"
    other_id, _ = _account_with_card("fake-valid-visa-nonce:other")
    with pytest.raises(IdempotencyConflict):
        _top_up(other_id, "10.00", "k-idem")
    assert _count(Charge) == 1


@pytest.mark.parametrize(
    ("amount", "field"),
    [("10.005", "amount"), ("0", "amount"), ("-5", "amount"), ("abc", "amount"), (10.0, "amount")],
)
def test_bad_amounts_write_nothing(amount: Any, field: str) -> None:
    account_id, _ = _account_with_card()
    with pytest.raises(ValidationError) as info:
        _top_up(account_id, amount, "k-bad")
    assert info.value.field == field
    assert _count(Charge) == 0


def test_unknown_account_and_method_write_nothing() -> None:
    account_id, _ = _account_with_card()
    with pytest.raises(NotFound) as info:
        _top_up("acc_missing", "10.00", "k-x")
    assert info.value.field == "account_id"
    with pytest.raises(NotFound) as info:
        _top_up(account_id, "10.00", "k-y", payment_method_id="pm_missing")
    assert info.value.field == "payment_method_id"
    assert _count(Charge) == 0


def test_three_concurrent_top_ups_with_one_key_charge_once() -> None:
    account_id, _ = _account_with_card()
    results: list[dict[str, Any]] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(3)

    def run() -> None:
        barrier.wait()
        try:
            results.append(_top_up(account_id, "40.00", "k-race"))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert len({r["charge_id"] for r in results}) == 1
    assert _count(Charge) == 1
    assert get_adapter("braintree").remote.count("k-race") == 1  # type: ignore[attr-defined]
    assert _balance(account_id) == Decimal("40.00")


def test_bank_transfer_top_up_waits_as_pending_and_the_janitor_leaves_it() -> None:
    account_id, method_id = _account_with_card(nonce="", psp="bank_transfer")
    result = _top_up(account_id, "500.00", "k-bank", payment_method_id=method_id)
    assert result["status"] == "pending"
    assert result["psp_reference"].startswith("PF-")
    assert _balance(account_id) == Decimal("0")
    with unit_of_work() as uow:
        assert janitor.sync_pending(uow, now() + timedelta(days=30))["checked"] == 0
    assert _events("charge.pending")


def _timeout_knob(monkeypatch: pytest.MonkeyPatch, amounts: str) -> None:
    monkeypatch.setenv("PSP_STUB_TIMEOUT_AMOUNTS", amounts)
    reset_settings()


@pytest.fixture
def _reset_settings_after() -> Any:
    yield
    reset_settings()


@pytest.mark.usefixtures("_reset_settings_after")
def test_succeeded_remotely_timed_out_locally_is_resolved_by_lookup_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _timeout_knob(monkeypatch, "77.00")
    account_id, _ = _account_with_card()
    result = _top_up(account_id, "77.00", "k-timeout")
    assert result["status"] == "unknown"
    assert _balance(account_id) == Decimal("0")

    with unit_of_work() as uow:
        too_early = janitor.sync_pending(uow, now())
    assert too_early == {"checked": 0, "resolved": 0}

    later = now() + timedelta(minutes=2)
    with unit_of_work() as uow:
        assert janitor.sync_pending(uow, later) == {"checked": 1, "resolved": 1}
    with unit_of_work() as uow:  # a second janitor run changes nothing
        assert janitor.sync_pending(uow, later + timedelta(hours=1))["checked"] == 0
    assert _balance(account_id) == Decimal("77.00")
    assert _count(LedgerTransaction) == 1
    assert get_adapter("braintree").remote.count("k-timeout") == 1  # type: ignore[attr-defined]


def test_vanished_worker_with_no_remote_record_fails_after_the_lease_without_charging() -> None:
    account_id, _ = _account_with_card()
    with unit_of_work() as uow:  # a worker committed the charge, then died before the PSP call
        charge, must_call = charges.begin(
            uow, account_id=account_id, amount="10.00", idempotency_key="k-vanished", now=now()
        )
        assert must_call
        charge_id = charge.id
    lease = get_settings().charge_lease_seconds
    # Leases run on the real clock: the clock itself moves past it, not only `as_of`.
    before_end = now() + timedelta(seconds=lease - 5)
    with time_machine.travel(before_end), unit_of_work() as uow:
        assert janitor.sync_pending(uow, before_end)["checked"] == 0
    after_end = now() + timedelta(seconds=lease + 1)
    with time_machine.travel(after_end), unit_of_work() as uow:
        assert janitor.sync_pending(uow, after_end)["resolved"] == 1
    with unit_of_work() as uow:
        assert uow.session.get(Charge, charge_id).status == "failed"  # type: ignore[union-attr]
    assert _events("charge.failed")
    assert get_adapter("braintree").remote.count("k-vanished") == 0  # type: ignore[attr-defined]


def test_a_janitor_replayed_in_the_future_never_fails_a_call_still_in_flight() -> None:
    """`jobs run sync --as-of <tomorrow>` while a worker is still waiting for the PSP: the
    lease runs on the real clock, so the charge is not declared lost and the worker's
    answer still lands."""
    account_id, _ = _account_with_card()
    with unit_of_work() as uow:  # a worker has committed the charge and is calling the PSP
        charge, must_call = charges.begin(
            uow, account_id=account_id, amount="10.00", idempotency_key="k-in-flight", now=now()
        )
        assert must_call
        charge_id = charge.id
    with unit_of_work() as uow:
        assert janitor.sync_pending(uow, now() + timedelta(days=1))["resolved"] == 0
    with unit_of_work() as uow:
        assert uow.session.get(Charge, charge_id).status == "processing"  # type: ignore[union-attr]
    with unit_of_work() as uow:  # the worker's answer arrives
        done = charges.apply(uow, charge_id, ChargeResult(Outcome.SUCCEEDED, "bt-1"), now())
        assert (done.status, done.needs_attention) == ("succeeded", False)
    assert _balance(account_id) == Decimal("10.00")


@pytest.mark.usefixtures("_reset_settings_after")
def test_lookup_outage_backs_off_minutes_hours_then_days_and_asks_for_attention(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PAYMENT_SYNC_ATTENTION_AFTER", "3")
    _timeout_knob(monkeypatch, "12.00")
    account_id, _ = _account_with_card()
    charge_id = _top_up(account_id, "12.00", "k-outage")["charge_id"]
    adapter_cls = type(get_adapter("braintree"))

    def down(self: Any, key: str) -> ChargeResult | None:
        raise TransportError("connection refused", sent=False)

    monkeypatch.setattr(adapter_cls, "lookup", down)
    moment = now()
    gaps = []
    for _ in range(len(charges.SYNC_SCHEDULE) + 1):
        with unit_of_work() as uow:
            row = uow.session.get(Charge, charge_id)
            assert row is not None and row.next_attempt_at is not None
            moment = row.next_attempt_at
        with unit_of_work() as uow:
            assert janitor.sync_pending(uow, moment)["checked"] == 1
        with unit_of_work() as uow:
            row = uow.session.get(Charge, charge_id)
            assert row is not None and row.next_attempt_at is not None
            gaps.append(row.next_attempt_at - moment)
    assert gaps[0] == timedelta(minutes=1)
    assert gaps == sorted(gaps)
    assert gaps[-1] == gaps[-2] == timedelta(days=1)
    assert len(_events("charge.needs_attention")) == 1  # raised once, not every run
    monkeypatch.undo()
    with unit_of_work() as uow:  # the PSP answers again: resolved, credited once
        janitor.sync_pending(uow, moment + timedelta(days=2))
    assert _balance(account_id) == Decimal("12.00")


def test_terminal_states_never_change() -> None:
    account_id, _ = _account_with_card()
    charge_id = _top_up(account_id, "10.00", "k-terminal")["charge_id"]
    with unit_of_work() as uow:
        after = charges.apply(
            uow, charge_id, ChargeResult(Outcome.DECLINED, None, "2000", "x"), now()
        )
        assert after.status == "succeeded"
        with pytest.raises(charges.IllegalTransition):
            charges.move(after, "declined", now())
    with unit_of_work() as uow:
        charges.apply(uow, charge_id, ChargeResult(Outcome.SUCCEEDED, "again"), now())
    assert _balance(account_id) == Decimal("10.00")
    assert _count(LedgerTransaction) == 1


def test_a_repeat_of_a_charge_in_flight_asks_the_psp_instead_of_waiting() -> None:
    account_id, _ = _account_with_card()
    with unit_of_work() as uow:  # attempt 1 committed its charge, reached the PSP, then died
        charge, _ = charges.begin(
            uow, account_id=account_id, amount="9.00", idempotency_key="k-repeat", now=now()
        )
        request = charges.request_for(uow.session, charge)
    get_adapter("braintree").charge(request)
    repeat = _top_up(account_id, "9.00", "k-repeat")  # the redelivered message
    assert repeat["status"] == "succeeded"
    assert _balance(account_id) == Decimal("9.00")
    assert get_adapter("braintree").remote.count("k-repeat") == 1  # type: ignore[attr-defined]


@pytest.mark.usefixtures("_reset_settings_after")
def test_a_charge_whose_look_ups_never_complete_still_raises_attention(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Claimed again and again by janitors that die before applying: flagged all the same."""
    _timeout_knob(monkeypatch, "77.00")
    monkeypatch.setenv("PAYMENT_SYNC_ATTENTION_AFTER", "3")
    reset_settings()
    account_id, _ = _account_with_card()
    charge_id = _top_up(account_id, "77.00", "k-crashing")["charge_id"]
    moment = now() + timedelta(minutes=2)
    for _ in range(4):  # claim, then "crash" (no look-up, no apply)
        with unit_of_work() as uow:
            claim = janitor.claim_next(uow, moment)
        assert claim is not None and claim.charge_id == charge_id
        moment += timedelta(days=2)
    with unit_of_work() as uow:
        charge = uow.session.get(Charge, charge_id)
        assert charge is not None
        assert charge.needs_attention is True
        assert charge.status == "unknown"
    flagged = [e for e in _events("charge.needs_attention") if e.data["charge_id"] == charge_id]
    assert len(flagged) == 1
