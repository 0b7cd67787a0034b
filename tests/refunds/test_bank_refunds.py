"""Refunds of bank-transfer payments (issue 14; seed 002): `requires_details`, a mail in
the account's locale asking where to send the money, `refunds details` (IBAN checked by
schwifty, no card number or control character in the holder), then the bank payout stub:
`succeeded` or `failed`. Against real PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest

from config import reset_settings
from tests.invoices import support as s
from tests.refunds import support as r
from worker.db.session import unit_of_work
from worker.kernel.clock import now
from worker.kernel.errors import RefundState, ValidationError
from worker.refunds import bank, janitor

pytestmark = pytest.mark.integration

GOOD_IBAN = "GB33 BUKB 2020 1555 5555 55"


def _paid_bank_charge(amount: str, locale: str = "en") -> tuple[str, str]:
    account_id = s.account(locale=locale)
    invoice = s.proforma(account_id, amount, s.method(account_id))
    received = s.receive(amount, invoice["number"])
    assert received["status"] == "matched", received
    [charge_id] = {i.charge_id for i in s.invoices_of(account_id)}
    assert charge_id is not None
    return account_id, charge_id


def _details(refund_id: str, iban: str = GOOD_IBAN, holder: str = "Jane Doe") -> dict[str, Any]:
    with unit_of_work() as uow:
        return bank.details(uow, refund_id=refund_id, iban=iban, holder=holder)


def test_a_bank_transfer_refund_waits_for_details_then_is_paid_out() -> None:
    account_id, charge_id = _paid_bank_charge("120.00", locale="zh")
    waiting = r.refund(charge_id, "20.00")
    assert (waiting["status"], waiting["balance"]) == ("requires_details", "100.00")
    [event] = s.events("refund.requires_details")
    assert event.data["refund_id"] == waiting["refund_id"]
    [mail] = s.mails("refund.requires_details")
    assert "IBAN" in mail.text_body and waiting["refund_id"] in mail.text_body
    assert "退款" in mail.subject  # the account's locale (zh)
    paid = _details(waiting["refund_id"])
    assert paid["status"] == "succeeded" and paid["holder"] == "Jane Doe"
    assert paid["iban"] == "GB****************5555"  # never printed whole
    assert paid["balance"] == "100.00"
    again = _details(waiting["refund_id"])  # a repeat of the same details: the same refund
    assert again["status"] == "succeeded"
    payouts = bank.payout_adapter().remote.count()
    assert payouts == 1
    with pytest.raises(RefundState):
        _details(waiting["refund_id"], holder="Someone Else")
    [note] = [i for i in s.invoices_of(account_id) if i.kind == "credit_note"]
    assert note.method == "bank_transfer" and note.amount == Decimal("20.00")
    assert s.system_balance("refunds_payable") == 0
    s.audit_ok()


@pytest.mark.parametrize(
    ("iban", "holder", "field"),
    [
        ("GB34 BUKB 2020 1555 5555 55", "Jane Doe", "iban"),  # checksum
        ("GB33 BUKB 2020 1555 5555", "Jane Doe", "iban"),  # the country's length
        ("XX33 BUKB 2020 1555 5555 55", "Jane Doe", "iban"),  # no such country
        ("", "Jane Doe", "iban"),
        (GOOD_IBAN, "4111 1111 1111 1111", "holder"),  # a card number
        (GOOD_IBAN, "Jane\x07Doe", "holder"),  # a control character
        (GOOD_IBAN, "  ", "holder"),
        (GOOD_IBAN, "J" * 71, "holder"),
    ],
)
def test_bad_details_are_refused_naming_the_field_and_nothing_changes(
    iban: str, holder: str, field: str
) -> None:
    _, charge_id = _paid_bank_charge("60.00")
    waiting = r.refund(charge_id)
    with pytest.raises(ValidationError) as refused:
        _details(waiting["refund_id"], iban=iban, holder=holder)
    assert refused.value.field == field
    assert "4111" not in refused.value.message
    [row] = r.rows(charge_id)
    assert (row.status, row.iban, row.holder) == ("requires_details", None, None)


def test_a_returned_payout_fails_and_puts_the_money_back() -> None:
    account_id, charge_id = _paid_bank_charge("2500.00")
    waiting = r.refund(charge_id, "2100.00")  # the payout stub returns 2000.00-2999.99 (AC04)
    failed = _details(waiting["refund_id"])
    assert (failed["status"], failed["failure_code"]) == ("failed", "AC04")
    assert failed["balance"] == "2500.00"
    assert len(s.events("refund.failed")) == 1
    assert [i.kind for i in s.invoices_of(account_id)] == ["proforma", "final"]
    s.audit_ok()


def test_details_are_only_for_a_refund_waiting_for_them() -> None:
    _, charge_id = r.card_account("20.00")
    done = r.refund(charge_id, "5.00")
    with pytest.raises(RefundState) as refused:
        _details(done["refund_id"])
    assert refused.value.code == "refund_state"


@pytest.fixture
def lost_payouts(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("PSP_STUB_TIMEOUT_AMOUNTS", "7.77")
    reset_settings()
    yield
    monkeypatch.delenv("PSP_STUB_TIMEOUT_AMOUNTS")
    reset_settings()


@pytest.mark.usefixtures("lost_payouts")
def test_a_lost_payout_answer_is_looked_up_by_the_janitor() -> None:
    _, charge_id = _paid_bank_charge("30.00")
    waiting = r.refund(charge_id, "7.77")
    assert _details(waiting["refund_id"])["status"] == "pending"
    with unit_of_work() as uow:
        resolved = janitor.sync_pending(uow, now() + timedelta(minutes=2))
    assert resolved == {"checked": 1, "resolved": 1}
    [row] = r.rows(charge_id)
    assert row.status == "succeeded"
    assert bank.payout_adapter().remote.count(row.idempotency_key) == 1
    s.audit_ok()


def test_a_key_is_never_shared_between_refunds() -> None:
    _, charge_id = _paid_bank_charge("30.00")
    key = f"bank-{uuid.uuid4().hex}"
    first = r.refund(charge_id, "10.00", key=key)
    assert r.refund(charge_id, "10.00", key=key)["refund_id"] == first["refund_id"]
    assert len(s.mails("refund.requires_details")) == 1
