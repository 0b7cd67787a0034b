"""The PayPal adapter against the fake of PayPal's REST API: the OAuth2 token, what an order
carries, and the look-up by request id (including what it does to a request still in flight)."""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from config import Settings
from tests.psp.conftest import TIMEOUT
from tests.psp.fakes import paypal_fake
from tests.psp.fakes.http import Request, serving
from worker.psp.base import (
    ChargeRequest,
    Outcome,
    RefundRequest,
    ReportsSettlement,
    Settlement,
    VaultRequest,
)
from worker.psp.errors import RefundLookUpUnsupported, VaultRefused, VaultUnavailable
from worker.psp.paypal_rest import PaypalRestAdapter


@dataclass
class World:
    fake: paypal_fake.PaypalFake
    url: str
    requests: list[Request]

    def adapter(self, **settings: str) -> PaypalRestAdapter:
        values = {
            "PSP_ENABLED": "paypal_rest",
            "PAYPAL_BASE_URL": self.url,
            "PAYPAL_CLIENT_ID": paypal_fake.CLIENT_ID,
            "PAYPAL_CLIENT_SECRET": paypal_fake.CLIENT_SECRET,
            "PSP_HTTP_TIMEOUT_SECONDS": TIMEOUT,
            **settings,
        }
        return PaypalRestAdapter(Settings(**values))  # type: ignore[arg-type]

    def orders(self) -> list[tuple[dict[str, str], dict[str, Any]]]:
        return [
            (r.headers, json.loads(r.body))
            for r in self.requests
            if r.method == "POST" and r.path == "/v2/checkout/orders"
        ]


@pytest.fixture
def world() -> Iterator[World]:
    fake = paypal_fake.PaypalFake()
    with serving(fake) as (url, requests):
        yield World(fake, url, requests)


def _payer(world: World, adapter: PaypalRestAdapter) -> str:
    nonce = world.fake.approved_setup_token(uuid.uuid4().hex[:6])
    return adapter.vault(VaultRequest(nonce, "acc_1")).token


def test_an_order_carries_our_key_three_ways_and_the_vaulted_account(world: World) -> None:
    adapter = world.adapter()
    token = _payer(world, adapter)
    result = adapter.charge(ChargeRequest("key-1", token, 1050, "EUR", "top_up ch_1"))
    assert result.outcome is Outcome.SUCCEEDED
    ((headers, body),) = world.orders()
    assert headers["paypal-request-id"] == "key-1"
    assert headers["authorization"].startswith("Bearer ")
    (unit,) = body["purchase_units"]
    assert (unit["invoice_id"], unit["custom_id"]) == ("key-1", "key-1")
    assert unit["amount"] == {"currency_code": "EUR", "value": "10.50"}
    assert body["intent"] == "CAPTURE"
    assert body["payment_source"] == {"paypal": {"vault_id": token}}
    assert result.psp_reference == world.fake.captured("key-1")[0]["id"]  # refunds need it


def test_a_long_key_becomes_a_stable_request_id_within_paypals_limits(world: World) -> None:
    adapter = world.adapter()
    token = _payer(world, adapter)
    key = "k" * 200
    first = adapter.charge(ChargeRequest(key, token, 1050, "EUR", "top_up"))
    second = adapter.charge(ChargeRequest(key, token, 1050, "EUR", "top_up"))
    assert first.psp_reference == second.psp_reference
    (one, _body), (two, _same) = world.orders()
    assert one["paypal-request-id"] == two["paypal-request-id"]
    assert len(one["paypal-request-id"]) <= 108
    assert len(_body["purchase_units"][0]["invoice_id"]) <= 127


