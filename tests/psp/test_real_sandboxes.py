"""The real adapters against the real sandboxes, when their credentials are in the environment
(skipped otherwise; never against production):

    BRAINTREE_MERCHANT_ID=... BRAINTREE_PUBLIC_KEY=... BRAINTREE_PRIVATE_KEY=... \\
    PAYPAL_CLIENT_ID=... PAYPAL_CLIENT_SECRET=... [PAYPAL_SANDBOX_VAULT_ID=...] \\
    pytest -m psp_sandbox tests/psp/test_real_sandboxes.py

Braintree's sandbox takes its documented test nonces and amounts (2001.00 declines, 2099.00
needs the cardholder); BRAINTREE_SANDBOX_CURRENCY is its default merchant account's currency
(USD unless set). PayPal needs a payer's approval to vault an account, which a test cannot
give: PAYPAL_SANDBOX_VAULT_ID names a payment token vaulted beforehand for the charge tests.
"""

from __future__ import annotations

import os
import uuid

import pytest

from config import Settings
from worker.psp.base import ChargeRequest, Outcome, RefundRequest, Settlement, VaultRequest
from worker.psp.braintree_gateway import BraintreeAdapter
from worker.psp.paypal_rest import PaypalRestAdapter

pytestmark = pytest.mark.psp_sandbox

BRAINTREE_VARS = ("BRAINTREE_MERCHANT_ID", "BRAINTREE_PUBLIC_KEY", "BRAINTREE_PRIVATE_KEY")
PAYPAL_VARS = ("PAYPAL_CLIENT_ID", "PAYPAL_CLIENT_SECRET")


def _need(names: tuple[str, ...]) -> None:
    missing = [n for n in names if not os.environ.get(n)]
    if missing:
        pytest.skip(f"no sandbox credentials ({', '.join(missing)} not set)")


@pytest.fixture
def braintree() -> BraintreeAdapter:
    _need(BRAINTREE_VARS)
    settings = Settings(PSP_ENABLED="braintree_gateway", BRAINTREE_ENVIRONMENT="sandbox")  # type: ignore[call-arg]
    assert settings.braintree_base_url is None, "unset BRAINTREE_BASE_URL to reach the sandbox"
    return BraintreeAdapter(settings)


@pytest.fixture
def paypal() -> PaypalRestAdapter:
    _need(PAYPAL_VARS)
    settings = Settings(PSP_ENABLED="paypal_rest")  # type: ignore[call-arg]
    if "sandbox" not in settings.paypal_base_url:
        pytest.skip("PAYPAL_BASE_URL is not PayPal's sandbox")
    return PaypalRestAdapter(settings)


def _currency() -> str:
    return os.environ.get("BRAINTREE_SANDBOX_CURRENCY", "USD")


def test_braintree_sandbox_vault_charge_once_lookup_and_settle(braintree: BraintreeAdapter) -> None:
    customer = f"acc_sandbox_{uuid.uuid4().hex[:10]}"
    card = braintree.vault(VaultRequest("fake-valid-visa-nonce", customer))
    assert card.type == "card" and card.fingerprint
    key = f"sandbox-{uuid.uuid4().hex}"
    request = ChargeRequest(key, card.token, 1000, _currency(), "sandbox test")
    first = braintree.charge(request)
    assert first.outcome is Outcome.SUCCEEDED, first
    assert braintree.charge(request).psp_reference == first.psp_reference
    found = braintree.lookup(key)
    assert found is not None and found.psp_reference == first.psp_reference
    assert first.psp_reference is not None
    braintree.gateway.testing.settle(first.psp_reference)  # sandbox only
    assert braintree.settlement_status(first.psp_reference).state is Settlement.SETTLED
    refund = braintree.refund(RefundRequest(f"rf-{key}", first.psp_reference, 1000, _currency()))
    assert refund.outcome is Outcome.SUCCEEDED, refund


def test_braintree_sandbox_decline_and_authentication(braintree: BraintreeAdapter) -> None:
    card = braintree.vault(VaultRequest("fake-valid-nonce", f"acc_sandbox_{uuid.uuid4().hex[:10]}"))
    declined = braintree.charge(
        ChargeRequest(f"sandbox-{uuid.uuid4().hex}", card.token, 200100, _currency(), "decline")
    )
    assert (declined.outcome, declined.code) == (Outcome.DECLINED, "2001")
    action = braintree.charge(
        ChargeRequest(f"sandbox-{uuid.uuid4().hex}", card.token, 209900, _currency(), "3ds")
    )
    assert (action.outcome, action.code) == (Outcome.REQUIRES_ACTION, "2099")


def test_paypal_sandbox_token_and_lookup_of_an_unknown_key(paypal: PaypalRestAdapter) -> None:
    assert paypal.lookup(f"sandbox-{uuid.uuid4().hex}") is None


def test_paypal_sandbox_charge_once_lookup_refund(paypal: PaypalRestAdapter) -> None:
    vault_id = os.environ.get("PAYPAL_SANDBOX_VAULT_ID")
    if not vault_id:
        pytest.skip("PAYPAL_SANDBOX_VAULT_ID not set (a payment token a sandbox payer approved)")
    key = f"sandbox-{uuid.uuid4().hex}"
    request = ChargeRequest(key, vault_id, 1000, "USD", "sandbox test")
    first = paypal.charge(request)
    assert first.outcome is Outcome.SUCCEEDED, first
    assert paypal.charge(request).psp_reference == first.psp_reference
    found = paypal.lookup(key)
    assert found is not None and found.psp_reference == first.psp_reference
    assert first.psp_reference is not None
    refund = paypal.refund(RefundRequest(f"rf-{key}", first.psp_reference, 1000, "USD"))
    assert refund.outcome is Outcome.SUCCEEDED, refund
