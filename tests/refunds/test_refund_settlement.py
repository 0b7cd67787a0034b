"""A refund reduces what the PSP owes us (issue 14; seed 004's report): the report's
available funds, the reserve (minimum balance) kept from what is left, and
`settlement.negative` when refunds take a PSP's available funds below zero."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from config import reset_settings
from tests.invoices import support as s
from worker.charges import top_up as top_ups
from worker.db.session import unit_of_work
from worker.refunds import refund as refunds
from worker.settlement import service as settlement

pytestmark = pytest.mark.integration

US_NY = {
    "psp": "braintree",
    "currency": "EUR",
    "country": "US",
    "timezone": "America/New_York",
    "minimum_balance": "30.00",
}


@pytest.fixture
def merchant(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("PSP_MERCHANT_ACCOUNTS", json.dumps([US_NY]))
    reset_settings()
    yield
    monkeypatch.undo()
    reset_settings()


def _charge(account_id: str, method: str, amount: str, at: datetime) -> str:
    with unit_of_work() as uow:
        done = top_ups.top_up(
            uow,
            account_id=account_id,
            amount=amount,
            idempotency_key=f"k-{uuid.uuid4().hex}",
            payment_method_id=method,
            now_fn=lambda: at,
        )
    assert done["status"] == "succeeded"
    return str(done["charge_id"])


def _refund(charge_id: str, amount: str, at: datetime) -> dict[str, Any]:
    with unit_of_work() as uow:
        return refunds.refund(
            uow,
            charge_id=charge_id,
            amount=amount,
            idempotency_key=f"r-{uuid.uuid4().hex}",
            now_fn=lambda: at,
        )


def _figures(as_of: datetime) -> dict[str, Any]:
    with unit_of_work() as uow:
        [figures] = settlement.report(uow.session, as_of)["merchant_accounts"]
    return dict(figures)


@pytest.mark.usefixtures("merchant")
def test_the_settlement_report_after_refunds_and_a_negative_balance_at_the_psp() -> None:
    account_id = s.account()
    with unit_of_work() as uow:
        from worker.accounts import service as accounts

        accounts.get(uow.session, account_id).country = "US"
    method = s.method(account_id, "braintree", f"fake-valid-visa-nonce:{uuid.uuid4().hex[:6]}")
    first = _charge(account_id, method, "25.00", datetime(2026, 12, 24, 15, tzinfo=UTC))  # Dec 29
    second = _charge(account_id, method, "40.00", datetime(2026, 12, 30, 15, tzinfo=UTC))  # Jan 4
    assert _refund(first, "10.00", datetime(2026, 12, 30, 16, tzinfo=UTC))["status"] == "succeeded"

    figures = _figures(datetime(2027, 1, 1, 12, tzinfo=UTC))
    assert figures["available"] == "15.00"  # 25.00 settled, less the 10.00 refunded
    assert figures["refunded"] == "10.00"
    assert figures["pending"] == "40.00"
    assert (figures["reserved"], figures["payable"]) == ("15.00", "0.00")  # reserve 30.00
    assert figures["negative"] is False
    assert s.events("settlement.negative") == []

    # 30.00 of the second charge, not yet available: more than the PSP holds for us.
    at = datetime(2027, 1, 2, 9, tzinfo=UTC)
    assert _refund(second, "30.00", at)["status"] == "succeeded"
    figures = _figures(at)
    assert (figures["available"], figures["refunded"]) == ("-15.00", "40.00")
    assert (figures["reserved"], figures["payable"], figures["negative"]) == ("0.00", "0.00", True)
    [event] = s.events("settlement.negative")
    assert (event.data["psp"], event.data["available"]) == ("braintree", "-15.00")
    assert event.account_id is None  # an operator's event, not the customer's

    figures = _figures(datetime(2027, 1, 5, tzinfo=UTC))  # the 40.00 became available
    assert (figures["available"], figures["pending"]) == ("25.00", "0.00")
    # The ledger agrees: 65.00 charged (owed to us: negative), 40.00 refunded out of
    # the available funds, nothing rolled forward yet.
    assert s.system_balance("psp_pending:braintree") == -65
    assert s.system_balance("psp_available:braintree") == 40
    s.audit_ok()
