"""The Braintree adapter against the fake of Braintree's API: what it sends, and the cases the
contract suite does not reach (merchant accounts, a failed sale sent again, settlement)."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from config import Settings
from tests.psp.conftest import TIMEOUT
from tests.psp.fakes import braintree_fake
from tests.psp.fakes.http import Request, serving
from worker.kernel.errors import ValidationError
from worker.psp.base import (
    ChargeRequest,
    Outcome,
    RefundRequest,
    ReportsSettlement,
    Settlement,
    VaultRequest,
)
from worker.psp.braintree_gateway import BraintreeAdapter
from worker.psp.errors import VaultRefused, VaultUnavailable


@dataclass
class World:
    fake: braintree_fake.BraintreeFake
    url: str
    requests: list[Request]

    def adapter(self, **settings: str) -> BraintreeAdapter:
        values = {
            "PSP_ENABLED": "braintree_gateway",
            "BRAINTREE_BASE_URL": self.url,
            "BRAINTREE_MERCHANT_ID": braintree_fake.MERCHANT_ID,
            "BRAINTREE_PUBLIC_KEY": braintree_fake.PUBLIC_KEY,
            "BRAINTREE_PRIVATE_KEY": braintree_fake.PRIVATE_KEY,
            "PSP_HTTP_TIMEOUT_SECONDS": TIMEOUT,
            **settings,
        }
        return BraintreeAdapter(Settings(**values))  # type: ignore[arg-type]

    def sent(self, path_end: str) -> list[dict[str, Any]]:
        return [
            braintree_fake.parse(r.body)
            for r in self.requests
            if r.method == "POST" and r.path.endswith(path_end)
        ]


@pytest.fixture
def world() -> Iterator[World]:
    fake = braintree_fake.BraintreeFake(merchant_accounts={"acme_jpy": "JPY"})
    with serving(fake) as (url, requests):
        yield World(fake, url, requests)


def _card(adapter: BraintreeAdapter, account: str = "") -> str:
    account = account or f"acc_{uuid.uuid4().hex[:12]}"
    nonce = f"fake-valid-visa-nonce:{uuid.uuid4().hex[:6]}"
    return adapter.vault(VaultRequest(nonce, account)).token


def test_a_sale_carries_the_key_as_order_id_and_is_submitted_for_settlement(world: World) -> None:
    adapter = world.adapter()
    token = _card(adapter)
    result = adapter.charge(ChargeRequest("key-1", token, 1050, "EUR", "top_up ch_1"))
    assert result.outcome is Outcome.SUCCEEDED
    (sale,) = world.sent("/transactions")
    assert sale["transaction"]["order_id"] == "key-1"
    assert sale["transaction"]["amount"] == "10.50"
    assert sale["transaction"]["payment_method_token"] == token
    assert sale["transaction"]["options"]["submit_for_settlement"] is True
    assert "transaction_source" not in sale["transaction"]
    assert "merchant_account_id" not in sale["transaction"]  # the default account is in EUR
    # Searched before it was sent: a retried key finds this sale instead of a second one.
    assert world.sent("/transactions/advanced_search_ids")[0]["search"]["order_id"] == {
        "is": "key-1"
    }


def test_an_auto_reload_is_sent_as_merchant_initiated(world: World) -> None:
    adapter = world.adapter()
    request = ChargeRequest("auto_reload:acc:1", _card(adapter), 500, "EUR", "auto_reload")
    adapter.charge(ChargeRequest(**{**request.__dict__, "merchant_initiated": True}))
    (sale,) = world.sent("/transactions")
    assert sale["transaction"]["transaction_source"] == "unscheduled"


def test_a_currency_goes_to_its_merchant_account_and_is_never_charged_in_another(
    world: World,
) -> None:
    adapter = world.adapter(BRAINTREE_MERCHANT_ACCOUNTS="JPY=acme_jpy")
    token = _card(adapter)
    yen = adapter.charge(ChargeRequest("key-jpy", token, 1050, "JPY", "top_up"))
    assert yen.outcome is Outcome.SUCCEEDED
    (sale,) = world.sent("/transactions")
    assert sale["transaction"]["merchant_account_id"] == "acme_jpy"
    assert sale["transaction"]["amount"] == "1050"  # JPY has no minor unit
    dollars = adapter.charge(ChargeRequest("key-usd", token, 1050, "USD", "top_up"))
    assert (dollars.outcome, dollars.code) == (Outcome.NOT_ATTEMPTED, "no_merchant_account")
    assert "BRAINTREE_MERCHANT_ACCOUNTS" in (dollars.text or "")
    assert len(world.sent("/transactions")) == 1  # nothing sent in the wrong currency


def test_a_key_whose_sale_failed_before_the_processor_is_sent_again(world: World) -> None:
    adapter = world.adapter()
    token = _card(adapter)
    world.fake.fail_next_sales = 1
    first = adapter.charge(ChargeRequest("key-2", token, 1050, "EUR", "top_up"))
    assert (first.outcome, first.code) == (Outcome.NOT_ATTEMPTED, "3000")
    assert adapter.lookup("key-2") is None  # failed before the processor: nothing taken
    second = adapter.charge(ChargeRequest("key-2", token, 1050, "EUR", "top_up"))
    assert second.outcome is Outcome.SUCCEEDED
    assert len(world.sent("/transactions")) == 2
    assert [t["status"] for t in world.fake.sales("key-2")] == ["submitted_for_settlement"]
    found = adapter.lookup("key-2")
    assert found is not None and found.psp_reference == second.psp_reference


def test_only_the_exact_key_counts(world: World) -> None:
    """Braintree's text search ignores case; our keys do not."""
    adapter = world.adapter()
    token = _card(adapter)
    upper = adapter.charge(ChargeRequest("Key-A", token, 1050, "EUR", "top_up"))
    lower = adapter.charge(ChargeRequest("key-a", token, 1050, "EUR", "top_up"))
    assert upper.outcome is lower.outcome is Outcome.SUCCEEDED
    assert upper.psp_reference != lower.psp_reference
    assert adapter.lookup("KEY-A") is None


