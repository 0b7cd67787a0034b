"""Card and PayPal refunds through their services against real PostgreSQL (issue 14):
partial, full and over-refunds, the balance rule, exactly once under repeats and
concurrency, a declined refund putting the money back. `audit` ok after each."""

from __future__ import annotations

import threading
import uuid
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest

from tests.invoices import support as s
from tests.refunds import support as r
from worker.db.session import unit_of_work
from worker.kernel.clock import now
from worker.kernel.errors import (
    IdempotencyConflict,
    InsufficientFunds,
    NothingToRefund,
    NotRefundable,
    ValidationError,
)
from worker.refunds import service

pytestmark = pytest.mark.integration

CONTRACT_FIELDS = {"refund_id", "charge_id", "amount", "currency", "status", "balance"}


def test_partial_then_the_rest_then_nothing_left() -> None:
    _, charge_id = r.card_account("100.00")
    first = r.refund(charge_id, "30.00")
    assert set(first) >= CONTRACT_FIELDS
    assert (first["status"], first["amount"], first["balance"]) == ("succeeded", "30.00", "70.00")
    rest = r.refund(charge_id)  # no AMOUNT: what is left
    assert (rest["status"], rest["amount"], rest["balance"]) == ("succeeded", "70.00", "0.00")
    with pytest.raises(NothingToRefund) as refused:
        r.refund(charge_id, "0.01")
    assert refused.value.field == "charge_id"
    assert [e.data["refund_id"] for e in s.events("refund.succeeded")] == [
        first["refund_id"],
        rest["refund_id"],
    ]
    assert s.system_balance("refunds_payable") == 0  # both paid out
    assert s.system_balance("psp_available:braintree") == Decimal("100.00")
    s.audit_ok()


def test_over_refund_is_refused_naming_the_amount_and_writes_nothing() -> None:
    account_id, charge_id = r.card_account("40.00")
    r.refund(charge_id, "15.00")
    with pytest.raises(ValidationError) as refused:
        r.refund(charge_id, "25.01")
    assert refused.value.field == "amount" and "25.00" in refused.value.message
    assert len(r.rows(charge_id)) == 1
    assert s.get_account(account_id).balance == Decimal("25.00")
    with pytest.raises(ValidationError) as bad:
        r.refund(charge_id, "1.001")  # not whole cents
    assert bad.value.field == "amount"
    s.audit_ok()


def test_only_a_succeeded_charge_is_refundable() -> None:
    account_id = s.account()
    method = s.method(account_id, "braintree", f"{r.CARD}:{uuid.uuid4().hex[:6]}")
    declined = s.top_up(account_id, "2001.00", method)  # the sandbox's Insufficient Funds
    assert declined["status"] == "declined"
    with pytest.raises(NotRefundable) as refused:
        r.refund(declined["charge_id"])
    assert refused.value.code == "not_refundable"
    assert r.rows(declined["charge_id"]) == []


def test_a_refund_may_not_exceed_the_current_balance() -> None:
    account_id, charge_id = r.card_account("50.00")
    r.debit(account_id, "30.00")  # 20.00 of the prepaid money is left
    with pytest.raises(InsufficientFunds) as refused:
        r.refund(charge_id)
    assert refused.value.field == "amount" and refused.value.code == "insufficient_funds"
    assert r.rows(charge_id) == []
    done = r.refund(charge_id, "20.00")
    assert (done["status"], done["balance"]) == ("succeeded", "0.00")
    s.audit_ok()


def test_paypal_refund_goes_through_its_adapter() -> None:
    _, charge_id = r.card_account("25.00", psp="paypal", nonce=r.PAYPAL)
    done = r.refund(charge_id, "5.00")
    assert done["status"] == "succeeded" and done["psp"] == "paypal"
    assert done["psp_reference"]
    s.audit_ok()


def test_a_repeated_key_makes_one_refund_and_a_conflicting_one_is_refused() -> None:
    account_id, charge_id = r.card_account("60.00")
    key = f"again-{uuid.uuid4().hex}"
    first = r.refund(charge_id, "10.00", key=key)
    again = r.refund(charge_id, "10.00", key=key)
    also = r.refund(charge_id, None, key=key)  # a redelivery without the amount
    assert first["refund_id"] == again["refund_id"] == also["refund_id"]
    assert r.remote_refunds(key) == 1
    assert s.get_account(account_id).balance == Decimal("50.00")
    with pytest.raises(IdempotencyConflict):
        r.refund(charge_id, "11.00", key=key)
    s.audit_ok()