def test_one_token_serves_every_charge_and_thread(world: World) -> None:
    adapter = world.adapter()
    token = _payer(world, adapter)
    results: list[Outcome] = []

    def charge(n: int) -> None:
        result = world.adapter().charge(ChargeRequest(f"key-t{n}", token, 100, "EUR", "t"))
        results.append(result.outcome)

    threads = [threading.Thread(target=charge, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [Outcome.SUCCEEDED] * 8
    assert world.fake.token_requests == 1


def test_an_expired_token_is_renewed_once_and_the_call_made(world: World) -> None:
    adapter = world.adapter()
    token = _payer(world, adapter)
    world.fake.expire_tokens()
    result = adapter.charge(ChargeRequest("key-2", token, 1050, "EUR", "top_up"))
    assert result.outcome is Outcome.SUCCEEDED
    assert world.fake.token_requests == 2
    assert len(world.fake.captured("key-2")) == 1


def test_a_lookup_of_a_key_never_received_spends_it_so_a_late_request_cannot_pay(
    world: World,
) -> None:
    adapter = world.adapter()
    token = _payer(world, adapter)
    assert adapter.lookup("key-3") is None
    (headers, body) = world.orders()[-1]
    assert headers["paypal-request-id"] == "key-3"
    assert "payment_source" not in body  # an order that cannot take money
    late = adapter.charge(ChargeRequest("key-3", token, 1050, "EUR", "top_up"))
    assert (late.outcome, late.code) == (Outcome.NOT_ATTEMPTED, "order_not_approved")
    assert world.fake.captured("key-3") == []
    assert adapter.lookup("key-3") is None


def test_once_paypal_forgot_the_request_id_a_paid_key_is_unknown_not_absent(
    world: World,
) -> None:
    adapter = world.adapter()
    token = _payer(world, adapter)
    adapter.charge(ChargeRequest("key-4", token, 1050, "EUR", "top_up"))
    world.fake.forget_request_ids()  # the 6 hours went by
    found = adapter.lookup("key-4")
    assert found is not None
    assert (found.outcome, found.code) == (Outcome.UNKNOWN, "DUPLICATE_INVOICE_ID")
    again = adapter.charge(ChargeRequest("key-4", token, 1050, "EUR", "top_up"))
    assert again.outcome is Outcome.UNKNOWN  # never a second payment, never "declined"
    assert len(world.fake.captured("key-4")) == 1


def test_an_order_left_approved_is_captured_with_its_own_request_id(world: World) -> None:
    adapter = world.adapter()
    token = _payer(world, adapter)
    world.fake.approve_only = True
    result = adapter.charge(ChargeRequest("key-5", token, 1050, "EUR", "top_up"))
    assert result.outcome is Outcome.SUCCEEDED
    (capture,) = [r for r in world.requests if r.path.endswith("/capture")]
    assert capture.headers["paypal-request-id"] == "capture:key-5"
    assert adapter.charge(ChargeRequest("key-5", token, 1050, "EUR", "top_up")) == result


def test_a_pending_capture_is_pending_and_settling(world: World) -> None:
    adapter = world.adapter()
    assert isinstance(adapter, ReportsSettlement)
    token = _payer(world, adapter)
    world.fake.pending_amounts.add("10.50")
    result = adapter.charge(ChargeRequest("key-6", token, 1050, "EUR", "top_up"))
    assert (result.outcome, result.code) == (Outcome.PENDING, "PENDING_REVIEW")
    assert result.psp_reference is not None
    assert adapter.settlement_status(result.psp_reference).state is Settlement.SETTLING
    done = adapter.charge(ChargeRequest("key-7", token, 1050 + 1, "EUR", "top_up"))
    assert done.psp_reference is not None
    settled = adapter.settlement_status(done.psp_reference)
    assert (settled.state, settled.psp_status) == (Settlement.SETTLED, "COMPLETED")
    assert adapter.settlement_status("NOSUCH1").state is Settlement.FAILED


def test_a_server_error_after_paypal_acted_is_unknown_and_found_later(world: World) -> None:
    adapter = world.adapter()
    token = _payer(world, adapter)
    world.fake.error_amounts.add("10.50")
    result = adapter.charge(ChargeRequest("key-8", token, 1050, "EUR", "top_up"))
    assert result.outcome is Outcome.UNKNOWN
    found = adapter.lookup("key-8")
    assert found is not None and found.outcome is Outcome.SUCCEEDED


def test_partial_refunds_each_once_and_never_beyond(world: World) -> None:
    adapter = world.adapter()
    charged = adapter.charge(ChargeRequest("key-9", _payer(world, adapter), 1000, "EUR", "t"))
    assert charged.psp_reference is not None
    first = adapter.refund(RefundRequest("rf-1", charged.psp_reference, 600, "EUR"))
    repeat = adapter.refund(RefundRequest("rf-1", charged.psp_reference, 600, "EUR"))
    beyond = adapter.refund(RefundRequest("rf-2", charged.psp_reference, 500, "EUR"))
    rest = adapter.refund(RefundRequest("rf-3", charged.psp_reference, 400, "EUR"))
    assert first.outcome is repeat.outcome is rest.outcome is Outcome.SUCCEEDED
    assert repeat.psp_reference == first.psp_reference
    assert (beyond.outcome, beyond.code) == (Outcome.DECLINED, "REFUND_AMOUNT_EXCEEDED")
    refunds = [r for r in world.requests if r.path.endswith("/refund")]
    assert refunds[0].headers["paypal-request-id"] == "refund:rf-1"


def test_a_refund_is_looked_up_by_reading_its_order_never_by_sending_it_again(
    world: World,
) -> None:
    adapter = world.adapter()
    charged = adapter.charge(ChargeRequest("key-10", _payer(world, adapter), 1000, "EUR", "t"))
    assert charged.psp_reference is not None
    made = adapter.refund(RefundRequest("rf-10", charged.psp_reference, 300, "EUR"))
    sent = len(world.requests)
    found = adapter.lookup_refund("rf-10", charged.psp_reference)
    assert found == made
    assert adapter.lookup_refund("rf-never", charged.psp_reference) is None
    assert adapter.lookup_refund("rf-10", "NOSUCHCAPTURE1") is None
    asked = world.requests[sent:]
    assert {r.method for r in asked} == {"GET"}  # a look-up never POSTs: it cannot refund
    with pytest.raises(RefundLookUpUnsupported):  # PayPal keeps refunds under their capture
        adapter.lookup_refund("rf-10")


def test_a_setup_token_is_vaulted_once(world: World) -> None:
    adapter = world.adapter()
    nonce = world.fake.approved_setup_token("dora")
    method = adapter.vault(VaultRequest(nonce, "acc_1"))
    assert (method.type, method.payer_email) == ("paypal", "buyer+dora@example.com")
    again = adapter.vault(VaultRequest(nonce, "acc_1"))  # the same request id: the same token
    assert again.token == method.token
    with pytest.raises(VaultRefused) as refused:
        adapter.vault(VaultRequest("not a token!", "acc_1"))
    assert refused.value.code == "invalid_nonce"


def test_wrong_credentials_take_nothing_and_are_never_logged(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    token = _payer(world, world.adapter())
    wrong = world.adapter(PAYPAL_CLIENT_SECRET="wrong-secret-5c1d")
    with caplog.at_level(logging.DEBUG):
        result = wrong.charge(ChargeRequest("key-10", token, 1050, "EUR", "top_up"))
        with pytest.raises(VaultUnavailable):
            wrong.vault(VaultRequest(world.fake.approved_setup_token(), "acc_1"))
    assert result.outcome is Outcome.NOT_ATTEMPTED
    assert world.fake.captured("key-10") == []
    assert "client credentials" in caplog.text
    assert "wrong-secret-5c1d" not in caplog.text
    assert paypal_fake.CLIENT_SECRET not in caplog.text
    assert not any(t in caplog.text for t in world.fake.tokens)  # no bearer token either
