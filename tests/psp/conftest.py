"""Harnesses for the adapter contract suite: every registered adapter, the sandbox stubs
against their remote side and the real adapters against in-process fakes of their PSP.

A harness knows how to make a nonce for an instrument, what the PSP took for a key, and how
this PSP is made to fail; the tests in test_contract.py only use the protocol.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from sqlalchemy import select

from config import Settings
from tests.psp.fakes import braintree_fake, paypal_fake
from tests.psp.fakes.http import free_port, serving
from worker.psp.bank_transfer import BankTransfer
from worker.psp.base import Outcome, PspAdapter
from worker.psp.braintree import BraintreeSandbox
from worker.psp.braintree_gateway import BraintreeAdapter
from worker.psp.common import safe_reference
from worker.psp.paypal import PaypalSandbox
from worker.psp.paypal_rest import INVOICE_ID_MAX, PaypalRestAdapter
from worker.psp.sandbox import RemoteSide, remote_charges
from worker.psp.wechat_pay import WechatPaySandbox

TIMEOUT = (
    "2"  # PSP_HTTP_TIMEOUT_SECONDS for the real adapters (0.5 s timed out on a loaded 2-core CI)
)
HANG = 4.5  # a fake's late answer: well past the timeout
# Amounts (minor units, EUR) every harness understands the same way.
OK = 1050  # 10.50
LOST = 7700  # 77.00: taken at the PSP, the answer comes too late
DECLINE = 200100  # 2001.00: Insufficient Funds
SOFT = 300000  # 3000.00: processor unavailable (PayPal fake: 429)
NEEDS_ACTION = 209900  # 2099.00: cardholder authentication / payer action


BRAINTREE_TAKEN = ("authorized", "submitted_for_settlement", "settling", "settled")


@dataclass
class Harness:
    name: str
    adapter: PspAdapter
    #: tag -> a nonce for that instrument (the same tag is the same card or payer)
    instrument: Callable[[str], str]
    #: a nonce the PSP refuses to vault; None when there is nothing to refuse
    refused_nonce: str | None
    #: what the PSP took for a key: succeeded or pending payments
    taken: Callable[[str], int] | None
    #: the code of a DECLINE
    decline_code: str | None
    #: the same adapter pointed at a port nobody listens on (None: no network)
    unreachable: Callable[[], PspAdapter] | None = None
    #: a charge's money settles (a real refund needs it first)
    settle: Callable[[str], None] = lambda reference: None


def key() -> str:
    return f"contract-{uuid.uuid4().hex}"


def _stub_settings() -> Settings:
    return Settings(PSP_STUB_TIMEOUT_AMOUNTS=f"{LOST / 100:.2f}")  # type: ignore[call-arg]


def _stub_taken(psp: str) -> Callable[[str], int]:
    def taken(idempotency_key: str) -> int:
        with RemoteSide(_stub_settings(), psp).engine.connect() as conn:
            rows = conn.execute(
                select(remote_charges.c.outcome).where(
                    remote_charges.c.psp == psp,
                    remote_charges.c.idempotency_key == idempotency_key,
                    remote_charges.c.outcome.in_(("succeeded", "pending")),
                )
            ).all()
        return len(rows)

    return taken


def _braintree_settings(url: str) -> Settings:
    return Settings(  # type: ignore[call-arg]
        PSP_ENABLED="braintree_gateway",
        BRAINTREE_BASE_URL=url,
        BRAINTREE_MERCHANT_ID=braintree_fake.MERCHANT_ID,
        BRAINTREE_PUBLIC_KEY=braintree_fake.PUBLIC_KEY,
        BRAINTREE_PRIVATE_KEY=braintree_fake.PRIVATE_KEY,
        PSP_HTTP_TIMEOUT_SECONDS=TIMEOUT,
    )


def _paypal_settings(url: str) -> Settings:
    return Settings(  # type: ignore[call-arg]
        PSP_ENABLED="paypal_rest",
        PAYPAL_BASE_URL=url,
        PAYPAL_CLIENT_ID=paypal_fake.CLIENT_ID,
        PAYPAL_CLIENT_SECRET=paypal_fake.CLIENT_SECRET,
        PSP_HTTP_TIMEOUT_SECONDS=TIMEOUT,
    )


@pytest.fixture
def braintree_world() -> Iterator[tuple[braintree_fake.BraintreeFake, str]]:
    fake = braintree_fake.BraintreeFake(hang_amounts={f"{LOST / 100:.2f}"}, hang_seconds=HANG)
    with serving(fake) as (url, _requests):
        yield fake, url


@pytest.fixture
def paypal_world() -> Iterator[tuple[paypal_fake.PaypalFake, str]]:
    fake = paypal_fake.PaypalFake(hang_amounts={f"{LOST / 100:.2f}"}, hang_seconds=HANG)
    with serving(fake) as (url, _requests):
        yield fake, url


ADAPTERS = [
    "braintree",
    "paypal",
    "bank_transfer",
    "wechat_pay",
    "braintree_gateway",
    "paypal_rest",
]


@pytest.fixture(params=ADAPTERS)
def harness(request: pytest.FixtureRequest) -> Harness:
    name = request.param
    if name == "braintree":
        return Harness(
            name,
            BraintreeSandbox(_stub_settings()),
            instrument=lambda tag: f"fake-valid-visa-nonce:{tag}",
            refused_nonce="fake-processor-declined-visa-nonce",
            taken=_stub_taken("braintree"),
            decline_code="2001",
        )
    if name == "paypal":
        return Harness(
            name,
            PaypalSandbox(_stub_settings()),
            instrument=lambda tag: f"fake-paypal-billing-agreement-nonce:{tag}",
            refused_nonce="fake-valid-visa-nonce",  # a card is not a PayPal account
            taken=_stub_taken("paypal"),
            decline_code="2001",
        )
    if name == "bank_transfer":
        return Harness(
            name,
            BankTransfer(_stub_settings()),
            instrument=lambda tag: "",
            refused_nonce=None,
            taken=None,  # the bank tells us through reconciliation
            decline_code=None,
        )
    if name == "wechat_pay":
        return Harness(
            name,
            WechatPaySandbox(_stub_settings()),
            instrument=lambda tag: "",
            refused_nonce=None,
            taken=_stub_taken("wechat_pay"),
            decline_code=None,
        )
    if name == "braintree_gateway":
        fake, url = request.getfixturevalue("braintree_world")
        return Harness(
            name,
            BraintreeAdapter(_braintree_settings(url)),
            # NONCE:tag:unique - the same card per tag, a fresh nonce every time
            instrument=lambda tag: f"fake-valid-visa-nonce:{tag}:{uuid.uuid4().hex[:6]}",
            refused_nonce="fake-processor-declined-visa-nonce",
            taken=lambda k: sum(1 for t in fake.sales(k) if t["status"] in BRAINTREE_TAKEN),
            decline_code="2001",
            unreachable=lambda: BraintreeAdapter(
                _braintree_settings(f"http://127.0.0.1:{free_port()}")
            ),
            settle=fake.settle,
        )
    if name == "paypal_rest":
        fake, url = request.getfixturevalue("paypal_world")
        return Harness(
            name,
            PaypalRestAdapter(_paypal_settings(url)),
            instrument=fake.approved_setup_token,
            refused_nonce="UNKNOWN-SETUP-TOKEN",
            taken=lambda k: len(fake.captured(safe_reference(k, INVOICE_ID_MAX))),
            decline_code="INSTRUMENT_DECLINED",
            unreachable=lambda: PaypalRestAdapter(
                _paypal_settings(f"http://127.0.0.1:{free_port()}")
            ),
        )
    raise AssertionError(name)


def succeeded_or_pending(adapter: PspAdapter) -> Outcome:
    """What a good charge answers: on demand it succeeds, otherwise it waits for the payer."""
    return Outcome.SUCCEEDED if adapter.on_demand else Outcome.PENDING
