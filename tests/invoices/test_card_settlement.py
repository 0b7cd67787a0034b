"""Card invoices wait for the PSP to report the payment settled (issue 17): the issuing job
(`balance.invoices.issue_due`) asks the adapter (`settlement_status`), at most hourly per
invoice and holding no lock meanwhile, and issues the invoice as soon as it is settled, long
before the CARD_INVOICE_MAX_DELAY (72 h) bound. Through the real Braintree adapter (its SDK)
against the in-process fake of Braintree's API; the clock moved with time-machine."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import time_machine

from config import reset_settings
from tests.invoices import support as s
from tests.psp.conftest import TIMEOUT
from tests.psp.fakes import braintree_fake
from tests.psp.fakes.http import Request, free_port, serving
from worker.db.session import unit_of_work
from worker.invoices import service as invoices

pytestmark = pytest.mark.integration  # real PostgreSQL and Redis, tables emptied first

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)


def _enable(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    for name, value in {
        "PSP_ENABLED": "braintree,braintree_gateway",
        "BRAINTREE_BASE_URL": url,
        "BRAINTREE_MERCHANT_ID": braintree_fake.MERCHANT_ID,
        "BRAINTREE_PUBLIC_KEY": braintree_fake.PUBLIC_KEY,
        "BRAINTREE_PRIVATE_KEY": braintree_fake.PRIVATE_KEY,
        "PSP_HTTP_TIMEOUT_SECONDS": TIMEOUT,
    }.items():
        monkeypatch.setenv(name, value)
    reset_settings()


@pytest.fixture
def braintree(
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[tuple[braintree_fake.BraintreeFake, list[Request]]]:
    fake = braintree_fake.BraintreeFake()
    with serving(fake) as (url, requests):
        _enable(monkeypatch, url)
        yield fake, requests
    for name in ("PSP_ENABLED", "BRAINTREE_BASE_URL", "PSP_HTTP_TIMEOUT_SECONDS"):
        monkeypatch.delenv(name)
    reset_settings()


def _issue(at: datetime) -> int:
    with time_machine.travel(at), unit_of_work() as uow:
        return int(invoices.issue_due(uow, at)["issued"])


def _paid_by_card(amount: str = "40.00") -> tuple[str, str]:
    """A card top-up through braintree_gateway at T0: (account, its pending invoice)."""
    account_id = s.account()
    with time_machine.travel(T0):
        card = s.method(
            account_id, "braintree_gateway", f"fake-valid-visa-nonce:{uuid.uuid4().hex[:8]}"
        )
        assert s.top_up(account_id, amount, card)["status"] == "succeeded"
    [pending] = s.invoices_of(account_id)
    assert (pending.status, pending.number, pending.method) == ("pending", None, "card")
    return account_id, pending.id


def _asked(requests: list[Request]) -> int:
    """Transaction reads sent to Braintree (settlement_status is a Transaction.find)."""
    return sum(1 for r in requests if r.method == "GET" and "/transactions/" in r.path)


def test_a_card_invoice_is_issued_when_the_psp_reports_the_payment_settled(
    braintree: tuple[braintree_fake.BraintreeFake, list[Request]],
) -> None:
    fake, requests = braintree
    _account_id, invoice_id = _paid_by_card()
    reference = s.invoice(invoice_id).payment_reference
    assert reference is not None
    before = _asked(requests)
    assert _issue(T0 + timedelta(minutes=15)) == 0  # submitted_for_settlement: settling
    assert _asked(requests) == before + 1
    assert s.invoice(invoice_id).status == "pending"
    fake.settle(reference)  # Braintree's nightly batch
    assert _issue(T0 + timedelta(minutes=30)) == 0  # asked within the hour: not again yet
    assert _asked(requests) == before + 1
    assert _issue(T0 + timedelta(minutes=75)) == 1
    issued = s.invoice(invoice_id)
    assert (issued.status, issued.number) == ("issued", "INV-2026-000001")
    assert issued.issued_at == T0 + timedelta(minutes=75)  # not 72 hours later
    assert _issue(T0 + timedelta(hours=80)) == 0  # a later run, or the bound: nothing more
    assert len(s.mails("invoice.final")) == 1
    assert [e.data["number"] for e in s.events("invoice.issued")] == ["INV-2026-000001"]


def test_a_payment_that_never_settles_waits_for_the_72_hour_bound(
    braintree: tuple[braintree_fake.BraintreeFake, list[Request]],
) -> None:
    _fake, requests = braintree
    _account_id, invoice_id = _paid_by_card()
    before = _asked(requests)
    for quarter in range(1, 9):  # the beat job every 15 minutes for two hours
        assert _issue(T0 + quarter * timedelta(minutes=15)) == 0
    assert _asked(requests) == before + 2  # at 0:15 and 1:15: once an hour, never more
    due = s.invoice(invoice_id).due_at  # 72 h after Braintree took the money
    assert due is not None and timedelta(hours=72) <= due - T0 < timedelta(hours=72, minutes=1)
    assert _issue(due) == 1
    assert s.invoice(invoice_id).issued_at == due
    assert _asked(requests) == before + 2  # due by the bound: the PSP is not asked


def test_a_psp_that_cannot_be_asked_delays_nothing_beyond_the_bound(
    braintree: tuple[braintree_fake.BraintreeFake, list[Request]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _account_id, invoice_id = _paid_by_card()
    _enable(monkeypatch, f"http://127.0.0.1:{free_port()}")  # nobody listens there now
    assert _issue(T0 + timedelta(hours=1)) == 0
    assert s.invoice(invoice_id).settlement_checked_at is None  # asked again next run
    assert _issue(T0 + timedelta(hours=73)) == 1


def test_a_stub_card_invoice_is_not_asked_and_keeps_the_bound() -> None:
    account_id = s.account()
    card = s.method(account_id, "braintree", "fake-valid-visa-nonce")
    with time_machine.travel(T0, tick=False):
        s.top_up(account_id, "40.00", card)
    [pending] = s.invoices_of(account_id)
    assert _issue(T0 + timedelta(hours=71, minutes=59)) == 0
    assert _issue(T0 + timedelta(hours=72)) == 1
    assert s.invoice(pending.id).status == "issued"