def test_concurrent_requests_make_one_refund() -> None:
    account_id, charge_id = r.card_account("80.00")
    key = f"race-{uuid.uuid4().hex}"
    results: list[Any] = []
    barrier = threading.Barrier(6)

    def same_key() -> None:
        barrier.wait()
        try:
            results.append(r.refund(charge_id, None, key=key)["refund_id"])
        except Exception as exc:  # pragma: no cover - shown in the assertion
            results.append(exc)

    threads = [threading.Thread(target=same_key) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(results)) == 1, results
    assert r.remote_refunds(key) == 1
    assert s.get_account(account_id).balance == 0
    s.audit_ok()


def test_concurrent_full_refunds_with_different_keys_refund_once() -> None:
    account_id, charge_id = r.card_account("80.00")
    outcomes: list[str] = []
    barrier = threading.Barrier(4)

    def full() -> None:
        barrier.wait()
        try:
            outcomes.append(r.refund(charge_id)["status"])
        except NothingToRefund:
            outcomes.append("nothing_to_refund")

    threads = [threading.Thread(target=full) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["nothing_to_refund"] * 3 + ["succeeded"]
    assert len(r.rows(charge_id)) == 1
    assert s.get_account(account_id).balance == 0
    s.audit_ok()


def test_a_declined_refund_puts_the_money_back_in_one_transaction() -> None:
    account_id, charge_id = r.card_account("3500.00")
    failed = r.refund(charge_id, "2000.50")  # the sandbox declines this refund amount
    assert failed["status"] == "failed"
    assert failed["failure_code"] == "2000"
    assert failed["balance"] == "3500.00"
    [event] = s.events("refund.failed")
    assert event.data["refund_id"] == failed["refund_id"] and event.data["balance"] == "3500.00"
    assert s.system_balance("refunds_payable") == 0
    # Nothing refunded: the whole charge is still refundable, and no credit note exists.
    assert [i.kind for i in s.invoices_of(account_id)] == ["final"]
    done = r.refund(charge_id, "100.00")
    assert done["status"] == "succeeded"
    s.audit_ok()


def test_refunding_an_auto_reload_charge_holds_auto_reload_for_a_minute() -> None:
    from worker.auto_reload import sweep
    from worker.auto_reload.configure import configure
    from worker.charges import engine
    from worker.psp.registry import get_adapter

    account_id = s.account()
    method = s.method(account_id, "braintree", f"{r.CARD}:{uuid.uuid4().hex[:6]}")
    with unit_of_work() as uow:
        configure(
            uow, account_id=account_id, threshold="20", amount="50", method_id=method, now=now()
        )
    with unit_of_work() as uow:  # an auto-reload charge, as the reload makes it
        charge, _ = engine.begin(
            uow,
            account_id=account_id,
            amount="50.00",
            idempotency_key=f"auto_reload:{uuid.uuid4().hex}",
            payment_method_id=method,
            purpose="auto_reload",
            now=now(),
        )
        request = engine.request_for(uow.session, charge)
        uow.commit()
        engine.apply(uow, charge.id, get_adapter("braintree").charge(request), now())
    at = now()
    done = r.refund(charge.id, "45.00")  # the balance (5.00) is now under the threshold
    assert done["status"] == "succeeded"
    held = s.get_account(account_id).auto_reload_backoff_until
    assert held is not None and held >= at + service.RELOAD_HOLD
    with unit_of_work() as uow:
        due = list(uow.session.scalars(sweep.due_query(now())))
        later = list(uow.session.scalars(sweep.due_query(now() + timedelta(seconds=61))))
    assert account_id not in due  # not within the minute
    assert account_id in later  # then the ordinary rule applies again
    s.audit_ok()


def test_a_card_number_in_the_reason_is_redacted() -> None:
    from worker.db.session import unit_of_work as uow_
    from worker.refunds import refund as refunds

    _, charge_id = r.card_account("10.00")
    with uow_() as uow:
        done = refunds.refund(
            uow,
            charge_id=charge_id,
            amount="1.00",
            reason="customer wrote 4111 1111 1111 1111 in the ticket",
            idempotency_key=f"pan-{uuid.uuid4().hex}",
        )
    assert "4111" not in done["reason"] and "[REDACTED]" in done["reason"]
    [row] = r.rows(charge_id)
    assert row.reason is not None and "4111" not in row.reason