def test_a_server_error_after_the_sale_is_unknown_and_found_later(world: World) -> None:
    adapter = world.adapter()
    token = _card(adapter)
    world.fake.error_amounts.add("10.50")
    result = adapter.charge(ChargeRequest("key-3", token, 1050, "EUR", "top_up"))
    assert result.outcome is Outcome.UNKNOWN
    found = adapter.lookup("key-3")
    assert found is not None and found.outcome is Outcome.SUCCEEDED


def test_a_key_with_two_successful_sales_is_reported(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    adapter = world.adapter()
    token = _card(adapter)
    first = adapter.charge(ChargeRequest("key-4", token, 1050, "EUR", "top_up"))
    # Someone charged the key again outside this adapter (another integration, by hand).
    world.fake._sale(
        {
            "amount": "10.50",
            "payment_method_token": token,
            "order_id": "key-4",
            "options": {"submit_for_settlement": True},
        }
    )
    with caplog.at_level(logging.ERROR):
        found = adapter.lookup("key-4")
    assert found is not None and found.psp_reference == first.psp_reference  # the earliest
    assert "2 successful sales" in caplog.text


def test_vault_makes_our_account_the_customer_once_and_verifies_cards(world: World) -> None:
    adapter = world.adapter()
    card = adapter.vault(VaultRequest("fake-valid-mastercard-nonce", "acc_123"))
    paypal = adapter.vault(VaultRequest("fake-paypal-billing-agreement-nonce:x", "acc_123"))
    assert list(world.fake.customers) == ["acc_123"]
    assert len(world.sent("/customers")) == 1
    assert [m["payment_method"]["options"]["verify_card"] for m in world.sent("/payment_methods")]
    assert (card.type, card.brand, card.last4, card.expiry) == (
        "card",
        "MasterCard",
        "4444",
        "12/2030",
    )
    assert card.fingerprint is not None and card.fingerprint.startswith("braintree-card:")
    assert (paypal.type, paypal.payer_email) == ("paypal", "payer+x@example.com")
    assert paypal.display == "PayPal payer+x@example.com"


@pytest.mark.parametrize(
    ("nonce", "code"),
    [
        ("fake-processor-declined-visa-nonce", "2000"),
        ("fake-consumed-nonce", "93107"),
        ("not-a-nonce", "91565"),
    ],
)
def test_vault_refusals_carry_braintree_codes(world: World, nonce: str, code: str) -> None:
    with pytest.raises(VaultRefused) as refused:
        world.adapter().vault(VaultRequest(nonce, "acc_9"))
    assert refused.value.code == code
    assert refused.value.text


def test_a_card_number_as_nonce_is_refused_before_anything_is_sent(world: World) -> None:
    with pytest.raises(ValidationError) as refused:
        world.adapter().vault(VaultRequest("4111 1111 1111 1111", "acc_9"))
    assert "4111" not in str(refused.value)
    assert world.requests == []


def test_settlement_is_reported_once_braintree_settles(world: World) -> None:
    adapter = world.adapter()
    assert isinstance(adapter, ReportsSettlement)
    charged = adapter.charge(ChargeRequest("key-5", _card(adapter), 1050, "EUR", "top_up"))
    assert charged.psp_reference is not None
    before = adapter.settlement_status(charged.psp_reference)
    assert (before.state, before.psp_status) == (Settlement.SETTLING, "submitted_for_settlement")
    world.fake.settle(charged.psp_reference)
    after = adapter.settlement_status(charged.psp_reference)
    assert (after.state, after.psp_status) == (Settlement.SETTLED, "settled")
    assert after.settled_at is not None and after.settled_at.tzinfo is not None
    assert adapter.settlement_status("nosuch").state is Settlement.FAILED


def test_a_refund_waits_for_settlement_and_carries_its_own_key(world: World) -> None:
    adapter = world.adapter()
    charged = adapter.charge(ChargeRequest("key-6", _card(adapter), 1050, "EUR", "top_up"))
    assert charged.psp_reference is not None
    early = adapter.refund(RefundRequest("rf-6", charged.psp_reference, 1050, "EUR"))
    assert (early.outcome, early.code) == (Outcome.DECLINED, "91506")
    world.fake.settle(charged.psp_reference)
    part = adapter.refund(RefundRequest("rf-6", charged.psp_reference, 50, "EUR"))
    assert part.outcome is Outcome.SUCCEEDED
    (refund,) = world.sent("/refund")[1:]
    assert refund["transaction"] == {"amount": "0.50", "order_id": "rf-6"}
    assert len(world.fake.credits(charged.psp_reference)) == 1


def test_wrong_credentials_take_nothing_and_are_never_logged(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    token = _card(world.adapter())
    wrong = world.adapter(BRAINTREE_PRIVATE_KEY="wrong-private-key-7f3a")
    with caplog.at_level(logging.DEBUG):
        result = wrong.charge(ChargeRequest("key-7", token, 1050, "EUR", "top_up"))
        with pytest.raises(VaultUnavailable):
            wrong.vault(VaultRequest("fake-valid-nonce", "acc_7"))
    assert result.outcome is Outcome.NOT_ATTEMPTED
    assert world.fake.sales("key-7") == []
    assert "AuthenticationError" in caplog.text  # said, without the key
    assert "wrong-private-key-7f3a" not in caplog.text
    assert braintree_fake.PRIVATE_KEY not in caplog.text
